/**
 * Property tests: the four algorithms against the exact reference models of
 * ./reference.ts on random request schedules, plus their own invariants (ranges,
 * earliest retry-after, TTL safety, rate bounds).
 *
 * Deterministic: fixed seed; FC_SEED=<n> reruns another one. On failure fast-check
 * prints the shrunk schedule together with the seed and path that reproduce it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { AlgorithmName } from '../../src/config/types.js';
import { ALGORITHMS } from '../../src/limiter/algorithms/index.js';
import type { Verdict } from '../../src/limiter/algorithms/index.js';
import { GcraModel, referenceModel } from './reference.js';

const SEED = Number(process.env.FC_SEED ?? 1_764_000_000);
const NUM_RUNS = Number(process.env.FC_RUNS ?? 300);
const NAMES: readonly AlgorithmName[] = ['sliding-window', 'sliding-log', 'fixed-window', 'token-bucket'];

/** How far the next request comes after the previous one. */
type Gap =
  | { kind: 'same-ms' }
  | { kind: 'ms'; ms: number }
  | { kind: 'window-fraction'; permille: number }
  | { kind: 'window-edge'; windows: number; offset: number }
  /** Exactly at (or 1 ms either side of) the last refusal's retry-after: the sharpest edge. */
  | { kind: 'at-retry'; offset: number };

interface Step {
  gap: Gap;
  /** Use the second limit (a tier, or a degraded-mode division) for this request. */
  useAltMax: boolean;
}

interface Schedule {
  windowMs: number;
  max: number;
  altMax: number;
  /** Whether `useAltMax` is honoured; the rate-bound properties need one constant limit. */
  varyMax: boolean;
  origin: number;
  steps: Step[];
}

const gapArb: fc.Arbitrary<Gap> = fc.oneof(
  { weight: 4, arbitrary: fc.constant<Gap>({ kind: 'same-ms' }) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 3 }).map((ms): Gap => ({ kind: 'ms', ms })) },
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 3000 }).map((permille): Gap => ({ kind: 'window-fraction', permille })) },
  {
    weight: 2,
    arbitrary: fc
      .record({ windows: fc.integer({ min: 0, max: 3 }), offset: fc.integer({ min: -1, max: 1 }) })
      .map((g): Gap => ({ kind: 'window-edge', ...g })),
  },
  { weight: 3, arbitrary: fc.integer({ min: -1, max: 1 }).map((offset): Gap => ({ kind: 'at-retry', offset })) },
);

const scheduleArb: fc.Arbitrary<Schedule> = fc.record({
  windowMs: fc.oneof(
    fc.integer({ min: 1, max: 20 }),
    fc.constantFrom(1000, 60_000, 3_600_000, 7_200_000),
    fc.integer({ min: 1, max: 7_200_000 }),
  ),
  max: fc.integer({ min: 1, max: 20 }),
  altMax: fc.integer({ min: 1, max: 20 }),
  varyMax: fc.boolean(),
  origin: fc.oneof(
    fc.integer({ min: 0, max: 10_000 }),
    fc.constant(1_764_000_000_000),
    fc.integer({ min: 1_700_000_000_000, max: 1_800_000_000_000 }),
  ),
  steps: fc.array(fc.record({ gap: gapArb, useAltMax: fc.boolean() }), { minLength: 1, maxLength: 60, size: 'max' }),
});

function gapMs(gap: Gap, windowMs: number, lastRetryAfterMs: number): number {
  switch (gap.kind) {
    case 'same-ms':
      return 0;
    case 'ms':
      return gap.ms;
    case 'window-fraction':
      return Math.floor((windowMs * gap.permille) / 1000);
    case 'window-edge':
      return Math.max(0, gap.windows * windowMs + gap.offset);
    case 'at-retry':
      return lastRetryAfterMs === 0 ? 0 : Math.max(0, lastRetryAfterMs + gap.offset);
  }
}

function verdictFields(v: Verdict): Verdict {
  return { allowed: v.allowed, remaining: v.remaining, resetAt: v.resetAt, retryAfterMs: v.retryAfterMs, count: v.count };
}

/** What one run of a schedule produced, for the whole-history properties. */
interface Run {
  accepted: number[];
}

/** Which per-request properties a replay asserts (one `it` each, for a precise report). */
interface Checks {
  reference?: boolean;
  retry?: boolean;
  ranges?: boolean;
  ttl?: boolean;
}

/**
 * Replays a schedule through the implementation (which decides what gets counted)
 * and, if asked, the reference model side by side, asserting the chosen per-request
 * properties on the way.
 */
