import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { runCli, serveCli, spawnCli, type ServingCli } from '../helpers/process.js';
import { writePolicy } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { request, statuses } from '../helpers/http.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const BAD_POLICY = `upstream: http://127.0.0.1:3000
identity:
  header: x-user-id
routes:
  - id: api
    match: { path: /api/* }
    limts:
      - { by: ip, limit: 10, window: 1m }
  - id: other
    match: { path: /other }
    limits:
      - { by: user, limit: 10, window: 1m, for: anonymous }
`;

/** A limit read from the environment (block style: a bare `\${VAR}` inside `{ }` is not YAML). */
const IP_LIMIT_POLICY = (upstream: string): string => `upstream: ${upstream}
routes:
  - id: a
    match: { path: /a }
    limits:
      - by: ip
        limit: \${IP_LIMIT}
        window: 1m
`;

/**
 * Valid to the schema, but its RSA publicKey cannot verify the ES256 it lists: only
 * compiling the policy finds that. The key's value (`|`) is at 5:16.
 */
const KEY_MISMATCH = path.join(ROOT, 'test/fixtures/config/jwt_public_key_wrong_algorithm.yaml');
const KEY_MISMATCH_ISSUE = { file: KEY_MISMATCH, line: 5, col: 16, message: 'identity.jwt.publicKey (rsa 2048 bits) cannot verify ES256' };

/** `FILE:LINE:COL message` lines of stderr, parsed. */
function issues(stderr: string): Array<{ file: string; line: number; col: number; message: string }> {
  return stderr
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const match = /^(.+):(\d+):(\d+) (.+)$/.exec(l);
      assert.ok(match, `not FILE:LINE:COL message: ${l}`);
      return { file: match[1], line: Number(match[2]), col: Number(match[3]), message: match[4] };
    });
}

describe('tollgate validate', () => {
  it('exits 0 on the shipped policies.yaml', async () => {
    const result = await runCli(['validate', path.join(ROOT, 'policies.yaml')]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /valid/);
  });

  it('exits 1 and prints every problem as FILE:LINE:COL message', async () => {
    const file = writePolicy(BAD_POLICY);
    const result = await runCli(['validate', file]);
    assert.equal(result.code, 1);
    const found = issues(result.stderr);
    assert.equal(found.length, 2, result.stderr);
    assert.deepEqual({ ...found[0], message: undefined }, { file, line: 7, col: 5, message: undefined });
    assert.match(found[0].message, /unknown key "limts"/);
    assert.deepEqual({ ...found[1], message: undefined }, { file, line: 12, col: 49, message: undefined });
    assert.match(found[1].message, /anonymous/);
  });

  it('compiles the policy too: a public key that cannot verify the listed algorithm exits 1 at its line', async () => {
    const result = await runCli(['validate', KEY_MISMATCH]);
    assert.equal(result.code, 1, result.stdout);
    assert.deepEqual(issues(result.stderr), [KEY_MISMATCH_ISSUE]);
  });

  it('a file without upstream is valid: serve may get it from --upstream', async () => {
    const result = await runCli(['validate', writePolicy('routes: []\n')]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /valid/);
  });

  it('exits 1 for a file that cannot be read, and names it', async () => {
    const result = await runCli(['validate', '/nonexistent/policies.yaml']);
    assert.equal(result.code, 1);
    assert.equal(issues(result.stderr)[0].file, '/nonexistent/policies.yaml');
  });

  it('expands ${VAR} from the environment; an unset one is an error at its line', async () => {
    const file = writePolicy(IP_LIMIT_POLICY('http://127.0.0.1:3000'));
    const unset = await runCli(['validate', file]);
    assert.equal(unset.code, 1);
    const [issue] = issues(unset.stderr);
    assert.equal(issue.line, 7);
    assert.match(issue.message, /IP_LIMIT/);
    assert.equal((await runCli(['validate', file], { IP_LIMIT: '7' })).code, 0);
  });

  it('exits 2 with the usage on an unknown flag', async () => {
    const result = await runCli(['serve', '--bogus']);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /Usage:/);
  });
});

