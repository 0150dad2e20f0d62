/**
 * The Redis store against a real server: shared exact counts across two stores (two
 * connections), TTL on every key, NOSCRIPT under load, skewed replica clocks, the
 * local block cache and the replica heartbeat. Every test writes under its own random
 * prefix; the NOSCRIPT test flushes scripts on a server it spawned itself.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import type { AlgorithmName, RedisStoreConfig } from '../../src/config/types.js';
import { createMetrics } from '../../src/observability/metrics.js';
import type { Metrics } from '../../src/observability/metrics.js';
import type { CompiledLimit } from '../../src/policy/types.js';
import type { RedisStore, RedisStoreOptions } from '../../src/store/redis/index.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { LimitCheck, StoreDecision } from '../../src/store/types.js';
import {
  limitFixture,
  openRedisStore,
  redisStoreConfig,
  requireRedisServer,
  requireSharedRedis,
  spawnRedis,
  stopSharedRedis,
  testPrefix,
  waitUntilShared,
} from '../helpers/redis.js';
import type { RedisTarget } from '../helpers/redis.js';
import { eventually } from '../helpers/wait.js';

const DAY_MS = 86_400_000;
const ALGORITHM_NAMES: readonly AlgorithmName[] = ['sliding-window', 'sliding-log', 'fixed-window', 'token-bucket'];

const opened: RedisStore[] = [];
const clients: Redis[] = [];
after(async () => {
  await Promise.all(opened.map((s) => s.close()));
  clients.forEach((c) => c.disconnect());
  await stopSharedRedis();
});

/** These tests check counts, not latency: redisStoreConfig's 1 s timeout, unless told otherwise. */
function config(target: RedisTarget, prefix: string, overrides: Partial<RedisStoreConfig> = {}): RedisStoreConfig {
  return redisStoreConfig(target, { prefix, ...overrides });
}

/** A store closed after the file, once it decides from Redis. */
async function openStore(cfg: RedisStoreConfig, options: Partial<Omit<RedisStoreOptions, 'config'>> = {}): Promise<RedisStore> {
  const store = openRedisStore(cfg, options);
  opened.push(store);
  await waitUntilShared((checks, now) => store.decide(checks, now));
  // The block cache fills once the store hears of admin changes (its subscription).
  await store.ready(10_000);
  return store;
}

function inspector(target: RedisTarget): Redis {
  const client = new Redis(target.url, { lazyConnect: false, maxRetriesPerRequest: 1 });
  clients.push(client);
  return client;
}

function check(limit: CompiledLimit, client: string, max = limit.limit): LimitCheck {
  return { limit, key: limit.keyPrefix + client, max };
}

async function storeErrors(metrics: Metrics): Promise<number> {
  return (await metrics.storeErrors.get()).values.reduce((sum, v) => sum + v.value, 0);
}

function countAllowed(decisions: readonly StoreDecision[]): number {
  return decisions.filter((d) => d.allowed).length;
}

