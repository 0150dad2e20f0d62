import assert from 'node:assert/strict';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request as undiciRequest } from 'undici';
import { BodyTooLargeError, limitBody, readBody, type BodyRead } from '../../src/guards/stream.js';

const DEADLINE_MS = 5_000;

/** Rejects after `ms` so a hung stream fails the test instead of stalling the suite. */
function within<T>(promise: Promise<T>, what: string, ms = DEADLINE_MS): Promise<T> {
  return Promise.race([promise, sleep(ms).then(() => Promise.reject(new Error(`${what}: no result within ${ms} ms`)))]);
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

async function close(server: http.Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/**
 * Sends a chunked POST in `chunks` pieces of `size` bytes, `gapMs` apart, on a raw socket;
 * resolves with everything the server answered once it closes or `done` says so.
 */
function sendChunked(port: number, chunks: number, size: number, gapMs = 5, options: { abortAfter?: number } = {}): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => resolve(received));
    socket.once('connect', async () => {
      socket.write('POST /upload HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\ncontent-type: application/octet-stream\r\n\r\n');
      for (let i = 0; i < chunks && !socket.destroyed; i++) {
        if (options.abortAfter === i) {
          socket.destroy();
          return;
        }
        socket.write(`${size.toString(16)}\r\n${'x'.repeat(size)}\r\n`);
        await sleep(gapMs);
      }
      if (!socket.destroyed) socket.write('0\r\n\r\n');
    });
  });
}

describe('readBody over a real socket', { timeout: 30_000 }, () => {
  const results: BodyRead[] = [];
  let server: http.Server;
  let port: number;
  let limit = 1000;

  before(async () => {
    ({ server, port } = await listen((req, res) => {
      void readBody(req, limit).then((result) => {
        results.push(result);
        if (result.kind === 'complete') res.end(`got ${result.body.length}`);
        else if (result.kind === 'too_large') {
          res.shouldKeepAlive = false;
          res.writeHead(413).end();
        }
      });
    }));
  });
  after(() => close(server));

  it('buffers a chunked body exactly, up to the limit', async () => {
    results.length = 0;
    limit = 1000;
    const reply = await within(sendChunked(port, 10, 100), 'complete body');
    assert.match(reply, /^HTTP\/1.1 200/);
    assert.match(reply, /got 1000/);
    assert.equal(results[0].kind, 'complete');
    if (results[0].kind === 'complete') assert.equal(results[0].body.toString(), 'x'.repeat(1000));
  });

  it('stops at the limit without waiting for the rest, and answers 413', async () => {
    results.length = 0;
    limit = 250;
    const reply = await within(sendChunked(port, 50, 100, 10), 'too large');
    assert.match(reply, /^HTTP\/1.1 413/);
    assert.deepEqual(results, [{ kind: 'too_large' }]);
  });

  it('a client that leaves mid-body is aborted', async () => {
    results.length = 0;
    limit = 10_000;
    await within(sendChunked(port, 10, 100, 5, { abortAfter: 3 }), 'abort');
    for (let waited = 0; results.length === 0 && waited < DEADLINE_MS; waited += 10) await sleep(10);
    assert.deepEqual(results, [{ kind: 'aborted' }]);
  });
});

describe('limitBody between a client and an upstream (undici)', { timeout: 30_000 }, () => {
  interface Seen {
    bytes: number;
    ended: boolean;
    aborted: boolean;
  }
  const seen: Seen[] = [];
  let upstream: http.Server;
  let upstreamPort: number;
  let proxy: http.Server;
  let proxyPort: number;
  let limit = 1000;

  before(async () => {
    ({ server: upstream, port: upstreamPort } = await listen((req, res) => {
      const entry: Seen = { bytes: 0, ended: false, aborted: false };
      seen.push(entry);
      req.on('data', (c: Buffer) => (entry.bytes += c.length));
      req.on('end', () => {
        entry.ended = true;
        res.end(`upstream got ${entry.bytes}`);
      });
      req.on('error', () => (entry.aborted = true));
      req.on('aborted', () => (entry.aborted = true));
      req.on('close', () => {
        if (!entry.ended) entry.aborted = true;
      });
    }));
    ({ server: proxy, port: proxyPort } = await listen((req, res) => {
      let exceeded = false;
      const body = limitBody(req, limit, () => (exceeded = true));
      undiciRequest(`http://127.0.0.1:${upstreamPort}/upload`, { method: 'POST', body }).then(
        async (answer) => res.writeHead(answer.statusCode).end(await answer.body.text()),
        (error: Error) => {
          res.shouldKeepAlive = false;
          if (exceeded) {
            assert.ok(error instanceof BodyTooLargeError || error.cause instanceof BodyTooLargeError || /exceeds/.test(error.message), String(error));
            res.writeHead(413).end('too large');
          } else res.writeHead(502).end(String(error));
        },
      );
    }));
  });
  after(async () => {
    await close(proxy);
    await close(upstream);
  });

  it('within the limit the upstream receives every byte and the end', async () => {
    seen.length = 0;
    limit = 1000;
    const reply = await within(sendChunked(proxyPort, 10, 100), 'within limit');
    assert.match(reply, /^HTTP\/1.1 200/);
    assert.match(reply, /upstream got 1000/);
    assert.deepEqual(seen, [{ bytes: 1000, ended: true, aborted: false }]);
  });

  it('past the limit the upstream request is aborted, never ended, and the client gets 413', async () => {
    seen.length = 0;
    limit = 350;
    const reply = await within(sendChunked(proxyPort, 30, 100, 10), 'past limit');
    assert.match(reply, /^HTTP\/1.1 413/);
    for (let waited = 0; !(seen[0]?.aborted ?? false) && waited < DEADLINE_MS; waited += 10) await sleep(10);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].ended, false, 'the upstream never saw the body end');
    assert.equal(seen[0].aborted, true);
    assert.ok(seen[0].bytes <= 350, `upstream got ${seen[0].bytes} bytes`);
  });
});