describe('tollgate serve', () => {
  let upstreams: EchoUpstream[];
  const running: ServingCli[] = [];

  before(async () => {
    upstreams = await Promise.all([startEchoUpstream(), startEchoUpstream(), startEchoUpstream()]);
  });
  after(async () => {
    await Promise.all(running.map((cli) => cli.stop()));
    await Promise.all(upstreams.map((u) => u.close()));
  });

  it('exits 1 on a bad policy, printing FILE:LINE:COL, without listening', async () => {
    const file = writePolicy(BAD_POLICY);
    const cli = spawnCli(['serve', '--config', file, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0']);
    const exit = await cli.waitForExit();
    assert.equal(exit.code, 1);
    const found = issues(cli.stderr());
    assert.deepEqual(
      found.map((i) => [i.file, i.line, i.col]),
      [
        [file, 7, 5],
        [file, 12, 49],
      ],
    );
    assert.equal(cli.logs.filter((l) => l.event === 'listening').length, 0, 'nothing started half-configured');
  });

  it('exits 1 on a policy that cannot compile, at the same FILE:LINE:COL as validate', async () => {
    const cli = spawnCli(['serve', '--config', KEY_MISMATCH, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0']);
    const exit = await cli.waitForExit();
    assert.equal(exit.code, 1);
    assert.deepEqual(issues(cli.stderr()), [KEY_MISMATCH_ISSUE]);
    assert.equal(cli.logs.filter((l) => l.event === 'listening').length, 0);
  });

  it('exits 1 naming the address when the listen port is taken, instead of hanging with the admin port open', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const file = writePolicy(`upstream: ${upstreams[0].url}\nroutes: []\n`);
      const cli = spawnCli(['serve', '--config', file, '--listen', `127.0.0.1:${port}`, '--admin', '127.0.0.1:0']);
      // The admin listener starts first; from then on the process must exit, not hang with
      // it open. (How long node takes to get there is a matter of the box's load.)
      const exit = await cli
        .waitForLog((l) => l.event === 'listening' && l.listener === 'admin')
        .then(() => cli.waitForExit(5_000))
        .finally(() => cli.stop());
      assert.equal(exit.code, 1);
      assert.match(cli.stderr(), new RegExp(`EADDRINUSE.*127\\.0\\.0\\.1:${port}`));
    } finally {
      taken.close();
    }
  });

  it('--listen/--admin 127.0.0.1:0 log the bound ports; it proxies, limits and answers health checks', async () => {
    const file = writePolicy(IP_LIMIT_POLICY(upstreams[0].url));
    const cli = await serveCli(['--config', file], { IP_LIMIT: '2' });
    running.push(cli);
    const listening = cli.logs.find((l) => l.event === 'listening' && l.listener === 'proxy');
    assert.equal(listening?.host, '127.0.0.1');
    assert.ok(cli.port > 0 && cli.adminPort > 0 && cli.port !== cli.adminPort);
    const reply = await request(cli.url, '/a?x=1');
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['x-ratelimit-limit'], '2', 'the limit came from ${IP_LIMIT}');
    assert.equal(upstreams[0].seen.at(-1)?.url, '/a?x=1');
    assert.deepEqual(await statuses(cli.url, '/a', 2), [200, 429]);
    assert.equal((await request(cli.adminUrl, '/healthz')).status, 200);
    assert.equal((await request(cli.adminUrl, '/readyz')).status, 200);
  });

  it('settings precedence: flag over environment over file', async () => {
    const [fromFile, fromEnv, fromFlag] = upstreams;
    const file = writePolicy(`upstream: ${fromFile.url}\nroutes: []\n`);
    const otherFile = writePolicy(`upstream: ${fromFile.url}\nroutes:\n  - id: other\n    match: { path: /which }\n    limits: [{ by: ip, limit: 9, window: 1m }]\n`);
    /** Which upstream a request through `cli` reaches, and which policy file it runs. */
    const probe = async (cli: ServingCli): Promise<{ upstream: number; limit: unknown }> => {
      const counts = upstreams.map((u) => u.seen.length);
      const reply = await request(cli.url, '/which');
      assert.equal(reply.status, 200);
      return { upstream: upstreams.findIndex((u, i) => u.seen.length > counts[i]), limit: reply.headers['x-ratelimit-limit'] };
    };

    const fileOnly = await serveCli(['--config', file]);
    running.push(fileOnly);
    assert.deepEqual(await probe(fileOnly), { upstream: 0, limit: undefined });

    // Environment only: listen addresses and config from TOLLGATE_* too.
    const envOnly = await serveCli(
      [],
      { TOLLGATE_CONFIG: otherFile, TOLLGATE_UPSTREAM: fromEnv.url, TOLLGATE_LISTEN: '127.0.0.1:0', TOLLGATE_ADMIN: '127.0.0.1:0' },
      { ephemeralPorts: false },
    );
    running.push(envOnly);
    assert.deepEqual(await probe(envOnly), { upstream: 1, limit: '9' });

    // LOG_LEVEL=error would hide the `listening` lines serveCli waits for; --log-level wins.
    const flags = await serveCli(['--config', file, '--upstream', fromFlag.url, '--log-level', 'info'], {
      TOLLGATE_CONFIG: otherFile,
      TOLLGATE_UPSTREAM: fromEnv.url,
      LOG_LEVEL: 'error',
    });
    running.push(flags);
    assert.deepEqual(await probe(flags), { upstream: 2, limit: undefined });
  });
});