describe('redis store: shared counts', () => {
  for (const algorithm of ALGORITHM_NAMES) {
    it(`${algorithm}: 200 concurrent decisions from two stores on a limit of 50 allow exactly 50`, async (t) => {
      const target = await requireSharedRedis(t);
      if (target === undefined) return;
      const prefix = testPrefix('concurrent');
      const [a, b] = await Promise.all([openStore(config(target, prefix)), openStore(config(target, prefix))]);
      // Day-long windows: no refill or window edge during the test.
      const limit = limitFixture({ routeId: 'api', limit: 50, windowMs: DAY_MS, algorithm });
      const [tripsA, tripsB] = [a.roundTrips, b.roundTrips];
      const decisions = await Promise.all(
        Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? a : b).decide([check(limit, '10.0.0.1')], Date.now())),
      );
      assert.equal(countAllowed(decisions), 50);
      // 100 decisions per store in one tick: batches of at most 64 decisions each.
      assert.equal(a.roundTrips - tripsA, 2);
      assert.equal(b.roundTrips - tripsB, 2);
    });
  }

  it('per-user and per-ip together: exactly 50 pass, and refused requests count on neither limit', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    const prefix = testPrefix('user-ip');
    const [a, b] = await Promise.all([openStore(config(target, prefix)), openStore(config(target, prefix))]);
    const perIp = limitFixture({ routeId: 'login', by: 'ip', limit: 80, windowMs: DAY_MS, algorithm: 'sliding-log', index: 0 });
    const perUser = limitFixture({ routeId: 'login', by: 'user', limit: 50, windowMs: DAY_MS, algorithm: 'token-bucket', index: 1 });
    const decisions = await Promise.all(
      Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? a : b).decide([check(perIp, '10.0.0.7'), check(perUser, 'u:alice')], Date.now())),
    );
    assert.equal(countAllowed(decisions), 50);
    for (const d of decisions.filter((x) => !x.allowed)) {
      assert.equal(d.outcomes[0].allowed, true, 'the per-ip limit is not what refuses');
      assert.equal(d.outcomes[1].allowed, false);
    }
    // All or nothing: the 150 refusals did not count on the per-ip limit.
    const next = await a.decide([check(perIp, '10.0.0.7')], Date.now());
    assert.equal(next.outcomes[0].remaining, 80 - 50 - 1);
  });
});

describe('redis store: micro-batching', () => {
  it('300 decisions launched in one tick give MemoryStore\'s outcomes in the same order, in a few script calls', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    const store = await openStore(config(target, testPrefix('batch'), { clock: 'local' }), { blockCache: false });
    const limits = ALGORITHM_NAMES.flatMap((algorithm, i) => [
      limitFixture({ routeId: 'batch', by: 'ip', limit: 3 + i, windowMs: 60_000, algorithm, index: i }),
      limitFixture({ routeId: 'batch', by: 'user', limit: 2, windowMs: 60_000, blockMs: 30_000, algorithm, index: 4 + i }),
    ]);
    // Deterministic mix: 1-3 checks per decision over 30 client keys, some repeated within a decision.
    let seed = 7;
    const next = (n: number): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
      return Math.floor((seed / 2_147_483_648) * n);
    };
    const t0 = 1_700_000_000_000;
    const schedule = Array.from({ length: 300 }, (_, i) => {
      const checks = Array.from({ length: 1 + next(3) }, () => check(limits[next(limits.length)], 'c' + next(30)));
      return { checks, now: t0 + i * 37 };
    });
    let memoryNow = t0;
    const memory = new MemoryStore({ maxKeys: 10_000, maxBlocks: 1_000, clock: () => memoryNow });
    const expected = schedule.map(({ checks, now }) => {
      memoryNow = now;
      return memory.decide(checks, now);
    });
    const trips = store.roundTrips;
    const actual = await Promise.all(schedule.map(({ checks, now }) => store.decide(checks, now)));
    assert.deepEqual(actual, expected);
    assert.ok(expected.some((d) => d.outcomes.some((o) => o.blockStarted)), 'the schedule starts blocks');
    assert.ok(expected.filter((d) => d.allowed).length > 50 && expected.some((d) => !d.allowed));
    // 64 decisions or 500 checks per call at most: 5 to 10 calls, not 300.
    const calls = store.roundTrips - trips;
    assert.ok(calls >= 5 && calls <= 10, `${calls} script calls`);
  });
});

