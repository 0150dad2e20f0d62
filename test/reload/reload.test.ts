import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { request, statuses } from '../helpers/http.js';
import { sampleSum } from '../helpers/metrics.js';
import { startTollgate, startWithEcho, writePolicy, type TestTollgate, type TollgateWithEcho } from '../helpers/tollgate.js';
import { startEchoUpstream, startGatedUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { eventually, WAIT_MS } from '../helpers/wait.js';

/** The file watch and its debounce run on real time: reloads are awaited through /metrics. */
async function reloads(tg: TestTollgate, result: 'success' | 'failure'): Promise<number> {
  const value = sampleSum(await tg.scrape(), 'tollgate_config_reloads_total', { result });
  return Number.isNaN(value) ? 0 : value;
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * A directory laid out like a mounted ConfigMap: `..<timestamp>/policies.yaml`,
 * `..data -> ..<timestamp>`, `policies.yaml -> ..data/policies.yaml`.
 */
class ConfigMapDir {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'tollgate-configmap-'));
  #generation = 0;
  #current = '';

  constructor(text: string) {
    this.#current = this.#writeGeneration(text);
    symlinkSync(this.#current, path.join(this.dir, '..data'));
    symlinkSync('..data/policies.yaml', path.join(this.dir, 'policies.yaml'));
  }

  get file(): string {
    return path.join(this.dir, 'policies.yaml');
  }

  /** What the kubelet does on a ConfigMap update: new dir, `..data_tmp` symlink renamed over `..data`, old dir removed. */
  update(text: string): void {
    const next = this.#writeGeneration(text);
    const tmp = path.join(this.dir, '..data_tmp');
    symlinkSync(next, tmp);
    renameSync(tmp, path.join(this.dir, '..data'));
    rmSync(path.join(this.dir, this.#current), { recursive: true });
    this.#current = next;
  }

  #writeGeneration(text: string): string {
    const name = `..2026_01_0${++this.#generation}_00_00_00.00000000${this.#generation}`;
    mkdirSync(path.join(this.dir, name));
    writeFileSync(path.join(this.dir, name, 'policies.yaml'), text);
    return name;
  }
}

const routes = (limit: number, extra = '') => `
clientIp:
  trustedProxies: [127.0.0.1/32]
routes:
  - id: api
    match: { path: /api/* }
    limits:
      - { by: ip, limit: ${limit}, window: 1m }
${extra}`;

describe('reload through a Kubernetes ConfigMap symlink swap (watch: true)', () => {
  /** A watching Tollgate on a fresh ConfigMap-like directory holding `text`, stopped after the test. */
  async function onConfigMap(t: TestContext, text: string): Promise<{ tg: TollgateWithEcho; configMap: ConfigMapDir }> {
    const configMap = new ConfigMapDir(text);
    const tg = await startWithEcho('', { file: configMap.file, watch: true });
    t.after(async () => {
      await tg.close();
      rmSync(configMap.dir, { recursive: true });
    });
    return { tg, configMap };
  }

  test('the new limit applies without a restart, and the used quota carries over', async (t) => {
    const { tg, configMap } = await onConfigMap(t, routes(2));
    assert.deepEqual(await statuses(tg.url, '/api/a', 3), [200, 200, 429]);
    const text = routes(5);
    configMap.update(text);
    await eventually(async () => (await reloads(tg, 'success')) === 1, { what: 'the swap to be reloaded' });
    const after = await tg.scrape();
    assert.equal(sampleSum(after, 'tollgate_config_info', { hash: sha256(text) }), 1);
    assert.equal(sampleSum(after, 'tollgate_config_info'), 1, 'the old hash is gone');
    // 2 of 5 used before the swap: 3 left.
    assert.deepEqual(await statuses(tg.url, '/api/a', 4), [200, 200, 200, 429]);
    const reloaded = tg.logs.events('config_reloaded');
    assert.equal(reloaded.length, 1);
    assert.equal(reloaded[0].trigger, 'file_change');
    assert.equal(reloaded[0].hash, sha256(text));
  });

  test('an invalid ConfigMap is kept out; fixing it is picked up too', async (t) => {
    const { tg, configMap } = await onConfigMap(t, routes(2));
    const before = tg.tollgate.policy;
    configMap.update(routes(5).replace('limit: 5', 'limit: lots'));
    await eventually(async () => (await reloads(tg, 'failure')) === 1, { what: 'the invalid swap to fail to reload' });
    assert.equal(sampleSum(await tg.scrape(), 'tollgate_config_valid'), 0);
    assert.equal(tg.tollgate.policy, before);
    assert.equal(await reloads(tg, 'success'), 0);
    const fixed = routes(7);
    configMap.update(fixed);
    await eventually(async () => (await reloads(tg, 'success')) === 1, { what: 'the fixed swap to be reloaded' });
    assert.equal(sampleSum(await tg.scrape(), 'tollgate_config_valid'), 1);
    assert.equal(tg.tollgate.policy.hash, sha256(fixed));
  });
});

describe('an invalid edit keeps the old policy', () => {
  let upstream: EchoUpstream;
  before(async () => {
    upstream = await startEchoUpstream();
  });
  after(() => upstream.close());

  /** A Tollgate on its own copy of `text`, stopped after the test. */
  async function started(t: TestContext, text: string, options: { upstream?: string } = { upstream: upstream.url }): Promise<TestTollgate> {
    const tg = await startTollgate(text, options);
    t.after(() => tg.close());
    return tg;
  }

  test('logs FILE:LINE:COL, counts a failure, config_valid 0, /readyz stays 200; the fix restores 1', async (t) => {
    const tg = await started(t, routes(3));
    const original = readFileSync(tg.file, 'utf8');
    assert.equal((await request(tg.url, '/api/a')).headers['x-ratelimit-limit'], '3');
    // Line 8 is the limit; `limit: 0` is out of range, `window: 1 parsec` is not a duration.
    writeFileSync(tg.file, routes(0).replace('window: 1m', 'window: 1 parsec'));
    const result = tg.tollgate.reload();
    assert.equal(result.ok, false);
    const failed = tg.logs.events('config_reload_failed');
    assert.ok(failed.length >= 2, JSON.stringify(failed));
    for (const line of failed) {
      assert.equal(line.level, 'error');
      assert.match(String(line.msg), new RegExp(`^${tg.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:8:\\d+ `));
    }
    const text = await tg.scrape();
    assert.equal(sampleSum(text, 'tollgate_config_reloads_total', { result: 'failure' }), 1);
    assert.ok(Number.isNaN(sampleSum(text, 'tollgate_config_reloads_total', { result: 'success' })));
    assert.equal(sampleSum(text, 'tollgate_config_valid'), 0);
    assert.equal(sampleSum(text, 'tollgate_config_info', { hash: sha256(original) }), 1, 'the active hash is still the old one');
    assert.equal((await request(tg.adminUrl, '/readyz')).status, 200);
    // The old policy still answers: limit 3.
    const answer = await request(tg.url, '/api/a');
    assert.equal(answer.status, 200);
    assert.equal(answer.headers['x-ratelimit-limit'], '3');

    // An unreadable file is just another failure.
    rmSync(tg.file);
    assert.equal(tg.tollgate.reload().ok, false);
    assert.equal(await reloads(tg, 'failure'), 2);

    // Restoring the very file that is active: valid again, nothing to swap.
    writeFileSync(tg.file, original);
    assert.deepEqual(tg.tollgate.reload(), { ok: true, changed: false, hash: sha256(original) });
    assert.equal(sampleSum(await tg.scrape(), 'tollgate_config_valid'), 1);
    assert.equal((await request(tg.adminUrl, '/readyz')).status, 200);
  });

  test('a file change that fails the same way as the last one (same bytes, same errors) is not counted or logged again', async (t) => {
    const tg = await started(t, routes(3));
    writeFileSync(tg.file, routes(0));
    assert.equal(tg.tollgate.reload('file_change').ok, false);
    const lines = tg.logs.events('config_reload_failed').length;
    assert.ok(lines >= 1);
    // A log file in the policy's directory: each failure's line is another change there.
    assert.equal(tg.tollgate.reload('file_change').ok, false, 'still refused');
    assert.equal(tg.tollgate.reload('file_change').ok, false);
    assert.equal(await reloads(tg, 'failure'), 1, 'one failure for one broken edit');
    assert.equal(tg.logs.events('config_reload_failed').length, lines, 'logged once');
    // Asked for (SIGHUP, the API): always counted and logged.
    assert.equal(tg.tollgate.reload('sighup').ok, false);
    assert.equal(await reloads(tg, 'failure'), 2);
    // Another broken edit is new: counted.
    writeFileSync(tg.file, routes(0).replace('window: 1m', 'window: 1 parsec'));
    assert.equal(tg.tollgate.reload('file_change').ok, false);
    assert.equal(await reloads(tg, 'failure'), 3);
    assert.equal((await request(tg.url, '/api/a')).headers['x-ratelimit-limit'], '3', 'the old policy answers throughout');
  });

  test('a file that validates but cannot compile (no upstream anywhere) is a failure too', async (t) => {
    const withUpstream = `upstream: ${upstream.url}\n${routes(3)}`;
    const own = await started(t, withUpstream, {}); // no --upstream flag: the file's upstream is the only one
    writeFileSync(own.file, routes(4));
    assert.equal(own.tollgate.reload().ok, false);
    const text = await own.scrape();
    assert.equal(sampleSum(text, 'tollgate_config_reloads_total', { result: 'failure' }), 1);
    assert.equal(sampleSum(text, 'tollgate_config_valid'), 0);
    assert.equal(own.tollgate.policy.hash, sha256(withUpstream));
    const [line] = own.logs.events('config_reload_failed');
    assert.match(String(line.msg), /^\S+policies\.yaml:\d+:\d+ .*upstream/);
    assert.equal((await request(own.url, '/api/a')).status, 200);
  });

  test('a compile error is logged at the line it concerns, not at 1:1', async (t) => {
    const tg = await started(t, routes(3));
    const activeHash = tg.tollgate.policy.hash;
    // Passes the schema; its RSA publicKey (value at 5:16) cannot verify the ES256 it lists.
    writeFileSync(tg.file, readFileSync(new URL('../fixtures/config/jwt_public_key_wrong_algorithm.yaml', import.meta.url)));
    const message = 'identity.jwt.publicKey (rsa 2048 bits) cannot verify ES256';
    assert.deepEqual(tg.tollgate.reload(), { ok: false, errors: [{ file: tg.file, line: 5, col: 16, message }] });
    assert.equal(tg.logs.events('config_reload_failed').at(-1)?.msg, `${tg.file}:5:16 ${message}`);
    assert.equal(tg.tollgate.policy.hash, activeHash);
  });
});

describe('counters across a reload', () => {
  const policy = (o: { limit: number; block: string; window: string; algorithm?: string; message?: string; more?: string }) => `
clientIp:
  trustedProxies: [127.0.0.1/32]
routes:
  - id: api
    match: { path: /api/* }
    ${o.message ? `message: ${o.message}` : ''}
    limits:
      - { by: ip, limit: ${o.limit}, window: 1m }
  - id: login
    match: { path: /login }
    limits:
      - { by: ip, limit: 2, window: 1m, block: ${o.block} }
  - id: search
    match: { path: /search }
    ${o.algorithm ? `algorithm: ${o.algorithm}` : ''}
    limits:
      - { by: ip, limit: 2, window: ${o.window} }
${o.more ?? ''}`;

  test('a lowered limit bites at once, blocks run on, a new window or algorithm starts fresh', async (t) => {
    const tg = await startWithEcho(policy({ limit: 10, block: '5m', window: '1m' }));
    t.after(() => tg.close());
    {
      const headers = { 'x-forwarded-for': '198.51.100.50' };
      const client = { headers };
      assert.deepEqual(await statuses(tg.url, '/api/a', 6, client), [200, 200, 200, 200, 200, 200]);
      assert.deepEqual(await statuses(tg.url, '/login', 3, client), [200, 200, 429]); // block started
      assert.deepEqual(await statuses(tg.url, '/search', 3, client), [200, 200, 429]);

      writeFileSync(
        tg.file,
        policy({
          limit: 5, // lowered below the 6 already used
          block: '10m', // a longer block does not restart the running one
          window: '2m', // a different limit: fresh counts
          message: 'Slow down please', // unrelated edits
          more: '  - id: added\n    match: { path: /added }\n    limits: [{ by: ip, limit: 1, window: 1m }]\n',
        }),
      );
      const result = tg.tollgate.reload();
      assert.equal(result.ok, true, JSON.stringify(result));

      const api = await request(tg.url, '/api/a', client);
      assert.equal(api.status, 429, 'the lowered limit applies to the counts already made');
      assert.equal(api.headers['x-ratelimit-limit'], '5');
      assert.equal(JSON.parse(api.body).error.message, 'Slow down please');

      const login = await request(tg.url, '/login', client);
      assert.equal(login.status, 429, 'the block survived the reload');
      assert.equal(login.headers['retry-after'], '300', 'the running block keeps its end');

      assert.deepEqual(await statuses(tg.url, '/search', 3, client), [200, 200, 429], 'window 2m is a new limit');

      // Another client is unaffected by all of this.
      assert.equal((await request(tg.url, '/api/a', { headers: { 'x-forwarded-for': '198.51.100.51' } })).status, 200);

      // The block ends when it was going to end, not 10 minutes after the reload.
      tg.clock.advance(5 * 60 * 1000 + 1);
      assert.equal((await request(tg.url, '/login', client)).status, 200);

      // Changing the algorithm is a new limit too.
      writeFileSync(tg.file, policy({ limit: 5, block: '10m', window: '2m', algorithm: 'fixed-window' }));
      assert.equal(tg.tollgate.reload().ok, true);
      assert.deepEqual(await statuses(tg.url, '/search', 3, client), [200, 200, 429]);
    }
  });
});

describe('a request in flight during a reload', () => {
  test('finishes under the policy (and upstream) it started with; the next one gets the new policy', async (t) => {
    const oldUpstream = await startGatedUpstream({ name: 'old' });
    const newUpstream = await startGatedUpstream({ name: 'new' });
    t.after(async () => {
      await oldUpstream.close();
      await newUpstream.close();
    });
    const policy = (upstream: string, limit: number, by: string) => `
upstream: ${upstream}
routes:
  - id: slow
    match: { path: /slow/* }
    limits:
      - { by: ${by}, limit: ${limit}, window: 1m }
`;
    const tg = await startTollgate(policy(oldUpstream.url, 10, 'ip'));
    t.after(() => tg.close());
    const inFlight = request(tg.url, '/slow/1');
    await oldUpstream.waitForHeld(1);

    writeFileSync(tg.file, policy(newUpstream.url, 20, 'global'));
    assert.equal(tg.tollgate.reload().ok, true);

    // The next request starts under the new policy: new limit, new upstream.
    const next = request(tg.url, '/slow/2');
    await newUpstream.waitForHeld(1);
    assert.equal(oldUpstream.held.length, 1);

    oldUpstream.release();
    const first = await inFlight;
    assert.equal(first.status, 200);
    assert.equal(first.body, 'old slow');
    assert.equal(first.headers['x-ratelimit-limit'], '10');
    assert.equal(first.headers['x-ratelimit-remaining'], '9');
    assert.equal(first.headers['ratelimit-policy'], '"slow.ip";q=10;w=60');

    newUpstream.release();
    const second = await next;
    assert.equal(second.status, 200);
    assert.equal(second.body, 'new slow');
    assert.equal(second.headers['x-ratelimit-limit'], '20');
    assert.equal(second.headers['ratelimit-policy'], '"slow.global";q=20;w=60');
  });
});

describe('a request still being evaluated during a reload', () => {
  test('reaches the upstream it started with, though the reload replaced it; close() releases the old pool', async (t) => {
    const oldUpstream = await startGatedUpstream({ name: 'old' });
    const newUpstream = await startGatedUpstream({ name: 'new' });
    // A JWKS endpoint that answers only when told: the request's evaluation waits on it.
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] });
    const jwksServer = await startGatedUpstream({ hold: () => true });
    t.after(async () => {
      await jwksServer.close();
      await oldUpstream.close();
      await newUpstream.close();
    });
    const policy = (upstream: string, limit: number) => `
upstream: ${upstream}
identity:
  jwt:
    jwksUrl: ${jwksServer.url}/jwks.json
    algorithms: [ES256]
routes:
  - id: api
    match: { path: /api/* }
    limits:
      - { by: user, limit: ${limit}, window: 1m, for: authenticated }
`;
    const token = await new SignJWT({ sub: 'alice' }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setExpirationTime(4_102_444_800).sign(privateKey);
    const tg = await startTollgate(policy(oldUpstream.url, 10));
    t.after(() => tg.close());
    // Warm the pool to the old upstream (no token: no JWKS wait).
    assert.equal((await request(tg.url, '/api/warm')).body, 'old');
    const pending = request(tg.url, '/api/a', { headers: { authorization: `Bearer ${token}` } });
    await jwksServer.waitForHeld(1);

    writeFileSync(tg.file, policy(newUpstream.url, 20));
    assert.equal(tg.tollgate.reload().ok, true);
    jwksServer.release(jwks);

    const answer = await pending;
    assert.equal(answer.status, 200, answer.body); // was 502 UPSTREAM_UNAVAILABLE: the old pool was closed
    assert.equal(answer.body, 'old');
    assert.equal(answer.headers['x-ratelimit-limit'], '10');
    assert.equal((await request(tg.url, '/api/b')).body, 'new');

    // The replaced pool is still open (its grace has not run out), and closing Tollgate closes it.
    assert.ok((await oldUpstream.connections()) > 0);
    await tg.close();
    await eventually(async () => (await oldUpstream.connections()) === 0, { what: "the old upstream's pooled connections to close" });
  });
});

