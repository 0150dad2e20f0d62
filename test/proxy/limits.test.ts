import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { T0 } from '../helpers/clock.js';
import { bearer, echo, envelope, JWT_SECRET, request, statuses } from '../helpers/http.js';
import { startWithEcho, type TollgateWithEcho } from '../helpers/tollgate.js';

// Every test uses its own route and/or its own source address (127.x.y.z), so tests
// share one Tollgate without sharing counters, and starts at T0 (beforeEach). 127.0.0.1
// is the trusted auth layer.
const POLICY = `
upstream: http://127.0.0.1:9
clientIp:
  trustedProxies: [127.0.0.1/32]
identity:
  jwt:
    secret: \${JWT_SECRET}
    algorithms: [HS256]
    tierClaim: plan
  header: x-user-id
allow:
  ips: [127.0.2.0/24]
  users: [healthcheck-bot]
routes:
  - id: per-key
    match: { path: /per-key }
    limits:
      - { by: user, limit: 2, window: 1m }
      - { by: ip, limit: 4, window: 1m }
  - id: tiers
    match: { path: /tiers }
    limits:
      - { by: user, limit: 2, window: 1m, tiers: { pro: 5 } }
  - id: anonymous-only
    match: { path: /anonymous-only }
    limits:
      - { by: ip, limit: 2, window: 1m, for: anonymous }
  - id: blocking
    match: { path: /blocking }
    limits:
      - { by: ip, limit: 2, window: 10s, block: 1m }
  - id: allow
    match: { path: /allow }
    limits:
      - { by: ip, limit: 1, window: 1m }
  - id: first
    match: { path: /things/special, methods: [POST] }
    limits:
      - { by: ip, limit: 1, window: 1m }
  - id: second
    match: { path: /things/* }
    limits:
      - { by: ip, limit: 100, window: 1m }
  - id: post-only
    match: { path: /post-only, methods: [POST] }
    limits:
      - { by: ip, limit: 1, window: 1m }
  - id: concurrent
    match: { path: /concurrent }
    limits:
      - { by: ip, limit: 20, window: 1m }
  - id: trusted-header
    match: { path: /trusted-header }
    limits:
      - { by: user, limit: 1, window: 1m }
  - id: api-key
    match: { path: /api-key }
    limits:
      - { by: header:x-api-key, limit: 2, window: 1m }
  - id: livekit-token
    match: { path: /api/livekit/token, methods: [POST] }
    limits:
      - { by: ip, limit: 4, window: 1m }
`;

