import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { openWebSocket, rawConnect, request, statuses } from '../helpers/http.js';
import { CLI, serveCli, type ServingCli } from '../helpers/process.js';
import { writeLinkedPolicy, writePolicy } from '../helpers/tollgate.js';
import { startEchoUpstream, startGatedUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { nextEvent, withDeadline } from '../helpers/wait.js';

const policy = (upstream: string, limit: number): string => `upstream: ${upstream}
routes:
  - id: r
    match: { path: /r }
    limits:
      - { by: ip, limit: ${limit}, window: 1m }
`;

/** Resolves true if a TCP connection to `port` is refused (bounded: a listener that hangs the SYN fails the wait). */
function refused(port: number): Promise<boolean> {
  const socket = net.connect({ port, host: '127.0.0.1' });
  const outcome = new Promise<boolean>((resolve) => {
    socket.once('connect', () => resolve(false));
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
  });
  return withDeadline(outcome, 5_000, `a connection attempt to :${port} to be accepted or refused`).finally(() => socket.destroy());
}

describe('process lifecycle', () => {
  let upstream: EchoUpstream;
  const running: ServingCli[] = [];

  before(async () => {
    upstream = await startEchoUpstream();
  });
  after(async () => {
    await Promise.all(running.map((cli) => cli.stop()));
    await upstream.close();
  });

  it('SIGTERM drains: not ready, no new connections, in-flight request finishes, open WebSocket closed with 1001, exit 0', async (t) => {
    // Holds /slow until released: in flight for as long as the test needs.
    const gated = await startGatedUpstream({ webSockets: true });
    t.after(() => gated.close());
    // A drain timeout far above the test's runtime: reaching it shows up as a drain_timeout line.
    const cli = await serveCli(['--config', writePolicy(policy(gated.url, 100)), '--drain-timeout', '30s']);
    running.push(cli);
    const handshake = await openWebSocket(`ws://127.0.0.1:${cli.port}/ws/drain`);
    assert.ok('ws' in handshake, 'upgraded');
    const wsClosed = nextEvent(handshake.ws, 'close', { timeoutMs: 10_000, what: 'the 1001 close frame at the start of the drain' });
    void wsClosed.catch(() => {}); // awaited below; a rejection before then must not go unhandled
    const slow = request(cli.url, '/slow');
    await gated.waitForHeld(1);
    cli.signal('SIGTERM');
    await cli.waitForLog((l) => l.event === 'draining');

    assert.equal((await request(cli.adminUrl, '/readyz')).status, 503, 'not ready while draining');
    assert.equal((await request(cli.adminUrl, '/healthz')).status, 200, 'still alive while draining');
    assert.equal(await refused(cli.port), true, 'new connections are refused');
    gated.release();
    const slowReply = await slow;
    assert.equal(slowReply.status, 200, 'the in-flight request finished');

    // The WebSocket is told to go at the start of the drain, so the client reconnects elsewhere,
    // and the drain ends with the in-flight request rather than at the drain timeout.
    const [code, reason] = await wsClosed;
    assert.deepEqual([code, String(reason)], [1001, 'server shutting down']);
    assert.deepEqual(await cli.waitForExit(), { code: 0, signal: null });
    assert.ok(cli.logs.some((l) => l.event === 'stopped'));
    assert.ok(!cli.logs.some((l) => l.event === 'drain_timeout'));
    const summary = cli.logs.filter((l) => l.event === 'websocket_drain');
    assert.deepEqual(summary.map((l) => [l.tunnels, l.destroyed]), [[1, 0]]);
  });

  it('SIGTERM exits 0 even when the reader of its logs went away first (a broken stdout pipe)', async () => {
    const file = writePolicy(policy(upstream.url, 5));
    const child = spawn(process.execPath, [CLI, 'serve', '--config', file, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const lines = createInterface({ input: child.stdout });
      await withDeadline(new Promise<void>((resolve) => lines.on('line', (line) => line.includes('"listener":"proxy"') && resolve())), 10_000, 'the proxy listening line');
      // As `tollgate serve | tail` when the whole group gets SIGTERM: the log reader dies first.
      lines.close();
      child.stdout.destroy();
      child.kill('SIGTERM');
      assert.equal(await withDeadline(exited, 10_000, 'tollgate to exit after SIGTERM with its stdout closed'), 0);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('SIGHUP reloads an edited limit', async () => {
    // The config is a symlink to a file in another directory: editing the target is invisible
    // to the directory watch, so only SIGHUP can pick the edit up.
    const { link, write } = writeLinkedPolicy(policy(upstream.url, 1));
    const cli = await serveCli(['--config', link]);
    running.push(cli);
    assert.deepEqual(await statuses(cli.url, '/r', 2), [200, 429]);
    write(policy(upstream.url, 5));
    cli.signal('SIGHUP');
    const reloaded = await cli.waitForLog((l) => l.event === 'config_reloaded');
    assert.equal(reloaded.trigger, 'sighup');
    // Counts survive a reload: 1 used of the new 5.
    const reply = await request(cli.url, '/r');
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['x-ratelimit-limit'], '5');
    assert.equal(reply.headers['x-ratelimit-remaining'], '3');

    // An invalid edit is reported as FILE:LINE:COL and the running policy stays.
    write(policy(upstream.url, 5).replace('limits:', 'limts:'));
    cli.signal('SIGHUP');
    const failed = await cli.waitForLog((l) => l.event === 'config_reload_failed');
    assert.ok(String(failed.msg).startsWith(`${link}:5:5 `), String(failed.msg));
    assert.match(String(failed.msg), /limts/);
    const still = await request(cli.url, '/r');
    assert.equal(still.status, 200);
    assert.equal(still.headers['x-ratelimit-limit'], '5');
    assert.equal((await request(cli.adminUrl, '/readyz')).status, 200, 'still ready on the old policy');
  });

  it('slowloris: clients that stall or trickle the request headers get 408 after --headers-timeout', async () => {
    const cli = await serveCli(['--config', writePolicy(policy(upstream.url, 100)), '--headers-timeout', '1s']);
    running.push(cli);
    const seenBefore = upstream.seen.length;
    const stalled = await rawConnect(cli.port);
    stalled.socket.write('GET /r HTTP/1.1\r\nHost: t\r\nX-Slow: ');
    // One header byte every 200ms: each byte is progress, but the headers never complete.
    const trickling = await rawConnect(cli.port);
    trickling.socket.write('GET /r HTTP/1.1\r\n');
    const trickle = setInterval(() => trickling.socket.writable && trickling.socket.write('x'), 200);
    try {
      // 10 s: room for a loaded box past the 1 s setting, well below Node's default headers
      // timeout (60 s), so a missing setting fails here.
      const answers = await Promise.all([stalled.closed(10_000), trickling.closed(10_000)]);
      for (const answer of answers) assert.match(answer, /^HTTP\/1\.1 408 /);
    } finally {
      clearInterval(trickle);
    }
    assert.equal(upstream.seen.length, seenBefore);
  });
});
