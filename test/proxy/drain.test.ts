import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startTollgate, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

// Load balancers and SDKs keep connections alive; a drain must not wait for them to idle out.
describe('draining with keep-alive clients', () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

  before(async () => {
    upstream = await startEchoUpstream();
    upstream.behaviour.set('/slow', { delayMs: 300 });
    tg = await startTollgate('upstream: http://127.0.0.1:9\nroutes: []\n', { upstream: upstream.url });
  });
  after(async () => {
    agent.destroy();
    await tg.close();
    await upstream.close();
  });

  it('an in-flight request finishes with Connection: close and the drain ends without waiting for the timeout', async () => {
    // Warm the keep-alive connection first, so the drain finds a reused socket busy.
    const warm = await get('/warm');
    assert.equal(warm.connection, 'keep-alive');
    const slow = get('/slow');
    while (!upstream.seen.some((s) => s.url === '/slow')) await new Promise((r) => setTimeout(r, 5));
    // A drain timeout far above the test's runtime: reaching it shows up as a drain_timeout line.
    const drained = tg.tollgate.shutdown(30_000);
    const reply = await slow;
    assert.equal(reply.status, 200);
    assert.equal(reply.connection, 'close', 'the client is told not to reuse the connection');
    await drained;
    assert.deepEqual(tg.logs.events('drain_timeout'), []);
    assert.equal(tg.logs.events('stopped').length, 1);
  });

  function get(path: string): Promise<{ status: number; connection: string | undefined }> {
    return new Promise((resolve, reject) => {
      http
        .get(`${tg.url}${path}`, { agent }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection }));
        })
        .on('error', reject);
    });
  }
});

describe('draining a response that started before the drain', () => {
  let streaming: http.Server;
  let tg: TestTollgate;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  let finishStream: () => void = () => {};

  before(async () => {
    // Sends its headers at once and ends the body only when the test says so.
    streaming = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first ');
      finishStream = () => res.end('last');
    });
    await new Promise<void>((resolve) => streaming.listen(0, '127.0.0.1', resolve));
    tg = await startTollgate('upstream: http://127.0.0.1:9\nroutes: []\n', { upstream: `http://127.0.0.1:${(streaming.address() as AddressInfo).port}` });
  });
  after(async () => {
    agent.destroy();
    await tg.close();
    streaming.closeAllConnections();
    await new Promise<void>((resolve) => streaming.close(() => resolve()));
  });

  it('closes its kept-alive connection once the body ends, without waiting for the drain timeout', async () => {
    const body = new Promise<{ connection: string | undefined; text: string }>((resolve, reject) => {
      http
        .get(`${tg.url}/stream`, { agent }, (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (c: string) => {
            text += c;
            if (text === 'first ') {
              // Headers (keep-alive) are out; now drain, then let the body finish.
              drained = tg.tollgate.shutdown(30_000);
              setImmediate(finishStream);
            }
          });
          res.on('end', () => resolve({ connection: res.headers.connection, text }));
        })
        .on('error', reject);
    });
    let drained: Promise<void> | undefined;
    const reply = await body;
    assert.deepEqual(reply, { connection: 'keep-alive', text: 'first last' });
    await drained;
    assert.deepEqual(tg.logs.events('drain_timeout'), []);
    assert.equal(tg.logs.events('stopped').length, 1);
  });
});
