/**
 * Failure modes against a Redis this test spawns (and kills, or freezes, by pid):
 * - killed under load (SIGKILL) and hung under load (SIGSTOP): no decision waits
 *   longer than `timeout` plus a small margin; once the breaker is open decisions
 *   skip Redis; outcomes follow `onError` (allow/deny reject with
 *   StoreUnavailableError, local answers degraded with divided limits); restart or
 *   SIGCONT restores shared decisions with the same store object;
 * - unreachable at start: the store is created, serves per `onError` and recovers
 *   by itself when Redis appears.
 * Transitions are logged once each, not per failure.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import type { RedisStoreConfig } from '../../src/config/types.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';
import type { Metrics } from '../../src/observability/metrics.js';
import type { CompiledLimit } from '../../src/policy/types.js';
import { createRedisStore } from '../../src/store/redis/index.js';
import type { RedisStore } from '../../src/store/redis/index.js';
import { StoreUnavailableError } from '../../src/store/types.js';
import type { LimitCheck, StoreDecision } from '../../src/store/types.js';
import { freePort, limitFixture, requireRedisServer, spawnRedis, testPrefix, waitFor, waitUntilShared } from '../helpers/redis.js';
import type { SpawnedRedis } from '../helpers/redis.js';
import { LogCapture } from '../helpers/tollgate.js';

const TIMEOUT_MS = 50;
/** Timer and event-loop slack on a busy 2-core box; the budget itself is TIMEOUT_MS. */
const MARGIN_MS = 40;
const DAY_MS = 86_400_000;

type Kind = 'shared' | 'degraded' | 'unavailable' | 'error';

interface Sample {
  /** performance.now() when the decision started. */
  readonly at: number;
  readonly ms: number;
  readonly kind: Kind;
}

interface Harness {
  store: RedisStore;
  metrics: Metrics;
  logs: LogCapture;
}

function open(t: TestContext, config: RedisStoreConfig, heartbeatMs?: number): Harness {
  const metrics = createMetrics({ defaultMetrics: false });
  const logs = new LogCapture();
  const store = createRedisStore({
    config,
    clock: Date.now,
    logger: createLogger('info', logs),
    metrics,
    memoryFallback: { maxKeys: 10_000, maxBlocks: 1_000 },
    heartbeatMs,
  });
  t.after(() => store.close());
  return { store, metrics, logs };
}

function redisConfig(server: { url: string }, prefix: string, onError: RedisStoreConfig['onError'], expectedReplicas = 1): RedisStoreConfig {
  return { url: server.url, prefix, timeoutMs: TIMEOUT_MS, onError, onErrorStatus: 503, clock: 'redis', expectedReplicas, slotLeaseMs: 30_000 };
}

function check(limit: CompiledLimit, client: string): LimitCheck {
  return { limit, key: limit.keyPrefix + client, max: limit.limit };
}

async function classify(decision: StoreDecision | Promise<StoreDecision>): Promise<Kind> {
  try {
    return (await decision).degraded === true ? 'degraded' : 'shared';
  } catch (error) {
    return error instanceof StoreUnavailableError ? 'unavailable' : 'error';
  }
}

/** Workers deciding in a loop (paced, so a fast failure path cannot spin) until stopped (at the latest after the test). */
function startLoad(t: TestContext, stores: readonly RedisStore[], workers = 8): { samples: Sample[]; stop: () => Promise<void> } {
  const limit = limitFixture({ routeId: 'load', limit: 1_000_000_000, windowMs: DAY_MS, algorithm: 'sliding-window' });
  const samples: Sample[] = [];
  let running = true;
  const loops = Array.from({ length: workers }, async (_, w) => {
    const store = stores[w % stores.length];
    while (running) {
      const at = performance.now();
      const kind = await classify(store.decide([check(limit, `client-${w}`)], Date.now()));
      samples.push({ at, ms: performance.now() - at, kind });
      await sleep(2);
    }
  });
  const stop = async (): Promise<void> => {
    running = false;
    await Promise.all(loops);
  };
  t.after(stop);
  return { samples, stop };
}

function maxLatency(samples: readonly Sample[]): number {
  return samples.reduce((max, s) => Math.max(max, s.ms), 0);
}

function p99(samples: readonly Sample[]): number {
  const sorted = samples.map((s) => s.ms).sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] ?? 0;
}

async function errorsCounted(metrics: Metrics): Promise<number> {
  return (await metrics.storeErrors.get()).values.reduce((sum, v) => sum + v.value, 0);
}

async function degradedGauge(metrics: Metrics): Promise<number> {
  return (await metrics.storeDegraded.get()).values[0]?.value ?? -1;
}

