/**
 * Failure modes against a Redis this test spawns (and kills, or freezes, by pid):
 * - killed under load (SIGKILL) and hung under load (SIGSTOP): no decision waits out
 *   the dead Redis (each ends by the store's own deadline, DEADLINE_SLACK_MS); once the
 *   breaker is open decisions skip Redis; outcomes follow `onError` (allow/deny reject with
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
import type { RedisStore } from '../../src/store/redis/index.js';
import { DEFAULT_BREAKER } from '../../src/store/redis/breaker.js';
import { StoreUnavailableError } from '../../src/store/types.js';
import type { LimitCheck, StoreDecision } from '../../src/store/types.js';
import { freePort } from '../helpers/ports.js';
import { checkOf, concurrencyLimit } from '../helpers/limits.js';
import { limitFixture, openRedisStore, rawCommand, redisStoreConfig, requireRedisServer, spawnRedis, testPrefix, waitUntilShared } from '../helpers/redis.js';
import type { SpawnedRedis } from '../helpers/redis.js';
import { LogCapture } from '../helpers/tollgate.js';
import { eventually, settledAtOnce, withDeadline } from '../helpers/wait.js';

/** The store's decision budget (`timeout:`). */
const TIMEOUT_MS = 100;
/**
 * How much longer than TIMEOUT_MS a decision may take while Redis is dead or hung. The
 * store's deadline never fires early; it fires late by however long the event loop
 * stood still after it was due (on a loaded 2-core box the process loses the CPU for
 * tens to hundreds of ms), which the test measures (LagMonitor) and subtracts. What is
 * left is the batch's own settling: under 50 ms. A decision not ended by the store's
 * deadline is ended by ioredis's commandTimeout (2 x timeout + 100 = 300 ms,
 * connection.ts) or the socket timeout (seconds): far beyond TIMEOUT_MS + 50 ms.
 */
const DEADLINE_SLACK_MS = 50;
/** Breakers and heartbeats settle within tens of ms; a loaded box gets 10 s. */
const SETTLE_MS = 10_000;
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
  const store = openRedisStore(config, { t, logger: createLogger('info', logs), metrics, heartbeatMs });
  return { store, metrics, logs };
}

function redisConfig(server: { url: string }, prefix: string, onError: RedisStoreConfig['onError'], expectedReplicas = 1): RedisStoreConfig {
  return redisStoreConfig(server, { prefix, timeoutMs: TIMEOUT_MS, onError, expectedReplicas });
}

/**
 * Each breaker transition is one line, never one per failure: the lines alternate
 * degraded / healthy again, starting degraded and ending healthy (Redis is back). One
 * outage gives exactly that pair; a loaded box can add a short outage of its own
 * before the kill (decisions past the timeout because redis-server got no CPU), which
 * is another pair, not a line per failure.
 */
function assertTransitionsLoggedOnce(logs: LogCapture): void {
  const lines = logs.lines
    .map((l) => String(l.msg))
    .filter((m) => m.startsWith('redis store degraded') || m.startsWith('redis store healthy again'))
    .map((m) => (m.startsWith('redis store degraded') ? 'degraded' : 'healthy'));
  assert.ok(lines.length >= 2, `transition lines: ${JSON.stringify(lines)}`);
  lines.forEach((line, i) => assert.equal(line, i % 2 === 0 ? 'degraded' : 'healthy', `transition lines: ${JSON.stringify(lines)}`));
  assert.equal(lines.at(-1), 'healthy', `transition lines: ${JSON.stringify(lines)}`);
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

/**
 * LagMonitor: how late the event loop ran, tick by tick. A 5 ms interval that ran late
 * means the process stood still (busy elsewhere, or off the CPU) for that long.
 */
function startLagMonitor(t: TestContext): { stillDuring(from: number, to: number): number } {
  const EVERY_MS = 5;
  const stalls: { from: number; to: number }[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    if (now - last > EVERY_MS + 1) stalls.push({ from: last + EVERY_MS, to: now });
    last = now;
  }, EVERY_MS);
  t.after(() => clearInterval(timer));
  return {
    stillDuring: (from, to) => stalls.reduce((sum, s) => sum + Math.max(0, Math.min(to, s.to) - Math.max(from, s.from)), 0),
  };
}

