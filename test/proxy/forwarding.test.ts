import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { echo, envelope, rawConnect, request, type Reply } from '../helpers/http.js';
import { freePort } from '../helpers/ports.js';
import { startInFrontOf, startTollgate, startWithEcho, type TestTollgate, type TollgateInFront, type TollgateWithEcho } from '../helpers/tollgate.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { eventually } from '../helpers/wait.js';

const POLICY = `
upstream: http://127.0.0.1:9
upstreamTimeout: 200ms
routes:
  - id: limited
    match: { path: /limited/* }
    limits:
      - { by: ip, limit: 100, window: 1m }
  - id: patient
    match: { path: /patient/* }
    upstreamTimeout: 2s
    limits:
      - { by: ip, limit: 100, window: 1m }
  - id: expect
    match: { path: /expect }
    limits:
      - { by: ip, limit: 1, window: 1m }
`;

function assertNoInternals(reply: Reply): void {
  assert.doesNotMatch(reply.body, /\bat .*\(|node:|Error:|ECONNREFUSED|undici|127\.0\.0\.1/, 'no stack traces or internals in the body');
}

describe('forwarding', () => {
  let tg: TollgateWithEcho;

  before(async () => {
    tg = await startWithEcho(POLICY);
    tg.upstream.behaviour.set('/limited/hang', { hang: true });
    tg.upstream.behaviour.set('/patient/slow', { delayMs: 400 });
    tg.upstream.behaviour.set('/status/418', { status: 418 });
  });
  after(() => tg.close());

  it('passes a request matching no route through untouched, minus hop-by-hop headers', async () => {
    const { upstream } = tg;
    const seenBefore = upstream.seen.length;
    const reply = await request(tg.url, '/no/route/here?b=2&a=1&a=%20x', {
      method: 'PATCH',
      body: 'the body, as sent',
      headers: {
        'content-type': 'text/plain',
        'x-custom': 'kept',
        authorization: 'Basic dXNlcjpwdw==',
        connection: 'keep-alive, x-hop-by-name',
        'x-hop-by-name': 'dropped because Connection names it',
        'keep-alive': 'timeout=5',
        'proxy-authorization': 'Basic c2VjcmV0',
        te: 'trailers',
      },
    });
    assert.equal(reply.status, 200);
    assert.equal(upstream.seen.length, seenBefore + 1);
    const seen = echo(reply);
    assert.equal(seen.method, 'PATCH');
    assert.equal(seen.url, '/no/route/here?b=2&a=1&a=%20x');
    assert.equal(seen.body, 'the body, as sent');
    assert.equal(seen.headers['content-type'], 'text/plain');
    assert.equal(seen.headers['x-custom'], 'kept');
    assert.equal(seen.headers.authorization, 'Basic dXNlcjpwdw==');
    for (const hop of ['x-hop-by-name', 'keep-alive', 'proxy-authorization', 'te']) assert.equal(seen.headers[hop], undefined, hop);
    // No limit applied, so no rate-limit headers; the request id is always returned.
    for (const name of ['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'ratelimit', 'ratelimit-policy']) {
      assert.equal(reply.headers[name], undefined, name);
    }
    assert.equal(reply.headers['x-request-id'], seen.headers['x-request-id']);
  });

  it('streams a large chunked body both ways and relays the upstream status', async () => {
    const body = 'x'.repeat(1024 * 1024);
    const reply = await request(tg.url, '/limited/upload', { method: 'POST', body, headers: { 'transfer-encoding': 'chunked' } });
    assert.equal(reply.status, 200);
    assert.equal(echo(reply).body.length, body.length);
    assert.equal(echo(reply).headers['transfer-encoding'], 'chunked');
    const teapot = await request(tg.url, '/status/418');
    assert.equal(teapot.status, 418);
  });

  it('answers 504 UPSTREAM_TIMEOUT when the upstream takes longer than upstreamTimeout', async () => {
    const reply = await request(tg.url, '/limited/hang', { headers: { 'x-request-id': 'hang-1' } });
    assert.equal(reply.status, 504);
    assert.deepEqual(envelope(reply), {
      success: false,
      error: { code: 'UPSTREAM_TIMEOUT', message: 'Upstream service timed out', details: { requestId: 'hang-1' } },
    });
    assert.equal(reply.headers['x-request-id'], 'hang-1');
    assertNoInternals(reply);
    const logged = tg.logs.events('upstream_error').find((l) => l.requestId === 'hang-1');
    assert.equal(logged?.code, 'UPSTREAM_TIMEOUT');
  });

  it('a route-level upstreamTimeout overrides the top-level one', async () => {
    // 400ms is past the top-level 200ms but within the route's 2s.
    const reply = await request(tg.url, '/patient/slow');
    assert.equal(reply.status, 200);
    assert.equal(echo(reply).url, '/patient/slow');
  });

  it('refuses `Expect: 100-continue` over the limit with a 429 and never sends 100', async () => {
    const { upstream } = tg;
    const from = '127.0.5.1';
    const head = 'POST /expect HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n';

    const allowed = await rawConnect(tg.port, from);
    allowed.socket.write(head);
    const interim = await allowed.waitFor((t) => t.includes('\r\n\r\n'));
    assert.match(interim, /^HTTP\/1\.1 100 Continue\r\n/);
    allowed.socket.write('hello');
    const full = await allowed.closed();
    assert.match(full, /\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
    assert.match(full, /"body":"hello"/, 'the body sent after the 100 reached the upstream');

    const seenBefore = upstream.seen.length;
    const refused = await rawConnect(tg.port, from);
    refused.socket.write(head);
    const answer = await refused.closed();
    assert.match(answer, /^HTTP\/1\.1 429 Too Many Requests\r\n/);
    assert.doesNotMatch(answer, /100 Continue/);
    assert.match(answer, /"code":"RATE_LIMIT_EXCEEDED"/);
    assert.equal(upstream.seen.length, seenBefore);
  });
});

describe('forwarding to an upstream that is down', () => {
  let tg: TestTollgate;

  before(async () => {
    tg = await startTollgate(POLICY, { upstream: `http://127.0.0.1:${await freePort()}` });
  });
  after(() => tg.close());

  it('answers 502 UPSTREAM_UNAVAILABLE with the request id and logs it', async () => {
    for (const target of ['/limited/x', '/no/route']) {
      const reply = await request(tg.url, target, { headers: { 'x-request-id': `down${target.replaceAll('/', '-')}` } });
      assert.equal(reply.status, 502, target);
      const body = envelope(reply);
      assert.deepEqual(body, {
        success: false,
        error: { code: 'UPSTREAM_UNAVAILABLE', message: 'Upstream service unavailable', details: { requestId: reply.headers['x-request-id'] } },
      });
      assertNoInternals(reply);
      const logged = tg.logs.events('upstream_error').find((l) => l.requestId === reply.headers['x-request-id']);
      assert.equal(logged?.code, 'UPSTREAM_UNAVAILABLE', target);
    }
  });

  it("Tollgate's own 502 on a limited route carries the request's rate-limit headers (the request was admitted and counted)", async () => {
    const first = await request(tg.url, '/limited/rate', { from: '127.0.8.1' });
    const second = await request(tg.url, '/limited/rate', { from: '127.0.8.1' });
    assert.equal(second.status, 502);
    assert.ok(first.headers['ratelimit-policy'] !== undefined, 'RateLimit-Policy');
    assert.equal(second.headers['ratelimit-policy'], first.headers['ratelimit-policy']);
    assert.equal(Number(second.headers['x-ratelimit-remaining']), Number(first.headers['x-ratelimit-remaining']) - 1, 'each 502 counted');
    assert.ok(second.headers['ratelimit'] !== undefined);
    assert.equal((await request(tg.url, '/no/route/rate', { from: '127.0.8.1' })).headers['ratelimit-policy'], undefined, 'no limit, no headers');
  });

  it('generates a request id for the error when the client sent none', async () => {
    const reply = await request(tg.url, '/limited/y');
    assert.equal(reply.status, 502);
    assert.match(String(reply.headers['x-request-id']), /^[0-9a-f-]{36}$/);
    assert.equal(envelope(reply).error.details.requestId, reply.headers['x-request-id']);
  });
});

describe('a client that goes away while the upstream works', () => {
  let arrived = false;
  let upstreamClosed = false;
  let tg: TollgateInFront<Upstream>;

  before(async () => {
    // Never answers; reports when the request arrives and when Tollgate gives up on it.
    const hanging = await startUpstream((req) => {
      req.socket.once('close', () => (upstreamClosed = true));
      arrived = true;
    });
    tg = await startInFrontOf(hanging, 'routes: []\n');
  });
  after(() => tg.close());

  it('aborts the upstream request and logs no upstream error', async () => {
    const client = await rawConnect(tg.port);
    client.socket.write('GET /slow-report HTTP/1.1\r\nHost: t\r\nX-Request-Id: gone-1\r\n\r\n');
    await eventually(() => arrived, { what: 'the request to reach the upstream' });
    client.socket.destroy();
    await eventually(() => upstreamClosed, { what: 'Tollgate to close the upstream request' });
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(tg.logs.events('upstream_error'), [], 'a client disconnect is not an upstream failure');
  });
});
