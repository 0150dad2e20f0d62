/**
 * `responses.format: problem` (RFC 9457) over sockets: the 429 and its violated policies,
 * guard refusals, 502, WebSocket upgrade refusals; headers as in the envelope format;
 * Accept negotiation on an envelope policy; and the same through `tollgate serve`.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { freePort } from '../helpers/ports.js';
import { envelope, openWebSocket, request, type Reply } from '../helpers/http.js';
import { serveCli, type ServingCli } from '../helpers/process.js';
import { startTollgate, startWithEcho, writePolicy, type TestTollgate, type TollgateWithEcho } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

const ROUTES = `
routes:
  - id: quota
    match: { path: /quota }
    message: Too many quota requests
    limits:
      - { by: ip, limit: 1, window: 1m }
      - { by: global, limit: 1000, window: 1m }
  - id: guarded
    match: { path: /guarded }
    guards: { origins: [https://app.example.com], maxBodySize: 1kb, body: { json: true } }
  - id: ws
    match: { path: /ws, websocket: true }
    guards: { origins: [https://app.example.com] }
`;
const PROBLEM = `responses: { format: problem }\n${ROUTES}`;
const QUOTA_EXCEEDED = 'https://iana.org/assignments/http-problem-types#quota-exceeded';

function problem(reply: Reply): Record<string, unknown> {
  assert.equal(reply.headers['content-type'], 'application/problem+json', reply.body);
  return JSON.parse(reply.body) as Record<string, unknown>;
}

/** The second request from `from` to /quota: the refused one. */
async function refusedQuota(base: string, from: string, headers: Record<string, string> = {}): Promise<Reply> {
  assert.equal((await request(base, '/quota', { from, headers })).status, 200);
  const reply = await request(base, '/quota', { from, headers });
  assert.equal(reply.status, 429);
  return reply;
}

