/**
 * Shared decision vectors: hand-written request schedules with the exact outcome of
 * every decision, run against every store (memory, Redis) so they decide alike.
 * The format is described in ./README.md; files are validated on load, so a typo in a
 * vector fails loudly instead of silently checking nothing.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import type { CompiledLimit } from '../../src/policy/types.js';
import { concurrencyLimit, rateLimit } from '../helpers/limits.js';
import type { LimitCheck, StoreDecision, StoreHold } from '../../src/store/types.js';

const VECTOR_DIR = fileURLToPath(new URL('.', import.meta.url));

const nonNegativeInt = z.number().int().nonnegative();

const limitSchema = z.strictObject({
  id: z.string().regex(/^[a-z0-9-]+$/),
  /** `concurrent`: a concurrency limit (slots held at once), with no window or block. */
  algorithm: z.enum(['sliding-window', 'sliding-log', 'fixed-window', 'token-bucket', 'concurrent']),
  /** A calendar window's nominal length (see `period`). */
  windowMs: z.number().int().positive().optional(),
  blockMs: nonNegativeInt.optional(),
  /** Escalating blocks (two or more durations; `blockMs` is then the first). */
  blocks: z.array(z.number().int().positive()).min(2).optional(),
  /** Default: twice the longest block. */
  forgetAfterMs: z.number().int().positive().optional(),
  /** A static weight N (needs and takes N units), or a cost the upstream reports (needs 1, reserves `default`). */
  cost: z.union([z.number().int().positive(), z.strictObject({ default: nonNegativeInt })]).optional(),
  /** Calendar periods (fixed-window only): `{ unit: "mo", count: 1, timezone: "Europe/Berlin" }`. */
  period: z.strictObject({ unit: z.enum(['d', 'w', 'mo']), count: z.number().int().positive(), timezone: z.string().optional() }).optional(),
});

const checkSchema = z.strictObject({
  /** A limit `id` of this vector. */
  limit: z.string(),
  /** Client key; the store key is `{vec-<name>}:<limit id>:<key>`. */
  key: z.string().min(1),
  max: z.number().int().positive(),
});

const outcomeSchema = z.strictObject({
  allowed: z.boolean(),
  remaining: nonNegativeInt,
  resetAt: nonNegativeInt,
  retryAfterMs: nonNegativeInt,
  count: nonNegativeInt,
  blockedUntil: nonNegativeInt,
  blockStarted: z.boolean(),
  /** The strike of the block this request started (escalating blocks); omitted: 0, or 1 with blockStarted. */
  strike: nonNegativeInt.optional(),
});

/** One decision. */
const decideStepSchema = z.strictObject({
  at: nonNegativeInt,
  /** Why this step expects what it does (free text, for the reader). */
  note: z.string().optional(),
  /** A shadow route's decision: takes its slots even when refused. */
  shadow: z.boolean().optional(),
  checks: z.array(checkSchema).min(1),
  expect: z.strictObject({
    allowed: z.boolean(),
    outcomes: z.array(outcomeSchema).min(1),
    /** Per check: the decision took a slot for it (omitted: none). */
    slots: z.array(z.boolean()).optional(),
  }),
  /** Keep the decision's hold under this name, for a later `settle` step. */
  hold: z.string().optional(),
});

/** The exchange of a kept decision ended: give back what it holds, and add `deltas[i]` units to check i. */
const settleStepSchema = z.strictObject({
  at: nonNegativeInt,
  note: z.string().optional(),
  settle: z.string(),
  /** Per check of the kept decision: units to add (negative: give back); omitted: none. */
  deltas: z.array(z.number().int()).optional(),
});

const stepSchema = z.union([decideStepSchema, settleStepSchema]);

const vectorSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9-]+$/),
  description: z.string().min(1),
  limits: z.array(limitSchema).min(1),
  steps: z.array(stepSchema).min(1),
});

export type VectorLimit = z.infer<typeof limitSchema>;
export type VectorCheck = z.infer<typeof checkSchema>;
export type ExpectedOutcome = z.infer<typeof outcomeSchema>;
export type VectorStep = z.infer<typeof stepSchema>;
export type DecideStep = z.infer<typeof decideStepSchema>;
export type Vector = z.infer<typeof vectorSchema>;

