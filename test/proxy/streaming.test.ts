/**
 * Streaming paths of the forwarder: backpressure on a slow client, a client that
 * leaves before the upstream answers, an upstream that dies mid-body, a streamed
 * request body.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startTollgate, type TestTollgate } from '../helpers/tollgate.js';

const BIG = Buffer.alloc(8 * 1024 * 1024, 'tollgate-');

describe('forwarder streaming', () => {
  let upstream: http.Server;
  let tg: TestTollgate;
  const upstreamClosed: string[] = [];

  before(async () => {
    upstream = http.createServer((req, res) => {
      res.on('close', () => {
        if (!res.writableFinished) upstreamClosed.push(req.url ?? '');
      });
      if (req.url === '/big') {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG.length });
        res.end(BIG);
      } else if (req.url === '/hang') {
        // never answers: the client will leave
      } else if (req.url === '/die-mid-body') {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 1_000_000 });
        res.write('partial');
        setTimeout(() => res.socket?.destroy(), 20);
      } else if (req.url === '/upload') {
        const hash = createHash('sha256');
        req.on('data', (c: Buffer) => hash.update(c));
        req.on('end', () => res.end(hash.digest('hex')));
      } else {
        res.end('ok');
      }
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const port = (upstream.address() as AddressInfo).port;
    tg = await startTollgate('routes:\n  - id: all\n    match: { path: /* }\n    limits: [{ by: ip, limit: 1000, window: 1m }]\n', {
      upstream: `http://127.0.0.1:${port}`,
    });
  });

  after(async () => {
    await tg.close();
    upstream.closeAllConnections();
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
  });

  it('a slow reader gets a large body intact (backpressure pauses the upstream, then resumes)', async () => {
    const body = await new Promise<Buffer>((resolve, reject) => {
      http.get(`${tg.url}/big`, (res) => {
        const chunks: Buffer[] = [];
        res.pause();
        // Let Tollgate's socket buffer fill before reading.
        setTimeout(() => {
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve(Buffer.concat(chunks)));
          res.resume();
        }, 200);
        res.on('error', reject);
      });
    });
    assert.equal(body.length, BIG.length);
    assert.ok(body.equals(BIG));
  });

  it('a client that leaves before the answer cancels the upstream request', async () => {
    const req = http.get(`${tg.url}/hang`);
    req.on('error', () => {});
    await new Promise((r) => setTimeout(r, 100));
    req.destroy();
    const deadline = Date.now() + 3000;
    while (!upstreamClosed.includes('/hang') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(upstreamClosed.includes('/hang'), 'upstream saw the request cancelled');
    const inflight = await (await fetch(`${tg.adminUrl}/metrics`)).text();
    assert.match(inflight, /tollgate_inflight_requests 0/);
  });

  it('an upstream that dies mid-body cuts the client connection instead of hanging it, and is logged', async () => {
    let status: number | undefined;
    const outcome = await new Promise<string>((resolve) => {
      http.get(`${tg.url}/die-mid-body`, (res) => {
        status = res.statusCode;
        res.on('data', () => {});
        res.on('end', () => resolve('ended'));
        res.on('error', () => resolve('error'));
        res.on('aborted', () => resolve('aborted'));
      }).on('error', () => resolve('error'));
    });
    assert.equal(status, 200);
    assert.notEqual(outcome, 'ended');
    const logged = tg.logs.events('upstream_error');
    assert.equal(logged.length, 1, JSON.stringify(tg.logs.lines));
    assert.equal(logged[0].status, 200);
    assert.equal(logged[0].route, 'all');
  });

  it('a streamed (chunked) request body reaches the upstream intact', async () => {
    const expected = createHash('sha256').update(BIG).digest('hex');
    const answer = await new Promise<string>((resolve, reject) => {
      const req = http.request(`${tg.url}/upload`, { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve(text));
      });
      req.on('error', reject);
      for (let i = 0; i < BIG.length; i += 256 * 1024) req.write(BIG.subarray(i, i + 256 * 1024));
      req.end();
    });
    assert.equal(answer, expected);
  });
});
