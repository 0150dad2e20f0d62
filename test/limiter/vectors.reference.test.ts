/**
 * The shared vectors were computed by hand; this replays them through the reference
 * store (exact models + the store contract) so an arithmetic slip in a vector fails
 * here, independently of the implementation.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { LimitOutcome, StoreDecision, StoreHold } from '../../src/store/types.js';
import { loadVectors, parseVector, runVector, type DecideStep } from '../vectors/load.js';
import { ReferenceStore, referenceCheck, type ReferenceHold } from './reference.js';

const vectors = loadVectors();
const decisions = (v: (typeof vectors)[number]): DecideStep[] => v.steps.filter((s): s is DecideStep => 'checks' in s);


describe('shared vectors (against the reference store)', () => {
  it('there are vectors for every algorithm, blocks and multi-check decisions', () => {
    assert.ok(vectors.length >= 8, `only ${vectors.length} vectors`);
    const algorithms = new Set(vectors.flatMap((v) => v.limits.map((l) => l.algorithm)));
    assert.deepEqual([...algorithms].sort(), ['concurrent', 'fixed-window', 'sliding-log', 'sliding-window', 'token-bucket']);
    assert.ok(vectors.some((v) => decisions(v).some((s) => s.expect.outcomes.some((o) => o.blockStarted))));
    assert.ok(vectors.some((v) => decisions(v).some((s) => s.checks.length > 1 && !s.expect.allowed)));
    assert.ok(vectors.some((v) => v.steps.some((s) => s.at >= 1_700_000_000_000)), 'some vectors use unix-ms times');
    assert.ok(vectors.some((v) => v.steps.some((s) => 'settle' in s)), 'some vectors give slots back');
    assert.ok(vectors.some((v) => decisions(v).some((s) => s.shadow === true && !s.expect.allowed)), 'a refused shadow decision takes its slot');
  });

  for (const vector of vectors) {
    it(vector.name, async () => {
      const store = new ReferenceStore();
      const references = new Map<StoreHold, ReferenceHold>();
      await runVector(
        vector,
        (checks, now, shadow): StoreDecision => {
          const decision = store.decide(checks.map(referenceCheck), now, shadow);
          const outcomes = decision.outcomes.map((o, i): LimitOutcome => ({ ...o, max: checks[i].max }));
          if (decision.hold === undefined) return { allowed: decision.allowed, outcomes };
          const hold: StoreHold = { checks, slots: decision.hold.slots, counted: decision.allowed, at: now };
          references.set(hold, decision.hold);
          return { allowed: decision.allowed, outcomes, hold };
        },
        undefined,
        (hold, now, deltas) => store.settle(references.get(hold) as ReferenceHold, now, deltas),
      );
    });
  }
});

describe('vector loader', () => {
  const valid = {
    name: 'sample',
    description: 'x',
    limits: [{ id: 'a', algorithm: 'fixed-window', windowMs: 10, blockMs: 0 }],
    steps: [
      {
        at: 0,
        checks: [{ limit: 'a', key: 'k', max: 1 }],
        expect: {
          allowed: true,
          outcomes: [{ allowed: true, remaining: 0, resetAt: 10, retryAfterMs: 0, count: 1, blockedUntil: 0, blockStarted: false }],
        },
      },
    ],
  };

  it('accepts a well-formed vector', () => {
    assert.equal(parseVector(JSON.stringify(valid), 'sample.json').name, 'sample');
  });

  it('rejects misspelled fields, unknown limits, misaligned outcomes and a wrong name', () => {
    const cases: Array<[string, (v: any) => void, RegExp]> = [
      ['misspelled field', (v) => (v.steps[0].expect.outcomes[0].retryAfter = 0), /retryAfter/],
      ['unknown limit', (v) => (v.steps[0].checks[0].limit = 'b'), /unknown limit "b"/],
      ['outcome count', (v) => v.steps[0].expect.outcomes.push(v.steps[0].expect.outcomes[0]), /1 checks but 2 outcomes/],
      ['allowed mismatch', (v) => (v.steps[0].expect.allowed = false), /expect.allowed/],
      ['time backwards', (v) => (v.steps = [{ ...v.steps[0], at: 5 }, { ...v.steps[0], at: 3 }]), /step 1 \(at 3\): time goes backwards/],
      ['negative time', (v) => (v.steps[0].at = -1), /at/],
      ['unknown algorithm', (v) => (v.limits[0].algorithm = 'leaky-bucket'), /algorithm/],
    ];
    for (const [label, mutate, message] of cases) {
      const v = structuredClone(valid);
      mutate(v);
      assert.throws(() => parseVector(JSON.stringify(v), 'sample.json'), message, label);
    }
    assert.throws(() => parseVector(JSON.stringify(valid), 'other.json'), /must match the file name/);
  });

  it('reports the first differing step with its note', async () => {
    const vector = parseVector(JSON.stringify({ ...valid, steps: [{ ...valid.steps[0], note: 'the note' }] }), 'sample.json');
    await assert.rejects(
      runVector(vector, (checks) => ({
        allowed: true,
        outcomes: checks.map((c) => ({ allowed: true, max: c.max, remaining: 0, resetAt: 11, retryAfterMs: 0, count: 1, blockedUntil: 0, blockStarted: false, strike: 0 })),
      })),
      /vector sample, step 0 at 0 \(the note\)/,
    );
  });
});