/** Decides one request; a store's `decide` (with its clock set to `now`) fits. */
export type Decide = (checks: readonly LimitCheck[], now: number, shadow: boolean) => StoreDecision | Promise<StoreDecision>;

/** Gives back a kept hold at `now` (with per-check unit deltas) and resolves once the store applied it (Redis: `settled()`). */
export type Settle = (hold: StoreHold, now: number, deltas: readonly number[] | null) => void | Promise<void>;

/** Builds the `CompiledLimit` for a vector limit; replace it to add a per-run key namespace. */
export type MakeLimit = (spec: VectorLimit, vector: Vector, index: number) => CompiledLimit;

/** `{vec-<name>}:<limitId>:` — the hash tag keeps a vector's keys in one Redis Cluster slot. */
export function vectorKeyPrefix(vectorName: string, limitId: string): string {
  return `{vec-${vectorName}}:${limitId}:`;
}

/** The default `MakeLimit`: a by-ip limit whose key prefix is `vectorKeyPrefix`. */
export const makeVectorLimit: MakeLimit = (spec, vector, index) => {
  const firstUse = vector.steps.flatMap((s) => ('checks' in s ? s.checks : [])).find((c) => c.limit === spec.id);
  const routeId = `vec-${vector.name}`;
  const keyPrefix = vectorKeyPrefix(vector.name, spec.id);
  const limit = firstUse?.max ?? 1;
  if (spec.algorithm === 'concurrent') return concurrencyLimit({ routeId, by: spec.id, concurrent: limit, index, keyPrefix });
  const cost = spec.cost === undefined || typeof spec.cost === 'number' ? spec.cost : { header: 'x-cost', default: spec.cost.default, max: Number.MAX_SAFE_INTEGER };
  return rateLimit({
    routeId,
    by: spec.id,
    limit,
    windowMs: spec.windowMs as number,
    blockMs: spec.blockMs,
    blocks: spec.blocks,
    forgetAfterMs: spec.forgetAfterMs,
    cost,
    period: spec.period,
    algorithm: spec.algorithm,
    index,
    keyPrefix,
  });
};

/** Cross-field rules a schema cannot express; throws naming the file and step. */
function checkConsistency(vector: Vector, file: string): void {
  const ids = new Set<string>();
  for (const limit of vector.limits) {
    if (ids.has(limit.id)) throw new Error(`${file}: duplicate limit id "${limit.id}"`);
    ids.add(limit.id);
    const rate = limit.algorithm !== 'concurrent';
    if (rate !== (limit.windowMs !== undefined && limit.blockMs !== undefined)) {
      throw new Error(`${file}: limit "${limit.id}": ${rate ? 'a rate limit needs windowMs and blockMs' : 'a concurrent limit has no windowMs or blockMs'}`);
    }
  }
  let previousAt = -Infinity;
  /** Kept holds: name -> the number of checks of the decision. */
  const held = new Map<string, number>();
  vector.steps.forEach((step, i) => {
    const where = `${file}: step ${i} (at ${step.at})`;
    if (step.at < previousAt) throw new Error(`${where}: time goes backwards`);
    previousAt = step.at;
    if ('settle' in step) {
      const checks = held.get(step.settle);
      if (checks === undefined) throw new Error(`${where}: settles "${step.settle}", which no earlier step holds (or it was settled already)`);
      held.delete(step.settle);
      if (step.deltas !== undefined && step.deltas.length !== checks) throw new Error(`${where}: ${step.deltas.length} deltas for a decision of ${checks} checks`);
      return;
    }
    if (step.hold !== undefined) {
      if (held.has(step.hold)) throw new Error(`${where}: hold "${step.hold}" is already in use`);
      held.set(step.hold, step.checks.length);
    }
    if (step.expect.slots !== undefined && step.expect.slots.length !== step.checks.length) {
      throw new Error(`${where}: ${step.checks.length} checks but ${step.expect.slots.length} slots`);
    }
    for (const check of step.checks) {
      if (!ids.has(check.limit)) throw new Error(`${where}: unknown limit "${check.limit}"`);
    }
    if (step.expect.outcomes.length !== step.checks.length) {
      throw new Error(`${where}: ${step.checks.length} checks but ${step.expect.outcomes.length} outcomes`);
    }
    const allAllowed = step.expect.outcomes.every((o) => o.allowed);
    if (step.expect.allowed !== allAllowed) throw new Error(`${where}: expect.allowed must be true iff every outcome is allowed`);
  });
}

