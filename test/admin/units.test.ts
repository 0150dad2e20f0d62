/**
 * The admin room's parts on their own: the space-saving counter against exact counts,
 * RefusalTop's minutes and snapshots, the token (file, whitespace, rotation, missing
 * file) and the failure limiter, keys as users know them, and the admin settings.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { AdminToken, AuthFailures } from '../../src/admin/auth.js';
import { ADMIN_COMMANDS, parseAdminCommand } from '../../src/admin/cli.js';
import { AdminInputError, clientKeyFor, displayKey, limitsBy, parseBy } from '../../src/admin/keys.js';
import { RefusalTop, SpaceSaving } from '../../src/admin/top.js';
import { parseCommand, UsageError } from '../../src/config/settings.js';
import { clientKey } from '../../src/limiter/limiter.js';
import type { RateReport } from '../../src/limiter/limiter.js';
import { createLogger } from '../../src/observability/logger.js';
import { compilePolicy } from '../../src/policy/compile.js';
import type { CompiledPolicy } from '../../src/policy/types.js';
import { loadPolicyText } from '../../src/config/load.js';
import { eventually, tokenFile } from '../helpers/admin.js';
import { LogCapture } from '../helpers/tollgate.js';

describe('SpaceSaving', () => {
  it('with room for every key, counts exactly', () => {
    const counter = new SpaceSaving(10);
    for (const key of ['a', 'b', 'a', 'c', 'a', 'b']) counter.add(key);
    assert.deepEqual(counter.entries(), [
      { key: 'a', count: 3, error: 0 },
      { key: 'b', count: 2, error: 0 },
      { key: 'c', count: 1, error: 0 },
    ]);
  });

  it('keeps at most `capacity` keys, never under-counts one it keeps, and keeps every key above n/capacity', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 40 }).map((n) => `k${n % (n < 5 ? 5 : 41)}`), { maxLength: 600 }), fc.integer({ min: 1, max: 12 }), (stream, capacity) => {
        const counter = new SpaceSaving(capacity);
        const exact = new Map<string, number>();
        for (const key of stream) {
          counter.add(key);
          exact.set(key, (exact.get(key) ?? 0) + 1);
        }
        const kept = counter.entries();
        assert.ok(kept.length <= capacity);
        assert.equal(kept.reduce((sum, e) => sum + e.count, 0), stream.length, 'counts sum to the stream length');
        for (const e of kept) {
          const real = exact.get(e.key) ?? 0;
          assert.ok(e.count >= real && e.count - e.error <= real, `${e.key}: ${e.count} (error ${e.error}) vs exact ${real}`);
        }
        for (const [key, real] of exact) if (real > stream.length / capacity) assert.ok(kept.some((e) => e.key === key), `${key} (${real}) must be kept`);
        for (let i = 1; i < kept.length; i++) assert.ok(kept[i - 1].count >= kept[i].count);
      }),
      { seed: 1_764_000_000, numRuns: 200 },
    );
  });
});

function reportOf(entries: [string, string, boolean][]): RateReport {
  // [by, key, allowed] per check: enough of a report for RefusalTop.
  return {
    checks: entries.map(([by, key]) => ({ limit: { by, keyPrefix: `{r}:${by}:` } as never, key: `{r}:${by}:${key}`, max: 1 })),
    outcomes: entries.map(([, , allowed]) => ({ allowed }) as never),
    shown: 0,
    degraded: false,
  };
}

describe('RefusalTop', () => {
  const T = 1_764_000_000_000 - (1_764_000_000_000 % 60_000);

  it('counts a refused request once per refusing by, per route and minute; merges snapshots; forgets old minutes', () => {
    const top = new RefusalTop({ minutes: 3 });
    top.refused('api', reportOf([['ip', '1.1.1.1', false], ['ip', '1.1.1.1', false], ['user', 'u:ann', true]]), T);
    top.refused('api', reportOf([['ip', '1.1.1.1', false], ['user', 'u:ann', false]]), T + 1);
    top.refused('other', reportOf([['ip', '2.2.2.2', false]]), T + 2);
    assert.deepEqual(top.top(1, T + 3, 'api'), [
      { route: 'api', by: 'ip', key: '1.1.1.1', count: 2 },
      { route: 'api', by: 'user', key: 'u:ann', count: 1 },
    ]);
    assert.deepEqual(top.takeDirty(), [Math.floor(T / 60_000)]);
    assert.deepEqual(top.takeDirty(), []);
    const snapshot = top.snapshot(Math.floor(T / 60_000));
    // Another replica's snapshot of the same minute adds up.
    assert.deepEqual(top.top(1, T + 3, 'api', [snapshot, 'not json', '{"api": [["ip", 5]]}'])[0], { route: 'api', by: 'ip', key: '1.1.1.1', count: 4 });
    top.record('api', 'ip', '3.3.3.3', T + 60_000);
    assert.equal(top.top(1, T + 60_000, 'api').length, 1, 'the current minute only');
    assert.equal(top.top(2, T + 60_000, 'api').length, 3);
    top.record('api', 'ip', '4.4.4.4', T + 3 * 60_000);
    assert.equal(top.top(3, T + 3 * 60_000, 'api').some((e) => e.key === '1.1.1.1'), false, 'minutes older than kept are gone');
  });

  it('reports at most `reported` keys per route, most refused first', () => {
    const top = new RefusalTop({ capacity: 50, reported: 3 });
    for (let i = 0; i < 10; i++) for (let n = 0; n <= i; n++) top.record('api', 'ip', `10.0.0.${i}`, T);
    assert.deepEqual(top.top(1, T, undefined).map((e) => [e.key, e.count]), [['10.0.0.9', 10], ['10.0.0.8', 9], ['10.0.0.7', 8]]);
  });
});

describe('AdminToken and AuthFailures', () => {
  const logger = () => {
    const logs = new LogCapture();
    return { logs, logger: createLogger('info', logs) };
  };

  it('a token from the environment: whitespace around it is not part of it; the check needs the Bearer scheme', () => {
    const { logger: log } = logger();
    const token = new AdminToken({ token: '  s3cret-value \n' }, { logger: log });
    assert.equal(token.active, true);
    assert.equal(token.verify('Bearer s3cret-value'), true);
    assert.equal(token.verify('bearer s3cret-value '), true);
    for (const header of [undefined, '', 's3cret-value', 'Basic s3cret-value', 'Bearer s3cret', 'Bearer s3cret-value2', 'Bearer  ']) assert.equal(token.verify(header), false, String(header));
    assert.equal(new AdminToken(undefined, { logger: log }).active, false);
  });

  it('a token file: read at start, re-read on change; missing or empty is off; the token is never logged', async () => {
    const { logs, logger: log } = logger();
    const file = tokenFile('first-token\n');
    const token = new AdminToken({ file }, { logger: log, pollMs: 20 });
    try {
      assert.equal(token.verify('Bearer first-token'), true);
      writeFileSync(file, '  second-token  ');
      await eventually(() => assert.equal(token.verify('Bearer second-token'), true), 2_000);
      assert.equal(token.verify('Bearer first-token'), false);
      rmSync(file);
      await eventually(() => assert.equal(token.active, false), 2_000);
      writeFileSync(file, '\n');
      await eventually(() => assert.equal(logs.events('admin_token_unavailable').at(-1)?.reason, 'empty'), 2_000);
      assert.equal(token.active, false);
      writeFileSync(file, 'third-token');
      await eventually(() => assert.equal(token.verify('Bearer third-token'), true), 2_000);
      const text = JSON.stringify(logs.lines);
      for (const secret of ['first-token', 'second-token', 'third-token']) assert.ok(!text.includes(secret));
      assert.deepEqual(logs.events('admin_token_unavailable').map((l) => l.reason), ['ENOENT', 'empty']);
    } finally {
      token.close();
    }
    const missing = new AdminToken({ file: file + '.nope' }, { logger: log });
    assert.equal(missing.active, false);
    missing.close();
  });

  it('AuthFailures: the 11th failure within a minute locks the peer until 60 s after its last failure; failures while locked extend it', () => {
    const failures = new AuthFailures();
    const t = 1_000_000;
    for (let i = 0; i < 10; i++) assert.equal(failures.fail('p', t + i * 5_000), 0, `failure ${i + 1}`);
    assert.equal(failures.lockedFor('p', t + 50_000), 0);
    assert.equal(failures.fail('p', t + 55_000), 60_000, 'the 11th within the minute');
    assert.equal(failures.lockedFor('p', t + 85_000), 30_000);
    assert.equal(failures.fail('p', t + 100_000), 60_000, 'a failure while locked extends it');
    assert.equal(failures.lockedFor('p', t + 159_999), 1);
    assert.equal(failures.lockedFor('p', t + 160_000), 0);
    assert.equal(failures.lockedFor('q', t), 0, 'per peer');
    // Spread out, failures never lock.
    const spread = new AuthFailures();
    for (let i = 0; i < 30; i++) assert.equal(spread.fail('p', t + i * 6_001), 0);
  });
});

function policyOf(text: string): CompiledPolicy {
  const loaded = loadPolicyText(text, 'test.yaml', {});
  if (!loaded.ok) throw new Error(JSON.stringify(loaded.errors));
  return compilePolicy(loaded.policy.config, loaded.policy.hash, { upstream: 'http://127.0.0.1:9' });
}

describe('keys as users know them', () => {
  const policy = policyOf(`
clientIp: { ipv6Prefix: 56 }
identity: { header: x-user-id }
routes:
  - id: r
    match: { path: /r }
    limits:
      - { by: ip, limit: 1, window: 1m }
      - { by: user, limit: 1, window: 1m }
      - { by: header:x-api-key, limit: 1, window: 1m }
      - { by: header:x-other, limit: 1, window: 1m }
      - { by: global, limit: 1, window: 1m }
`);
  const route = policy.routes[0];
  const [ip, user, apiKey] = route.limits;

  it('the same client keys the limiter builds for a request', () => {
    const peer = policy.clientIp.resolve('2001:db8:1:2ff::9', undefined);
    const headers = { 'x-api-key': 'sk-123' };
    const identity = { userId: 'alice' };
    assert.equal(clientKeyFor(ip, { key: '2001:db8:1:200::1', listed: false }, policy, true), clientKey(ip, peer, identity, headers));
    assert.equal(clientKeyFor(ip, { key: '2001:db8:1:200::/56', listed: true }, policy, true), '2001:db8:1:200::/56');
    assert.equal(clientKeyFor(ip, { key: '::ffff:10.0.0.1', listed: false }, policy, true), '10.0.0.1');
    assert.equal(clientKeyFor(user, { key: 'alice', listed: false }, policy, true), clientKey(user, peer, identity, headers));
    const long = 'x'.repeat(200);
    assert.equal(clientKeyFor(user, { key: long, listed: false }, policy, true), clientKey(user, peer, { userId: long }, headers));
    assert.equal(clientKeyFor(apiKey, { key: ' sk-123\t', listed: false }, policy, true), clientKey(apiKey, peer, identity, headers));
    const digest = clientKey(apiKey, peer, identity, headers)!;
    assert.equal(clientKeyFor(apiKey, { key: digest, listed: true }, policy, true), digest);
    assert.equal(clientKeyFor(apiKey, { key: 'ip:10.0.0.1', listed: true }, policy, true), 'ip:10.0.0.1');
    assert.equal(clientKeyFor(route.limits[4], undefined, policy, true), '*');
    assert.equal(displayKey('user', 'u:alice'), 'alice');
    assert.equal(displayKey('header', digest), digest);
  });

  it('malformed keys and by values are input errors; without by, limits that cannot take the key are skipped', () => {
    assert.throws(() => clientKeyFor(ip, { key: 'alice', listed: false }, policy, true), AdminInputError);
    assert.equal(clientKeyFor(ip, { key: 'alice', listed: false }, policy, false), undefined);
    assert.throws(() => clientKeyFor(ip, { key: '2001:db8::/64', listed: true }, policy, true), AdminInputError, 'another prefix length names no key');
    assert.throws(() => clientKeyFor(apiKey, { key: 'sk-123', listed: true }, policy, true), AdminInputError);
    assert.throws(() => clientKeyFor(user, undefined, policy, true), AdminInputError);
    assert.throws(() => parseBy('cookie'), AdminInputError);
    assert.equal(parseBy('Header:X-API-Key'), 'header:x-api-key');
    assert.deepEqual(limitsBy(route, 'header').map((l) => l.by), ['header:x-api-key', 'header:x-other']);
    assert.deepEqual(limitsBy(route, 'header:x-other').map((l) => l.by), ['header:x-other']);
  });
});

describe('admin settings and CLI arguments', () => {
  function usage(fn: () => unknown): string {
    try {
      fn();
    } catch (error) {
      assert.ok(error instanceof UsageError, String(error));
      return error.message;
    }
    assert.fail('no UsageError');
  }
  const serve = (argv: string[], env: Record<string, string> = {}) => {
    const command = parseCommand(['serve', ...argv], env);
    return command.command === 'serve' ? command.settings.adminToken : 'not serve';
  };

  it('serve: --admin-token-file > TOLLGATE_ADMIN_TOKEN_FILE > TOLLGATE_ADMIN_TOKEN; both variables: a usage error; none: off', () => {
    assert.equal(serve([]), undefined);
    assert.deepEqual(serve(['--admin-token-file', '/f']), { file: '/f' });
    assert.deepEqual(serve(['--admin-token-file', '/f'], { TOLLGATE_ADMIN_TOKEN: 't' }), { file: '/f' });
    assert.deepEqual(serve([], { TOLLGATE_ADMIN_TOKEN_FILE: '/e' }), { file: '/e' });
    assert.deepEqual(serve([], { TOLLGATE_ADMIN_TOKEN: 't' }), { token: 't' });
    assert.match(usage(() => serve([], { TOLLGATE_ADMIN_TOKEN: 't', TOLLGATE_ADMIN_TOKEN_FILE: '/e' })), /both set/);
  });

  it('the CLI commands: endpoint, parameters, base URL and token; usage errors', () => {
    const env = { TOLLGATE_ADMIN_TOKEN: ' tok ' };
    assert.deepEqual([...ADMIN_COMMANDS].sort(), ['block', 'blocks', 'inspect', 'reset', 'top', 'unblock']);
    const block = parseAdminCommand(['block', '--route', 'api', '--header-value', 'sk', '--for', '1h', '--reason', 'leaked key'], env);
    assert.deepEqual([block.method, block.path, block.params, block.baseUrl, block.token], ['POST', '/admin/blocks', { route: 'api', by: 'header', key: 'sk', duration: '1h', reason: 'leaked key' }, 'http://127.0.0.1:9090', 'tok']);
    const unblock = parseAdminCommand(['unblock', '--route', '*', '--ip', '1.2.3.4', '--admin', 'http://10.0.0.1:9191/'], env);
    assert.deepEqual([unblock.method, unblock.params, unblock.baseUrl], ['DELETE', { route: '*', by: 'ip', key: '1.2.3.4' }, 'http://10.0.0.1:9191']);
    assert.equal(parseAdminCommand(['blocks'], { ...env, TOLLGATE_ADMIN: '0.0.0.0:9191' }).baseUrl, 'http://127.0.0.1:9191', 'the server\'s own HOST:PORT, reached over loopback');
    assert.equal(parseAdminCommand(['blocks', '--admin', '127.0.0.1:9292'], env).baseUrl, 'http://127.0.0.1:9292');
    const listed = parseAdminCommand(['inspect', '--route', 'api', '--listed-key', 'h#abc', '--by', 'header:x-api-key', '--json'], env);
    assert.deepEqual([listed.path, listed.params, listed.json], ['/admin/keys', { route: 'api', by: 'header:x-api-key', listedKey: 'h#abc' }, true]);
    assert.deepEqual(parseAdminCommand(['top', '--minutes', '3'], env).params, { minutes: 3 });
    const file = tokenFile('  from-file \n');
    assert.equal(parseAdminCommand(['blocks', '--admin-token-file', file], {}).token, 'from-file');
    assert.equal(parseAdminCommand(['blocks'], { TOLLGATE_ADMIN_TOKEN_FILE: file }).token, 'from-file');
    for (const [argv, message] of [
      [['block', '--ip', '1.2.3.4', '--for', '1h'], /--route is required/],
      [['block', '--route', 'r', '--ip', '1.2.3.4'], /--for is required/],
      [['block', '--route', 'r', '--ip', '1.2.3.4', '--for', '90'], /--for: expected a duration/],
      [['block', '--route', 'r', '--ip', '1', '--user', 'u', '--for', '1h'], /give one of/],
      [['inspect', '--route', 'r'], /expected a key/],
      [['inspect', '--route', '*', '--ip', '1.2.3.4'], /not accepted/],
      [['inspect', '--route', 'r', '--ip', '1.2.3.4', '--by', 'user'], /--ip goes with --by ip/],
      [['inspect', '--route', 'r', '--listed-key', 'k'], /needs --by/],
      [['blocks', '--ip', '1.2.3.4'], /not an option of blocks/],
      [['top', '--minutes', 'five'], /--minutes/],
      [['blocks', '--nope'], /Unknown option/],
      [['blocks', '--admin', 'ftp://x'], /http/],
    ] as [string[], RegExp][]) {
      assert.match(usage(() => parseAdminCommand(argv, env)), message, argv.join(' '));
    }
    assert.match(usage(() => parseAdminCommand(['blocks'], {})), /no admin token/);
    assert.match(usage(() => parseAdminCommand(['blocks', '--admin-token-file', file + '.missing'], {})), /cannot read/);
  });
});
