import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { request } from '../helpers/http.js';
import { sampleSum, sampleValue } from '../helpers/metrics.js';
import { freePort } from '../helpers/ports.js';
import { redisStoreConfig } from '../helpers/redis.js';
import { startInFrontOf, startTollgate, startWithEcho, type TestTollgate, type TollgateWithEcho } from '../helpers/tollgate.js';
import { startEchoUpstream, startGatedUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { eventually } from '../helpers/wait.js';

async function get(url: string, target: string, headers: Record<string, string> = {}): Promise<number> {
  return (await request(url, target, { headers })).status;
}

const POLICY = `
clientIp:
  trustedProxies: [127.0.0.1/32]
identity:
  header: x-user-id
allow:
  ips: [10.9.9.9]
  users: [vip-user]
routes:
  - id: api
    match: { path: /api/* }
    limits:
      - { by: user, limit: 10, window: 1m, block: 5m }
  - id: shadowed
    match: { path: /shadow/* }
    mode: shadow
    limits:
      - { by: ip, limit: 2, window: 1m }
  - id: slow
    match: { path: /slow }
    limits:
      - { by: ip, limit: 1000, window: 1m }
`;

describe('metrics move with each decision', () => {
  let tg: TollgateWithEcho;
  let text: string;

  before(async () => {
    tg = await startWithEcho(POLICY);
    tg.upstream.behaviour.set('/api/fail', { status: 503 });
    const user = (id: string, ip = '198.51.100.1') => ({ 'x-user-id': id, 'x-forwarded-for': ip });
    assert.equal(await get(tg.url, '/elsewhere'), 200); // no route
    assert.equal(await get(tg.url, '/api/a', { 'x-forwarded-for': '10.9.9.9' }), 200); // allowlisted IP
    assert.equal(await get(tg.url, '/api/a', user('vip-user')), 200); // allowlisted user
    assert.equal(await get(tg.url, '/api/a'), 200); // anonymous: the only limit is per user
    for (let i = 0; i < 10; i++) assert.equal(await get(tg.url, '/api/a', user('alice-4711', '198.51.100.23')), 200);
    assert.equal(await get(tg.url, '/api/a', user('alice-4711', '198.51.100.23')), 429); // trips, starts the block
    for (let i = 0; i < 2; i++) assert.equal(await get(tg.url, '/api/a', user('alice-4711', '198.51.100.23')), 429); // blocked
    for (let i = 0; i < 4; i++) assert.equal(await get(tg.url, '/shadow/x', { 'x-forwarded-for': '203.0.113.77' }), 200);
    assert.equal(await get(tg.url, '/api/fail', user('bob-0815')), 503);
    // The proxy counts a request when its response closes: wait until all 22 are in.
    text = await eventually(
      async () => {
        const scraped = await tg.scrape();
        return sampleSum(scraped, 'tollgate_requests_total') === 22 && scraped;
      },
      { what: '22 requests counted' },
    );
  });

  after(() => tg.close());

  test('tollgate_requests_total counts every decision under its route', () => {
    const req = (route: string, decision: string) => sampleSum(text, 'tollgate_requests_total', { route, decision });
    assert.equal(req('_unmatched', 'bypassed'), 1);
    assert.equal(req('api', 'bypassed'), 3); // allowlisted ip, allowlisted user, no applicable limit
    assert.equal(req('api', 'allowed'), 11); // alice 10 + bob 1
    assert.equal(req('api', 'limited'), 1);
    assert.equal(req('api', 'blocked'), 2);
    assert.equal(req('shadowed', 'allowed'), 2);
    assert.equal(req('shadowed', 'shadow_limited'), 2);
    assert.equal(sampleSum(text, 'tollgate_requests_total'), 22);
  });

  test('limit exceeded counts trips, not requests refused by a running block', () => {
    assert.equal(sampleSum(text, 'tollgate_limit_exceeded_total', { route: 'api', limit_by: 'user' }), 1);
    assert.equal(sampleSum(text, 'tollgate_blocks_started_total', { route: 'api', limit_by: 'user' }), 1);
    // Shadow refusals are counted too (that is how shadow mode is tuned); no block configured.
    assert.equal(sampleSum(text, 'tollgate_limit_exceeded_total', { route: 'shadowed', limit_by: 'ip' }), 2);
    assert.ok(Number.isNaN(sampleSum(text, 'tollgate_blocks_started_total', { route: 'shadowed' })));
  });

  test('near limit counts requests allowed with less than 20% of the quota left', () => {
    // limit 10: the 9th (1 left) and 10th (0 left) of alice; bob (9 left) is not near.
    assert.equal(sampleSum(text, 'tollgate_near_limit_total', { route: 'api', limit_by: 'user' }), 2);
    // limit 2: the 2nd shadow request leaves 0.
    assert.equal(sampleSum(text, 'tollgate_near_limit_total', { route: 'shadowed', limit_by: 'ip' }), 1);
  });

  test('decision duration is observed once per request that reached the limiter', () => {
    // alice 13 + bob 1 + shadow 4; bypassed requests never reach the store.
    assert.equal(sampleSum(text, 'tollgate_decision_duration_seconds_count', { store: 'memory' }), 18);
    assert.equal(sampleSum(text, 'tollgate_decision_duration_seconds_bucket', { store: 'memory', le: '+Inf' }), 18);
  });

  test('upstream duration is labelled by status class', () => {
    assert.equal(sampleSum(text, 'tollgate_upstream_duration_seconds_count', { route: 'api', status_class: '2xx' }), 13);
    assert.equal(sampleSum(text, 'tollgate_upstream_duration_seconds_count', { route: 'api', status_class: '5xx' }), 1);
    assert.equal(sampleSum(text, 'tollgate_upstream_duration_seconds_count', { route: '_unmatched', status_class: '2xx' }), 1);
    assert.equal(sampleSum(text, 'tollgate_upstream_duration_seconds_count', { route: 'shadowed', status_class: '2xx' }), 4);
  });

  test('config info carries the sha256 of the policy file; valid is 1; no reload counted at start-up', () => {
    const hash = createHash('sha256').update(readFileSync(tg.file)).digest('hex');
    assert.equal(sampleSum(text, 'tollgate_config_info', { hash }), 1);
    assert.equal(sampleSum(text, 'tollgate_config_info'), 1);
    assert.equal(sampleSum(text, 'tollgate_config_valid'), 1);
    assert.ok(Number.isNaN(sampleSum(text, 'tollgate_config_reloads_total')));
    assert.ok(sampleSum(text, 'tollgate_config_last_reload_success_timestamp_seconds') > 1_700_000_000);
  });

  test('no label value is a user id, an IP or a store key', () => {
    for (const secret of ['alice-4711', 'bob-0815', 'vip-user', '198.51.100', '203.0.113.77', '10.9.9.9', '127.0.0.1', 'u:']) {
      assert.ok(!text.includes(secret), `/metrics mentions ${secret}`);
    }
    const labelValues = new Set([...text.matchAll(/="([^"]*)"/g)].map((m) => m[1]));
    const allowed = /^(?:api|shadowed|slow|_unmatched|allowed|limited|blocked|bypassed|shadow_limited|store_error|user|ip|memory|block|unblock|reset|[1-5]xx|error|[0-9a-f]{64}|[0-9.e+-]+|\+Inf)$/;
    for (const value of labelValues) assert.match(value, allowed);
  });
});

describe('in-flight gauge', () => {
  const inflight = async (tg: TestTollgate) => sampleValue(await tg.scrape(), 'tollgate_inflight_requests');

  test('goes up during a slow request and back to 0 when it ends', async (t) => {
    const tg = await startInFrontOf(await startGatedUpstream(), POLICY);
    t.after(() => tg.close());
    const { upstream } = tg;
    assert.equal(await inflight(tg), 0);
    const pending = request(tg.url, '/slow');
    await upstream.waitForHeld(1);
    assert.equal(await inflight(tg), 1);
    upstream.release();
    const reply = await pending;
    assert.deepEqual([reply.status, reply.body], [200, 'gated slow']);
    await eventually(async () => assert.equal(await inflight(tg), 0), { what: 'the gauge back at 0' });
    assert.equal(sampleSum(await tg.scrape(), 'tollgate_upstream_duration_seconds_count', { route: 'slow', status_class: '2xx' }), 1);
  });

  test('returns to 0 when the client gives up on a hanging upstream', async (t) => {
    const tg = await startInFrontOf(await startGatedUpstream(), POLICY);
    t.after(() => tg.close());
    const { upstream } = tg;
    const aborter = new AbortController();
    const pending = request(tg.url, '/slow', { signal: aborter.signal }).catch((e: unknown) => e);
    await upstream.waitForHeld(1);
    assert.equal(await inflight(tg), 1);
    aborter.abort();
    assert.ok((await pending) instanceof Error);
    await eventually(async () => assert.equal(await inflight(tg), 0), { what: 'the gauge back at 0' });
  });
});

describe('store_error decision (Redis unreachable)', () => {
  // One Tollgate per case, all started together: each waits (2 s, app.ts) for a Redis
  // that never answers before it listens anyway.
  const cases = [
    { onError: 'allow', mode: 'enforce', status: 200 },
    { onError: 'deny', mode: 'enforce', status: 503 },
    { onError: 'deny', mode: 'shadow', status: 200 },
    { onError: 'local', mode: 'enforce', status: 200 }, // decided by the local fallback: degraded
  ] as const;
  let upstream: EchoUpstream;
  let running: TestTollgate[] = [];

  before(async () => {
    upstream = await startEchoUpstream();
    const url = `redis://127.0.0.1:${await freePort()}`;
    running = await Promise.all(
      cases.map(({ onError, mode }) =>
        startTollgate(`routes:\n  - id: api\n    mode: ${mode}\n    match: { path: /api/* }\n    limits: [{ by: ip, limit: 5, window: 1m }]\n`, {
          upstream: upstream.url,
          store: { redis: redisStoreConfig({ url }, { onError }) },
        }),
      ),
    );
  });
  after(async () => {
    await Promise.all(running.map((tg) => tg.close()));
    await upstream.close();
  });

  cases.forEach(({ onError, mode, status }, i) => {
    test(`onError ${onError}, ${mode} route: ${status}, counted as store_error`, async () => {
      const tg = running[i];
      const reply = await request(tg.url, '/api/x');
      assert.equal(reply.status, status);
      if (status === 503) {
        assert.equal(JSON.parse(reply.body).error.code, 'RATE_LIMITER_UNAVAILABLE');
        assert.equal(reply.headers['retry-after'], '1');
      }
      const text = await eventually(
        async () => {
          const scraped = await tg.scrape();
          return sampleSum(scraped, 'tollgate_requests_total') === 1 && scraped;
        },
        { what: 'the request counted' },
      );
      assert.deepEqual(
        {
          storeError: sampleSum(text, 'tollgate_requests_total', { route: 'api', decision: 'store_error' }),
          durations: sampleSum(text, 'tollgate_decision_duration_seconds_count', { store: 'redis' }),
        },
        { storeError: 1, durations: 1 },
      );
      // A store outage is not a rate-limit violation: no violation line.
      assert.deepEqual(tg.logs.lines.filter((l) => String(l.event).startsWith('rate_limit')), []);
    });
  });
});
