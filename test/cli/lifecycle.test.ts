import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { serveCli, type ServingCli } from '../helpers/process.js';
import { writePolicy } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { rawConnect, request, statuses } from '../proxy/client.js';

const policy = (upstream: string, limit: number): string => `upstream: ${upstream}
routes:
  - id: r
    match: { path: /r }
    limits:
      - { by: ip, limit: ${limit}, window: 1m }
`;

/** Resolves true if a TCP connection to `port` is refused. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
  });
}

describe('process lifecycle', () => {
  let upstream: EchoUpstream;
  const running: ServingCli[] = [];

  before(async () => {
    upstream = await startEchoUpstream();
    upstream.behaviour.set('/slow', { delayMs: 600 });
  });
  after(async () => {
    await Promise.all(running.map((cli) => cli.stop()));
    await upstream.close();
  });

  it('SIGTERM drains: not ready, no new connections, in-flight request finishes, open WebSocket closed with 1001, exit 0', async () => {
    // A drain timeout far above the test's runtime: reaching it shows up as a drain_timeout line.
    const cli = await serveCli(['--config', writePolicy(policy(upstream.url, 100)), '--drain-timeout', '30s']);
    running.push(cli);
    const ws = new WebSocket(`ws://127.0.0.1:${cli.port}/ws/drain`);
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    const wsClosed = new Promise<[number, string]>((resolve) => ws.once('close', (code, reason) => resolve([code, reason.toString()])));

    const slow = request(cli.url, '/slow');
    // The slow request is in flight once the upstream has it.
    while (!upstream.seen.some((s) => s.url === '/slow')) await new Promise((r) => setTimeout(r, 10));
    cli.signal('SIGTERM');
    await cli.waitForLog((l) => l.event === 'draining');

    assert.equal((await fetch(`${cli.adminUrl}/readyz`)).status, 503, 'not ready while draining');
    assert.equal((await fetch(`${cli.adminUrl}/healthz`)).status, 200, 'still alive while draining');
    assert.equal(await refused(cli.port), true, 'new connections are refused');
    const slowReply = await slow;
    assert.equal(slowReply.status, 200, 'the in-flight request finished');

    // The WebSocket is told to go at the start of the drain, so the client reconnects elsewhere,
    // and the drain ends with the in-flight request rather than at the drain timeout.
    assert.deepEqual(await wsClosed, [1001, 'server shutting down']);
    const exit = await cli.exited;
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.ok(cli.logs.some((l) => l.event === 'stopped'));
    assert.ok(!cli.logs.some((l) => l.event === 'drain_timeout'));
    const summary = cli.logs.filter((l) => l.event === 'websocket_drain');
    assert.deepEqual(summary.map((l) => [l.tunnels, l.destroyed]), [[1, 0]]);
  });

  it('SIGHUP reloads an edited limit', async () => {
    // The config is a symlink to a file in another directory: editing the target is invisible
    // to the directory watch, so only SIGHUP can pick the edit up.
    const realDir = mkdtempSync(path.join(tmpdir(), 'tollgate-real-'));
    const real = path.join(realDir, 'real.yaml');
    writeFileSync(real, policy(upstream.url, 1));
    const linkDir = mkdtempSync(path.join(tmpdir(), 'tollgate-link-'));
    mkdirSync(linkDir, { recursive: true });
    const link = path.join(linkDir, 'policies.yaml');
    symlinkSync(real, link);

    const cli = await serveCli(['--config', link]);
    running.push(cli);
    assert.deepEqual(await statuses(cli.url, '/r', 2), [200, 429]);
    writeFileSync(real, policy(upstream.url, 5));
    cli.signal('SIGHUP');
    const reloaded = await cli.waitForLog((l) => l.event === 'config_reloaded');
    assert.equal(reloaded.trigger, 'sighup');
    // Counts survive a reload: 1 used of the new 5.
    const reply = await request(cli.url, '/r');
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['x-ratelimit-limit'], '5');
    assert.equal(reply.headers['x-ratelimit-remaining'], '3');

    // An invalid edit is reported as FILE:LINE:COL and the running policy stays.
    writeFileSync(real, policy(upstream.url, 5).replace('limits:', 'limts:'));
    cli.signal('SIGHUP');
    const failed = await cli.waitForLog((l) => l.event === 'config_reload_failed');
    assert.ok(String(failed.msg).startsWith(`${link}:5:5 `), String(failed.msg));
    assert.match(String(failed.msg), /limts/);
    const still = await request(cli.url, '/r');
    assert.equal(still.status, 200);
    assert.equal(still.headers['x-ratelimit-limit'], '5');
    assert.equal((await fetch(`${cli.adminUrl}/readyz`)).status, 200, 'still ready on the old policy');
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
      // Bounded well below Node's default headers timeout, so a missing setting fails here.
      const answers = await Promise.race([
        Promise.all([stalled.closed, trickling.closed]),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('still open after 5s')), 5000).unref()),
      ]);
      for (const answer of answers) assert.match(answer, /^HTTP\/1\.1 408 /);
    } finally {
      clearInterval(trickle);
    }
    assert.equal(upstream.seen.length, seenBefore);
  });
});