/** Exactly `limit` of 2*limit sequential decisions pass: decisions are shared (or local) and exact. */
async function allowedOf(store: RedisStore, limit: CompiledLimit, client: string, attempts: number): Promise<StoreDecision[]> {
  const decisions: StoreDecision[] = [];
  for (let i = 0; i < attempts; i++) decisions.push(await store.decide([check(limit, client)], Date.now()));
  return decisions;
}

async function spawned(t: TestContext): Promise<SpawnedRedis | undefined> {
  if (!requireRedisServer(t)) return undefined;
  const server = await spawnRedis();
  t.after(() => server.stop());
  return server;
}

describe('redis store: Redis killed under load', () => {
  for (const onError of ['deny', 'allow', 'local'] as const) {
    it(`onError: ${onError} — bounded latency, outcome per onError, recovery after restart`, async (t) => {
      const server = await spawned(t);
      if (server === undefined) return;
      // Two replicas heartbeating: the local fallback divides by the 2 it has seen.
      const prefix = testPrefix('kill');
      const a = open(t, redisConfig(server, prefix, onError), 50);
      const b = open(t, redisConfig(server, prefix, onError), 50);
      await waitUntilShared((c, n) => a.store.decide(c, n));
      await waitFor('two live replicas', async () => a.store.liveReplicas === 2 && b.store.liveReplicas === 2);
      const load = startLoad(t, [a.store, b.store]);
      await sleep(150);

      const killedAt = performance.now();
      await server.kill();
      await waitFor('the breakers to open', async () => a.store.degraded && b.store.degraded, 5_000, 5);
      await sleep(300);
      const outage = load.samples.filter((s) => s.at > killedAt);
      const expectedKind: Kind = onError === 'local' ? 'degraded' : 'unavailable';
      const afterOpen = load.samples.filter((s) => s.at > killedAt + 2 * TIMEOUT_MS);
      assert.ok(afterOpen.length > 50, `only ${afterOpen.length} decisions during the outage`);
      assert.deepEqual(new Set(afterOpen.map((s) => s.kind)), new Set([expectedKind]));

      // Served per onError while Redis is down; `local` divides the limit by the 2 live replicas.
      const limit = limitFixture({ routeId: 'outage', limit: 10, windowMs: DAY_MS, algorithm: 'fixed-window' });
      if (onError === 'local') {
        const local = await allowedOf(a.store, limit, 'u', 8);
        assert.equal(local.filter((d) => d.allowed).length, 5);
        assert.ok(local.every((d) => d.degraded === true && d.outcomes[0].max === 5));
      } else {
        await assert.rejects(async () => a.store.decide([check(limit, 'u')], Date.now()), StoreUnavailableError);
      }
      assert.equal(await degradedGauge(a.metrics), 1);

      await server.restart();
      await waitFor('shared decisions again', async () => !a.store.degraded && !b.store.degraded, 10_000, 10);
      await sleep(100);
      await load.stop();

      // Shared again: both replicas together get the full limit (not the divided one), once.
      const shared = await Promise.all(Array.from({ length: 14 }, (_, i) => (i % 2 ? a : b).store.decide([check(limit, 'after')], Date.now())));
      assert.equal(shared.filter((d) => d.allowed).length, 10);
      assert.ok(shared.every((d) => d.degraded === undefined));
      assert.equal(load.samples.at(-1)?.kind, 'shared');

      const worst = maxLatency(load.samples);
      t.diagnostic(`max decision latency ${worst.toFixed(1)} ms, p99 ${p99(outage).toFixed(1)} ms over ${load.samples.length} decisions`);
      assert.ok(worst <= TIMEOUT_MS + MARGIN_MS, `a decision took ${worst.toFixed(1)} ms`);
      assert.equal(load.samples.filter((s) => s.kind === 'error').length, 0);
      assert.ok((await errorsCounted(a.metrics)) >= 3);
      assert.equal(await degradedGauge(a.metrics), 0);
      assert.equal(a.logs.count('redis store degraded'), 1);
      assert.equal(a.logs.count('redis store healthy again'), 1);
    });
  }
});