/**
 * The longest a decision took, less the time the loop stood still after its deadline
 * was due (which only delays the deadline; a stall before it does not). Decisions of one
 * turn share the oldest one's deadline: hence due 5 ms early.
 */
function maxLatency(samples: readonly Sample[], lag: { stillDuring(from: number, to: number): number }): number {
  return samples.reduce((max, s) => Math.max(max, s.ms - lag.stillDuring(s.at + TIMEOUT_MS - 5, s.at + s.ms)), 0);
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
      await eventually(() => a.store.liveReplicas === 2 && b.store.liveReplicas === 2, { what: 'two live replicas', timeoutMs: SETTLE_MS });
      const lag = startLagMonitor(t);
      const load = startLoad(t, [a.store, b.store]);
      await sleep(150);

      const killedAt = performance.now();
      await server.kill();
      await eventually(() => a.store.degraded && b.store.degraded, { what: 'the breakers to open', timeoutMs: SETTLE_MS, intervalMs: 5 });
      // Enough decisions during the outage to judge them (counted, not timed: a loaded box makes fewer per second).
      const duringOutage = () => load.samples.filter((s) => s.at > killedAt + 2 * TIMEOUT_MS);
      await eventually(() => duringOutage().length > 50, { what: '50 decisions during the outage', timeoutMs: SETTLE_MS });
      const outage = load.samples.filter((s) => s.at > killedAt);
      const expectedKind: Kind = onError === 'local' ? 'degraded' : 'unavailable';
      const afterOpen = duringOutage();
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
      await eventually(() => !a.store.degraded && !b.store.degraded, { what: 'shared decisions again', timeoutMs: SETTLE_MS, intervalMs: 10 });
      await sleep(100);
      await load.stop();

      // Shared again: both replicas together get the full limit (not the divided one), once.
      const shared = await Promise.all(Array.from({ length: 14 }, (_, i) => (i % 2 ? a : b).store.decide([check(limit, 'after')], Date.now())));
      assert.equal(shared.filter((d) => d.allowed).length, 10);
      assert.ok(shared.every((d) => d.degraded === undefined));
      assert.equal(load.samples.at(-1)?.kind, 'shared');

      const worst = maxLatency(load.samples, lag);
      const slowest = Math.max(...load.samples.map((s) => s.ms));
      t.diagnostic(`longest decision ${worst.toFixed(1)} ms without the loop's stalls (${slowest.toFixed(1)} ms with), p99 ${p99(outage).toFixed(1)} ms over ${load.samples.length} decisions`);
      assert.ok(worst < TIMEOUT_MS + DEADLINE_SLACK_MS, `a decision took ${worst.toFixed(1)} ms beyond the loop's stalls: it waited out the dead Redis`);
      assert.equal(load.samples.filter((s) => s.kind === 'error').length, 0);
      assert.ok((await errorsCounted(a.metrics)) >= 3);
      assert.equal(await degradedGauge(a.metrics), 0);
      assertTransitionsLoggedOnce(a.logs);
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
    await eventually(() => a.store.liveReplicas === 2 && b.store.liveReplicas === 2, { what: 'two live replicas', timeoutMs: SETTLE_MS });
    const lag = startLagMonitor(t);
    const load = startLoad(t, [a.store, b.store]);
    await sleep(150);

    const stoppedAt = performance.now();
    server.pause();
    await eventually(() => a.store.degraded && b.store.degraded, { what: 'both breakers to open', timeoutMs: SETTLE_MS, intervalMs: 5 });
    const openedAt = performance.now();
    const openedWallClock = Date.now();
    const tripsAtOpen = a.store.roundTrips + b.store.roundTrips;
    // Enough decisions with the breakers open to judge them (counted, not timed).
    const skippingNow = () => load.samples.filter((s) => s.at > openedAt + TIMEOUT_MS);
    await eventually(() => skippingNow().length > 50, { what: '50 decisions with the breakers open', timeoutMs: SETTLE_MS });

    const hung = load.samples.filter((s) => s.at > stoppedAt);
    const inFlight = hung.filter((s) => s.at < openedAt);
    const skipping = skippingNow();
    // A decision that went to the hung Redis waits for the deadline, which never fires early
    // (decisions of one turn share the oldest one's deadline: hence 5 ms less).
    assert.ok(inFlight.some((s) => s.ms >= TIMEOUT_MS - 5), 'some decisions did wait for the hung Redis');
    assert.ok(skipping.length > 50);
    assert.deepEqual(new Set(skipping.map((s) => s.kind)), new Set(['degraded']));

    const limit = limitFixture({ routeId: 'hung', limit: 10, windowMs: DAY_MS, algorithm: 'token-bucket' });
    const local = await allowedOf(a.store, limit, 'u', 8);
    assert.equal(local.filter((d) => d.allowed).length, 5, 'limit 10 divided by 2 live replicas');
    assert.ok(local.every((d) => d.degraded === true && d.outcomes[0].max === 5));

    // While the breakers were open, only probes went to Redis: at most one per store
    // per cool-down (counted in scripts sent, not in milliseconds).
    const probes = a.store.roundTrips + b.store.roundTrips - tripsAtOpen;
    const coolDowns = 1 + Math.floor((Date.now() - openedWallClock) / DEFAULT_BREAKER.coolDownMs);
    assert.ok(probes <= 2 * coolDowns, `${probes} scripts sent to the hung Redis in ${coolDowns} cool-down(s) of two open breakers`);

    server.resume();
    await eventually(() => !a.store.degraded && !b.store.degraded, { what: 'shared decisions again', timeoutMs: SETTLE_MS, intervalMs: 10 });
    await sleep(100);
    await load.stop();

    const worst = maxLatency(hung, lag);
    const slowest = Math.max(...hung.map((s) => s.ms));
    t.diagnostic(`longest decision ${worst.toFixed(1)} ms without the loop's stalls (${slowest.toFixed(1)} ms with), p99 ${p99(hung).toFixed(1)} ms over ${hung.length} decisions while hung`);
    assert.ok(worst < TIMEOUT_MS + DEADLINE_SLACK_MS, `a decision took ${worst.toFixed(1)} ms beyond the loop's stalls: it waited out the hung Redis`);
    // Shared again: both replicas together get the full limit, once.
    const shared = await Promise.all(Array.from({ length: 14 }, (_, i) => (i % 2 ? a : b).store.decide([check(limit, 'after')], Date.now())));
    assert.equal(shared.filter((d) => d.allowed).length, 10);
    assertTransitionsLoggedOnce(a.logs);
  });
});