/** Parses and validates one vector file. */
export function parseVector(text: string, file: string): Vector {
  const parsed = vectorSchema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(`${file}: ${z.prettifyError(parsed.error)}`);
  const vector = parsed.data;
  if (vector.name !== basename(file, '.json')) throw new Error(`${file}: name "${vector.name}" must match the file name`);
  checkConsistency(vector, file);
  return vector;
}

/** Every `test/vectors/*.json`, validated, in file-name order. */
export function loadVectors(dir: string = VECTOR_DIR): Vector[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => parseVector(readFileSync(join(dir, f), 'utf8'), f));
}

/**
 * Replays a vector through `decide` (and `settle` for its settle steps) and asserts
 * every step's decision, every field of every outcome (plus `max`, which must echo the
 * check) and which checks took a slot. Store-agnostic: the caller supplies a fresh store
 * (or a fresh key namespace via `makeLimit`) per vector and sets its clock to `now`
 * inside `decide`.
 */
export async function runVector(
  vector: Vector,
  decide: Decide,
  makeLimit: MakeLimit = makeVectorLimit,
  settle?: Settle,
): Promise<void> {
  const limits = new Map(vector.limits.map((spec, i) => [spec.id, makeLimit(spec, vector, i)]));
  const holds = new Map<string, StoreHold>();
  for (const [i, step] of vector.steps.entries()) {
    const where = `vector ${vector.name}, step ${i} at ${step.at}${step.note ? ` (${step.note})` : ''}`;
    if ('settle' in step) {
      const hold = holds.get(step.settle);
      assert.ok(hold !== undefined, `${where}: the decision kept as "${step.settle}" holds nothing`);
      assert.ok(settle !== undefined, `${where}: this store's runner has no settle`);
      holds.delete(step.settle);
      await settle(hold, step.at, step.deltas ?? null);
      continue;
    }
    const checks: LimitCheck[] = step.checks.map((c) => {
      const limit = limits.get(c.limit) as CompiledLimit;
      return { limit, key: limit.keyPrefix + c.key, max: c.max };
    });
    const decision = await decide(checks, step.at, step.shadow === true);
    assert.equal(decision.outcomes.length, checks.length, `${where}: one outcome per check`);
    const actual = {
      allowed: decision.allowed,
      outcomes: decision.outcomes.map((o) => ({
        allowed: o.allowed,
        max: o.max,
        remaining: o.remaining,
        resetAt: o.resetAt,
        retryAfterMs: o.retryAfterMs,
        count: o.count,
        blockedUntil: o.blockedUntil,
        blockStarted: o.blockStarted,
        strike: o.strike,
      })),
      slots: decision.hold?.slots ?? checks.map(() => false),
    };
    const expected = {
      allowed: step.expect.allowed,
      outcomes: step.expect.outcomes.map((o, j) => ({
        allowed: o.allowed,
        max: checks[j].max,
        remaining: o.remaining,
        resetAt: o.resetAt,
        retryAfterMs: o.retryAfterMs,
        count: o.count,
        blockedUntil: o.blockedUntil,
        blockStarted: o.blockStarted,
        strike: o.strike ?? (o.blockStarted ? 1 : 0),
      })),
      slots: step.expect.slots ?? checks.map(() => false),
    };
    assert.deepEqual(actual, expected, where);
    if (step.hold !== undefined) {
      assert.ok(decision.hold !== undefined, `${where}: expected a hold to keep as "${step.hold}"`);
      holds.set(step.hold, decision.hold);
    }
  }
}
