/**
 * MemoryStore: the shared vectors, the decision procedure against the reference store
 * on random traffic, and the bounded maps (a flood of new keys must not lift a block;
 * expiry follows the injected clock).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { AlgorithmName } from '../../src/config/types.js';
import type { CompiledLimit } from '../../src/policy/types.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { LimitCheck, StoreDecision } from '../../src/store/types.js';
import { ReferenceStore, referenceCheck } from '../limiter/reference.js';
import { loadVectors, runVector } from '../vectors/load.js';
import { rateLimit } from '../helpers/limits.js';

const SEED = Number(process.env.FC_SEED ?? 1_764_000_000);
const NAMES: readonly AlgorithmName[] = ['sliding-window', 'sliding-log', 'fixed-window', 'token-bucket'];
/** Realistic unix ms; also keeps every LRU start time non-zero. */
const T0 = 1_764_000_000_000;

type Structure = 'counters' | 'blocks';

/** A store on a hand-driven clock, counting evictions per structure. */
function storeOnClock(maxKeys = 1000, maxBlocks = 1000) {
  const clock = { now: T0 };
  const evictions: Record<Structure, number> = { counters: 0, blocks: 0 };
  const store = new MemoryStore({
    maxKeys,
    maxBlocks,
    clock: () => clock.now,
    onEvict: (structure) => evictions[structure]++,
  });
  const decide = (checks: readonly LimitCheck[], now: number, shadow = false): StoreDecision => {
    clock.now = now;
    return store.decide(checks, now, shadow);
  };
  return { store, clock, evictions, decide };
}

function limitOf(algorithm: AlgorithmName, windowMs: number, blockMs = 0, id = 'l'): CompiledLimit {
  return rateLimit({ routeId: 'memory-test', by: id, limit: 1, windowMs, blockMs, algorithm, keyPrefix: `mem:${id}:${algorithm}:${windowMs}:` });
}

function check(limit: CompiledLimit, client: string, max: number): LimitCheck {
  return { limit, key: limit.keyPrefix + client, max };
}

describe('MemoryStore: shared vectors', () => {
  for (const vector of loadVectors()) {
    it(vector.name, async () => {
      const { store, decide } = storeOnClock();
      await runVector(vector, decide, undefined, (hold, _now, deltas) => store.settle(hold, deltas));
    });
  }
});