describe('limits over real sockets', () => {
  let tg: TollgateWithEcho;

  before(async () => {
    tg = await startWithEcho(POLICY, { env: { JWT_SECRET } });
  });
  beforeEach(() => tg.clock.set(T0));
  after(() => tg.close());

  it('counts users (JWT) and IPs independently', async () => {
    const alice = await bearer('alice');
    const bob = await bearer('bob');
    const carol = await bearer('carol');
    const from = '127.0.1.1';
    assert.deepEqual(await statuses(tg.url, '/per-key', 3, { from, headers: alice }), [200, 200, 429]);
    const userRefusal = await request(tg.url, '/per-key', { from, headers: alice });
    assert.equal(userRefusal.headers['x-ratelimit-violation-type'], 'user');
    // Alice's refusals used no IP quota: bob gets his 2, which fills the IP's 4.
    assert.deepEqual(await statuses(tg.url, '/per-key', 2, { from, headers: bob }), [200, 200]);
    const ipRefusal = await request(tg.url, '/per-key', { from, headers: carol });
    assert.equal(ipRefusal.status, 429);
    assert.equal(ipRefusal.headers['x-ratelimit-violation-type'], 'ip');
    // Alice stays limited from another address; carol is fine there.
    assert.equal((await request(tg.url, '/per-key', { from: '127.0.1.2', headers: alice })).status, 429);
    assert.equal((await request(tg.url, '/per-key', { from: '127.0.1.2', headers: carol })).status, 200);
  });

  it('counts a user named by the trusted x-user-id header', async () => {
    // 127.0.0.1 is a trusted proxy, so its x-user-id is believed.
    const headers = { 'x-user-id': 'dave' };
    assert.deepEqual(await statuses(tg.url, '/trusted-header', 2, { from: '127.0.0.1', headers }), [200, 429]);
    const refused = await request(tg.url, '/trusted-header', { from: '127.0.0.1', headers });
    assert.equal(refused.headers['x-ratelimit-violation-type'], 'user');
    assert.equal((await request(tg.url, '/trusted-header', { from: '127.0.0.1', headers: { 'x-user-id': 'erin' } })).status, 200);
  });

  it('ignores the identity header from an untrusted peer', async () => {
    const from = '127.0.1.3'; // not in trustedProxies
    // `by: user` does not apply to the anonymous client, however many names it claims.
    const replies = [];
    for (let i = 0; i < 3; i++) replies.push(await request(tg.url, '/trusted-header', { from, headers: { 'x-user-id': 'frank' } }));
    assert.deepEqual(replies.map((r) => r.status), [200, 200, 200]);
    assert.equal(replies[0].headers['x-ratelimit-limit'], undefined, 'no limit applied');
    // Nor can it claim an allowlisted user to bypass limits.
    const claim = { 'x-user-id': 'healthcheck-bot' };
    assert.deepEqual(await statuses(tg.url, '/allow', 2, { from, headers: claim }), [200, 429]);
  });

  it('applies per-tier limits from the tier claim', async () => {
    const pro = await bearer('pro-user', { plan: 'pro' });
    const free = await bearer('free-user', { plan: 'free' });
    const first = await request(tg.url, '/tiers', { from: '127.0.1.4', headers: pro });
    assert.equal(first.headers['x-ratelimit-limit'], '5');
    assert.deepEqual(await statuses(tg.url, '/tiers', 5, { from: '127.0.1.4', headers: pro }), [200, 200, 200, 200, 429]);
    const refused = await request(tg.url, '/tiers', { from: '127.0.1.4', headers: pro });
    assert.equal(envelope(refused).error.details.limit, 5);
    assert.deepEqual(await statuses(tg.url, '/tiers', 3, { from: '127.0.1.4', headers: free }), [200, 200, 429]);
  });

  it('`for: anonymous` limits anonymous clients only', async () => {
    const from = '127.0.1.5';
    assert.deepEqual(await statuses(tg.url, '/anonymous-only', 3, { from }), [200, 200, 429]);
    // The same IP with a verified user is not counted by that limit at all.
    const user = await request(tg.url, '/anonymous-only', { from, headers: await bearer('gina') });
    assert.equal(user.status, 200);
    assert.equal(user.headers['x-ratelimit-limit'], undefined);
  });

  it('blocks after a violation until the block ends; refusals do not extend it', async () => {
    const from = '127.0.1.6';
    assert.deepEqual(await statuses(tg.url, '/blocking', 3, { from }), [200, 200, 429]);
    const started = await request(tg.url, '/blocking', { from });
    assert.equal(started.status, 429);
    assert.equal(started.headers['retry-after'], '60', 'Retry-After = block time left');
    // The window (10s) is long over, the block is not; each refusal reports less time left.
    tg.clock.advance(20_000);
    const during = await request(tg.url, '/blocking', { from });
    assert.equal(during.status, 429);
    assert.equal(during.headers['retry-after'], '40');
    assert.equal(envelope(during).error.details.retryAfter, 40);
    tg.clock.advance(30_000);
    assert.equal((await request(tg.url, '/blocking', { from })).headers['retry-after'], '10');
    tg.clock.advance(9_999);
    assert.equal((await request(tg.url, '/blocking', { from })).headers['retry-after'], '1');
    tg.clock.advance(1);
    // 60s after the block started: allowed again, with a fresh window.
    assert.deepEqual(await statuses(tg.url, '/blocking', 3, { from }), [200, 200, 429]);
  });

  it('lets allowlisted IPs and users through without limits', async () => {
    const byIp = [];
    for (let i = 0; i < 3; i++) byIp.push(await request(tg.url, '/allow', { from: '127.0.2.7' }));
    assert.deepEqual(byIp.map((r) => r.status), [200, 200, 200]);
    assert.equal(byIp[0].headers['x-ratelimit-limit'], undefined, 'bypassed: no rate headers');
    const bot = await bearer('healthcheck-bot');
    assert.deepEqual(await statuses(tg.url, '/allow', 3, { from: '127.0.1.7', headers: bot }), [200, 200, 200]);
    // Someone else on that same address is limited.
    assert.deepEqual(await statuses(tg.url, '/allow', 2, { from: '127.0.1.7' }), [200, 429]);
  });

  it('routes by first match and by method', async () => {
    const from = '127.0.1.8';
    const special = await request(tg.url, '/things/special', { method: 'POST', from });
    assert.equal(special.headers['ratelimit-policy'], '"first.ip";q=1;w=60');
    // GET does not match `first` (POST only) and falls to the prefix route.
    const get = await request(tg.url, '/things/special', { from });
    assert.equal(get.headers['ratelimit-policy'], '"second.ip";q=100;w=60');
    const other = await request(tg.url, '/things/other', { method: 'POST', from });
    assert.equal(other.headers['ratelimit-policy'], '"second.ip";q=100;w=60');
    assert.equal((await request(tg.url, '/things/special', { method: 'POST', from })).status, 429);
    // A method no route takes passes untouched.
    const put = await request(tg.url, '/post-only', { method: 'PUT', from });
    assert.equal(put.status, 200);
    assert.equal(put.headers['x-ratelimit-limit'], undefined);
    assert.deepEqual(await statuses(tg.url, '/post-only', 2, { method: 'POST', from }), [200, 429]);
  });

  it('lets exactly `limit` of 50 concurrent requests on one key through', async () => {
    const seenBefore = tg.upstream.seen.filter((s) => s.url === '/concurrent').length;
    const replies = await Promise.all(Array.from({ length: 50 }, () => request(tg.url, '/concurrent', { from: '127.0.1.9' })));
    const counts = { 200: 0, 429: 0 } as Record<number, number>;
    for (const reply of replies) counts[reply.status] = (counts[reply.status] ?? 0) + 1;
    assert.deepEqual(counts, { 200: 20, 429: 30 });
    assert.equal(tg.upstream.seen.filter((s) => s.url === '/concurrent').length - seenBefore, 20);
  });

  it('counts a request without the `header:` key under its client IP', async () => {
    const from = '127.0.1.10';
    assert.deepEqual(await statuses(tg.url, '/api-key', 3, { from }), [200, 200, 429]);
    const refused = await request(tg.url, '/api-key', { from, headers: { 'x-api-key': '' } });
    assert.equal(refused.status, 429, 'an empty header is no header');
    assert.equal(refused.headers['x-ratelimit-violation-type'], 'header');
    // A real key has its own count; another IP without the header has its own too.
    assert.equal((await request(tg.url, '/api-key', { from, headers: { 'x-api-key': 'k1' } })).status, 200);
    assert.equal((await request(tg.url, '/api-key', { from: '127.0.1.11' })).status, 200);
  });

  it('counts every spelling of a path against the same limit and forwards the original target', async () => {
    const from = '127.0.1.12';
    const spellings = ['/api/livekit/token', '/API/livekit//token/', '/api/./x/../livekit/token', '/api/%6Civekit/token?via=query'];
    for (const target of spellings) {
      const reply = await request(tg.url, target, { method: 'POST', from });
      assert.equal(reply.status, 200, target);
      assert.equal(reply.headers['ratelimit-policy'], '"livekit-token.ip";q=4;w=60', target);
      assert.equal(echo(reply).url, target, 'the request target reaches the upstream unchanged');
    }
    for (const target of ['/Api/LiveKit/Token', '//api//livekit//token//', '/api/livekit/token/.']) {
      assert.equal((await request(tg.url, target, { method: 'POST', from })).status, 429, target);
    }
    // A target that does not start with "/" never reaches the upstream at all.
    const seen = tg.upstream.seen.length;
    assert.equal((await request(tg.url, '%2Fapi/livekit/token', { method: 'POST', from })).status, 400);
    assert.equal(tg.upstream.seen.length, seen);
  });
});