describe('GET /config', () => {
  const JWT_SECRET = 'jwt-secret-from-env-0123456789abcdefghijkl';
  const REDIS_PASSWORD = 'redis-pass-9d8c7b';
  const URL_PASSWORD = 'url-pass-1a2b3c';
  const policy = (limit: number) => `
upstream: http://127.0.0.1:1
identity:
  jwt: { secret: "\${JWT_SECRET}", algorithms: [HS256] }
routes:
  - id: api
    match: { path: /api/* }
    limits:
      - { by: ip, limit: ${limit}, window: 1m }
store:
  type: memory
  redis:
    url: redis://tollgate:${URL_PASSWORD}@redis.internal:6379/0
    password: ${REDIS_PASSWORD}
`;

  test('returns the active policy, its hash and load time, secrets redacted; follows reloads', async (t) => {
    const text = policy(4);
    const tg = await startTollgate(text, { env: { JWT_SECRET } });
    t.after(() => tg.close());
    const config = async () => JSON.parse((await request(tg.adminUrl, '/config')).body) as { hash: string; loadedAt: string; policy: any };
    {
      const res = await request(tg.adminUrl, '/config');
      assert.equal(res.status, 200);
      assert.match(String(res.headers['content-type']), /^application\/json/);
      assert.equal(res.headers['cache-control'], 'no-store');
      const raw = res.body;
      for (const secret of [JWT_SECRET, REDIS_PASSWORD, URL_PASSWORD]) assert.ok(!raw.includes(secret), `/config shows ${secret}`);
      const body = JSON.parse(raw) as { hash: string; loadedAt: string; policy: any };
      assert.equal(body.hash, sha256(text));
      assert.equal(Date.parse(body.loadedAt), tg.clock.nowMs); // the injected clock
      assert.equal(body.policy.identity.jwt.secret, '[redacted]');
      assert.deepEqual(body.policy.identity.jwt.algorithms, ['HS256']);
      assert.equal(body.policy.store.redis.password, '[redacted]');
      assert.equal(body.policy.store.redis.url, 'redis://tollgate:[redacted]@redis.internal:6379/0');
      assert.deepEqual(body.policy.routes[0].limits[0], { by: 'ip', limit: 4, windowMs: 60_000, for: 'any' });

      const next = policy(9);
      writeFileSync(tg.file, next);
      tg.clock.advance(90_000);
      assert.equal(tg.tollgate.reload().ok, true);
      const after = await config();
      assert.equal(after.hash, sha256(next));
      assert.equal(after.policy.routes[0].limits[0].limit, 9);
      assert.equal(Date.parse(after.loadedAt), tg.clock.nowMs);

      // A failed reload leaves /config on the active policy.
      writeFileSync(tg.file, 'routes: [');
      assert.equal(tg.tollgate.reload().ok, false);
      assert.equal((await config()).hash, sha256(next));
    }
  });
});