describe('MemoryStore: decisions equal the reference store on random traffic', () => {
  interface LimitSpec {
    algorithm: AlgorithmName;
    windowMs: number;
    blockMs: number;
    max: number;
  }
  /** How far after the previous request; `retry` lands on the last refusal's retry time. */
  type Gap = { kind: 'ms'; ms: number } | { kind: 'retry'; offset: number };
  interface Request {
    gap: Gap;
    /** [limit index, client index] pairs, distinct limits, in limit order. */
    checks: Array<{ limit: number; client: number }>;
  }

  // Power-of-two windows keep the token bucket's float arithmetic exact, so this test
  // isolates the store's procedure (blocks, all-or-nothing) from the algorithms'
  // rounding, which test/limiter/algorithms.property.test.ts covers.
  const limitArb: fc.Arbitrary<LimitSpec> = fc.record({
    algorithm: fc.constantFrom(...NAMES),
    windowMs: fc.constantFrom(1, 2, 8, 64, 1024, 65_536),
    blockMs: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 3000 })),
    max: fc.integer({ min: 1, max: 5 }),
  });
  const ms = (arb: fc.Arbitrary<number>) => arb.map((n): Gap => ({ kind: 'ms', ms: n }));
  const gapArb: fc.Arbitrary<Gap> = fc.oneof(
    { weight: 5, arbitrary: ms(fc.integer({ min: 0, max: 20 })) },
    { weight: 3, arbitrary: ms(fc.integer({ min: 0, max: 3000 })) },
    { weight: 1, arbitrary: ms(fc.integer({ min: 0, max: 200_000 })) },
    { weight: 3, arbitrary: fc.integer({ min: -1, max: 1 }).map((offset): Gap => ({ kind: 'retry', offset })) },
  );
  const scenarioArb = fc.record({ limits: fc.array(limitArb, { minLength: 1, maxLength: 3 }) }).chain(({ limits }) =>
    fc.record({
      limits: fc.constant(limits),
      requests: fc.array(
        fc.record({
          gap: gapArb,
          // Repeats included: a decision may check one key twice (two limits sharing a key, a repeated check).
          checks: fc
            .array(fc.integer({ min: 0, max: limits.length - 1 }), { minLength: 1, maxLength: 4 })
            .chain((ids) => fc.tuple(...ids.map((limit) => fc.record({ limit: fc.constant(limit), client: fc.integer({ min: 0, max: 1 }) })))),
        }),
        { minLength: 1, maxLength: 40, size: 'max' },
      ),
    }),
  );

  it('same allowed, outcomes, blocks and counting', () => {
    // Outcomes refused by a running block, compared field by field (count included): the
    // generator must reach them, or this test would say nothing about blocks.
    let refusedByBlock = 0;
    let refusedByBlockWithCount = 0;
    fc.assert(
      fc.property(scenarioArb, ({ limits, requests }) => {
        const { decide } = storeOnClock();
        const reference = new ReferenceStore();
        const compiled = limits.map((l, i) => limitOf(l.algorithm, l.windowMs, l.blockMs, `p${i}`));
        let now = T0;
        let retryAfterMs = 0;
        requests.forEach((request: Request, step) => {
          const gap = request.gap;
          now += gap.kind === 'ms' ? gap.ms : Math.max(0, retryAfterMs + gap.offset);
          const checks = request.checks.map((c) => check(compiled[c.limit], `client-${c.client}`, limits[c.limit].max));
          const actual = decide(checks, now);
          const expected = reference.decide(checks.map(referenceCheck), now);
          const where = `step ${step} at ${now}`;
          assert.equal(actual.allowed, expected.allowed, `${where}: allowed`);
          actual.outcomes.forEach((o, i) => {
            assert.equal(o.max, checks[i].max, `${where}: outcome ${i} max`);
            const { max: _max, ...fields } = o;
            assert.deepEqual(fields, expected.outcomes[i], `${where}: outcome ${i}`);
            if (o.blockedUntil !== 0 && !o.blockStarted) {
              refusedByBlock++;
              if (o.count > 0) refusedByBlockWithCount++;
            }
          });
          retryAfterMs = Math.max(0, ...actual.outcomes.map((o) => o.retryAfterMs));
        });
      }),
      { seed: SEED, numRuns: 200, includeErrorInReport: true },
    );
    assert.ok(refusedByBlock >= 20, `only ${refusedByBlock} outcomes refused by a running block were compared`);
    assert.ok(refusedByBlockWithCount >= 10, `only ${refusedByBlockWithCount} of them with a non-zero count`);
  });
});

