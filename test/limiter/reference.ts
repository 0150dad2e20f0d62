/**
 * Reference models of the four limiter algorithms: deliberately naive, exact and
 * independent of src/limiter/algorithms. Each keeps the whole history of accepted
 * requests (or an exact integer state) and answers "would one more request at `t` be
 * allowed?" with integer arithmetic only. Everything else (retry-after, reset) is
 * derived from that one predicate by search, not by formula, so a wrong formula in
 * the implementation cannot be mirrored here by accident.
 *
 * All times are integer ms; all counts are small integers; every product stays far
 * below 2^53 for windows up to days and limits up to millions.
 */
import type { AlgorithmName } from '../../src/config/types.js';
import type { LimitCheck } from '../../src/store/types.js';

/** The same fields as the implementation's `Verdict`, computed exactly. */
export interface ReferenceVerdict {
  allowed: boolean;
  remaining: number;
  resetAt: number;
  retryAfterMs: number;
  count: number;
}

export interface ReferenceModel {
  readonly algorithm: AlgorithmName;
  readonly windowMs: number;
  /** Would one more request at `t` (with limit `max`) be allowed? Never mutates. */
  allows(max: number, t: number): boolean;
  /** The full verdict for one more request at `t`. Never mutates. */
  verdict(max: number, t: number): ReferenceVerdict;
  /** Record a request accepted at `t` (non-decreasing) under limit `max`. */
  accept(max: number, t: number): void;
}

/** Integer floor(a / b) for integers a and b > 0, corrected so float division cannot round it. */
export function floorDiv(a: number, b: number): number {
  let q = Math.floor(a / b);
  while (q * b > a) q--;
  while ((q + 1) * b <= a) q++;
  return q;
}

/** Integer ceil(a / b) for integers a and b > 0. */
export function ceilDiv(a: number, b: number): number {
  return -floorDiv(-a, b);
}

/**
 * Smallest integer t in (lo, hi] with `pred(t)`, for a predicate that is false at lo
 * and monotone (once true, stays true). With no further traffic every algorithm's
 * "allowed" and "quota full" predicates are monotone in time.
 */