describe('redis store: deadline', () => {
  it('a turn that blocks past the budget after the send does not turn a prompt reply into a store error', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    const metrics = createMetrics({ defaultMetrics: false });
    // onError local would admit over the shared limit on a false timeout; deny makes it visible.
    const store = await openStore(config(target, testPrefix('deadline'), { timeoutMs: 50, onError: 'deny' }), { metrics });
    const limit = limitFixture({ routeId: 'deadline', limit: 5, windowMs: DAY_MS, algorithm: 'sliding-window' });
    const errorsBefore = await storeErrors(metrics);
    const pending = Array.from({ length: 8 }, () => store.decide([check(limit, '10.0.0.9')], Date.now()));
    // Runs right after the store's flush (both are immediates, the flush queued first):
    // the reply arrives while this turn spins, and the deadline has passed when it ends.
    setImmediate(() => {
      const until = performance.now() + 120;
      while (performance.now() < until) {
        // busy: a burst of requests or a long GC pause
      }
    });
    const decisions = await Promise.all(pending);
    assert.equal(countAllowed(decisions), 5);
    assert.equal(await storeErrors(metrics), errorsBefore);
  });
});

describe('redis store: many limits', () => {
  it('a route with 20 limits (beyond the predefined commands) decides in one round trip', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    const store = await openStore(config(target, testPrefix('many')));
    const limits = Array.from({ length: 20 }, (_, i) =>
      limitFixture({ routeId: 'many', by: `header:x-${i}`, limit: 2 + i, windowMs: DAY_MS, algorithm: ALGORITHM_NAMES[i % 4], index: i }),
    );
    const trips = store.roundTrips;
    const first = await store.decide(limits.map((l) => check(l, 'k')), Date.now());
    assert.equal(store.roundTrips, trips + 1);
    assert.equal(first.allowed, true);
    assert.deepEqual(
      first.outcomes.map((o) => o.remaining),
      limits.map((l) => l.limit - 1),
    );
    await store.decide(limits.map((l) => check(l, 'k')), Date.now());
    const third = await store.decide(limits.map((l) => check(l, 'k')), Date.now());
    assert.equal(third.allowed, false, 'the limit of 2 refuses the third');
    assert.deepEqual(
      third.outcomes.map((o) => o.allowed),
      limits.map((l) => l.limit > 2),
    );
  });
});

