import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTollgate, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { bearer, echo, envelope, JWT_SECRET, openWebSocket, rawConnect, request, statuses } from '../helpers/http.js';

// 127.0.0.1 is the trusted proxy; every other 127.x.y.z is an untrusted client with its own counters.
const POLICY = `
upstream: http://127.0.0.1:9
clientIp: { trustedProxies: [127.0.0.1/32] }
identity:
  jwt:
    secret: \${JWT_SECRET}
    algorithms: [HS256]
    tierClaim: plan
  header: x-user-id
  forward: { user: x-tollgate-user, tier: x-tollgate-tier }
routes:
  - id: token
    match: { path: /api/livekit/token }
    limits:
      - { by: ip, limit: 2, window: 1m }
  - id: login
    match: { path: /login }
    limits:
      - { by: ip, limit: 1, window: 1m }
  - id: b
    match: { path: /b }
    limits:
      - { by: ip, limit: 1, window: 1m }
  - id: ws
    match: { path: /ws/live, websocket: true }
    limits:
      - { by: ip, limit: 100, window: 1m }
`;

describe('path hygiene through the proxy', { timeout: 60_000 }, () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;
  let strict: TestTollgate;

  before(async () => {
    upstream = await startEchoUpstream();
    tg = await startTollgate(POLICY, { upstream: upstream.url, env: { JWT_SECRET } });
    strict = await startTollgate(`${POLICY}paths: { escapedSlashes: reject }\n`, { upstream: upstream.url, env: { JWT_SECRET } });
  });
  after(async () => {
    await strict.close();
    await tg.close();
    await upstream.close();
  });

  it('%2F and %5C count as separators: the route is limited, and the target is forwarded byte-for-byte', async () => {
    for (const [target, from] of [['/api%2Flivekit%2Ftoken', '127.0.3.1'], ['/api%5Clivekit%5ctoken', '127.0.3.2'], ['/api%2flivekit/token', '127.0.3.3']] as const) {
      const first = await request(tg.url, target, { method: 'POST', from });
      assert.equal(first.status, 200, target);
      assert.equal(echo(first).url, target);
      assert.equal(first.headers['ratelimit-policy'], '"token.ip";q=2;w=60', target);
      assert.deepEqual(await statuses(tg.url, target, 2, { method: 'POST', from }), [200, 429], target);
    }
  });

  it(';parameters are dropped before dot segments: /login;x=1 and /a/..;x/b match their routes', async () => {
    assert.deepEqual(await statuses(tg.url, '/login;x=1', 2, { from: '127.0.3.4' }), [200, 429]);
    assert.deepEqual(await statuses(tg.url, '/login;jsessionid=1', 1, { from: '127.0.3.4' }), [429]);
    assert.deepEqual(await statuses(tg.url, '/a/..;x/b', 2, { from: '127.0.3.5' }), [200, 429]);
    assert.deepEqual(await statuses(tg.url, '/a%2F..%2Fb', 1, { from: '127.0.3.6' }), [200]);
    assert.deepEqual(await statuses(tg.url, '/b', 1, { from: '127.0.3.6' }), [429], 'one counter for every spelling');
    const reply = await request(tg.url, '/a/..;x/b', { from: '127.0.3.7' });
    assert.equal(echo(reply).url, '/a/..;x/b');
  });

  it('%00 and broken escapes: 400 INVALID_PATH without details.route, never forwarded', async () => {
    const before = upstream.seen.length;
    for (const target of ['/api/livekit/token%00', '/login%00.json', '/x%zz', '/x%', '/x%4']) {
      const reply = await request(tg.url, target, { from: '127.0.3.8', headers: { 'x-request-id': 'req-path' } });
      assert.equal(reply.status, 400, target);
      const { error } = envelope(reply);
      assert.equal(error.code, 'INVALID_PATH');
      assert.deepEqual(error.details, { requestId: 'req-path' });
    }
    assert.equal(upstream.seen.length, before);
    // The query string is not the path: whatever it holds, the request goes on.
    assert.equal((await request(tg.url, '/nowhere?q=%00%zz', { from: '127.0.3.8' })).status, 200);
  });

  it('%252F is decoded once: it stays the text %2F, matches no route and is forwarded unlimited, untouched', async () => {
    const target = '/api%252Flivekit%252Ftoken';
    assert.deepEqual(await statuses(tg.url, target, 4, { method: 'POST', from: '127.0.3.9' }), [200, 200, 200, 200]);
    const reply = await request(tg.url, target, { method: 'POST', from: '127.0.3.9' });
    assert.equal(echo(reply).url, target);
    assert.equal(reply.headers['ratelimit-policy'], undefined);
  });

  it('paths.escapedSlashes: reject answers 400 INVALID_PATH to any %2F or %5C, matched or not', async () => {
    for (const target of ['/api%2Flivekit%2Ftoken', '/unmatched%5Cpath', '/x%2fy']) {
      const reply = await request(strict.url, target, { from: '127.0.3.10' });
      assert.equal(reply.status, 400, target);
      assert.equal(envelope(reply).error.code, 'INVALID_PATH');
    }
    assert.equal((await request(strict.url, '/api/livekit/token', { method: 'POST', from: '127.0.3.10' })).status, 200);
  });

  it('more than one Host line: 400 INVALID_HOST in the envelope, never forwarded, counted as a guard refusal', async () => {
    const before = upstream.seen.length;
    for (const [first, second] of [['Host', 'Host'], ['host', 'HOST']]) {
      const conn = await rawConnect(Number(new URL(tg.url).port), '127.0.3.12');
      conn.socket.write(`GET /api/livekit/token HTTP/1.1\r\n${first}: a.example\r\n${second}: b.example\r\nx-request-id: req-host\r\nconnection: close\r\n\r\n`);
      const text = await conn.closed();
      assert.match(text, /^HTTP\/1.1 400 /, text);
      const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { success: boolean; error: { code: string; details: unknown } };
      assert.equal(body.success, false);
      assert.equal(body.error.code, 'INVALID_HOST');
      assert.deepEqual(body.error.details, { requestId: 'req-host' });
    }
    assert.equal(upstream.seen.length, before, 'not forwarded');
    const metrics = await (await fetch(`${tg.adminUrl}/metrics`)).text();
    assert.match(metrics, /tollgate_guard_refusals_total\{route="_unmatched",guard="host"\} 2/);
    // One Host line is fine.
    assert.equal((await request(tg.url, '/api/livekit/token', { from: '127.0.3.12' })).status, 200);
  });

  it('a WebSocket handshake with a bad path is refused too', async () => {
    const conn = await rawConnect(Number(new URL(tg.url).port), '127.0.3.11');
    conn.socket.write('GET /ws/live%00 HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    const text = await conn.closed();
    assert.match(text, /^HTTP\/1.1 400 /);
    assert.match(text, /"code":"INVALID_PATH"/);
  });
});

