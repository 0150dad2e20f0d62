/**
 * Abuse-aware limits through a running Tollgate, on the memory store and on Redis
 * (clock: local, so the injected clock drives both): escalating blocks, counting failed
 * attempts only (exact under parallel attempts), costs reported by the upstream, calendar
 * windows, and a reload that keeps strikes and reservations.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { bearer, envelope, JWT_SECRET, request } from '../helpers/http.js';
import { sampleSum, sampleValue } from '../helpers/metrics.js';
import { redisStoreConfig, sharedRedis, stopSharedRedis } from '../helpers/redis.js';
import { startInFrontOf, startTollgate, type TestStore, type TollgateInFront } from '../helpers/tollgate.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

const POLICY = `
upstream: http://127.0.0.1:9
identity:
  jwt: { secret: ${JWT_SECRET}, algorithms: [HS256], tierClaim: plan }
routes:
  - id: token
    match: { path: /api/token }
    algorithm: fixed-window
    limits:
      - { by: user, limit: 2, window: 1m, block: [1m, 10m, 1h], forgetAfter: 2h }
  - id: login
    match: { path: /api/login, methods: [POST] }
    limits:
      - { by: ip, limit: 5, window: 15m, count: { status: [401, 403] } }
  - id: usage
    match: { path: /api/usage }
    limits:
      - { by: user, limit: 1000, window: 1mo, algorithm: fixed-window, cost: { header: x-usage-tokens, default: 1 }, tiers: { pro: 5000 } }
  - id: bucket
    match: { path: /api/bucket }
    limits:
      - { by: user, limit: 1000, window: 1h, algorithm: token-bucket, cost: { header: x-usage-tokens, default: 1 } }
  - id: berlin
    match: { path: /api/berlin }
    limits:
      - { by: user, limit: 1, window: 1d, algorithm: fixed-window, timezone: Europe/Berlin }
`;

/** Login answers 401 unless the request says `x-password: right`; usage reports `x-report` as its cost. */
function abuseUpstream(): Promise<Upstream & { seen: string[] }> {
  const seen: string[] = [];
  return startUpstream((req, res) => {
    req.resume();
    seen.push(req.url ?? '');
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    const report = req.headers['x-report'];
    if (typeof report === 'string') headers['x-usage-tokens'] = report;
    res.writeHead(req.url === '/api/login' && req.headers['x-password'] !== 'right' ? 401 : 200, headers);
    res.end('{}');
  }).then((upstream) => Object.assign(upstream, { seen }));
}

const stores: Array<[string, () => Promise<TestStore | undefined>]> = [
  ['memory', async () => ({ memory: {} })],
  [
    'redis',
    async () => {
      const redis = await sharedRedis();
      return redis === undefined ? undefined : { redis: redisStoreConfig(redis, { clock: 'local' }) };
    },
  ],
];

