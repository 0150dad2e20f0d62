/**
 * The admin CLI against a running `tollgate serve`: every command, as a table and as
 * --json, and the exit codes (0 ok, 1 refused or unreachable, 2 usage).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { tokenFile } from '../helpers/admin.js';
import { freePort } from '../helpers/ports.js';
import { runCli, serveCli, type ServingCli } from '../helpers/process.js';
import { writePolicy } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { statuses } from '../helpers/http.js';

const TOKEN = 'cli-admin-token-abcdef0123456789';

const POLICY = `
clientIp:
  trustedProxies: [127.0.0.1/32]
routes:
  - id: api
    match: { path: /api }
    # A log, not aligned windows: counts do not start over at a boundary the test cannot pick.
    algorithm: sliding-log
    limits:
      - { by: ip, limit: 2, window: 1h, block: 5m }
      - { by: header:x-api-key, limit: 100, window: 1h }
`;

describe('tollgate blocks | block | unblock | reset | inspect | top', () => {
  let upstream: EchoUpstream;
  let tollgate: ServingCli;
  let env: Record<string, string>;
  const cli = (...args: string[]) => runCli(args, env);

  before(async () => {
    upstream = await startEchoUpstream();
    tollgate = await serveCli(['--config', writePolicy(POLICY), '--upstream', upstream.url, '--admin-token-file', tokenFile(TOKEN)]);
    env = { TOLLGATE_ADMIN_TOKEN: TOKEN, TOLLGATE_ADMIN: `127.0.0.1:${tollgate.adminPort}` };
  });
  after(async () => {
    await tollgate?.stop();
    await upstream?.close();
  });

  it('block, then blocks and inspect, as tables and as JSON', async () => {
    const blocked = await cli('block', '--route', 'api', '--ip', '10.0.0.1', '--for', '1h', '--reason', 'leaked key');
    assert.equal(blocked.code, 0, blocked.stderr);
    assert.match(blocked.stdout, /^ROUTE +BY +KEY +UNTIL +STRIKE +MANUAL +REASON\napi +ip +10\.0\.0\.1 +\d{4}-\d\d-\d\dT[\d:]+Z +0 +yes +leaked key\n$/);
    const json = await cli('block', '--route', 'api', '--header-value', 'sk_live_cli', '--for', '30m', '--json');
    assert.equal(json.code, 0, json.stderr);
    const [set] = JSON.parse(json.stdout).blocks;
    assert.deepEqual([set.route, set.by, set.manual, set.reason], ['api', 'header:x-api-key', true, '']);
    assert.match(set.key, /^h#/);

    const [table, listed, inspect, inspectJson] = await Promise.all([
      cli('blocks'),
      cli('blocks', '--route', 'api', '--json'),
      cli('inspect', '--route', 'api', '--ip', '10.0.0.1'),
      cli('inspect', '--route', 'api', '--header-value', 'sk_live_cli', '--json'),
    ]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /10\.0\.0\.1 .* yes +leaked key\n/);
    assert.match(table.stdout, /\n2 running blocks\n$/);
    assert.equal(listed.code, 0);
    assert.deepEqual(JSON.parse(listed.stdout).blocks.map((b: { key: string }) => b.key).sort(), ['10.0.0.1', set.key].sort());
    assert.equal(inspect.code, 0, inspect.stderr);
    assert.match(inspect.stdout, /^ROUTE +BY +FOR +KEY +WINDOW +LIMIT +COUNT +REMAINING +RESET +BLOCKED UNTIL +STRIKES +MANUAL +REASON\napi +ip +any +10\.0\.0\.1 +3600s +2 +0 +0 +\S+ +\S+ +0 +yes +leaked key\n$/);
    assert.equal(inspectJson.code, 0);
    assert.deepEqual(JSON.parse(inspectJson.stdout).limits.map((l: { by: string; manual: boolean }) => [l.by, l.manual]), [['header:x-api-key', true]]);
  });

  it('top, unblock and reset, as tables and as JSON', async () => {
    await statuses(tollgate.url, '/api', 5, { headers: { 'x-forwarded-for': '10.0.0.9' } });
    const [top, topJson] = await Promise.all([cli('top'), cli('top', '--route', 'api', '--minutes', '2', '--json')]);
    assert.equal(top.code, 0, top.stderr);
    assert.match(top.stdout, /^ROUTE +BY +KEY +REFUSED\napi +ip +10\.0\.0\.9 +3\n/);
    assert.deepEqual(JSON.parse(topJson.stdout).top[0], { route: 'api', by: 'ip', key: '10.0.0.9', count: 3 });

    const unblock = await cli('unblock', '--route', '*', '--ip', '10.0.0.9');
    assert.equal(unblock.code, 0, unblock.stderr);
    assert.match(unblock.stdout, /^ROUTE +BY +KEY +WAS BLOCKED\napi +ip +10\.0\.0\.9 +yes\n1 block lifted, strikes forgotten; counters kept\n$/);
    const unblockJson = await cli('unblock', '--route', 'api', '--header-value', 'sk_live_cli', '--json');
    assert.deepEqual(JSON.parse(unblockJson.stdout).unblocked.map((u: { wasBlocked: boolean }) => u.wasBlocked), [true]);
    // Counters kept: still over the limit, blocked again at once.
    assert.deepEqual(await statuses(tollgate.url, '/api', 1, { headers: { 'x-forwarded-for': '10.0.0.9' } }), [429]);
    const reset = await cli('reset', '--route', 'api', '--ip', '10.0.0.9');
    assert.equal(reset.code, 0, reset.stderr);
    assert.match(reset.stdout, /api +ip +10\.0\.0\.9 +yes\ncounters, blocks and strikes forgotten\n$/);
    assert.deepEqual(await statuses(tollgate.url, '/api', 1, { headers: { 'x-forwarded-for': '10.0.0.9' } }), [200]);
    const resetJson = await cli('reset', '--route', 'api', '--ip', '10.0.0.9', '--json');
    assert.equal(JSON.parse(resetJson.stdout).reset[0].held, true);
    const empty = await cli('blocks', '--route', 'api', '--admin-token-file', tokenFile(TOKEN));
    assert.equal(empty.code, 0, empty.stderr);
    assert.match(empty.stdout, /10\.0\.0\.1/);
  });

  it('exit 1 with the message when the API refuses or cannot be reached', async () => {
    const [wrongToken, unknownRoute, unknownRouteJson, down] = await Promise.all([
      runCli(['blocks'], { ...env, TOLLGATE_ADMIN_TOKEN: 'wrong' }),
      cli('inspect', '--route', 'nope', '--ip', '10.0.0.1'),
      cli('inspect', '--route', 'nope', '--ip', '10.0.0.1', '--json'),
      freePort().then((port) => cli('blocks', '--admin', `http://127.0.0.1:${port}`)),
    ]);
    assert.equal(wrongToken.code, 1);
    assert.match(wrongToken.stderr, /ADMIN_UNAUTHORIZED \(401\)/);
    assert.equal(wrongToken.stdout, '');
    assert.equal(unknownRoute.code, 1);
    assert.match(unknownRoute.stderr, /ADMIN_BAD_REQUEST \(400\): route: no route "nope"/);
    assert.equal(unknownRouteJson.code, 1);
    assert.equal(JSON.parse(unknownRouteJson.stdout).error.code, 'ADMIN_BAD_REQUEST', '--json prints the envelope too');
    assert.equal(down.code, 1);
    assert.match(down.stderr, /cannot reach the admin API at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/);
  });

  it('exit 2 with the usage on usage errors', async () => {
    const [noRoute, noToken, twoKeys, help] = await Promise.all([
      cli('block', '--ip', '10.0.0.1', '--for', '1h'),
      runCli(['blocks'], { TOLLGATE_ADMIN: env.TOLLGATE_ADMIN }),
      cli('inspect', '--route', 'api', '--ip', '10.0.0.1', '--user', 'u'),
      cli('block', '--help'),
    ]);
    for (const [run, message] of [[noRoute, /--route is required/], [noToken, /no admin token/], [twoKeys, /give one of/]] as const) {
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, message);
      assert.match(run.stderr, /Usage:/);
    }
    assert.equal(help.code, 0);
    assert.match(help.stdout, /tollgate block --route R/);
  });
});