function replay(name: AlgorithmName, s: Schedule, checks: Checks): Run {
  const algorithm = ALGORITHMS[name];
  const model = referenceModel(name, s.windowMs);
  const W = s.windowMs;
  let state: unknown = undefined;
  let now = s.origin;
  let lastRetryAfterMs = 0;
  const accepted: number[] = [];

  s.steps.forEach((step, i) => {
    now += gapMs(step.gap, W, lastRetryAfterMs);
    const max = s.varyMax && step.useAltMax ? s.altMax : s.max;
    const where = `${name} W=${W} max=${max} step ${i} at ${now}`;

    const before = structuredClone(state);
    const verdict = verdictFields(algorithm.peek(state, max, W, now));
    assert.deepEqual(state, before, `${where}: peek mutated the state`);

    if (checks.reference) {
      // Same decision and same numbers as the exact model.
      assert.deepEqual(verdict, model.verdict(max, now), `${where}: implementation vs reference`);
    }
    if (checks.ranges) checkRanges(verdict, max, now, where);
    if (checks.retry && !verdict.allowed) {
      // Earliest retry: allowed exactly then, still refused one ms earlier.
      const at = algorithm.peek(state, max, W, now + verdict.retryAfterMs);
      assert.ok(at.allowed, `${where}: refused again at now + retryAfterMs (${verdict.retryAfterMs})`);
      const justBefore = algorithm.peek(state, max, W, now + verdict.retryAfterMs - 1);
      assert.ok(!justBefore.allowed, `${where}: already allowed at now + retryAfterMs - 1 (${verdict.retryAfterMs - 1})`);
    }

    if (verdict.allowed) {
      state = algorithm.consume(state, max, W, now);
      if (checks.reference) model.accept(max, now);
      accepted.push(now);
      lastRetryAfterMs = 0;
      if (checks.ttl) checkTtl(name, state, max, W, now, where);
    } else {
      lastRetryAfterMs = verdict.retryAfterMs;
    }
  });
  return { accepted };
}

/** The ranges the response headers rely on. */
function checkRanges(verdict: Verdict, max: number, now: number, where: string): void {
  assert.ok(Number.isInteger(verdict.remaining) && Number.isInteger(verdict.count), `${where}: whole numbers`);
  assert.ok(Number.isInteger(verdict.resetAt) && Number.isInteger(verdict.retryAfterMs), `${where}: integer ms`);
  assert.ok(verdict.resetAt >= now, `${where}: resetAt ${verdict.resetAt} before now`);
  if (verdict.allowed) {
    assert.ok(verdict.remaining >= 0 && verdict.remaining <= max - 1, `${where}: remaining ${verdict.remaining}`);
    assert.ok(verdict.count >= 1 && verdict.count <= max, `${where}: count ${verdict.count}`);
    assert.equal(verdict.retryAfterMs, 0, `${where}: retryAfterMs when allowed`);
  } else {
    assert.equal(verdict.remaining, 0, `${where}: remaining when refused`);
    assert.ok(verdict.retryAfterMs >= 1, `${where}: retryAfterMs ${verdict.retryAfterMs}`);
    assert.ok(verdict.resetAt >= now + verdict.retryAfterMs, `${where}: quota full before the first retry`);
  }
}

/**
 * `ttlMs` never drops state that still matters: from now + ttl on, the state and "no
 * history" give the same verdicts, and counting one more request on either leaves the
 * same verdict too.
 */
function checkTtl(name: AlgorithmName, state: unknown, max: number, W: number, now: number, where: string): void {
  const algorithm = ALGORITHMS[name];
  const ttl = algorithm.ttlMs(state, max, W, now);
  assert.ok(Number.isInteger(ttl) && ttl >= 1, `${where}: ttlMs ${ttl}`);
  for (const t of [now + ttl, now + ttl + 1, now + ttl + Math.ceil(W / 2), now + ttl + W, now + ttl + 3 * W]) {
    const kept = structuredClone(state);
    const probe = `${where}: ttl ${ttl}, probed at ${t}`;
    assert.deepEqual(
      verdictFields(algorithm.peek(kept, max, W, t)),
      verdictFields(algorithm.peek(undefined, max, W, t)),
      `${probe}: state expired by ttl still changes the verdict`,
    );
    const afterKept = algorithm.consume(kept, max, W, t);
    const afterFresh = algorithm.consume(undefined, max, W, t);
    assert.deepEqual(
      verdictFields(algorithm.peek(afterKept, max, W, t)),
      verdictFields(algorithm.peek(afterFresh, max, W, t)),
      `${probe}: counting on the expired state differs from counting on no state`,
    );
  }
}

/** Number of timestamps (ascending) in [from, from + length). */
function countFrom(sorted: number[], i: number, length: number): number {
  let n = 0;
  for (let j = i; j < sorted.length && sorted[j] < sorted[i] + length; j++) n++;
  return n;
}