for (const [name, makeStore] of stores) {
  describe(`abuse-aware limits (${name} store)`, () => {
    let tg: TollgateInFront<Upstream & { seen: string[] }> | undefined;

    before(async () => {
      const store = await makeStore();
      if (store === undefined) return;
      tg = await startInFrontOf(await abuseUpstream(), POLICY, { store });
    });
    after(async () => {
      await tg?.close();
      if (name === 'redis') await stopSharedRedis();
    });

    it('escalating blocks: 1m, 10m, 1h on repeated violations; forgotten after forgetAfter', async (t) => {
      if (tg === undefined) return t.skip('no Redis');
      const user = await bearer(`escalate-${name}`);
      const violate = async (): Promise<number> => {
        // Two pass, the third violates (fixed windows of one minute).
        assert.equal((await request(tg!.url, '/api/token', { headers: user })).status, 200);
        assert.equal((await request(tg!.url, '/api/token', { headers: user })).status, 200);
        const refused = await request(tg!.url, '/api/token', { headers: user });
        assert.equal(refused.status, 429);
        return Number(refused.headers['retry-after']);
      };
      tg.clock.set(Math.ceil(tg.clock.nowMs / HOUR) * HOUR); // a fresh window
      assert.equal(await violate(), 60, 'strike 1: 1m');
      tg.clock.advance(MINUTE);
      assert.equal(await violate(), 600, 'strike 2: 10m');
      tg.clock.advance(10 * MINUTE);
      assert.equal(await violate(), 3600, 'strike 3: 1h');
      tg.clock.advance(HOUR);
      assert.equal(await violate(), 3600, 'strike 4: the last entry repeats');
      const started = tg.logs.events('rate_limit_block_started').filter((l) => l.route === 'token' && l.userId === `escalate-${name}`);
      assert.deepEqual(started.map((l) => l.strike), [1, 2, 3, 4]);
      const text = await tg.scrape();
      for (const level of ['1', '2', '3']) assert.ok((sampleValue(text, 'tollgate_blocks_started_total', { route: 'token', limit_by: 'user', level }) ?? 0) >= 1, `level ${level}`);
      // After the block ends and 2h pass without a block, strikes are forgotten.
      tg.clock.advance(HOUR + 2 * HOUR);
      assert.equal(await violate(), 60, 'strike 1 again after forgetAfter');
    });

    it('20 parallel wrong-password attempts on a limit of 5: exactly 5 reach the upstream', async (t) => {
      if (tg === undefined) return t.skip('no Redis');
      const from = name === 'memory' ? '127.0.0.20' : '127.0.0.21';
      const before = tg.upstream.seen.length;
      const replies = await Promise.all(Array.from({ length: 20 }, () => request(tg!.url, '/api/login', { method: 'POST', from })));
      assert.equal(replies.filter((r) => r.status === 401).length, 5);
      assert.equal(replies.filter((r) => r.status === 429).length, 15);
      assert.equal(tg.upstream.seen.length - before, 5, 'only five attempts reached the upstream');
    });

    it('successful logins do not count', async (t) => {
      if (tg === undefined) return t.skip('no Redis');
      const from = name === 'memory' ? '127.0.0.22' : '127.0.0.23';
      for (let i = 0; i < 12; i++) {
        const ok = await request(tg.url, '/api/login', { method: 'POST', from, headers: { 'x-password': 'right' } });
        assert.equal(ok.status, 200, `login ${i}`);
        assert.equal(ok.headers['x-ratelimit-remaining'], '5', 'the reservation went back: the response shows all 5 left');
      }
      // Failures still count: five more, then refused.
      for (let i = 0; i < 5; i++) assert.equal((await request(tg.url, '/api/login', { method: 'POST', from })).status, 401);
      assert.equal((await request(tg.url, '/api/login', { method: 'POST', from })).status, 429);
    });

    it('a reported cost of 400 drains a quota of 1000 in three requests; the client never sees the header', async (t) => {
      if (tg === undefined) return t.skip('no Redis');
      const user = await bearer(`usage-${name}`);
      const headers = { ...user, 'x-report': '400', 'x-usage-tokens': '1' };
      const first = await request(tg.url, '/api/usage', { headers });
      assert.equal(first.status, 200);
      assert.equal(first.headers['x-usage-tokens'], undefined, 'the cost header is not passed on');
      assert.equal(first.headers['x-ratelimit-remaining'], '600', 'the headers reflect the settled charge');
      const second = await request(tg.url, '/api/usage', { headers });
      assert.equal(second.headers['x-ratelimit-remaining'], '200');
      const third = await request(tg.url, '/api/usage', { headers });
      assert.equal(third.status, 200, 'admitted with 200 left: it overspends');
      assert.equal(third.headers['x-ratelimit-remaining'], '0', 'never negative');
      const fourth = await request(tg.url, '/api/usage', { headers });
      assert.equal(fourth.status, 429);
      assert.equal(fourth.headers['x-ratelimit-limit'], '1000');
      assert.match(String(fourth.headers['ratelimit-policy']), /^"usage\.user";q=1000;w=\d+$/);
    });

    it('a token bucket charged a reported cost: the headers show its remaining and the refill it needs (400 of 1000/h: 24 min each)', async (t) => {
      if (tg === undefined) return t.skip('no Redis');
      const headers = { ...(await bearer(`bucket-${name}`)), 'x-report': '400' };
      const seen: string[] = [];
      for (let i = 0; i < 3; i++) {
        const reply = await request(tg.url, '/api/bucket', { headers });
        assert.equal(reply.status, 200);
        seen.push(String(reply.headers.ratelimit));
      }
      assert.deepEqual(seen, ['"bucket.user";r=600;t=1440', '"bucket.user";r=200;t=2880', '"bucket.user";r=0;t=4320']);
      const refused = await request(tg.url, '/api/bucket', { headers });
      assert.equal(refused.status, 429);
      assert.equal(refused.headers.ratelimit, '"bucket.user";r=0;t=4320', 'the refusal agrees with the last settled answer');
    });

    it('a missing or malformed cost header charges the default; a malformed one is counted', async (t) => {
      if (tg === undefined) return t.skip('no Redis');
      const user = await bearer(`defaults-${name}`, { plan: 'pro' });
      // NaN before the counter's first increment: it has no series yet.
      const before = sampleSum(await tg.scrape(), 'tollgate_cost_header_invalid_total', { route: 'usage' }) || 0;
      const missing = await request(tg.url, '/api/usage', { headers: user });
      assert.equal(missing.headers['x-ratelimit-remaining'], '4999');
      for (const garbage of ['4e2', '-5', '1.5', ' ', '400, 400']) {
        const reply = await request(tg.url, '/api/usage', { headers: { ...user, 'x-report': garbage } });
        assert.equal(reply.status, 200);
        assert.equal(reply.headers['x-usage-tokens'], undefined);
      }
      const after = await request(tg.url, '/api/usage', { headers: user });
      assert.equal(after.headers['x-ratelimit-remaining'], String(4999 - 6), 'each charged the default of 1');
      assert.equal(sampleSum(await tg.scrape(), 'tollgate_cost_header_invalid_total', { route: 'usage' }) - before, 5);
    });

    it('calendar windows: a month ends at the first of the next; a Berlin day at local midnight', async (t) => {
      if (tg === undefined) return t.skip('no Redis');
      tg.clock.set(Date.parse('2027-01-31T23:59:59.000Z'));
      const user = await bearer(`calendar-${name}`);
      const january = await request(tg.url, '/api/usage', { headers: { ...user, 'x-report': '1000' } });
      assert.equal(january.headers['x-ratelimit-reset'], String(Date.parse('2027-02-01T00:00:00Z') / 1000));
      assert.equal(january.headers['ratelimit-policy'], `"usage.user";q=1000;w=${31 * 24 * 3600}`, 'w is January');
      assert.equal((await request(tg.url, '/api/usage', { headers: user })).status, 429);
      tg.clock.set(Date.parse('2027-02-01T00:00:00.000Z'));
      const february = await request(tg.url, '/api/usage', { headers: user });
      assert.equal(february.status, 200);
      assert.equal(february.headers['ratelimit-policy'], `"usage.user";q=1000;w=${28 * 24 * 3600}`, 'w is February');
      // Berlin: 2027-03-28 lasts 23 hours (CET -> CEST); the next day starts at 22:00Z.
      tg.clock.set(Date.parse('2027-03-28T21:59:00.000Z'));
      const late = await request(tg.url, '/api/berlin', { headers: user });
      assert.equal(late.headers['x-ratelimit-reset'], String(Date.parse('2027-03-28T22:00:00Z') / 1000));
      const refused = await request(tg.url, '/api/berlin', { headers: user });
      assert.equal(refused.status, 429);
      assert.equal(refused.headers['retry-after'], '60');
      tg.clock.set(Date.parse('2027-03-28T22:00:00.000Z'));
      assert.equal((await request(tg.url, '/api/berlin', { headers: user })).status, 200);
    });
  });
}

