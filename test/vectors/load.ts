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
import type { LimitCheck, StoreDecision } from '../../src/store/types.js';

const VECTOR_DIR = fileURLToPath(new URL('.', import.meta.url));

const nonNegativeInt = z.number().int().nonnegative();

const limitSchema = z.strictObject({
  id: z.string().regex(/^[a-z0-9-]+$/),
  algorithm: z.enum(['sliding-window', 'sliding-log', 'fixed-window', 'token-bucket']),
  windowMs: z.number().int().positive(),
  blockMs: nonNegativeInt,
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
});

const stepSchema = z.strictObject({
  at: nonNegativeInt,
  /** Why this step expects what it does (free text, for the reader). */
  note: z.string().optional(),
  checks: z.array(checkSchema).min(1),
  expect: z.strictObject({
    allowed: z.boolean(),
    outcomes: z.array(outcomeSchema).min(1),
  }),
});

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
export type Vector = z.infer<typeof vectorSchema>;

/** Decides one request; a store's `decide` (with its clock set to `now`) fits. */
export type Decide = (checks: readonly LimitCheck[], now: number) => StoreDecision | Promise<StoreDecision>;

/** Builds the `CompiledLimit` for a vector limit; replace it to add a per-run key namespace. */
export type MakeLimit = (spec: VectorLimit, vector: Vector, index: number) => CompiledLimit;

/** `{vec-<name>}:<limitId>:` — the hash tag keeps a vector's keys in one Redis Cluster slot. */
export function vectorKeyPrefix(vectorName: string, limitId: string): string {
  return `{vec-${vectorName}}:${limitId}:`;
}

/** The default `MakeLimit`: a by-ip limit whose key prefix is `vectorKeyPrefix`. */
export const makeVectorLimit: MakeLimit = (spec, vector, index) => {
  const firstUse = vector.steps.flatMap((s) => s.checks).find((c) => c.limit === spec.id);
  return {
    index,
    routeId: `vec-${vector.name}`,
    by: 'ip',
    kind: 'ip',
    limit: firstUse?.max ?? 1,
    windowMs: spec.windowMs,
    blockMs: spec.blockMs,
    for: 'any',
    algorithm: spec.algorithm,
    keyPrefix: vectorKeyPrefix(vector.name, spec.id),
    policyName: `vec-${vector.name}.${spec.id}`,
    windowSeconds: Math.ceil(spec.windowMs / 1000),
    policyItem: '',
  };
};

/** Cross-field rules a schema cannot express; throws naming the file and step. */
function checkConsistency(vector: Vector, file: string): void {
  const ids = new Set<string>();
  for (const limit of vector.limits) {
    if (ids.has(limit.id)) throw new Error(`${file}: duplicate limit id "${limit.id}"`);
    ids.add(limit.id);
  }
  let previousAt = -Infinity;
  vector.steps.forEach((step, i) => {
    const where = `${file}: step ${i} (at ${step.at})`;
    if (step.at < previousAt) throw new Error(`${where}: time goes backwards`);
    previousAt = step.at;
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
 * Replays a vector through `decide` and asserts every step's decision and every field
 * of every outcome (plus `max`, which must echo the check). Store-agnostic: the caller
 * supplies a fresh store (or a fresh key namespace via `makeLimit`) per vector and
 * sets its clock to `now` inside `decide`.
 */
export async function runVector(vector: Vector, decide: Decide, makeLimit: MakeLimit = makeVectorLimit): Promise<void> {
  const limits = new Map(vector.limits.map((spec, i) => [spec.id, makeLimit(spec, vector, i)]));
  for (const [i, step] of vector.steps.entries()) {
    const checks: LimitCheck[] = step.checks.map((c) => {
      const limit = limits.get(c.limit) as CompiledLimit;
      return { limit, key: limit.keyPrefix + c.key, max: c.max };
    });
    const decision = await decide(checks, step.at);
    const where = `vector ${vector.name}, step ${i} at ${step.at}${step.note ? ` (${step.note})` : ''}`;
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
      })),
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
      })),
    };
    assert.deepEqual(actual, expected, where);
  }
}
