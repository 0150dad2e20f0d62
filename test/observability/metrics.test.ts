import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { loadPolicyText } from '../../src/config/load.js';
import { Limiter } from '../../src/limiter/limiter.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics, type Metrics } from '../../src/observability/metrics.js';
import { ViolationLog } from '../../src/observability/violations.js';
import { compilePolicy } from '../../src/policy/compile.js';
import { HttpForwarder } from '../../src/proxy/forward.js';
import { createProxyServer } from '../../src/proxy/server.js';
import { UpgradeForwarder } from '../../src/proxy/upgrade.js';
import { StoreUnavailableError, type LimitCheck, type RateLimitStore, type StoreDecision } from '../../src/store/types.js';
import { FakeClock, LogCapture, startTollgate, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

/** Sum of every sample of `name` whose labels include `labels` (exposition text). */
function sampleSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  let found = false;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) have.set(l[1], l[2]);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) {
      total += Number(m[3]);
      found = true;
    }
  }
  return found ? total : NaN;
}

async function scrape(adminUrl: string): Promise<string> {
  const res = await fetch(`${adminUrl}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  return res.text();
}

async function get(url: string, headers: Record<string, string> = {}): Promise<number> {
  const res = await fetch(url, { headers });
  await res.arrayBuffer();
  return res.status;
}

/** Polls until `check` passes or the deadline runs out (the proxy counts on socket close). */
async function eventually(check: () => Promise<void>, deadlineMs = 3000): Promise<void> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > end) throw error;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** An upstream that holds `/slow*` requests until `release()`; everything else answers 200 at once. */
async function startGatedUpstream() {
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    if (req.url?.startsWith('/slow')) held.push(res);
    else res.end('ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    held,
    release(): void {
      for (const res of held.splice(0)) res.end('slow ok');
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
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
  let upstream: EchoUpstream;
  let tg: TestTollgate;
  let text: string;

  before(async () => {
    upstream = await startEchoUpstream();
    upstream.behaviour.set('/api/fail', { status: 503 });
    tg = await startTollgate(POLICY, { upstream: upstream.url });
    const user = (id: string, ip = '198.51.100.1') => ({ 'x-user-id': id, 'x-forwarded-for': ip });
    assert.equal(await get(`${tg.url}/elsewhere`), 200); // no route
    assert.equal(await get(`${tg.url}/api/a`, { 'x-forwarded-for': '10.9.9.9' }), 200); // allowlisted IP
    assert.equal(await get(`${tg.url}/api/a`, user('vip-user')), 200); // allowlisted user
    assert.equal(await get(`${tg.url}/api/a`), 200); // anonymous: the only limit is per user
    for (let i = 0; i < 10; i++) assert.equal(await get(`${tg.url}/api/a`, user('alice-4711', '198.51.100.23')), 200);
    assert.equal(await get(`${tg.url}/api/a`, user('alice-4711', '198.51.100.23')), 429); // trips, starts the block
    for (let i = 0; i < 2; i++) assert.equal(await get(`${tg.url}/api/a`, user('alice-4711', '198.51.100.23')), 429); // blocked
    for (let i = 0; i < 4; i++) assert.equal(await get(`${tg.url}/shadow/x`, { 'x-forwarded-for': '203.0.113.77' }), 200);
    assert.equal(await get(`${tg.url}/api/fail`, user('bob-0815')), 503);
    text = await scrape(tg.adminUrl);
  });

  after(async () => {
    await tg.close();
    await upstream.close();
  });

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
  test('goes up during a slow request and back to 0 when it ends', async () => {
    const upstream = await startGatedUpstream();
    const tg = await startTollgate(POLICY, { upstream: upstream.url });
    try {
      assert.equal(sampleSum(await scrape(tg.adminUrl), 'tollgate_inflight_requests'), 0);
      const pending = fetch(`${tg.url}/slow`).then(async (r) => ({ status: r.status, body: await r.text() }));
      await eventually(async () => assert.equal(upstream.held.length, 1));
      assert.equal(sampleSum(await scrape(tg.adminUrl), 'tollgate_inflight_requests'), 1);
      upstream.release();
      assert.deepEqual(await pending, { status: 200, body: 'slow ok' });
      await eventually(async () => assert.equal(sampleSum(await scrape(tg.adminUrl), 'tollgate_inflight_requests'), 0));
      assert.equal(sampleSum(await scrape(tg.adminUrl), 'tollgate_upstream_duration_seconds_count', { route: 'slow', status_class: '2xx' }), 1);
    } finally {
      await tg.close();
      await upstream.close();
    }
  });

  test('returns to 0 when the client gives up on a hanging upstream', async () => {
    const upstream = await startGatedUpstream();
    const tg = await startTollgate(POLICY, { upstream: upstream.url });
    try {
      const aborter = new AbortController();
      const pending = fetch(`${tg.url}/slow`, { signal: aborter.signal }).catch((e: unknown) => e);
      await eventually(async () => assert.equal(upstream.held.length, 1));
      assert.equal(sampleSum(await scrape(tg.adminUrl), 'tollgate_inflight_requests'), 1);
      aborter.abort();
      assert.ok((await pending) instanceof Error);
      await eventually(async () => assert.equal(sampleSum(await scrape(tg.adminUrl), 'tollgate_inflight_requests'), 0));
    } finally {
      await tg.close();
      await upstream.close();
    }
  });
});

/** A store that always fails (a Redis outage), or answers from a local fallback (`degraded`). */
class FakeStore implements RateLimitStore {
  readonly kind = 'redis' as const;
  constructor(readonly mode: 'unavailable' | 'degraded') {}
  decide(checks: readonly LimitCheck[], now: number): Promise<StoreDecision> {
    if (this.mode === 'unavailable') return Promise.reject(new StoreUnavailableError('redis timed out'));
    const outcomes = checks.map((c) => ({ allowed: true, max: c.max, remaining: c.max - 1, resetAt: now + 60_000, retryAfterMs: 0, count: 1, blockedUntil: 0, blockStarted: false, strike: 0 }));
    return Promise.resolve({ allowed: true, outcomes, degraded: true });
  }
  settle(): void {}
  async close(): Promise<void> {}
}

describe('store_error decision (fake store through the Limiter)', () => {
  let upstream: EchoUpstream;
  before(async () => {
    upstream = await startEchoUpstream();
  });
  after(async () => upstream.close());

  async function proxyWith(store: RateLimitStore, onStoreError: 'allow' | 'deny', mode = 'enforce') {
    const text = `upstream: ${upstream.url}\nroutes:\n  - id: api\n    mode: ${mode}\n    match: { path: /api/* }\n    limits: [{ by: ip, limit: 5, window: 1m }]\n`;
    const loaded = loadPolicyText(text, 'policies.yaml', {});
    assert.ok(loaded.ok);
    const policy = compilePolicy(loaded.policy.config, loaded.policy.hash);
    const metrics: Metrics = createMetrics({ defaultMetrics: false });
    const logs = new LogCapture();
    const logger = createLogger('info', logs);
    const clock = new FakeClock();
    const violations = new ViolationLog(logger, { clock: clock.now });
    const active = { policy, http: new HttpForwarder(policy.upstream), ws: new UpgradeForwarder(policy.upstream) };
    const { server } = createProxyServer(
      {
        limiter: new Limiter({ store, onStoreError }),
        metrics,
        logger,
        violations,
        clock: clock.now,
        active: () => active,
        onErrorStatus: () => 503,
        draining: () => false,
      },
      { headersTimeoutMs: 5000, requestTimeoutMs: 5000, keepAliveTimeoutMs: 5000 },
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      metrics,
      logs,
      close: async () => {
        violations.close();
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
        await active.http.close();
        active.ws.close();
      },
    };
  }

  const decisions = async (metrics: Metrics) => {
    const text = await metrics.registry.metrics();
    return {
      storeError: sampleSum(text, 'tollgate_requests_total', { route: 'api', decision: 'store_error' }),
      total: sampleSum(text, 'tollgate_requests_total'),
      durations: sampleSum(text, 'tollgate_decision_duration_seconds_count', { store: 'redis' }),
    };
  };

  for (const [onStoreError, mode, status] of [
    ['allow', 'enforce', 200],
    ['deny', 'enforce', 503],
    ['deny', 'shadow', 200],
  ] as const) {
    test(`onError ${onStoreError}, ${mode} route: ${status}, counted as store_error`, async () => {
      const p = await proxyWith(new FakeStore('unavailable'), onStoreError, mode);
      try {
        const res = await fetch(`${p.url}/api/x`);
        const body = await res.text();
        assert.equal(res.status, status);
        if (status === 503) {
          assert.equal(JSON.parse(body).error.code, 'RATE_LIMITER_UNAVAILABLE');
          assert.equal(res.headers.get('retry-after'), '1');
        }
        assert.deepEqual(await decisions(p.metrics), { storeError: 1, total: 1, durations: 1 });
        // A store outage is not a rate-limit violation: no violation line.
        assert.equal(p.logs.lines.filter((l) => String(l.event).startsWith('rate_limit')).length, 0);
      } finally {
        await p.close();
      }
    });
  }

  test('a decision from the local fallback (degraded) is allowed and counted as store_error', async () => {
    const p = await proxyWith(new FakeStore('degraded'), 'deny');
    try {
      assert.equal(await get(`${p.url}/api/x`), 200);
      assert.deepEqual(await decisions(p.metrics), { storeError: 1, total: 1, durations: 1 });
    } finally {
      await p.close();
    }
  });
});
