import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { sampleSum, scrape } from '../helpers/metrics.js';

/** A counter's sum over the samples with these labels; 0 before its first increment. */
function metricTotal(text: string, name: string, labels: Record<string, string>): number {
  const sum = sampleSum(text, name, labels);
  return Number.isNaN(sum) ? 0 : sum;
}
import { startTollgate, writePolicy, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { bearer, echo, envelope, JWT_SECRET, openWebSocket, rawConnect, request, roundTrip, type RequestOptions } from '../helpers/http.js';

const SCHEMA = fileURLToPath(new URL('../fixtures/config/schemas/token-request.json', import.meta.url));
const APP = 'https://app.example.com';

// 127.0.0.1 is a trusted proxy; tests use their own 127.0.x.y (untrusted) so they share no counters.
const POLICY = `
upstream: http://127.0.0.1:9
clientIp: { trustedProxies: [127.0.0.1/32] }
identity:
  jwt: { secret: "\${JWT_SECRET}", algorithms: [HS256] }
  header: x-user-id
allow:
  ips: [127.0.9.0/24]
defaults:
  guards: { securityHeaders: strict }
routes:
  - id: token
    match: { path: /api/realtime/token }
    guards:
      methods: [POST]
      auth: required
      origins: [${APP}, "https://*.example.com"]
      cors:
        methods: [POST]
        headers: [authorization, content-type, x-csrf-token]
        exposeHeaders: [retry-after, ratelimit, ratelimit-policy, x-request-id]
        credentials: true
        maxAge: 24h
      maxBodySize: 1kb
      contentTypes: [application/json]
      body: { schema: schemas/token-request.json }
      csrf: { cookie: csrf_token, header: x-csrf-token }
    limits:
      - { by: user, limit: 2, window: 1m }
  - id: shadow
    match: { path: /shadow }
    mode: shadow
    guards: { methods: [GET] }
    limits:
      - { by: ip, limit: 1, window: 1m }
  - id: upload
    match: { path: /upload }
    guards: { maxBodySize: 100b, securityHeaders: off }
    limits:
      - { by: ip, limit: 1000, window: 1m }
  - id: browser-only
    match: { path: /browser-only }
    guards: { origins: [${APP}], requireOrigin: true }
  - id: open
    match: { path: /open }
    guards: off
    limits:
      - { by: ip, limit: 1000, window: 1m }
  - id: inherits
    match: { path: /inherits }
    limits:
      - { by: ip, limit: 1000, window: 1m }
  - id: ws
    match: { path: /ws/live, websocket: true }
    guards: { origins: [${APP}], securityHeaders: off }
    limits:
      - { by: ip, limit: 100, window: 1m }
`;

/** A valid token-endpoint request for `user` from an allowed origin, with matching CSRF cookie and header. */
async function tokenRequest(user: string, from: string, overrides: { headers?: Record<string, string | undefined>; body?: string } = {}): Promise<RequestOptions> {
  const body = overrides.body ?? JSON.stringify({ voice: 'alloy', instructions: 'be brief' });
  const headers: Record<string, string> = {
    ...(await bearer(user)),
    origin: APP,
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    cookie: 'theme=dark; csrf_token=tok-123',
    'x-csrf-token': 'tok-123',
  };
  for (const [name, value] of Object.entries(overrides.headers ?? {})) {
    if (value === undefined) delete headers[name];
    else headers[name] = value;
  }
  return { method: 'POST', headers, body, from };
}

describe('guards through the proxy', { timeout: 60_000 }, () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;

  before(async () => {
    upstream = await startEchoUpstream();
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-guards-'));
    mkdirSync(path.join(dir, 'schemas'));
    copyFileSync(SCHEMA, path.join(dir, 'schemas', 'token-request.json'));
    tg = await startTollgate(POLICY, { upstream: upstream.url, env: { JWT_SECRET }, file: writePolicy(POLICY, dir) });
  });
  after(async () => {
    await tg.close();
    await upstream.close();
  });

  const seenAt = (target: string): number => upstream.seen.filter((s) => s.url === target).length;

  it('a valid request passes every guard and reaches the upstream with its body byte-for-byte', async () => {
    const body = '{ "voice" : "verse",\n  "instructions": "héllo \\u00e9" }';
    const reply = await request(tg.url, '/api/realtime/token', await tokenRequest('pass-user', '127.0.1.1', { body }));
    assert.equal(reply.status, 200, reply.body);
    assert.equal(echo(reply).body, body);
    assert.equal(echo(reply).headers['content-length'], String(Buffer.byteLength(body)));
    assert.equal(reply.headers['access-control-allow-origin'], APP);
    assert.equal(reply.headers['access-control-allow-credentials'], 'true');
    assert.equal(reply.headers['access-control-expose-headers'], 'retry-after, ratelimit, ratelimit-policy, x-request-id');
    assert.equal(reply.headers.vary, 'Origin');
    assert.equal(reply.headers['x-content-type-options'], 'nosniff');
    assert.equal(reply.headers['cache-control'], 'no-store');
  });

  it('methods: 405 METHOD_NOT_ALLOWED with Allow, in the usual envelope, never forwarded', async () => {
    const before = seenAt('/api/realtime/token');
    const reply = await request(tg.url, '/api/realtime/token', { method: 'GET', from: '127.0.1.2', headers: { origin: APP, 'x-request-id': 'req-405' } });
    assert.equal(reply.status, 405);
    assert.equal(reply.headers.allow, 'POST');
    const { error, success } = envelope(reply);
    assert.equal(success, false);
    assert.equal(error.code, 'METHOD_NOT_ALLOWED');
    assert.deepEqual(error.details, { requestId: 'req-405', route: 'token' });
    // The browser must be able to read it: CORS headers for the allowed origin, security headers.
    assert.equal(reply.headers['access-control-allow-origin'], APP);
    assert.equal(reply.headers['x-frame-options'], 'DENY');
    assert.equal(seenAt('/api/realtime/token'), before);
  });

  it('origins: a foreign origin and a look-alike suffix get 403 ORIGIN_NOT_ALLOWED without CORS headers', async () => {
    for (const origin of ['https://evil.example', 'https://app.example.com.evil.test', 'null']) {
      const reply = await request(tg.url, '/api/realtime/token', await tokenRequest('origin-user', '127.0.1.3', { headers: { origin } }));
      assert.equal(reply.status, 403, origin);
      assert.equal(envelope(reply).error.code, 'ORIGIN_NOT_ALLOWED');
      assert.equal(reply.headers['access-control-allow-origin'], undefined);
    }
    const wildcard = await request(tg.url, '/api/realtime/token', await tokenRequest('origin-user', '127.0.1.3', { headers: { origin: 'https://a.b.example.com' } }));
    assert.equal(wildcard.status, 200);
    assert.equal(wildcard.headers['access-control-allow-origin'], 'https://a.b.example.com');
  });

  it('requireOrigin: a request without Origin is refused too; a listed one passes', async () => {
    assert.equal((await request(tg.url, '/browser-only', { from: '127.0.1.4' })).status, 403);
    assert.equal((await request(tg.url, '/browser-only', { from: '127.0.1.4', headers: { origin: APP } })).status, 200);
  });

  it('preflights are answered by Tollgate (204, never forwarded, no quota) and refused without CORS headers', async () => {
    const before = seenAt('/api/realtime/token');
    const ask = (origin: string, method: string) =>
      request(tg.url, '/api/realtime/token', {
        method: 'OPTIONS',
        from: '127.0.1.5',
        headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': 'authorization, content-type' },
      });
    for (let i = 0; i < 5; i++) {
      const ok = await ask(APP, 'POST');
      assert.equal(ok.status, 204);
      assert.equal(ok.headers['access-control-allow-origin'], APP);
      assert.equal(ok.headers['access-control-allow-methods'], 'POST');
      assert.equal(ok.headers['access-control-allow-headers'], 'authorization, content-type, x-csrf-token');
      assert.equal(ok.headers['access-control-allow-credentials'], 'true');
      assert.equal(ok.headers['access-control-max-age'], '86400');
      assert.equal(ok.headers.vary, 'Origin');
      assert.equal(ok.body, '');
    }
    const foreign = await ask('https://evil.example', 'POST');
    assert.equal(foreign.status, 403);
    assert.equal(envelope(foreign).error.code, 'ORIGIN_NOT_ALLOWED');
    assert.equal(foreign.headers['access-control-allow-origin'], undefined);
    const method = await ask(APP, 'DELETE');
    assert.equal(method.status, 403);
    assert.equal(envelope(method).error.code, 'CORS_METHOD_NOT_ALLOWED');
    assert.equal(method.headers['access-control-allow-origin'], undefined);
    assert.equal(method.headers['access-control-allow-methods'], undefined);
    assert.equal(seenAt('/api/realtime/token'), before, 'no preflight reached the upstream');
    // No quota spent: the user still has both requests of the minute.
    const first = await request(tg.url, '/api/realtime/token', await tokenRequest('preflight-user', '127.0.1.5'));
    assert.equal(first.headers['x-ratelimit-remaining'], '1');
  });

  it('maxBodySize by Content-Length: 413 at once, nothing forwarded, connection closed', async () => {
    const before = upstream.seen.length;
    const conn = await rawConnect(Number(new URL(tg.url).port), '127.0.1.6');
    conn.socket.write('POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 101\r\n\r\n');
    const text = await conn.closed();
    assert.match(text, /^HTTP\/1.1 413 /);
    assert.match(text, /"code":"PAYLOAD_TOO_LARGE"/);
    assert.match(text, /connection: close/i);
    assert.equal(upstream.seen.length, before);
  });

  it('maxBodySize on a chunked body: 413, and the upstream never sees the body complete', async () => {
    const before = upstream.seen.length;
    const conn = await rawConnect(Number(new URL(tg.url).port), '127.0.1.7');
    conn.socket.write('POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n');
    for (let i = 0; i < 5 && !conn.socket.destroyed; i++) {
      conn.socket.write(`28\r\n${'x'.repeat(40)}\r\n`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const text = await conn.closed(5_000);
    assert.match(text, /^HTTP\/1.1 413 /);
    assert.match(text, /"code":"PAYLOAD_TOO_LARGE"/);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(upstream.seen.length, before, 'the echo upstream records a request only once its body ended');
    // Within the limit a chunked body streams through.
    const small = await request(tg.url, '/upload', { method: 'POST', from: '127.0.1.7', headers: { 'transfer-encoding': 'chunked' }, body: 'y'.repeat(100) });
    assert.equal(small.status, 200);
    assert.equal(echo(small).body, 'y'.repeat(100));
  });

  it('contentTypes: 415 UNSUPPORTED_MEDIA_TYPE; parameters and case do not matter', async () => {
    const wrong = await request(tg.url, '/api/realtime/token', await tokenRequest('ctype-user', '127.0.1.8', { headers: { 'content-type': 'text/plain' } }));
    assert.equal(wrong.status, 415);
    assert.equal(envelope(wrong).error.code, 'UNSUPPORTED_MEDIA_TYPE');
    const missing = await request(tg.url, '/api/realtime/token', await tokenRequest('ctype-user', '127.0.1.8', { headers: { 'content-type': undefined } }));
    assert.equal(missing.status, 415);
    const upper = await request(tg.url, '/api/realtime/token', await tokenRequest('ctype-user', '127.0.1.8', { headers: { 'content-type': 'Application/JSON;charset=UTF-8' } }));
    assert.equal(upper.status, 200);
  });

  it('body: 400 INVALID_BODY with up to 5 {path, message} and never the submitted values', async () => {
    const secret = 'sk-live-do-not-echo';
    const body = JSON.stringify({ voice: secret, model: secret, instructions: secret.repeat(20), extra: secret });
    const reply = await request(tg.url, '/api/realtime/token', await tokenRequest('body-user', '127.0.1.9', { body }));
    assert.equal(reply.status, 400);
    const { error } = envelope(reply);
    assert.equal(error.code, 'INVALID_BODY');
    const errors = error.details.errors as Array<{ path: string; message: string }>;
    assert.ok(errors.length >= 1 && errors.length <= 5);
    assert.deepEqual(errors.map((e) => e.path).sort(), ['/extra', '/instructions', '/model', '/voice']);
    assert.ok(!reply.body.includes(secret));
    assert.equal(error.details.route, 'token');
    const notJson = await request(tg.url, '/api/realtime/token', await tokenRequest('body-user', '127.0.1.9', { body: '{"voice":' }));
    assert.deepEqual(envelope(notJson).error.details.errors, [{ path: '', message: 'must be valid JSON' }]);
    assert.ok(!tg.logs.lines.some((l) => JSON.stringify(l).includes(secret)), 'bodies are never logged');
  });

  it('csrf: the header must equal the cookie: 403 CSRF_TOKEN_INVALID', async () => {
    for (const headers of [{ 'x-csrf-token': 'tok-124' }, { 'x-csrf-token': undefined }, { cookie: 'theme=dark' }]) {
      const reply = await request(tg.url, '/api/realtime/token', await tokenRequest('csrf-user', '127.0.1.10', { headers }));
      assert.equal(reply.status, 403, JSON.stringify(headers));
      assert.equal(envelope(reply).error.code, 'CSRF_TOKEN_INVALID');
    }
    assert.ok(!tg.logs.lines.some((l) => JSON.stringify(l).includes('tok-12')), 'CSRF values are never logged');
  });

  it('auth: required: 401 AUTH_REQUIRED with WWW-Authenticate, invalid_token when a token failed', async () => {
    const none = await request(tg.url, '/api/realtime/token', await tokenRequest('x', '127.0.1.11', { headers: { authorization: undefined } }));
    assert.equal(none.status, 401);
    assert.equal(none.headers['www-authenticate'], 'Bearer');
    assert.equal(envelope(none).error.code, 'AUTH_REQUIRED');
    const forged = await request(tg.url, '/api/realtime/token', await tokenRequest('x', '127.0.1.11', { headers: { authorization: 'Bearer not.a.jwt' } }));
    assert.equal(forged.status, 401);
    assert.equal(forged.headers['www-authenticate'], 'Bearer error="invalid_token"');
    // requireExp (default): a token that never expires is not an identity.
    const forever = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('forever').sign(new TextEncoder().encode(JWT_SECRET));
    const noExp = await request(tg.url, '/api/realtime/token', await tokenRequest('x', '127.0.1.11', { headers: { authorization: `Bearer ${forever}` } }));
    assert.equal(noExp.status, 401);
    assert.equal(noExp.headers['www-authenticate'], 'Bearer error="invalid_token"');
    // The identity header from the trusted proxy is a verified identity too.
    const trusted = await request(tg.url, '/api/realtime/token', await tokenRequest('x', '127.0.0.1', { headers: { authorization: undefined, 'x-user-id': 'via-proxy', 'x-forwarded-for': '192.0.2.60' } }));
    assert.equal(trusted.status, 200);
  });

  it('the order: methods, origins, maxBodySize, contentTypes, body, csrf, auth; the first failing answers', async () => {
    const all = { origin: 'https://evil.example', 'content-type': 'text/plain', 'x-csrf-token': 'nope', authorization: undefined };
    const code = async (method: string, headers: Record<string, string | undefined>, body?: string) => {
      const options = await tokenRequest('order', '127.0.1.12', { headers, body });
      return envelope(await request(tg.url, '/api/realtime/token', { ...options, method })).error.code;
    };
    assert.equal(await code('PUT', all), 'METHOD_NOT_ALLOWED');
    assert.equal(await code('POST', all), 'ORIGIN_NOT_ALLOWED');
    assert.equal(await code('POST', { ...all, origin: APP }, 'x'.repeat(2000)), 'PAYLOAD_TOO_LARGE');
    assert.equal(await code('POST', { ...all, origin: APP }), 'UNSUPPORTED_MEDIA_TYPE');
    assert.equal(await code('POST', { ...all, origin: APP, 'content-type': 'application/json' }, '{}'), 'INVALID_BODY');
    assert.equal(await code('POST', { ...all, origin: APP, 'content-type': 'application/json' }), 'CSRF_TOKEN_INVALID');
    assert.equal(await code('POST', { ...all, origin: APP, 'content-type': 'application/json', 'x-csrf-token': 'tok-123' }), 'AUTH_REQUIRED');
  });

  it('a guard refusal consumes no quota; the 429 after the limit carries CORS and security headers', async () => {
    const from = '127.0.1.13';
    for (let i = 0; i < 5; i++) {
      const refused = await request(tg.url, '/api/realtime/token', await tokenRequest('quota-user', from, { headers: { 'x-csrf-token': 'bad' } }));
      assert.equal(refused.status, 403);
    }
    const statuses: number[] = [];
    let last;
    for (let i = 0; i < 3; i++) {
      last = await request(tg.url, '/api/realtime/token', await tokenRequest('quota-user', from));
      statuses.push(last.status);
    }
    assert.deepEqual(statuses, [200, 200, 429]);
    assert.ok(last !== undefined);
    assert.equal(envelope(last).error.code, 'RATE_LIMIT_EXCEEDED');
    assert.ok(Number(last.headers['retry-after']) >= 1);
    assert.equal(last.headers['access-control-allow-origin'], APP);
    assert.equal(last.headers['access-control-allow-credentials'], 'true');
    assert.match(String(last.headers['access-control-expose-headers']), /retry-after/);
    assert.equal(last.headers.vary, 'Origin');
    assert.equal(last.headers['x-content-type-options'], 'nosniff');
    assert.equal(last.headers['content-security-policy'], "default-src 'none'; frame-ancestors 'none'");
  });

  it('the upstream CORS headers are replaced, Origin is appended to its Vary, its own security headers win', async () => {
    upstream.behaviour.set('/api/realtime/token', {
      headers: { 'access-control-allow-origin': '*', 'access-control-allow-methods': 'GET', vary: 'Accept-Encoding', 'x-frame-options': 'SAMEORIGIN' },
    });
    try {
      const reply = await request(tg.url, '/api/realtime/token', await tokenRequest('upstream-cors-user', '127.0.1.14'));
      assert.equal(reply.status, 200);
      assert.equal(reply.headers['access-control-allow-origin'], APP);
      assert.equal(reply.headers['access-control-allow-methods'], undefined);
      assert.equal(reply.headers.vary, 'Accept-Encoding, Origin');
      assert.equal(reply.headers['x-frame-options'], 'SAMEORIGIN');
      assert.equal(reply.headers['referrer-policy'], 'strict-origin-when-cross-origin');
    } finally {
      upstream.behaviour.delete('/api/realtime/token');
    }
  });

  it('HSTS only when a trusted proxy says the client used HTTPS (leftmost X-Forwarded-Proto)', async () => {
    const viaTls = await request(tg.url, '/inherits', { headers: { 'x-forwarded-proto': 'https', 'x-forwarded-for': '192.0.2.61' } });
    assert.equal(viaTls.headers['strict-transport-security'], 'max-age=31536000; includeSubDomains');
    const chained = await request(tg.url, '/inherits', { headers: { 'x-forwarded-proto': 'http, https', 'x-forwarded-for': '192.0.2.61' } });
    assert.equal(chained.headers['strict-transport-security'], undefined);
    const spoofed = await request(tg.url, '/inherits', { from: '127.0.1.15', headers: { 'x-forwarded-proto': 'https' } });
    assert.equal(spoofed.headers['strict-transport-security'], undefined);
  });

  it('defaults.guards apply to routes without their own; guards: off turns them off', async () => {
    const inherits = await request(tg.url, '/inherits', { from: '127.0.1.16' });
    assert.equal(inherits.headers['x-content-type-options'], 'nosniff');
    assert.equal(inherits.headers['x-frame-options'], 'DENY');
    const off = await request(tg.url, '/open', { from: '127.0.1.16' });
    assert.equal(off.status, 200);
    assert.equal(off.headers['x-content-type-options'], undefined);
    const unmatched = await request(tg.url, '/nowhere', { from: '127.0.1.16' });
    assert.equal(unmatched.headers['x-content-type-options'], undefined, 'an unmatched request is forwarded untouched');
  });

  it('guards enforce on shadow routes and for allowlisted clients', async () => {
    const shadow = await request(tg.url, '/shadow', { method: 'POST', from: '127.0.1.17' });
    assert.equal(shadow.status, 405);
    const allowlisted = await request(tg.url, '/api/realtime/token', await tokenRequest('allow-user', '127.0.9.1', { headers: { origin: 'https://evil.example' } }));
    assert.equal(allowlisted.status, 403);
    // ...while their limits are skipped as before.
    assert.deepEqual([(await request(tg.url, '/shadow', { from: '127.0.1.17' })).status, (await request(tg.url, '/shadow', { from: '127.0.1.17' })).status], [200, 200]);
  });

  it('refusals are counted by route and guard and logged once per key (guard_refused), never with secrets', async () => {
    const from = '127.0.1.18';
    const refusalsBefore = metricTotal(await scrape(tg.adminUrl), 'tollgate_guard_refusals_total', { route: 'token', guard: 'csrf' });
    const decisionsBefore = metricTotal(await scrape(tg.adminUrl), 'tollgate_requests_total', { route: 'token', decision: 'guard_refused' });
    for (let i = 0; i < 3; i++) {
      await request(tg.url, '/api/realtime/token', await tokenRequest('log-user', from, { headers: { 'x-csrf-token': 'bad', 'x-request-id': `req-log-${i}` } }));
    }
    assert.equal(metricTotal(await scrape(tg.adminUrl), 'tollgate_guard_refusals_total', { route: 'token', guard: 'csrf' }), refusalsBefore + 3);
    assert.equal(metricTotal(await scrape(tg.adminUrl), 'tollgate_requests_total', { route: 'token', decision: 'guard_refused' }), decisionsBefore + 3);
    const lines = tg.logs.events('guard_refused').filter((l) => l.clientIp === from);
    assert.equal(lines.length, 1, 'further refusals of the same key are suppressed');
    const { time, msg, service, ...fields } = lines[0];
    assert.equal(typeof time, 'string');
    assert.equal(typeof msg, 'string');
    assert.equal(service, 'tollgate');
    assert.deepEqual(fields, { level: 'info', event: 'guard_refused', route: 'token', guard: 'csrf', code: 'CSRF_TOKEN_INVALID', clientIp: from, requestId: 'req-log-0' });
  });

  it('WebSocket upgrades: a disallowed origin is refused before the upstream, an allowed one echoes', async () => {
    const wsUrl = `${tg.url.replace('http:', 'ws:')}/ws/live`;
    const before = upstream.seen.length;
    const refused = await openWebSocket(wsUrl, { from: '127.0.1.19', headers: { origin: 'https://evil.example' } });
    if ('ws' in refused) refused.ws.terminate();
    assert.ok('refused' in refused, 'the disallowed origin was refused');
    assert.equal(refused.refused.statusCode, 403);
    assert.equal(upstream.seen.length, before);
    const allowed = await openWebSocket(wsUrl, { from: '127.0.1.19', headers: { origin: APP } });
    assert.ok('ws' in allowed, 'the allowed origin opened');
    try {
      assert.equal(await roundTrip(allowed.ws, 'hello'), 'hello');
    } finally {
      allowed.ws.terminate();
    }
  });
});