describe('responses.format: problem', () => {
  let tg: TollgateWithEcho;
  let envelopeTg: TollgateWithEcho;
  before(async () => {
    [tg, envelopeTg] = await Promise.all([startWithEcho(PROBLEM), startWithEcho(ROUTES)]);
  });
  after(async () => {
    await Promise.all([tg?.close(), envelopeTg?.close()]);
  });

  it('a 429 is quota-exceeded with the policies that refused (not every applied one), detail, requestId and retryAfter; its headers are the envelope 429\'s', async () => {
    const reply = await refusedQuota(tg.url, '127.0.31.1');
    const body = problem(reply);
    assert.deepEqual(Object.keys(body), ['type', 'title', 'status', 'detail', 'violated-policies', 'requestId', 'retryAfter']);
    assert.deepEqual(body, {
      type: QUOTA_EXCEEDED,
      title: 'Request cannot be satisfied as assigned quota has been exceeded',
      status: 429,
      detail: 'Too many quota requests',
      'violated-policies': ['quota.ip'],
      requestId: reply.headers['x-request-id'],
      retryAfter: Number(reply.headers['retry-after']),
    });
    const asEnvelope = await refusedQuota(envelopeTg.url, '127.0.31.1');
    assert.equal(envelope(asEnvelope).error.code, 'RATE_LIMIT_EXCEEDED');
    const names = (r: Reply) => Object.keys(r.headers).filter((name) => name !== 'date').sort();
    assert.deepEqual(names(reply), names(asEnvelope));
    for (const name of ['retry-after', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-violation-type', 'ratelimit', 'ratelimit-policy', 'cache-control']) {
      assert.equal(reply.headers[name], asEnvelope.headers[name], name);
    }
  });

  it('guard refusals carry their own problem type (and INVALID_BODY its errors)', async () => {
    const foreign = await request(tg.url, '/guarded', { method: 'POST', headers: { origin: 'https://evil.example', 'content-type': 'application/json' }, body: '{}' });
    assert.equal(foreign.status, 403);
    assert.deepEqual(problem(foreign), {
      type: 'tag:tollgate,2026:origin-not-allowed',
      title: 'Origin not allowed',
      status: 403,
      detail: 'Origin not allowed',
      requestId: foreign.headers['x-request-id'],
    });
    const notJson = await request(tg.url, '/guarded', { method: 'POST', headers: { origin: 'https://app.example.com', 'content-type': 'application/json' }, body: '{nope' });
    assert.equal(notJson.status, 400);
    const body = problem(notJson);
    assert.equal(body.type, 'tag:tollgate,2026:invalid-body');
    assert.ok(Array.isArray(body.errors) && body.errors.length > 0, notJson.body);
  });

  it('a refused WebSocket upgrade gets the same body', async () => {
    const handshake = await openWebSocket(`${tg.url.replace('http', 'ws')}/ws`, { headers: { origin: 'https://evil.example' } });
    assert.ok('refused' in handshake, 'the upgrade was refused');
    assert.equal(handshake.refused.statusCode, 403);
    assert.equal(handshake.refused.headers['content-type'], 'application/problem+json');
    assert.deepEqual(JSON.parse(handshake.body), {
      type: 'tag:tollgate,2026:origin-not-allowed',
      title: 'Origin not allowed',
      status: 403,
      detail: 'Origin not allowed',
      requestId: handshake.refused.headers['x-request-id'],
    });
  });
});

describe('responses.format: envelope (the default) and the client\'s Accept', () => {
  let tg: TollgateWithEcho;
  before(async () => {
    tg = await startWithEcho(ROUTES);
  });
  after(async () => {
    await tg?.close();
  });

  it('a client that prefers application/problem+json gets problem details; */*, application/json and none keep the envelope', async () => {
    const prefers = await refusedQuota(tg.url, '127.0.32.1', { accept: 'application/problem+json, application/json;q=0.5' });
    assert.equal(problem(prefers).type, QUOTA_EXCEEDED);
    for (const [i, accept] of ['*/*', 'application/json', 'application/json, application/problem+json'].entries()) {
      const reply = await refusedQuota(tg.url, `127.0.32.${10 + i}`, { accept });
      assert.equal(envelope(reply).error.code, 'RATE_LIMIT_EXCEEDED', accept);
    }
    assert.equal(envelope(await refusedQuota(tg.url, '127.0.32.20')).error.code, 'RATE_LIMIT_EXCEEDED');
  });

  it('an upgrade refusal negotiates the same way', async () => {
    const handshake = await openWebSocket(`${tg.url.replace('http', 'ws')}/ws`, { headers: { origin: 'https://evil.example', accept: 'application/problem+json' } });
    assert.ok('refused' in handshake);
    assert.equal(handshake.refused.headers['content-type'], 'application/problem+json');
    assert.equal(JSON.parse(handshake.body).type, 'tag:tollgate,2026:origin-not-allowed');
  });
});

describe('502 in problem details', () => {
  let tg: TestTollgate;
  before(async () => {
    // Nothing listens there: every forward fails with UPSTREAM_UNAVAILABLE.
    tg = await startTollgate(PROBLEM, { upstream: `http://127.0.0.1:${await freePort()}` });
  });
  after(async () => {
    await tg?.close();
  });

  it('upstream-unavailable', async () => {
    const reply = await request(tg.url, '/unrouted');
    assert.equal(reply.status, 502);
    assert.deepEqual(problem(reply), {
      type: 'tag:tollgate,2026:upstream-unavailable',
      title: 'Upstream service unavailable',
      status: 502,
      detail: 'Upstream service unavailable',
      requestId: reply.headers['x-request-id'],
    });
  });
});

describe('tollgate serve with responses.format: problem', () => {
  let upstream: EchoUpstream;
  let served: ServingCli;
  before(async () => {
    upstream = await startEchoUpstream();
    served = await serveCli(['--config', writePolicy(PROBLEM), '--upstream', upstream.url]);
  });
  after(async () => {
    await served?.stop();
    await upstream?.close();
  });

  it('answers a refusal as application/problem+json', async () => {
    const body = problem(await refusedQuota(served.url, '127.0.33.1'));
    assert.deepEqual([body.type, body.status, body['violated-policies']], [QUOTA_EXCEEDED, 429, ['quota.ip']]);
  });
});
