/**
 * `tollgate explain` as a user runs it (node dist/cli.js): the --json contract, the text,
 * the exit codes, and, against a running `tollgate serve`, that what it explains is what
 * the proxy does over sockets, with --admin's live counts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { tokenFile } from '../helpers/admin.js';
import { bearer, JWT_SECRET, request, statuses } from '../helpers/http.js';
import { runCli, serveCli, type ServingCli } from '../helpers/process.js';
import { writePolicy } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

const POLICY = `
clientIp:
  trustedProxies: [10.0.0.0/8]
identity:
  jwt: { secret: "\${JWT_SECRET}", algorithms: [HS256], tierClaim: plan }
routes:
  - id: token
    match: { path: /api/token, methods: [POST] }
    limits:
      - { by: user, limit: 10, window: 1m, tiers: { pro: 30 } }
      - { by: ip, limit: 20, window: 1m, block: 5m }
      - { by: header:x-api-key, limit: 100, window: 1h }
  - id: live
    match: { path: /ws/live, websocket: true }
    limits: [{ by: ip, concurrent: 2 }]
`;

const env = { JWT_SECRET };

describe('tollgate explain', () => {
  const file = writePolicy(POLICY);

  it('--json: the documented shape, for a request through a trusted proxy with a verified token', async () => {
    const { authorization } = await bearer('alice', { plan: 'pro' });
    const run = await runCli(
      ['explain', '--config', file, 'post', '/API/token/', '--ip', '203.0.113.7', '--via-proxy', '10.0.0.1', '--header', `Authorization: ${authorization}`, '--header', 'X-Api-Key: sk_live_1', '--json'],
      env,
    );
    assert.equal(run.code, 0, run.stderr);
    const e = JSON.parse(run.stdout);
    assert.deepEqual(Object.keys(e), ['canonicalPath', 'route', 'tried', 'client', 'identity', 'guards', 'allowlisted', 'mode', 'limits']);
    assert.deepEqual([e.canonicalPath, e.route, e.tried], ['/api/token', 'token', []]);
    assert.deepEqual(e.client, { ip: '203.0.113.7', key: '203.0.113.7', peerTrusted: true });
    assert.deepEqual(e.identity, { user: 'alice', tier: 'pro', anonymous: false, tokenError: null, source: 'jwt' });
    assert.deepEqual(e.guards, []);
    assert.deepEqual(
      e.limits.map((l: Record<string, unknown>) => [l.policy, l.tier, l.limit, l.window, l.block]),
      [['token.user', 'pro', 30, 60, null], ['token.ip', null, 20, 60, [300]], ['token.header:x-api-key', null, 100, 3600, null]],
    );
    for (const limit of e.limits) assert.deepEqual(Object.keys(limit).slice(0, 4), ['policy', 'by', 'type', 'storeKey']);
    assert.match(e.limits[2].storeKey, /^\{token\}:header:x-api-key:3600000:sw:h#[A-Za-z0-9_-]{22}$/);
    assert.ok(!run.stdout.includes('sk_live_1'));
  });

  it('text: no route matched says which routes were tried and why; exit 0', async () => {
    const run = await runCli(['explain', '--config', file, 'GET', '/ws/live', '--token', 'not.a.jwt'], env);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^GET \/ws\/live\ncanonical path +\/ws\/live\nroute +none: the request is forwarded untouched/);
    assert.match(run.stdout, /not token: the path does not match\n.*not live: WebSocket upgrades only \(match\.websocket: true\)\n/);
    assert.match(run.stdout, /identity +anonymous; the token does not count: /);
  });

  it('exit 1 for a policy file that does not load (its problems as FILE:LINE:COL), 2 for usage errors', async () => {
    const bad = writePolicy('routes:\n  - id: a\n    match: { path: /a }\n    limts: []\n');
    const invalid = await runCli(['explain', '--config', bad, 'GET', '/a']);
    assert.equal(invalid.code, 1);
    assert.match(invalid.stderr, /policies\.yaml:4:5 routes\[0\]: unknown key "limts"/);
    for (const args of [['explain', 'GET'], ['explain', 'GET', 'api'], ['explain', 'GET', '/a', '--ip', 'nope']]) {
      const usage = await runCli([...args, '--config', file], env);
      assert.equal(usage.code, 2, `${args.join(' ')}: ${usage.stdout}${usage.stderr}`);
      assert.match(usage.stderr, /Usage:\n  tollgate explain/);
    }
  });
});

describe('tollgate explain against a running tollgate serve', () => {
  const TOKEN = 'explain-admin-token-0123456789abcdef';
  const SERVED = `
routes:
  - id: api
    match: { path: /api/* }
    # A log, not aligned windows: counts do not start over at a boundary the test cannot pick.
    algorithm: sliding-log
    limits:
      - { by: ip, limit: 2, window: 1h, block: 10m }
`;
  let upstream: EchoUpstream;
  let tollgate: ServingCli;
  let file: string;

  before(async () => {
    upstream = await startEchoUpstream();
    file = writePolicy(SERVED);
    tollgate = await serveCli(['--config', file, '--upstream', upstream.url, '--admin-token-file', tokenFile(TOKEN)]);
  });
  after(async () => {
    await tollgate?.stop();
    await upstream?.close();
  });

  it('the limit and key it names are the ones the proxy refuses with, and --admin shows their live state', async () => {
    const from = '127.0.0.71';
    const explain = (...extra: string[]) => runCli(['explain', '--config', file, 'GET', '/api/x', '--ip', from, '--admin', tollgate.adminUrl, ...extra], { TOLLGATE_ADMIN_TOKEN: TOKEN });

    const before = JSON.parse((await explain('--json')).stdout);
    assert.equal(before.limits[0].storeKey, `{api}:ip:3600000:sl:${from}`);
    assert.deepEqual([before.limits[0].live.count, before.limits[0].live.remaining, before.limits[0].live.blockedUntil], [0, 2, null]);

    // The limit explain named refuses the third request over the socket, and blocks the key.
    assert.deepEqual(await statuses(tollgate.url, '/api/x', 3, { from }), [200, 200, 429]);
    const refused = await request(tollgate.url, '/api/x', { from });
    assert.equal(refused.headers['ratelimit-policy'], `"${before.limits[0].policy}";q=2;w=3600`);

    const run = await explain('--json');
    assert.equal(run.code, 0, run.stderr);
    const live = JSON.parse(run.stdout).limits[0].live;
    assert.deepEqual([live.count, live.remaining, live.manual], [2, 0, false]);
    assert.ok(live.blockedUntil > Date.now() / 1000 + 500, `blocked for ~10m: ${live.blockedUntil}`);
    const text = await explain();
    assert.match(text.stdout, /live: count 2, remaining 0, reset \S+, blocked until \d{4}-/);
  });

  it('--admin that cannot be read: the explanation still prints, the failure is exit 1', async () => {
    const run = await runCli(['explain', '--config', file, 'GET', '/api/x', '--admin', tollgate.adminUrl, '--json'], { TOLLGATE_ADMIN_TOKEN: 'wrong-token-0123456789' });
    assert.equal(run.code, 1);
    const e = JSON.parse(run.stdout);
    assert.equal(e.route, 'api');
    assert.match(e.admin.error, /ADMIN_UNAUTHORIZED/);
    assert.match(run.stderr, /tollgate explain: ADMIN_UNAUTHORIZED/);
  });
});
