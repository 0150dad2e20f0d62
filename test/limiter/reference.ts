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

/** What an accepted request left in a model, for a later adjustment (an entry of the history, or nothing). */
export interface Accepted {
  weight: number;
  readonly t: number;
}

export interface ReferenceModel {
  readonly algorithm: AlgorithmName;
  readonly windowMs: number;
  /** Would one more request at `t` (limit `max`, needing `need` units) be allowed? Never mutates. */
  allows(max: number, t: number, need?: number): boolean;
  /** The full verdict for one more request at `t` needing `need` and taking `take` units. Never mutates. */
  verdict(max: number, t: number, need?: number, take?: number): ReferenceVerdict;
  /** Record a request accepted at `t` (non-decreasing) under limit `max`, taking `take` units. */
  accept(max: number, t: number, take?: number): Accepted;
  /** At `t`, add `delta` units to what `accepted` took (negative: give back). */
  adjust(max: number, t: number, accepted: Accepted, delta: number): void;
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

/**
 * The window containing t: aligned to the epoch, or a calendar period. Calendar periods
 * are the one piece the reference shares with the implementation (src/limiter/calendar.ts
 * is tested on its own against hand-computed instants).
 */
type Windows = (t: number) => { start: number; end: number };

function alignedWindows(windowMs: number): Windows {
  return (t) => {
    const start = t - (t % windowMs);
    return { start, end: start + windowMs };
  };
}

/**
 * Base for the counting models: the accepted requests (time and units), oldest first.
 * An adjustment changes the units of the request it settles: every window that request
 * fell in sees it, which is what "in the window it was taken from" means.
 */
abstract class HistoryModel implements ReferenceModel {
  abstract readonly algorithm: AlgorithmName;
  protected log: Accepted[] = [];
  constructor(readonly windowMs: number) {}

  abstract allows(max: number, t: number, need?: number): boolean;
  abstract verdict(max: number, t: number, need?: number, take?: number): ReferenceVerdict;

  accept(_max: number, t: number, take = 1): Accepted {
    const last = this.log[this.log.length - 1];
    if (last !== undefined && t < last.t) throw new Error('reference: timestamps must not decrease');
    const entry: Accepted = { t, weight: take };
    this.log.push(entry);
    return entry;
  }

  adjust(_max: number, _t: number, accepted: Accepted, delta: number): void {
    accepted.weight = Math.max(0, accepted.weight + delta);
  }

  /** Units of the accepted requests with from <= ts < to. */
  protected countIn(from: number, to: number): number {
    let n = 0;
    for (const entry of this.log) if (entry.t >= from && entry.t < to) n += entry.weight;
    return n;
  }

  /** Earliest wait from t until a request needing `need` is allowed; requires !allows(max, t, need). */
  protected retryAfter(max: number, t: number, need: number, horizon: number): number {
    return earliest(t, t + horizon, (u) => this.allows(max, u, need)) - t;
  }
}

/** Fixed window: count the accepted units in the window [s, e) containing t. */
class FixedWindowModel extends HistoryModel {
  readonly algorithm = 'fixed-window' as const;
  constructor(
    windowMs: number,
    private readonly windows: Windows = alignedWindows(windowMs),
  ) {
    super(windowMs);
  }

  private inWindow(t: number): number {
    const w = this.windows(t);
    return this.countIn(w.start, w.end);
  }

  allows(max: number, t: number, need = 1): boolean {
    return this.inWindow(t) + need <= max;
  }

  verdict(max: number, t: number, need = 1, take = need): ReferenceVerdict {
    const n = this.inWindow(t);
    // The quota is full again when the window ends.
    const resetAt = this.windows(t).end;
    if (n + need <= max) return { allowed: true, remaining: Math.max(0, max - n - take), resetAt, retryAfterMs: 0, count: n + take };
    return { allowed: false, remaining: 0, resetAt, retryAfterMs: this.retryAfter(max, t, need, resetAt - t), count: n };
  }
}

/** Sliding log: count the accepted requests in (t - W, t]. Weights are always 1 (no cost, no count). */
class SlidingLogModel extends HistoryModel {
  readonly algorithm = 'sliding-log' as const;

  private live(t: number): Accepted[] {
    return this.log.filter((entry) => entry.t > t - this.windowMs && entry.t <= t);
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
    return { allowed: false, remaining: 0, resetAt, retryAfterMs: this.retryAfter(max, t, 1, this.windowMs), count: n };
  }
}

/**
 * Sliding window (weighted counter): prev = accepted units in [s - W, s), cur = in
 * [s, s + W), estimate = prev * (W - (t - s)) / W + cur, allowed iff estimate + need <= max.
 * Compared as integers: prev * (W - e) + (cur + need) * W <= max * W.
 */
class SlidingWindowModel extends HistoryModel {
  readonly algorithm = 'sliding-window' as const;