describe('redis store: Redis hung under load (SIGSTOP)', () => {
  it('in-flight decisions end at the timeout, later ones skip Redis, SIGCONT restores shared limits', async (t) => {
    const server = await spawned(t);
    if (server === undefined) return;
    const prefix = testPrefix('hang');
    // Two replicas heartbeating: the local fallback divides by the 2 it has seen.
    const a = open(t, redisConfig(server, prefix, 'local'), 50);
    const b = open(t, redisConfig(server, prefix, 'local'), 50);
    await waitUntilShared((c, n) => a.store.decide(c, n));
    await waitFor('two live replicas', async () => a.store.liveReplicas === 2 && b.store.liveReplicas === 2);
    const load = startLoad(t, [a.store, b.store]);
    await sleep(150);

    const stoppedAt = performance.now();
    server.pause();
    await waitFor('both breakers to open', async () => a.store.degraded && b.store.degraded, 5_000, 5);
    const openedAt = performance.now();
    await sleep(400);

    const hung = load.samples.filter((s) => s.at > stoppedAt);
    const inFlight = hung.filter((s) => s.at < openedAt);
    const skipping = hung.filter((s) => s.at > openedAt + TIMEOUT_MS);
    assert.ok(inFlight.some((s) => s.ms >= TIMEOUT_MS - 5), 'some decisions did wait for the hung Redis');
    assert.ok(skipping.length > 50);
    // After the breaker opened, only the probe (one per cool-down) may wait for Redis.
    const slow = skipping.filter((s) => s.ms > TIMEOUT_MS / 2);
    assert.ok(slow.length <= 2, `${slow.length} decisions waited after the breaker opened`);
    assert.deepEqual(new Set(skipping.map((s) => s.kind)), new Set(['degraded']));

    const limit = limitFixture({ routeId: 'hung', limit: 10, windowMs: DAY_MS, algorithm: 'token-bucket' });
    const local = await allowedOf(a.store, limit, 'u', 8);
    assert.equal(local.filter((d) => d.allowed).length, 5, 'limit 10 divided by 2 live replicas');
    assert.ok(local.every((d) => d.degraded === true && d.outcomes[0].max === 5));

    server.resume();
    await waitFor('shared decisions again', async () => !a.store.degraded && !b.store.degraded, 10_000, 10);
    await sleep(100);
    await load.stop();

    const worst = maxLatency(hung);
    t.diagnostic(`max decision latency ${worst.toFixed(1)} ms, p99 ${p99(hung).toFixed(1)} ms over ${hung.length} decisions while hung`);
    assert.ok(worst <= TIMEOUT_MS + MARGIN_MS, `a decision took ${worst.toFixed(1)} ms`);
    // Shared again: both replicas together get the full limit, once.
    const shared = await Promise.all(Array.from({ length: 14 }, (_, i) => (i % 2 ? a : b).store.decide([check(limit, 'after')], Date.now())));
    assert.equal(shared.filter((d) => d.allowed).length, 10);
    assert.equal(a.logs.count('redis store degraded'), 1);
    assert.equal(a.logs.count('redis store healthy again'), 1);
  });
});

describe('redis store: Redis unreachable at start', () => {
  it('creating the store does not throw or wait; decisions follow onError; it connects when Redis appears', async (t) => {
    if (!requireRedisServer(t)) return;
    const port = await freePort();
    const url = `redis://127.0.0.1:${port}`;
    const started = performance.now();
    const deny = open(t, redisConfig({ url }, testPrefix('late'), 'deny'));
    const local = open(t, redisConfig({ url }, testPrefix('late'), 'local', 4));
    assert.ok(performance.now() - started < 50, 'creation does not wait for Redis');

    const limit = limitFixture({ routeId: 'late', limit: 10, windowMs: DAY_MS, algorithm: 'sliding-log' });
    const t0 = performance.now();
    await assert.rejects(async () => deny.store.decide([check(limit, 'u')], Date.now()), StoreUnavailableError);
    const fallback = await allowedOf(local.store, limit, 'u', 4);
    assert.ok(performance.now() - t0 < TIMEOUT_MS + MARGIN_MS);
    // No replica seen yet: divided by expectedReplicas (4).
    assert.deepEqual(
      fallback.map((d) => [d.allowed, d.degraded, d.outcomes[0].max]),
      [
        [true, true, 2],
        [true, true, 2],
        [false, true, 2],
        [false, true, 2],
      ],
    );

    const server = await spawnRedis({ port });
    t.after(() => server.stop());
    await waitUntilShared((c, n) => deny.store.decide(c, n));
    await waitUntilShared((c, n) => local.store.decide(c, n));
    const shared = await allowedOf(local.store, limit, 'v', 12);
    assert.equal(shared.filter((d) => d.allowed).length, 10);
  });
});

describe('redis store: close', () => {
  it('close() returns promptly with Redis hung, and later decisions reject', async (t) => {
    const server = await spawned(t);
    if (server === undefined) return;
    const { store } = open(t, redisConfig(server, testPrefix('close'), 'deny'));
    await waitUntilShared((c, n) => store.decide(c, n));
    server.pause();
    t.after(() => server.resume());
    const started = performance.now();
    await store.close();
    assert.ok(performance.now() - started < 1_500, `close took ${(performance.now() - started).toFixed(0)} ms`);
    const limit = limitFixture({ routeId: 'closed', limit: 1, windowMs: DAY_MS, algorithm: 'fixed-window' });
    await assert.rejects(async () => store.decide([check(limit, 'c')], Date.now()), StoreUnavailableError);
  });
});