describe('MemoryStore: bounded maps', () => {
  it('a flood of maxKeys * 3 new keys evicts counters but does not lift a running block', () => {
    const maxKeys = 10;
    const { decide, evictions } = storeOnClock(maxKeys, 10);
    const login = limitOf('fixed-window', 1000, 60_000);
    const attacker = check(login, '203.0.113.1', 1);
    assert.equal(decide([attacker], T0).allowed, true);
    const tripped = decide([attacker], T0 + 1).outcomes[0];
    assert.equal(tripped.blockStarted, true);
    assert.equal(tripped.blockedUntil, T0 + 1 + 60_000);

    for (let i = 0; i < maxKeys * 3; i++) {
      assert.equal(decide([check(login, `198.51.100.${i}`, 1)], T0 + 2).allowed, true);
    }
    // 1 + 30 live counters through a bound of 10: 21 evicted, the attacker's among them.
    assert.equal(evictions.counters, 21);
    assert.equal(evictions.blocks, 0);

    // Next window: the counter alone would allow, the block still refuses.
    const after = decide([attacker], T0 + 5000).outcomes[0];
    assert.deepEqual(
      { allowed: after.allowed, blockedUntil: after.blockedUntil, blockStarted: after.blockStarted, retryAfterMs: after.retryAfterMs },
      { allowed: false, blockedUntil: T0 + 60_001, blockStarted: false, retryAfterMs: 55_001 },
    );
  });

  it('blocks expire on the injected clock: refused 1 ms before the end, allowed at the end', () => {
    const { decide } = storeOnClock();
    const login = limitOf('sliding-log', 100, 5000);
    const client = check(login, '192.0.2.8', 1);
    decide([client], T0);
    assert.equal(decide([client], T0 + 10).outcomes[0].blockedUntil, T0 + 5010);
    const last = decide([client], T0 + 5009).outcomes[0];
    assert.deepEqual([last.allowed, last.retryAfterMs, last.blockedUntil], [false, 1, T0 + 5010]);
    const free = decide([client], T0 + 5010).outcomes[0];
    assert.deepEqual([free.allowed, free.blockedUntil, free.remaining], [true, 0, 0]);
  });

  it('maxBlocks evicts the oldest block and counts it', () => {
    const { decide, evictions } = storeOnClock(100, 2);
    const login = limitOf('fixed-window', 100, 10_000);
    const clients = ['a', 'b', 'c'].map((c) => check(login, c, 1));
    for (const [i, c] of clients.entries()) {
      decide([c], T0 + i);
      assert.equal(decide([c], T0 + i).outcomes[0].blockStarted, true);
    }
    assert.equal(evictions.blocks, 1);
    assert.equal(evictions.counters, 0);
    // Window over, blocks would still run until T0 + 10_000: only the evicted one is lifted.
    const allowed = clients.map((c) => decide([c], T0 + 500).allowed);
    assert.deepEqual(allowed, [true, false, false]);
  });

  /**
   * When 3 requests at T0 + 7 on a limit of 3 per minute stop weighing at all, from each
   * algorithm's definition (T0 is an aligned minute): the store must keep their state
   * until then, and give the whole quota from then on.
   */
  const WHOLE_AGAIN_AT: Record<AlgorithmName, number> = {
    'fixed-window': T0 + 60_000, // the aligned window [T0, T0 + 1 m) ends
    'sliding-window': T0 + 120_000, // the window's count weighs on the next one until it ends
    'sliding-log': T0 + 7 + 60_000, // each request leaves the log a window after it
    'token-bucket': T0 + 7 + 60_000, // 3 tokens per window refill an emptied bucket in one window
  };

  for (const name of NAMES) {
    it(`${name}: keeps a state until its requests stop weighing, then gives the whole quota`, () => {
      const limit = limitOf(name, 60_000);
      const client = check(limit, '192.0.2.9', 3);
      /** A store that saw 3 allowed and 1 refused request at T0 + 7. */
      const used = () => {
        const store = storeOnClock();
        for (let i = 0; i < 3; i++) assert.equal(store.decide([client], T0 + 7).allowed, true);
        assert.equal(store.decide([client], T0 + 7).allowed, false);
        return store;
      };
      const at = WHOLE_AGAIN_AT[name];
      const before = used().decide([client], at - 1).outcomes[0];
      assert.ok(!before.allowed || before.remaining < 2, `1 ms before, the requests still weigh (remaining ${before.remaining})`);
      const whole = used().decide([client], at).outcomes[0];
      assert.deepEqual([whole.allowed, whole.remaining], [true, 2]);
    });
  }

  it('expired counters and blocks pushed out by new keys are not reported as evictions', () => {
    const { decide, evictions } = storeOnClock(4, 2);
    const login = limitOf('fixed-window', 1000, 2000);
    for (const c of ['a', 'b']) {
      decide([check(login, c, 1)], T0);
      assert.equal(decide([check(login, c, 1)], T0).outcomes[0].blockStarted, true);
    }
    for (const c of ['c', 'd']) decide([check(login, c, 1)], T0);
    // Every counter (ttl 1000) and block (2000) has expired: new keys replace dead entries.
    const later = T0 + 10_000;
    for (const c of ['e', 'f', 'g', 'h']) decide([check(login, c, 1)], later);
    for (const c of ['e', 'f']) assert.equal(decide([check(login, c, 1)], later).outcomes[0].blockStarted, true);
    assert.deepEqual(evictions, { counters: 0, blocks: 0 }, 'onEvict is for live entries only');
  });

  it('close() forgets every counter and block', async () => {
    const { store, decide } = storeOnClock();
    const login = limitOf('fixed-window', 1000, 60_000);
    const client = check(login, 'x', 1);
    decide([client], T0);
    decide([client], T0 + 1);
    await store.close();
    assert.equal(store.size, 0);
    assert.equal(decide([client], T0 + 2).allowed, true);
  });
});