describe('redis store: keys', () => {
  it('every key written (states of all algorithms, blocks, replicas set) has a TTL', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    const prefix = testPrefix('ttl');
    const store = await openStore(config(target, prefix));
    for (const [index, algorithm] of ALGORITHM_NAMES.entries()) {
      const limit = limitFixture({ routeId: 'ttl', by: `l${index}`, limit: 2, windowMs: 60_000, blockMs: 30_000, algorithm, index });
      for (let i = 0; i < 3; i++) await store.decide([check(limit, 'client')], Date.now());
    }
    const redis = inspector(target);
    await eventually(async () => (await redis.exists(prefix + 'replicas')) === 1, { what: 'the heartbeat set' });
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', prefix + '*', 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    // 4 states (three holding their block), sliding-log's block key, the ready probe's
    // state, the replicas set.
    assert.deepEqual(
      keys.filter((k) => k.endsWith(':b')),
      [prefix + '{ttl}:l1:60000:sl:client:b'],
    );
    assert.ok(keys.length >= 7, keys.join(' '));
    for (const key of keys) {
      const ttl = await redis.pttl(key);
      assert.ok(ttl > 0, `${key} has PTTL ${ttl}`);
    }
  });

  it('keys are prefix + the check key; a block lives in its state string, or (sliding-log) in a key of the same slot', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    const prefix = testPrefix('names');
    const store = await openStore(config(target, prefix));
    const window = limitFixture({ routeId: 'names', limit: 1, windowMs: 60_000, blockMs: 5_000, algorithm: 'fixed-window' });
    const log = limitFixture({ routeId: 'names', by: 'user', limit: 1, windowMs: 60_000, blockMs: 5_000, algorithm: 'sliding-log', index: 1 });
    for (const limit of [window, log]) {
      await store.decide([check(limit, '10.1.1.1')], Date.now());
      const refused = await store.decide([check(limit, '10.1.1.1')], Date.now());
      assert.equal(refused.outcomes[0].blockStarted, true);
    }
    const redis = inspector(target);
    const value = (await redis.get(prefix + '{names}:ip:60000:fw:10.1.1.1'))!;
    assert.match(value, /^b\d+ \d+ 1$/);
    const [blockedUntil, windowStart, count] = value.slice(1).split(' ').map(Number);
    assert.ok(blockedUntil > Date.now() + 3_000 && blockedUntil <= Date.now() + 5_000, `blocked until ${blockedUntil}`);
    assert.equal(windowStart % 60_000, 0);
    assert.equal(count, 1);
    assert.equal(await redis.exists(prefix + '{names}:ip:60000:fw:10.1.1.1:b'), 0);
    assert.equal(await redis.type(prefix + '{names}:user:60000:sl:10.1.1.1'), 'zset');
    assert.equal(await redis.exists(prefix + '{names}:user:60000:sl:10.1.1.1:b'), 1);
  });

  it('a state value in another form (older layout, a stray write) reads as no state and is replaced, without an error', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    const prefix = testPrefix('foreign');
    const store = await openStore(config(target, prefix));
    const redis = inspector(target);
    for (const [index, algorithm] of (['fixed-window', 'sliding-window', 'token-bucket'] as const).entries()) {
      const limit = limitFixture({ routeId: 'foreign', by: `l${index}`, limit: 3, windowMs: 60_000, algorithm, index });
      const key = prefix + limit.keyPrefix + 'c';
      await redis.set(key, '1700000000000 42', 'PX', 60_000); // two numbers, no block field
      const decision = await store.decide([check(limit, 'c')], Date.now());
      assert.equal(decision.allowed, true, algorithm);
      assert.equal(decision.outcomes[0].remaining, 2, algorithm);
      assert.match((await redis.get(key))!, /^b0 /, algorithm);
    }
  });

  it('one script call that counts a key and then starts a shorter block on it leaves the counts their own TTL', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    const prefix = testPrefix('batch-ttl');
    const store = await openStore(config(target, prefix, { clock: 'local' }), { blockCache: false });
    const limit = limitFixture({ routeId: 'bttl', limit: 2, windowMs: 60_000, blockMs: 1_000, algorithm: 'sliding-window' });
    const now = Date.now();
    const trips = store.roundTrips;
    // Launched in one tick: one script call writes the key three times (count, count, block).
    const decisions = await Promise.all([0, 1, 2].map(() => store.decide([check(limit, 'c')], now)));
    assert.equal(store.roundTrips - trips, 1, 'one script call');
    assert.deepEqual(decisions.map((d) => d.allowed), [true, true, false]);
    assert.equal(decisions[2].outcomes[0].blockStarted, true);
    const redis = inspector(target);
    const key = prefix + '{bttl}:ip:60000:sw:c';
    const [blockedUntil, start, current] = (await redis.get(key))!.slice(1).split(' ').map(Number);
    assert.deepEqual([blockedUntil, start, current], [now + 1_000, now - (now % 60_000), 2]);
    // The counts' TTL (the rest of two windows), not only the block's second.
    const ttl = await redis.pttl(key);
    assert.ok(ttl > 60_000, `PTTL ${ttl}`);
  });

  it('a block longer than its window keeps the state key until the block ends; the counts stay', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    const prefix = testPrefix('long-block');
    const store = await openStore(config(target, prefix));
    const limit = limitFixture({ routeId: 'long', limit: 2, windowMs: 1_000, blockMs: 600_000, algorithm: 'token-bucket' });
    const decisions = [];
    for (let i = 0; i < 3; i++) decisions.push(await store.decide([check(limit, 'c')], Date.now()));
    assert.deepEqual(decisions.map((d) => d.allowed), [true, true, false]);
    const redis = inspector(target);
    const key = prefix + '{long}:ip:1000:tb:c';
    assert.ok((await redis.pttl(key)) > 590_000, 'the state key lives as long as the block');
    const [, units] = (await redis.get(key))!.split(' ').map(Number);
    assert.ok(units < 1_000, `the refused request took no token and the bucket is not reset: ${units}`);
    const again = await store.decide([check(limit, 'c')], Date.now());
    assert.equal(again.allowed, false);
    assert.ok(again.outcomes[0].retryAfterMs > 590_000);
  });
});