const RATE_BOUNDS: Record<AlgorithmName, (accepted: number[], max: number, W: number) => void> = {
  'fixed-window'(accepted, max, W) {
    const perWindow = new Map<number, number>();
    for (const t of accepted) perWindow.set(t - (t % W), (perWindow.get(t - (t % W)) ?? 0) + 1);
    for (const [start, n] of perWindow) assert.ok(n <= max, `${n} requests in aligned window ${start}`);
  },
  'sliding-log'(accepted, max, W) {
    // Any window of length W holding k requests can slide to start on its first one.
    accepted.forEach((t, i) => assert.ok(countFrom(accepted, i, W) <= max, `> ${max} requests in [${t}, ${t + W})`));
  },
  'sliding-window'(accepted, max, W) {
    accepted.forEach((t, i) => assert.ok(countFrom(accepted, i, W) <= 2 * max, `> 2*${max} requests in [${t}, ${t + W})`));
  },
  'token-bucket'(accepted, max, W) {
    // Over [t_i, t_j]: at most a full bucket plus what refilled meanwhile.
    for (let i = 0; i < accepted.length; i++) {
      for (let j = i; j < accepted.length; j++) {
        const n = j - i + 1;
        assert.ok((n - max) * W <= (accepted[j] - accepted[i]) * max, `${n} requests in [${accepted[i]}, ${accepted[j]}]`);
      }
    }
  },
};

const RUN_OPTIONS = { seed: SEED, numRuns: NUM_RUNS, includeErrorInReport: true };

for (const name of NAMES) {
  describe(`${name} (property)`, () => {
    it('decides exactly like the reference model (every verdict field)', () => {
      fc.assert(
        fc.property(scheduleArb, (s) => void replay(name, s, { reference: true })),
        RUN_OPTIONS,
      );
    });

    it('names the earliest retry: allowed at now + retryAfterMs, refused 1 ms before', () => {
      fc.assert(
        fc.property(scheduleArb, (s) => void replay(name, s, { retry: true })),
        RUN_OPTIONS,
      );
    });

    it('keeps remaining/count/resetAt in range and never exceeds its rate bound', () => {
      fc.assert(
        fc.property(scheduleArb, (s) => {
          const { accepted } = replay(name, s, { ranges: true });
          if (!s.varyMax) RATE_BOUNDS[name](accepted, s.max, s.windowMs);
        }),
        RUN_OPTIONS,
      );
    });

    it('ttlMs never drops state that still matters', () => {
      fc.assert(
        fc.property(scheduleArb, (s) => void replay(name, s, { ttl: true })),
        RUN_OPTIONS,
      );
    });
  });
}

describe('reference models', () => {
  it('the token-bucket model agrees with GCRA, an independent formulation', () => {
    fc.assert(
      fc.property(scheduleArb, (s) => {
        const bucket = referenceModel('token-bucket', s.windowMs);
        const gcra = new GcraModel(s.max, s.windowMs);
        let now = s.origin;
        let lastRetryAfterMs = 0;
        for (const step of s.steps) {
          now += gapMs(step.gap, s.windowMs, lastRetryAfterMs);
          const v = bucket.verdict(s.max, now);
          assert.equal(v.allowed, gcra.allows(now), `at ${now}`);
          if (v.allowed) {
            bucket.accept(s.max, now);
            gcra.accept(now);
          }
          lastRetryAfterMs = v.retryAfterMs;
        }
      }),
      RUN_OPTIONS,
    );
  });

  it('the counting models agree with hand-computed answers', () => {
    // W = 10, max = 2, accepted at 0 and 9.
    const fixed = referenceModel('fixed-window', 10);
    const log = referenceModel('sliding-log', 10);
    const sliding = referenceModel('sliding-window', 10);
    for (const m of [fixed, log, sliding]) {
      m.accept(2, 0);
      m.accept(2, 9);
    }
    assert.deepEqual(fixed.verdict(2, 9), { allowed: false, remaining: 0, resetAt: 10, retryAfterMs: 1, count: 2 });
    assert.equal(fixed.allows(2, 10), true);
    // Entry 0 leaves (t - 10, t] at t = 10.
    assert.deepEqual(log.verdict(2, 9), { allowed: false, remaining: 0, resetAt: 19, retryAfterMs: 1, count: 2 });
    // At 12: prev = 2 weighted (10 - 2) / 10 = 1.6; 1.6 + 1 > 2 until prev weight <= 1/2, at 15.
    assert.deepEqual(sliding.verdict(2, 12), { allowed: false, remaining: 0, resetAt: 20, retryAfterMs: 3, count: 2 });
    assert.deepEqual(sliding.verdict(2, 15), { allowed: true, remaining: 0, resetAt: 20, retryAfterMs: 0, count: 2 });
  });
});