export function earliest(lo: number, hi: number, pred: (t: number) => boolean): number {
  if (!pred(hi)) throw new Error(`reference: predicate still false at ${hi} (searched from ${lo})`);
  while (hi - lo > 1) {
    const mid = lo + Math.floor((hi - lo) / 2);
    if (pred(mid)) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** Aligned window start containing t. */
function windowStart(t: number, windowMs: number): number {
  return t - (t % windowMs);
}

/** Base for the counting models: the accepted timestamps, oldest first. */
abstract class HistoryModel implements ReferenceModel {
  abstract readonly algorithm: AlgorithmName;
  protected log: number[] = [];
  constructor(readonly windowMs: number) {}

  abstract allows(max: number, t: number): boolean;
  abstract verdict(max: number, t: number): ReferenceVerdict;

  accept(_max: number, t: number): void {
    const last = this.log[this.log.length - 1];
    if (last !== undefined && t < last) throw new Error('reference: timestamps must not decrease');
    this.log.push(t);
    // No counting model looks back more than two windows; keep three.
    const keepFrom = t - 3 * this.windowMs;
    let drop = 0;
    while (drop < this.log.length && this.log[drop] < keepFrom) drop++;
    if (drop > 0) this.log.splice(0, drop);
  }

  /** Accepted requests with from <= ts < to. */
  protected countIn(from: number, to: number): number {
    let n = 0;
    for (const ts of this.log) if (ts >= from && ts < to) n++;
    return n;
  }

  /** Earliest wait from t until one more request is allowed; requires !allows(max, t). */
  protected retryAfter(max: number, t: number): number {
    return earliest(t, t + 3 * this.windowMs, (u) => this.allows(max, u)) - t;
  }
}

/** Fixed window: count the accepted requests in the aligned window [s, s + W). */
class FixedWindowModel extends HistoryModel {
  readonly algorithm = 'fixed-window' as const;

  private inWindow(t: number): number {
    const s = windowStart(t, this.windowMs);
    return this.countIn(s, s + this.windowMs);
  }

  allows(max: number, t: number): boolean {
    return this.inWindow(t) < max;
  }

  verdict(max: number, t: number): ReferenceVerdict {
    const n = this.inWindow(t);
    // The quota is full again when the aligned window ends.
    const resetAt = windowStart(t, this.windowMs) + this.windowMs;
    if (n < max) return { allowed: true, remaining: max - n - 1, resetAt, retryAfterMs: 0, count: n + 1 };
    return { allowed: false, remaining: 0, resetAt, retryAfterMs: this.retryAfter(max, t), count: n };
  }
}

/** Sliding log: count the accepted requests in (t - W, t]. */
class SlidingLogModel extends HistoryModel {
  readonly algorithm = 'sliding-log' as const;

  private live(t: number): number[] {
    return this.log.filter((ts) => ts > t - this.windowMs && ts <= t);
  }

  allows(max: number, t: number): boolean {
    return this.live(t).length < max;
  }

  verdict(max: number, t: number): ReferenceVerdict {
    const live = this.live(t);
    const n = live.length;
    if (n < max) {
      // Once this request is logged, everything has left the window at t + W.
      return { allowed: true, remaining: max - n - 1, resetAt: t + this.windowMs, retryAfterMs: 0, count: n + 1 };
    }
    // Quota full again when the newest live entry has left the window.
    const resetAt = earliest(t, t + this.windowMs, (u) => this.live(u).length === 0);
    return { allowed: false, remaining: 0, resetAt, retryAfterMs: this.retryAfter(max, t), count: n };
  }
}

/**
 * Sliding window (weighted counter): prev = accepted in [s - W, s), cur = accepted in
 * [s, s + W), estimate = prev * (W - (t - s)) / W + cur, allowed iff estimate + 1 <= max.
 * Compared as integers: prev * (W - e) + (cur + 1) * W <= max * W.
 */
class SlidingWindowModel extends HistoryModel {
  readonly algorithm = 'sliding-window' as const;

  /** estimate * W, an exact integer. */
  private scaledEstimate(t: number): { scaled: number; start: number } {
    const W = this.windowMs;
    const s = windowStart(t, W);
    const prev = this.countIn(s - W, s);
    const cur = this.countIn(s, s + W);
    return { scaled: prev * (W - (t - s)) + cur * W, start: s };
  }

  allows(max: number, t: number): boolean {
    return this.scaledEstimate(t).scaled + this.windowMs <= max * this.windowMs;
  }

  verdict(max: number, t: number): ReferenceVerdict {
    const W = this.windowMs;
    const { scaled, start } = this.scaledEstimate(t);
    // Reported reset is the end of the current aligned window (Envoy/Cloudflare
    // convention), not the time the estimate decays to zero.
    const windowEnd = start + W;
    if (scaled + W <= max * W) {
      return {
        allowed: true,
        remaining: floorDiv(max * W - scaled - W, W),
        resetAt: windowEnd,
        retryAfterMs: 0,
        count: ceilDiv(scaled, W) + 1,
      };
    }
    const retryAfterMs = this.retryAfter(max, t);
    return {
      allowed: false,
      remaining: 0,
      resetAt: Math.max(windowEnd, t + retryAfterMs),
      retryAfterMs,
      count: ceilDiv(scaled, W),
    };
  }
}

/**
 * Token bucket in exact integer units: one token = W units, so a bucket of `max`
 * tokens holds max * W units and refills `max` units per ms. `units` is the level
 * right after the last accepted request at `at` (the bucket starts full).
 */
class TokenBucketModel implements ReferenceModel {
  readonly algorithm = 'token-bucket' as const;
  private units: number | undefined = undefined;
  private at = 0;
  constructor(readonly windowMs: number) {}

  /** Level at t in units, capped at the current capacity. */
  level(max: number, t: number): number {
    const cap = max * this.windowMs;
    if (this.units === undefined) return cap;
    return Math.min(cap, this.units + Math.max(0, t - this.at) * max);
  }

  allows(max: number, t: number): boolean {
    return this.level(max, t) >= this.windowMs;
  }

  verdict(max: number, t: number): ReferenceVerdict {
    const W = this.windowMs;
    const cap = max * W;
    const level = this.level(max, t);
    if (level >= W) {
      const left = level - W;
      return {
        allowed: true,
        remaining: floorDiv(left, W),
        // Refill from `left` to `cap` at `max` units per ms.
        resetAt: t + ceilDiv(cap - left, max),
        retryAfterMs: 0,
        count: ceilDiv(cap - left, W),
      };
    }
    const retryAfterMs = earliest(t, t + W, (u) => this.allows(max, u)) - t;
    return {
      allowed: false,
      remaining: 0,
      resetAt: t + ceilDiv(cap - level, max),
      retryAfterMs,
      count: ceilDiv(cap - level, W),
    };
  }

  accept(max: number, t: number): void {
    if (t < this.at) throw new Error('reference: timestamps must not decrease');
    const level = this.level(max, t);
    if (level < this.windowMs) throw new Error('reference: accepting a request the bucket refuses');
    this.units = level - this.windowMs;
    this.at = t;
  }
}

/**
 * GCRA ("virtual scheduling"), an independent formulation of the token bucket for a
 * constant `max`, used to cross-check `TokenBucketModel`. Times are scaled by `max`
 * so the emission interval W / max becomes the integer W: TAT' = max(TAT, t) + T and a
 * request is conforming iff t >= TAT - tau, with tau = (max - 1) * T (burst of max).
 */
export class GcraModel {
  private tatScaled = -Infinity;
  constructor(
    readonly max: number,
    readonly windowMs: number,
  ) {}

  allows(t: number): boolean {
    return t * this.max >= this.tatScaled - (this.max - 1) * this.windowMs;
  }

  accept(t: number): void {
    if (!this.allows(t)) throw new Error('gcra: accepting a non-conforming request');
    this.tatScaled = Math.max(this.tatScaled, t * this.max) + this.windowMs;
  }
}

export function referenceModel(algorithm: AlgorithmName, windowMs: number): ReferenceModel {
  switch (algorithm) {
    case 'fixed-window':
      return new FixedWindowModel(windowMs);
    case 'sliding-log':
      return new SlidingLogModel(windowMs);
    case 'sliding-window':
      return new SlidingWindowModel(windowMs);
    case 'token-bucket':
      return new TokenBucketModel(windowMs);
  }
}

/** One limit of one request, as the reference store sees it (`concurrent`: slots, no window or block). */
export type ReferenceCheck =
  | { algorithm: AlgorithmName; windowMs: number; blockMs: number; key: string; max: number }
  | { algorithm: 'concurrent'; key: string; max: number };

/** A store check as the reference store reads it. */
export function referenceCheck(check: LimitCheck): ReferenceCheck {
  const limit = check.limit;
  if (limit.type === 'concurrent') return { algorithm: 'concurrent', key: check.key, max: check.max };
  return { algorithm: limit.algorithm, windowMs: limit.windowMs, blockMs: limit.blockMs, key: check.key, max: check.max };
}

/** The keys a reference decision took a slot on (one entry per slot). */
export interface ReferenceHold {
  readonly slotKeys: readonly string[];
  readonly slots: readonly boolean[];
}

/** A concurrency check asks again after this long (the contract: Retry-After 1 s). */
const SLOT_RETRY_MS = 1000;

/** The contract's `LimitOutcome` fields (without `max`). */
export interface ReferenceOutcome {
  allowed: boolean;
  remaining: number;
  resetAt: number;
  retryAfterMs: number;
  count: number;
  blockedUntil: number;
  blockStarted: boolean;
}

/**
 * The store contract (store/types.ts) written from its prose, on top of the reference
 * models: a running block refuses; if every check passes every check is counted, else
 * none is, and each algorithm-refused check with a block duration and no running block
 * starts one. A block covers [start, start + blockMs) and is never extended. A
 * concurrency check passes while fewer than `max` slots of its key are held; an admitted
 * decision (or any shadow decision) takes one slot per concurrency check, given back by
 * `settle`.
 */
export class ReferenceStore {
  private readonly models = new Map<string, ReferenceModel>();
  private readonly blocks = new Map<string, number>();
  private readonly held = new Map<string, number>();

  decide(checks: readonly ReferenceCheck[], now: number, shadow = false): { allowed: boolean; outcomes: ReferenceOutcome[]; hold?: ReferenceHold } {
    const looked = checks.map((c) => {
      if (c.algorithm === 'concurrent') {
        const held = this.held.get(c.key) ?? 0;
        const verdict: ReferenceVerdict =
          held < c.max
            ? { allowed: true, remaining: c.max - held - 1, resetAt: now + SLOT_RETRY_MS, retryAfterMs: 0, count: held + 1 }
            : { allowed: false, remaining: 0, resetAt: now + SLOT_RETRY_MS, retryAfterMs: SLOT_RETRY_MS, count: held };
        return { check: c, blockedUntil: 0, verdict };
      }
      const until = this.blocks.get(c.key) ?? 0;
      return { check: c, blockedUntil: until > now ? until : 0, verdict: this.model(c).verdict(c.max, now) };
    });
    const allowed = looked.every((l) => l.blockedUntil === 0 && l.verdict.allowed);
    if (allowed) for (const { check } of looked) if (check.algorithm !== 'concurrent') this.model(check).accept(check.max, now);
    const slotKeys: string[] = [];
    const slots = checks.map((c) => c.algorithm === 'concurrent' && (allowed || shadow));
    checks.forEach((c, i) => {
      if (!slots[i]) return;
      this.held.set(c.key, (this.held.get(c.key) ?? 0) + 1);
      slotKeys.push(c.key);
    });

    const outcomes = looked.map(({ check, blockedUntil, verdict }): ReferenceOutcome => {
      const blockMs = check.algorithm === 'concurrent' ? 0 : check.blockMs;
      if (blockedUntil === 0 && (verdict.allowed || blockMs === 0)) {
        return { ...verdict, blockedUntil: 0, blockStarted: false };
      }
      const blockStarted = blockedUntil === 0;
      const until = blockStarted ? now + blockMs : blockedUntil;
      if (blockStarted) this.blocks.set(check.key, until);
      return {
        allowed: false,
        remaining: 0,
        resetAt: Math.max(verdict.resetAt, until),
        retryAfterMs: Math.max(verdict.retryAfterMs, until - now),
        // Refused, so this request is not among the counted ones.
        count: verdict.allowed ? verdict.count - 1 : verdict.count,
        blockedUntil: until,
        blockStarted,
      };
    });
    return slotKeys.length === 0 ? { allowed, outcomes } : { allowed, outcomes, hold: { slotKeys, slots } };
  }

  /** The exchange of a decision ended: its slots are free again. */
  settle(hold: ReferenceHold): void {
    for (const key of hold.slotKeys) {
      const held = this.held.get(key) ?? 0;
      if (held <= 0) throw new Error(`reference: settling a slot of ${key} that is not held`);
      this.held.set(key, held - 1);
    }
  }

  private model(check: ReferenceCheck & { windowMs: number }): ReferenceModel {
    let model = this.models.get(check.key);
    if (model === undefined) {
      model = referenceModel(check.algorithm as AlgorithmName, check.windowMs);
      this.models.set(check.key, model);
    }
    return model;
  }
}
