/**
 * The Lua decide script and the TypeScript algorithms are one definition in two
 * languages. With `clock: local` the Redis store must give exactly MemoryStore's
 * answer, field by field:
 * - the shared vectors of test/vectors/*.json (expected outcomes written out), each
 *   step also compared with a MemoryStore fed the same schedule;
 * - random schedules (fast-check) mixing algorithms, limits, windows, blocks, tiers,
 *   several checks per decision and repeated keys, at realistic epoch times.
 *
 * The block cache is off here: it answers blocked keys without reading their state
 * (tested in redis-store.test.ts).
 *
 * Deterministic: fixed seed; FC_SEED=<n> reruns another one, FC_RUNS=<n> more runs.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type { AlgorithmName } from '../../src/config/types.js';
import type { CompiledLimit, CompiledRateLimit } from '../../src/policy/types.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { RedisStore } from '../../src/store/redis/index.js';
import type { LimitCheck, StoreDecision, StoreHold } from '../../src/store/types.js';
import { limitFixture, openRedisStore, redisStoreConfig, requireSharedRedis, sharedRedis, stopSharedRedis, testPrefix, waitUntilShared } from '../helpers/redis.js';
import type { RedisTarget } from '../helpers/redis.js';
import { loadVectors, runVector } from '../vectors/load.js';

const SEED = Number(process.env.FC_SEED ?? 1_764_100_000);
const NUM_RUNS = Number(process.env.FC_RUNS ?? 80);
const ALGORITHM_NAMES: readonly AlgorithmName[] = ['sliding-window', 'sliding-log', 'fixed-window', 'token-bucket'];

/**
 * The Redis store's own clock (settlements read it; with `clock: local` they name the
 * window by it): vectors set it to the step's time; everything else runs on real time.
 */
let redisNow: number | undefined;

async function openStore(target: RedisTarget, name: string): Promise<RedisStore> {
  const store = openRedisStore(
    redisStoreConfig(target, {
      prefix: testPrefix(name),
      timeoutMs: 2_000, // generous: this suite checks arithmetic, not latency
      clock: 'local',
    }),
    { clock: () => redisNow ?? Date.now(), memoryFallback: { maxKeys: 10_000, maxBlocks: 10_000 }, blockCache: false },
  );
  await waitUntilShared((checks, now) => store.decide(checks, now));
  return store;
}

/** A MemoryStore whose clock is the schedule's `now`, as the proxy runs it. */
function memoryStore(): {
  store: MemoryStore;
  decide: (checks: readonly LimitCheck[], now: number, shadow?: boolean) => StoreDecision;
  setNow: (now: number) => void;
} {
  let current = 0;
  const store = new MemoryStore({ maxKeys: 100_000, maxBlocks: 100_000, clock: () => current });
  return {
    store,
    decide: (checks, now, shadow = false) => {
      current = now;
      return store.decide(checks, now, shadow);
    },
    setNow: (now) => {
      current = now;
    },
  };
}

describe('redis store = memory store (clock: local)', () => {
  let target: RedisTarget | undefined;
  let store: RedisStore | undefined;

  before(async () => {
    target = await sharedRedis();
    if (target !== undefined) store = await openStore(target, 'equivalence');
  });
  after(async () => {
    await store?.close();
    await stopSharedRedis();
  });

  it('replays every shared vector with the expected outcomes, agreeing with MemoryStore at each step', async (t) => {
    if ((await requireSharedRedis(t)) === undefined) return;
    const vectors = loadVectors();
    assert.ok(vectors.length > 0, 'no test/vectors/*.json found');
    for (const vector of vectors) {
      const memory = memoryStore();
      // The stores' holds differ in what they keep (lease members vs nothing): compare what they decided.
      const memoryHolds = new Map<StoreHold, StoreHold>();
      const decided = (d: StoreDecision) => ({ allowed: d.allowed, outcomes: d.outcomes, slots: d.hold?.slots });
      await runVector(
        vector,
        async (checks, now, shadow) => {
          const fromRedis = await (store as RedisStore).decide(checks, now, shadow);
          const fromMemory = memory.decide(checks, now, shadow);
          assert.deepEqual(decided(fromRedis), decided(fromMemory), `vector ${vector.name} at ${now}: redis != memory`);
          if (fromRedis.hold !== undefined && fromMemory.hold !== undefined) memoryHolds.set(fromRedis.hold, fromMemory.hold);
          return fromRedis;
        },
        undefined,
        async (hold, now, deltas) => {
          // The stores read their clocks when settling: the memory store's is set here; Redis
          // (clock: local) is handed `now` by its clock option below.
          memory.setNow(now);
          redisNow = now;
          (store as RedisStore).settle(hold, deltas);
          memory.store.settle(memoryHolds.get(hold) as StoreHold, deltas);
          await (store as RedisStore).settled();
        },
      );
    }
    redisNow = undefined;
  });

  it('agrees with MemoryStore on random schedules, outcome by outcome', async (t) => {
    if ((await requireSharedRedis(t)) === undefined) return;
    let run = 0;
    await fc.assert(
      fc.asyncProperty(scheduleArbitrary, async (schedule) => {
        const limits = schedule.limits.map((spec, index) =>
          limitFixture({ routeId: `fc${run}`, by: `l${index}`, index, algorithm: spec.algorithm, limit: spec.max, windowMs: spec.windowMs, blockMs: spec.blockMs }),
        );
        run++;
        const memory = memoryStore();
        let now = schedule.start;
        for (const [i, step] of schedule.steps.entries()) {
          now += gapMs(step.gap, limits);
          const checks: LimitCheck[] = step.checks.map((c) => {
            const limit = limits[c.limit % limits.length];
            return { limit, key: limit.keyPrefix + c.key, max: limit.limit + schedule.tiers[c.key] };
          });
          const expected = memory.decide(checks, now);
          const actual = await (store as RedisStore).decide(checks, now);
          assert.deepEqual(actual, expected, `step ${i} at ${now}`);
        }
      }),
      { seed: SEED, numRuns: NUM_RUNS, endOnFailure: true },
    );
  });
});