  /** estimate * W, an exact integer. */
  private scaledEstimate(t: number): { scaled: number; start: number } {
    const W = this.windowMs;
    const s = t - (t % W);
    const prev = this.countIn(s - W, s);
    const cur = this.countIn(s, s + W);
    return { scaled: prev * (W - (t - s)) + cur * W, start: s };
  }

  allows(max: number, t: number, need = 1): boolean {
    return this.scaledEstimate(t).scaled + need * this.windowMs <= max * this.windowMs;
  }

  verdict(max: number, t: number, need = 1, take = need): ReferenceVerdict {
    const W = this.windowMs;
    const { scaled, start } = this.scaledEstimate(t);
    // Reported reset is the end of the current aligned window (Envoy/Cloudflare
    // convention), not the time the estimate decays to zero.
    const windowEnd = start + W;
    if (scaled + need * W <= max * W) {
      return {
        allowed: true,
        remaining: Math.max(0, floorDiv(max * W - scaled - take * W, W)),
        resetAt: windowEnd,
        retryAfterMs: 0,
        count: ceilDiv(scaled, W) + take,
      };
    }
    // Within two windows everything counted so far has decayed.
    const retryAfterMs = this.retryAfter(max, t, need, 2 * W);
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
 * right after the last change at `at` (the bucket starts full; below zero is debt).
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

  allows(max: number, t: number, need = 1): boolean {
    return this.level(max, t) >= need * this.windowMs;
  }

  verdict(max: number, t: number, need = 1, take = need): ReferenceVerdict {
    const W = this.windowMs;
    const cap = max * W;
    const level = this.level(max, t);
    if (level >= need * W) {
      const left = level - take * W;
      return {
        allowed: true,
        remaining: left > 0 ? floorDiv(left, W) : 0,
        // Refill from `left` to `cap` at `max` units per ms.
        resetAt: t + ceilDiv(cap - left, max),
        retryAfterMs: 0,
        count: ceilDiv(cap - left, W),
      };
    }
    // At `max` units per ms the bucket holds `need` tokens again within this horizon.
    const horizon = ceilDiv(need * W - level, max) + 1;
    const retryAfterMs = earliest(t, t + horizon, (u) => this.allows(max, u, need)) - t;
    return {
      allowed: false,
      remaining: 0,
      resetAt: t + ceilDiv(cap - level, max),
      retryAfterMs,
      count: ceilDiv(cap - level, W),
    };
  }

  accept(max: number, t: number, take = 1): Accepted {
    if (t < this.at) throw new Error('reference: timestamps must not decrease');
    this.units = this.level(max, t) - take * this.windowMs;
    this.at = t;
    return { t, weight: take };
  }

  adjust(max: number, t: number, _accepted: Accepted, delta: number): void {
    // A give-back refills the bucket, never past its capacity; a charge may leave debt.
    this.units = Math.min(max * this.windowMs, this.level(max, t) - delta * this.windowMs);
    this.at = Math.max(this.at, t);
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

export function referenceModel(algorithm: AlgorithmName, windowMs: number, windows?: Windows): ReferenceModel {
  switch (algorithm) {
    case 'fixed-window':
      return new FixedWindowModel(windowMs, windows);
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
  | {
      algorithm: AlgorithmName;
      windowMs: number;
      blockMs: number;
      key: string;
      max: number;
      need?: number;
      take?: number;
      /** Escalating blocks and how long strikes are remembered after a block ends. */
      blocks?: readonly number[] | null;
      forgetAfterMs?: number;
      /** Calendar periods (fixed-window). */
      windows?: Windows;
    }
  | { algorithm: 'concurrent'; key: string; max: number };

/** A store check as the reference store reads it. */
export function referenceCheck(check: LimitCheck): ReferenceCheck {
  const limit = check.limit;
  if (limit.type === 'concurrent') return { algorithm: 'concurrent', key: check.key, max: check.max };
  const calendar = limit.calendar;
  return {
    algorithm: limit.algorithm,
    windowMs: limit.windowMs,
    blockMs: limit.blockMs,
    key: check.key,
    max: check.max,
    need: limit.need,
    take: limit.take,
    blocks: limit.blocks,
    forgetAfterMs: limit.forgetAfterMs,
    ...(calendar !== null && { windows: (t: number) => calendar.at(t) }),
  };
}

/** What a reference decision holds: the keys it took a slot on, and what its rate checks accepted. */
export interface ReferenceHold {
  readonly slotKeys: readonly string[];
  readonly slots: readonly boolean[];
  /** Per check: what the admitted decision's rate check took (undefined: nothing). */
  readonly accepted: readonly (Accepted | undefined)[];
  readonly checks: readonly ReferenceCheck[];
}

/** The contract's `LimitOutcome` fields (without `max`). */
export interface ReferenceOutcome {
  allowed: boolean;
  remaining: number;
  resetAt: number;
  retryAfterMs: number;
  count: number;
  blockedUntil: number;
  blockStarted: boolean;
  strike: number;
}

/** A concurrency check asks again after this long (the contract: Retry-After 1 s). */
const SLOT_RETRY_MS = 1000;

/** A key's running block and remembered strike. */
interface BlockRecord {
  until: number;
  strike: number;
  /** The strike is forgotten from here on (escalating blocks). */
  forgetAt: number;
}

/**
 * The store contract (store/types.ts) written from its prose, on top of the reference
 * models: a running block refuses; if every check passes every check is counted, else
 * none is, and each algorithm-refused check with a block duration and no running block
 * starts one. A block covers [start, start + blockMs) and is never extended; with
 * escalating blocks the n-th block within `forgetAfterMs` of the previous one's end lasts
 * the n-th entry (the last repeats). A concurrency check passes while fewer than `max`
 * slots of its key are held; an admitted decision (or any shadow decision) takes one slot
 * per concurrency check, given back by `settle`, which also adds units to what the
 * admitted rate checks took.
 */
export class ReferenceStore {
  private readonly models = new Map<string, ReferenceModel>();
  private readonly blocks = new Map<string, BlockRecord>();
  private readonly held = new Map<string, number>();

  decide(
    checks: readonly ReferenceCheck[],
    now: number,
    shadow = false,
  ): { allowed: boolean; outcomes: ReferenceOutcome[]; hold?: ReferenceHold } {
    const looked = checks.map((c) => {
      if (c.algorithm === 'concurrent') {
        const held = this.held.get(c.key) ?? 0;
        const verdict: ReferenceVerdict =
          held < c.max
            ? { allowed: true, remaining: c.max - held - 1, resetAt: now + SLOT_RETRY_MS, retryAfterMs: 0, count: held + 1 }
            : { allowed: false, remaining: 0, resetAt: now + SLOT_RETRY_MS, retryAfterMs: SLOT_RETRY_MS, count: held };
        return { check: c, blockedUntil: 0, verdict };
      }
      const record = this.blocks.get(c.key);
      const until = record?.until ?? 0;
      return { check: c, blockedUntil: until > now ? until : 0, verdict: this.model(c).verdict(c.max, now, c.need ?? 1, c.take ?? c.need ?? 1) };
    });
    const allowed = looked.every((l) => l.blockedUntil === 0 && l.verdict.allowed);
    const accepted = checks.map((c) => (allowed && c.algorithm !== 'concurrent' ? this.model(c).accept(c.max, now, c.take ?? c.need ?? 1) : undefined));
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
        return { ...verdict, blockedUntil: 0, blockStarted: false, strike: 0 };
      }
      const blockStarted = blockedUntil === 0;
      let until = blockedUntil;
      let strike = 0;
      if (blockStarted && check.algorithm !== 'concurrent') {
        const previous = this.blocks.get(check.key);
        const list = check.blocks ?? null;
        strike = list === null ? 1 : previous !== undefined && now < previous.forgetAt ? previous.strike + 1 : 1;
        const ms = list === null ? blockMs : list[Math.min(strike, list.length) - 1];
        until = now + ms;
        this.blocks.set(check.key, { until, strike, forgetAt: list === null ? until : until + (check.forgetAfterMs ?? 0) });
      }
      return {
        allowed: false,
        remaining: 0,
        resetAt: Math.max(verdict.resetAt, until),
        retryAfterMs: Math.max(verdict.retryAfterMs, until - now),
        // Refused, so this request is not among the counted ones.
        count: verdict.allowed ? verdict.count - 1 : verdict.count,
        blockedUntil: until,
        blockStarted,
        strike,
      };
    });
    const settles = accepted.some((a) => a !== undefined);
    if (slotKeys.length === 0 && !settles) return { allowed, outcomes };
    return { allowed, outcomes, hold: { slotKeys, slots, accepted, checks } };
  }

  /** The exchange of a decision ended at `now`: its slots are free again and `deltas[i]` units go to check i. */
  settle(hold: ReferenceHold, now = 0, deltas: readonly number[] | null = null): void {
    for (const key of hold.slotKeys) {
      const held = this.held.get(key) ?? 0;
      if (held <= 0) throw new Error(`reference: settling a slot of ${key} that is not held`);
      this.held.set(key, held - 1);
    }
    if (deltas === null) return;
    hold.checks.forEach((check, i) => {
      const accepted = hold.accepted[i];
      if (accepted === undefined || deltas[i] === 0 || check.algorithm === 'concurrent') return;
      this.model(check).adjust(check.max, now, accepted, deltas[i]);
    });
  }

  private model(check: Extract<ReferenceCheck, { windowMs: number }>): ReferenceModel {
    let model = this.models.get(check.key);
    if (model === undefined) {
      model = referenceModel(check.algorithm as AlgorithmName, check.windowMs, check.windows);
      this.models.set(check.key, model);
    }
    return model;
  }
}
