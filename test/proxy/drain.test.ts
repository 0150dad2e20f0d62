import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, it } from 'node:test';
import { request } from '../helpers/http.js';
import { startInFrontOf } from '../helpers/tollgate.js';
import { startGatedUpstream, startUpstream } from '../helpers/upstream.js';
import { WAIT_MS, withDeadline } from '../helpers/wait.js';

/**
 * Far above any test's runtime: a drain that ran into it would fail the test's own
 * WAIT_MS deadline first (and log drain_timeout).
 */
const DRAIN_TIMEOUT_MS = 30 * 1000; // 30s

// Load balancers and SDKs keep connections alive; a drain must not wait for them to idle out.
describe('draining with keep-alive clients', () => {
  it('an in-flight request finishes with Connection: close and the drain ends without waiting for the timeout', async (t) => {
    const tg = await startInFrontOf(await startGatedUpstream(), 'routes: []\n');
    const { upstream } = tg;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.after(async () => {
      agent.destroy();
      await tg.close();
    });
    // Warm the keep-alive connection first, so the drain finds a reused socket busy.
    const warm = await request(tg.url, '/warm', { agent });
    assert.equal(warm.headers.connection, 'keep-alive');
    const slow = request(tg.url, '/slow', { agent });
    await upstream.waitForHeld(1);
    const drained = tg.tollgate.shutdown(DRAIN_TIMEOUT_MS);
    upstream.release();
    const reply = await slow;
    assert.equal(reply.status, 200);
    assert.equal(reply.headers.connection, 'close', 'the client is told not to reuse the connection');
    await withDeadline(drained, WAIT_MS, 'the drain to end once the in-flight request did');
    assert.deepEqual(tg.logs.events('drain_timeout'), []);
    assert.equal(tg.logs.events('stopped').length, 1);
  });
});

describe('draining a response that started before the drain', () => {
  it('closes its kept-alive connection once the body ends, without waiting for the drain timeout', async (t) => {
    let finishStream: () => void = () => assert.fail('the upstream never got the request');
    // Sends its headers at once and ends the body only when the test says so.
    const streaming = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first ');
      finishStream = () => res.end('last');
    });
    const tg = await startInFrontOf(streaming, 'routes: []\n');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.after(async () => {
      agent.destroy();
      await tg.close();
    });
    let drained: Promise<void> | undefined;
    const body = new Promise<{ connection: string | undefined; text: string }>((resolve, reject) => {
      http
        .get(`${tg.url}/stream`, { agent }, (res) => {
          let text = '';
          res.setEncoding('utf8').on('data', (c: string) => {
            text += c;
            if (text === 'first ') {
              // Headers (keep-alive) are out; now drain, then let the body finish.
              drained = tg.tollgate.shutdown(DRAIN_TIMEOUT_MS);
              setImmediate(finishStream);
            }
          });
          res.on('end', () => resolve({ connection: res.headers.connection, text }));
          res.on('error', reject);
        })
        .on('error', reject);
    });
    const reply = await withDeadline(body, WAIT_MS, 'the streamed body');
    assert.deepEqual(reply, { connection: 'keep-alive', text: 'first last' });
    assert.ok(drained !== undefined);
    await withDeadline(drained, WAIT_MS, 'the drain to end once the body did');
    assert.deepEqual(tg.logs.events('drain_timeout'), []);
    assert.equal(tg.logs.events('stopped').length, 1);
  });
});