interface LimitSpec {
  algorithm: AlgorithmName;
  max: number;
  windowMs: number;
  blockMs: number;
}

type Gap = { kind: 'none' } | { kind: 'ms'; ms: number } | { kind: 'window'; limit: number; permille: number };

interface Step {
  gap: Gap;
  checks: { limit: number; key: 'a' | 'b' }[];
}

function gapMs(gap: Gap, limits: readonly CompiledLimit[]): number {
  switch (gap.kind) {
    case 'none':
      return 0;
    case 'ms':
      return gap.ms;
    case 'window':
      return Math.floor(((limits[gap.limit % limits.length] as CompiledRateLimit).windowMs * gap.permille) / 1000);
  }
}

const limitArbitrary: fc.Arbitrary<LimitSpec> = fc.record({
  algorithm: fc.constantFrom(...ALGORITHM_NAMES),
  max: fc.oneof(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 200 })),
  // Odd windows make the float divisions inexact; day-long ones make big products.
  windowMs: fc.constantFrom(1, 7, 100, 333, 1_000, 2_500, 60_000, 86_400_000),
  blockMs: fc.constantFrom(0, 0, 5, 1_000, 30_000),
});

const gapArbitrary: fc.Arbitrary<Gap> = fc.oneof(
  { weight: 2, arbitrary: fc.constant<Gap>({ kind: 'none' }) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 50 }).map((ms): Gap => ({ kind: 'ms', ms })) },
  // A clock with a fraction of a ms (the store takes any number): the reply's %.17g path.
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 50 }).map((ms): Gap => ({ kind: 'ms', ms: ms + 0.25 })) },
  {
    weight: 3,
    arbitrary: fc.record({ limit: fc.nat(3), permille: fc.integer({ min: 1, max: 2_200 }) }).map((g): Gap => ({ kind: 'window', ...g })),
  },
);

const stepArbitrary: fc.Arbitrary<Step> = fc.record({
  gap: gapArbitrary,
  checks: fc.array(
    fc.record({ limit: fc.nat(3), key: fc.constantFrom('a', 'b') as fc.Arbitrary<'a' | 'b'> }),
    { minLength: 1, maxLength: 3 },
  ),
});

const scheduleArbitrary = fc.record({
  limits: fc.array(limitArbitrary, { minLength: 1, maxLength: 3 }),
  // Realistic epoch milliseconds: the arithmetic must hold at 1.7e12, not only near 0.
  start: fc.integer({ min: 1_700_000_000_000, max: 1_800_000_000_000 }),
  steps: fc.array(stepArbitrary, { minLength: 1, maxLength: 40 }),
  /**
   * A client's tier raises its max. Fixed per client: MemoryStore forgets a token bucket
   * once it is full *for the max it was last counted with*, Redis keeps it for its TTL;
   * the two agree whenever a client's max does not change under it.
   */
  tiers: fc.record({ a: fc.constantFrom(0, 3), b: fc.constantFrom(0, 3) }),
});