describe('redis store: clocks', () => {
  /** Allowed of 30 alternating decisions from two replicas whose clocks are 5 s apart. */
  async function skewed(target: RedisTarget, clock: 'redis' | 'local'): Promise<number> {
    const prefix = testPrefix('skew');
    const skewMs = 5_000;
    const [onTime, ahead] = await Promise.all([
      openStore(config(target, prefix, { clock })),
      openStore(config(target, prefix, { clock }), { clock: () => Date.now() + skewMs }),
    ]);
    // Windows as long as the skew: on their own clocks the two replicas are always one window apart.
    const windowMs = 5_000;
    const limit = limitFixture({ routeId: 'skew', limit: 10, windowMs, algorithm: 'sliding-window' });
    let allowed = 0;
    for (let i = 0; i < 30; i++) {
      const [store, now] = i % 2 === 0 ? [onTime, Date.now()] : [ahead, Date.now() + skewMs];
      const outcome = (await store.decide([check(limit, 'c')], now)).outcomes[0];
      if (!outcome.allowed) continue;
      allowed++;
      // Times come back on the caller's clock: an allowed request's window ends within one window from now.
      assert.ok(outcome.resetAt > now && outcome.resetAt <= now + windowMs + 50, `resetAt ${outcome.resetAt - now} ms from now`);
    }
    return allowed;
  }

  it('clock: redis — two replicas whose clocks differ by 5 s enforce one limit, and answer in their own time', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    assert.equal(await skewed(target, 'redis'), 10);
  });

  it('clock: local — the same skew breaks the shared window (why clock: redis is the default)', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    assert.ok((await skewed(target, 'local')) > 10);
  });
});

describe('redis store: local block cache', () => {
  it('a blocked key is refused locally until its block ends: no round trip, retry from the block', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    const prefix = testPrefix('blockcache');
    const store = await openStore(config(target, prefix));
    const limit = limitFixture({ routeId: 'otp', limit: 2, windowMs: 60_000, blockMs: 120_000, algorithm: 'sliding-window' });
    const other = limitFixture({ routeId: 'otp', by: 'global', limit: 1_000, windowMs: 60_000, algorithm: 'fixed-window', index: 1 });
    const start = store.roundTrips;
    await store.decide([check(limit, 'attacker')], Date.now());
    await store.decide([check(limit, 'attacker')], Date.now());
    const tripped = await store.decide([check(limit, 'attacker'), check(other, '*')], Date.now());
    assert.equal(tripped.allowed, false);
    assert.equal(tripped.outcomes[0].blockStarted, true);
    const blockedUntil = tripped.outcomes[0].blockedUntil;
    assert.equal(store.roundTrips, start + 3);

    for (let i = 0; i < 20; i++) {
      const now = Date.now();
      const decision = await store.decide([check(limit, 'attacker'), check(other, '*')], now);
      assert.equal(decision.allowed, false);
      const [blocked, unevaluated] = decision.outcomes;
      assert.equal(blocked.allowed, false);
      assert.equal(blocked.blockedUntil, blockedUntil);
      assert.equal(blocked.blockStarted, false);
      assert.equal(blocked.retryAfterMs >= blockedUntil - now, true);
      assert.deepEqual([unevaluated.allowed, unevaluated.remaining, unevaluated.max], [true, 1_000, 1_000]);
    }
    assert.equal(store.roundTrips, start + 3, 'blocked decisions made no round trip');

    // The block is shared: a replica without the cache entry is refused by Redis.
    const replica = await openStore(config(target, prefix));
    const fromRedis = await replica.decide([check(limit, 'attacker')], Date.now());
    assert.equal(fromRedis.allowed, false);
    assert.ok(Math.abs(fromRedis.outcomes[0].blockedUntil - blockedUntil) <= 50);
    // Another client is not affected by the cache.
    assert.equal((await store.decide([check(limit, 'someone-else')], Date.now())).allowed, true);
    assert.equal(store.roundTrips, start + 4);
  });

  it('after the block ends the key goes back to Redis', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    const store = await openStore(config(target, testPrefix('blockend'), { clock: 'local' }));
    const limit = limitFixture({ routeId: 'otp', limit: 1, windowMs: 1_000, blockMs: 2_000, algorithm: 'fixed-window' });
    const t0 = 1_000_000;
    await store.decide([check(limit, 'x')], t0);
    const tripped = await store.decide([check(limit, 'x')], t0 + 1);
    assert.equal(tripped.outcomes[0].blockedUntil, t0 + 2_001);
    const trips = store.roundTrips;
    assert.equal((await store.decide([check(limit, 'x')], t0 + 2_000)).allowed, false);
    assert.equal(store.roundTrips, trips);
    const after = await store.decide([check(limit, 'x')], t0 + 2_001);
    assert.equal(after.allowed, true);
    assert.equal(store.roundTrips, trips + 1);
  });
});