describe('redis store: Redis unreachable at start', () => {
  it('creating the store does not throw or wait; decisions follow onError; it connects when Redis appears', async (t) => {
    if (!requireRedisServer(t)) return;
    const port = await freePort();
    const url = `redis://127.0.0.1:${port}`;
    // Creation is synchronous (a store, not a promise): it cannot wait for Redis.
    const deny = open(t, redisConfig({ url }, testPrefix('late'), 'deny'));
    const local = open(t, redisConfig({ url }, testPrefix('late'), 'local', 4));

    // Not connected: no decision waits for a round trip or a timeout. deny rejects at once,
    // the local fallback answers synchronously.
    const limit = limitFixture({ routeId: 'late', limit: 10, windowMs: DAY_MS, algorithm: 'sliding-log' });
    const denied = Promise.resolve(deny.store.decide([check(limit, 'u')], Date.now()));
    assert.equal(await settledAtOnce(denied), true, 'deny waited for something');
    await assert.rejects(denied, StoreUnavailableError);
    const fallback = Array.from({ length: 4 }, () => local.store.decide([check(limit, 'u')], Date.now()));
    for (const d of fallback) assert.ok(!(d instanceof Promise), 'the local fallback waited for something');
    // No replica seen yet: divided by expectedReplicas (4).
    assert.deepEqual(
      (fallback as StoreDecision[]).map((d) => [d.allowed, d.degraded, d.outcomes[0].max]),
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
    // close() waits at most 1 s for QUIT (store.ts), then disconnects; 2 s more for a loaded box.
    await withDeadline(store.close(), 1_000 + 2_000, 'close() with Redis hung');
    const limit = limitFixture({ routeId: 'closed', limit: 1, windowMs: DAY_MS, algorithm: 'fixed-window' });
    await assert.rejects(async () => store.decide([check(limit, 'c')], Date.now()), StoreUnavailableError);
  });
});

/** A store on its own Redis for the lease tests: decisions end at TIMEOUT_MS, onError deny, leases of a minute. */
async function leaseStore(t: TestContext, name: string): Promise<{ server: SpawnedRedis; store: RedisStore; prefix: string } | undefined> {
  const server = await spawned(t);
  if (server === undefined) return undefined;
  const prefix = testPrefix(name);
  const { store } = open(t, redisStoreConfig(server, { prefix, timeoutMs: TIMEOUT_MS, onError: 'deny', slotLeaseMs: 60_000 }));
  await waitUntilShared((c, n) => store.decide(c, n));
  return { server, store, prefix };
}

describe('redis store: a decision whose answer is lost', () => {
  it('gives back the concurrency slot its script took once Redis answers again, instead of holding it for a lease', async (t) => {
    const opened = await leaseStore(t, 'lost-lease');
    if (opened === undefined) return;
    const { server, store, prefix } = opened;
    const slot = concurrencyLimit({ routeId: 'lost', by: 'user', concurrent: 1 });
    const one = checkOf(slot, 'u:alice');

    // The script reaches the frozen server's socket; the decision ends at the deadline.
    server.pause();
    const lost = await withDeadline(classify(store.decide([one], Date.now())), 5_000, 'a decision while Redis is frozen');
    assert.equal(lost, 'unavailable', 'onError deny refuses when the answer does not come');
    server.resume();

    // Redis runs the late script (taking the lease), then the release the store queued behind it.
    await eventually(() => !store.degraded, { what: 'the store to be healthy again', timeoutMs: SETTLE_MS, intervalMs: 10 });
    await withDeadline(store.settled(), 5_000, 'the queued release');
    const held = await rawCommand(server.host, server.port, `ZCARD ${prefix}${one.key}`);
    assert.equal(held.trim(), ':0', 'no lease is left behind by the lost decision');
    const next = await withDeadline(Promise.resolve(store.decide([one], Date.now())), 5_000, 'the next decision');
    assert.equal(next.allowed, true, 'the slot is free for the next request');
  });
});

describe('redis store: a batch held behind the call in flight', () => {
  const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  const limit = limitFixture({ routeId: 'held', limit: 1_000, windowMs: DAY_MS, algorithm: 'sliding-window' });

  it('decisions of later turns wait for the answer, then go in one call', async (t) => {
    const server = await spawned(t);
    if (server === undefined) return;
    const store = openRedisStore(redisStoreConfig(server, { prefix: testPrefix('held'), timeoutMs: 5_000 }), { t, holdBehindMs: 60_000 });
    await waitUntilShared((c, n) => store.decide(c, n));
    server.pause();
    t.after(() => server.resume());
    const trips = store.roundTrips;
    const first = store.decide([check(limit, 'a')], Date.now());
    await turn();
    assert.equal(store.roundTrips - trips, 1, 'the first decision is sent');
    const second = store.decide([check(limit, 'a')], Date.now());
    await turn();
    const third = store.decide([check(limit, 'a')], Date.now());
    await turn();
    assert.equal(store.roundTrips - trips, 1, 'the later ones wait while the first call is out');
    server.resume();
    const decisions = await withDeadline(Promise.all([first, second, third]), 5_000, 'the three decisions');
    assert.equal(store.roundTrips - trips, 2, 'the two held decisions went in one call');
    assert.deepEqual(decisions.map((d) => [d.allowed, d.outcomes[0].remaining]), [[true, 999], [true, 998], [true, 997]]);
  });

  it('a call that does not answer holds the next batch only holdBehindMs, not until its deadline', async (t) => {
    const server = await spawned(t);
    if (server === undefined) return;
    const store = openRedisStore(redisStoreConfig(server, { prefix: testPrefix('held-cap'), timeoutMs: 10_000 }), { t, holdBehindMs: 20 });
    await waitUntilShared((c, n) => store.decide(c, n));
    server.pause();
    t.after(() => server.resume());
    const trips = store.roundTrips;
    const first = store.decide([check(limit, 'b')], Date.now());
    await turn();
    const second = store.decide([check(limit, 'b')], Date.now());
    await turn();
    assert.equal(store.roundTrips - trips, 1, 'held at first');
    // Sent after the hold, with the first call still unanswered (its deadline is 10 s away).
    await eventually(() => store.roundTrips - trips === 2, { what: 'the held decision to be sent', timeoutMs: 2_000, intervalMs: 5 });
    server.resume();
    const decisions = await withDeadline(Promise.all([first, second]), 5_000, 'both decisions');
    assert.deepEqual(decisions.map((d) => [d.allowed, d.outcomes[0].remaining]), [[true, 999], [true, 998]]);
  });
});

describe('redis store: close with decisions out', () => {
  const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

  it('answers the decision in flight and the one held behind it, and gives their slots back', async (t) => {
    const server = await spawned(t);
    if (server === undefined) return;
    const prefix = testPrefix('close-leases');
    const store = openRedisStore(redisStoreConfig(server, { prefix, timeoutMs: 5_000, slotLeaseMs: 60_000 }), { t, holdBehindMs: 60_000 });
    await waitUntilShared((c, n) => store.decide(c, n));
    const slot = checkOf(concurrencyLimit({ routeId: 'closing', by: 'user', concurrent: 5 }), 'u:alice');
    server.pause();
    t.after(() => server.resume());
    const trips = store.roundTrips;
    const first = store.decide([slot], Date.now());
    await turn();
    const second = store.decide([slot], Date.now());
    await turn();
    assert.equal(store.roundTrips - trips, 1, 'the second decision is held behind the first call');

    const closed = store.close();
    assert.equal(store.roundTrips - trips, 2, 'close sends the held decision at once');
    server.resume();
    const decisions = await withDeadline(Promise.all([first, second]), 5_000, 'both decisions');
    assert.deepEqual(decisions.map((d) => d.allowed), [true, true], 'each decision asked for before close is answered by Redis');
    for (const decision of decisions) if (decision.hold !== undefined) store.settle(decision.hold);
    await withDeadline(closed, 5_000, 'close');
    const held = await rawCommand(server.host, server.port, `ZCARD ${prefix}${slot.key}`);
    assert.equal(held.trim(), ':0', 'no lease outlives the closed store');
    assert.equal(store.roundTrips - trips, 2, 'nothing is sent after close');
  });
});

describe('redis store: a decide script Redis lost, answered late', () => {
  it('is not resent after the batch ended by its deadline (the resend would take the slot again)', async (t) => {
    const opened = await leaseStore(t, 'late-noscript');
    if (opened === undefined) return;
    const { server, store, prefix } = opened;
    const slot = checkOf(concurrencyLimit({ routeId: 'late', by: 'user', concurrent: 1 }), 'u:bob');
    const key = `${prefix}${slot.key}`;

    // Redis forgets its scripts (as after a restart); the settle script comes back with a
    // release, so only the decide script is missing when the next decision goes out.
    const taken = await withDeadline(Promise.resolve(store.decide([slot], Date.now())), 5_000, 'a first decision');
    assert.equal(taken.allowed, true);
    assert.equal((await rawCommand(server.host, server.port, 'SCRIPT FLUSH')).trim(), '+OK');
    store.settle(taken.hold!);
    await withDeadline(store.settled(), 5_000, 'the release');
    assert.equal((await rawCommand(server.host, server.port, `ZCARD ${key}`)).trim(), ':0');

    // Sent to a frozen Redis: ended by the deadline; its release is queued behind it.
    server.pause();
    const lost = await withDeadline(classify(store.decide([slot], Date.now())), 5_000, 'a decision while Redis is frozen');
    assert.equal(lost, 'unavailable');
    server.resume();
    await eventually(() => !store.degraded, { what: 'the store to be healthy again', timeoutMs: SETTLE_MS, intervalMs: 10 });
    await withDeadline(store.settled(), 5_000, 'the queued release');
    // One more call on the same connection: any resend went before it.
    const probe = limitFixture({ routeId: 'late-probe', limit: 10, windowMs: DAY_MS, algorithm: 'fixed-window' });
    await withDeadline(Promise.resolve(store.decide([check(probe, 'p')], Date.now())), 5_000, 'a later decision');
    assert.equal((await rawCommand(server.host, server.port, `ZCARD ${key}`)).trim(), ':0', 'the expired batch took no slot');
  });
});
