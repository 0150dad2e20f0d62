/**
 * SIGHUP on the real process, as a pod runs it (`node dist/cli.js serve`, JSON logs on
 * stdout). Each test starts its own process on a policy that is a symlink into another
 * directory: the directory watch cannot see edits of the target, so only SIGHUP can
 * trigger the reloads observed here.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test, type TestContext } from 'node:test';
import { request, statuses } from '../helpers/http.js';
import { sampleValue } from '../helpers/metrics.js';
import { serveCli, type ServingCli } from '../helpers/process.js';
import { writeLinkedPolicy } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { eventually } from '../helpers/wait.js';

const policy = (limit: number) => `
routes:
  - id: api
    match: { path: /api/* }
    limits:
      - { by: ip, limit: ${limit}, window: 1m }
`;

describe('SIGHUP reloads a running process', () => {
  let upstream: EchoUpstream;
  before(async () => {
    upstream = await startEchoUpstream();
  });
  after(() => upstream.close());

  /** `tollgate serve` on a linked policy holding `text`, killed after the test. */
  async function serve(t: TestContext, text: string): Promise<{ cli: ServingCli; write(text: string): void }> {
    const linked = writeLinkedPolicy(text);
    const cli = await serveCli(['--config', linked.link, '--upstream', upstream.url, '--drain-timeout', '2s']);
    t.after(() => cli.stop());
    return { cli, write: linked.write };
  }

  const reloads = async (cli: ServingCli, result: 'success' | 'failure') =>
    sampleValue((await request(cli.adminUrl, '/metrics')).body, 'tollgate_config_reloads_total', { result }) ?? 0;

  test('a valid edit applies on SIGHUP, keeping the counts', async (t) => {
    const { cli, write } = await serve(t, policy(2));
    assert.deepEqual(await statuses(cli.url, '/api/a', 3), [200, 200, 429]);
    const next = policy(4);
    write(next);
    cli.signal('SIGHUP');
    const reloaded = await cli.waitForLog((l) => l.event === 'config_reloaded');
    assert.equal(reloaded.trigger, 'sighup');
    const text = (await request(cli.adminUrl, '/metrics')).body;
    assert.equal(sampleValue(text, 'tollgate_config_reloads_total', { result: 'success' }), 1);
    assert.equal(sampleValue(text, 'tollgate_config_info', { hash: createHash('sha256').update(next).digest('hex') }), 1);
    assert.equal(sampleValue(text, 'tollgate_config_valid'), 1);
    // 2 of the new 4 were used before the reload.
    assert.deepEqual(await statuses(cli.url, '/api/a', 3), [200, 200, 429]);
    assert.equal(cli.exit(), undefined, 'SIGHUP must not end the process');
  });

  test('an invalid edit on SIGHUP is logged FILE:LINE:COL and kept out; the process stays ready', async (t) => {
    const { cli, write } = await serve(t, policy(2));
    assert.deepEqual(await statuses(cli.url, '/api/b', 3), [200, 200, 429]);
    write(policy(4).replace('window: 1m', 'window: soon'));
    cli.signal('SIGHUP');
    const failed = await cli.waitForLog((l) => l.event === 'config_reload_failed');
    assert.match(String(failed.msg), /policies\.yaml:6:\d+ /);
    assert.equal(failed.trigger, 'sighup');
    await eventually(async () => (await reloads(cli, 'failure')) === 1, { what: 'the failed reload counted' });
    assert.equal(await reloads(cli, 'success'), 0);
    assert.equal(sampleValue((await request(cli.adminUrl, '/metrics')).body, 'tollgate_config_valid'), 0);
    assert.equal((await request(cli.adminUrl, '/readyz')).status, 200);
    assert.equal((await request(cli.url, '/api/b')).status, 429, 'the old policy (limit 2, used up) still applies');
  });

  test('SIGTERM still drains and exits 0 after a reload', async (t) => {
    const { cli, write } = await serve(t, policy(2));
    write(policy(3));
    cli.signal('SIGHUP');
    await cli.waitForLog((l) => l.event === 'config_reloaded');
    cli.signal('SIGTERM');
    assert.deepEqual(await cli.waitForExit(), { code: 0, signal: null });
    assert.equal(cli.logs.filter((l) => l.event === 'stopped').length, 1, JSON.stringify(cli.logs.slice(-3)));
  });
});