describe('header hygiene through the proxy', { timeout: 60_000 }, () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;

  before(async () => {
    upstream = await startEchoUpstream();
    tg = await startTollgate(POLICY, { upstream: upstream.url, env: { JWT_SECRET } });
  });
  after(async () => {
    await tg.close();
    await upstream.close();
  });

  const spoofed = { 'x-real-ip': '6.6.6.6', forwarded: 'for=6.6.6.6;proto=https', 'x-user-id': 'admin', 'x-tollgate-user': 'admin', 'x-tollgate-tier': 'enterprise' };

  it('from an untrusted peer: X-Real-IP replaced, Forwarded and the identity header removed, identity.forward names removed', async () => {
    for (const target of ['/api/livekit/token', '/unmatched']) {
      const seen = echo(await request(tg.url, target, { method: 'POST', from: '127.0.4.1', headers: spoofed })).headers;
      assert.equal(seen['x-real-ip'], '127.0.4.1', target);
      assert.equal(seen.forwarded, undefined, target);
      assert.equal(seen['x-user-id'], undefined, target);
      assert.equal(seen['x-tollgate-user'], undefined, target);
      assert.equal(seen['x-tollgate-tier'], undefined, target);
    }
  });

  it('from a trusted proxy: Forwarded and the identity header pass, X-Real-IP is still the resolved client', async () => {
    const seen = echo(await request(tg.url, '/api/livekit/token', { method: 'POST', headers: { ...spoofed, 'x-forwarded-for': '192.0.2.10' } })).headers;
    assert.equal(seen['x-real-ip'], '192.0.2.10');
    assert.equal(seen.forwarded, 'for=6.6.6.6;proto=https');
    assert.equal(seen['x-user-id'], 'admin');
    // The identity Tollgate believed (the trusted header) is what identity.forward says, not the client's copy.
    assert.equal(seen['x-tollgate-user'], 'admin');
    assert.equal(seen['x-tollgate-tier'], undefined);
  });

  it('identity.forward carries the verified JWT identity on matched routes only', async () => {
    const auth = await bearer('alice', { plan: 'pro' });
    const matched = echo(await request(tg.url, '/api/livekit/token', { method: 'POST', from: '127.0.4.2', headers: { ...auth, 'x-tollgate-user': 'mallory' } })).headers;
    assert.equal(matched['x-tollgate-user'], 'alice');
    assert.equal(matched['x-tollgate-tier'], 'pro');
    const unmatched = echo(await request(tg.url, '/unmatched', { from: '127.0.4.2', headers: { ...auth, 'x-tollgate-user': 'mallory' } })).headers;
    assert.equal(unmatched['x-tollgate-user'], undefined);
    const anonymous = echo(await request(tg.url, '/api/livekit/token', { method: 'POST', from: '127.0.4.3', headers: { authorization: 'Bearer forged.token.here' } })).headers;
    assert.equal(anonymous['x-tollgate-user'], undefined);
  });

  it('WebSocket handshakes get the same hygiene', async () => {
    const handshake = await openWebSocket(`${tg.url.replace('http:', 'ws:')}/ws/live`, { from: '127.0.4.4', headers: { ...spoofed, ...(await bearer('bob')) } });
    assert.ok('ws' in handshake, 'the handshake opened');
    const ws = handshake.ws;
    try {
      const seen = upstream.seen.findLast((s) => s.url === '/ws/live')!.headers;
      assert.equal(seen['x-real-ip'], '127.0.4.4');
      assert.equal(seen.forwarded, undefined);
      assert.equal(seen['x-user-id'], undefined);
      assert.equal(seen['x-tollgate-user'], 'bob');
      assert.equal(seen['x-tollgate-tier'], undefined);
    } finally {
      ws.terminate();
    }
  });
});