describe('abuse-aware limits across a reload', () => {
  it('a reload keeps strikes and reservations', async () => {
    const upstream = await abuseUpstream();
    const tg = await startInFrontOf(upstream, POLICY);
    try {
      const user = await bearer('reloaded');
      for (let i = 0; i < 2; i++) await request(tg.url, '/api/token', { headers: user });
      assert.equal((await request(tg.url, '/api/token', { headers: user })).headers['retry-after'], '60', 'strike 1');
      // An edit elsewhere in the file: the limits keep their identity.
      writeFileSync(tg.file, POLICY.replace('limit: 5, window: 15m', 'limit: 4, window: 15m'));
      assert.equal(tg.tollgate.reload().ok, true);
      tg.clock.advance(MINUTE);
      for (let i = 0; i < 2; i++) assert.equal((await request(tg.url, '/api/token', { headers: user })).status, 200);
      assert.equal((await request(tg.url, '/api/token', { headers: user })).headers['retry-after'], '600', 'strike 2 after the reload');
      // Failed logins counted before the reload still count after it.
      for (let i = 0; i < 4; i++) assert.equal((await request(tg.url, '/api/login', { method: 'POST', from: '127.0.0.30' })).status, 401);
      writeFileSync(tg.file, POLICY.replace('limit: 5, window: 15m', 'limit: 4, window: 15m').replace('limit: 2, window: 1m', 'limit: 3, window: 1m'));
      assert.equal(tg.tollgate.reload().ok, true);
      const refused = await request(tg.url, '/api/login', { method: 'POST', from: '127.0.0.30' });
      assert.equal(refused.status, 429, 'four failures were kept; the lowered limit bites');
      assert.equal(envelope(refused).error.details.limit, 4);
    } finally {
      await tg.close();
    }
  });
});

describe('counting failures across two replicas on one Redis', () => {
  it('20 parallel wrong-password attempts split over two replicas on a limit of 5: exactly 5 reach the upstream', async (t) => {
    const redis = await sharedRedis();
    if (redis === undefined) return t.skip('no Redis');
    const upstream = await abuseUpstream();
    const store = { redis: redisStoreConfig(redis) };
    const a = await startTollgate(POLICY, { upstream: upstream.url, store });
    const b = await startTollgate(POLICY, { upstream: upstream.url, store });
    try {
      const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => request((i % 2 ? a : b).url, '/api/login', { method: 'POST', from: '127.0.0.40' })));
      assert.equal(replies.filter((r) => r.status === 401).length, 5);
      assert.equal(upstream.seen.length, 5);
    } finally {
      await Promise.all([a.close(), b.close()]);
      await upstream.close();
      await stopSharedRedis();
    }
  });
});