describe('redis store: replicas', () => {
  it('counts live replicas from the heartbeat set; a closed replica leaves it', async (t) => {
    const target = await requireSharedRedis(t);
    if (target === undefined) return;
    const prefix = testPrefix('replicas');
    const cfg = config(target, prefix, { expectedReplicas: 7 });
    const first = openRedisStore(cfg, { heartbeatMs: 50 });
    opened.push(first);
    assert.equal(first.liveReplicas, 7, 'expectedReplicas before any heartbeat');
    const second = await openStore(cfg, { heartbeatMs: 50 });
    await eventually(() => first.liveReplicas === 2 && second.liveReplicas === 2, { what: 'two live replicas' });
    await second.close();
    await eventually(() => first.liveReplicas === 1, { what: 'one live replica' });
  });
});

describe('redis store: NOSCRIPT', () => {
  it('SCRIPT FLUSH in the middle of concurrent load causes no error and no double count', async (t) => {
    if (!requireRedisServer(t)) return;
    const server = await spawnRedis();
    t.after(() => server.stop());
    const metrics: Metrics = createMetrics({ defaultMetrics: false });
    const prefix = testPrefix('noscript');
    const [a, b] = await Promise.all([openStore(config(server, prefix), { metrics }), openStore(config(server, prefix), { metrics })]);
    const admin = inspector(server);
    const errorsBefore = await storeErrors(metrics); // failed polls while connecting
    const limit = limitFixture({ routeId: 'flush', limit: 1_000, windowMs: DAY_MS, algorithm: 'sliding-log' });
    let flushes = 0;
    const worker = async (store: RedisStore, n: number): Promise<StoreDecision[]> => {
      const out: StoreDecision[] = [];
      for (let i = 0; i < n; i++) {
        const batch = await Promise.all(Array.from({ length: 10 }, () => store.decide([check(limit, 'c')], Date.now())));
        out.push(...batch);
        if (i % 10 === 5) {
          await admin.script('FLUSH');
          flushes++;
        }
      }
      return out;
    };
    const results = (await Promise.all([worker(a, 60), worker(b, 60)])).flat();
    assert.ok(flushes >= 10);
    // The flushes did bite: Redis answered NOSCRIPT, and ioredis re-sent the script.
    const noscript = /errorstat_NOSCRIPT:count=(\d+)/.exec(await admin.info('errorstats'));
    assert.ok(noscript !== null && Number(noscript[1]) > 0, 'no NOSCRIPT reply was provoked');
    assert.equal(results.length, 1_200);
    assert.equal(countAllowed(results), 1_000);
    assert.equal(await storeErrors(metrics), errorsBefore);
  });
});
