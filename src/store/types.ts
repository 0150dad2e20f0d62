import type { CompiledLimit } from '../policy/types.js';

/** One limit applied to one client key for one request. */
export interface LimitCheck {
  readonly limit: CompiledLimit;
  /** Full store key: `limit.keyPrefix + clientKey`. */
  readonly key: string;
  /** The limit in force for this client (tier applied, divided in degraded mode). */
  readonly max: number;
}

/** The outcome of one limit for one request, as the algorithms define it. */
export interface LimitOutcome {
  /** This limit (and its block) let the request through. */
  readonly allowed: boolean;
  /** The limit in force (`LimitCheck.max`). */
  readonly max: number;
  /** Requests left after this one (0 when refused). */
  readonly remaining: number;
  /** Absolute unix ms at which the limit resets (see the algorithm's `Verdict.resetAt`); includes any block. */
  readonly resetAt: number;
  /** ms until a request would be allowed again (0 when allowed); includes any block. */
  readonly retryAfterMs: number;
  /** Requests counted in the window (estimate for sliding-window; includes this one if allowed). */
  readonly count: number;
  /** A block runs for this key until this absolute unix ms (0 = none). */
  readonly blockedUntil: number;
  /** This request tripped the limit and started the block. */
  readonly blockStarted: boolean;
  /**
   * The strike of the block this request started: the n-th block of the key within
   * `forgetAfter` of its previous one (1 for a limit with one block duration); 0 = none.
   */
  readonly strike: number;
}

/** The store's answer for all limits of one request: counted all-or-nothing. */
export interface StoreDecision {
  /** Every limit passed and every one of them was counted. */
  readonly allowed: boolean;
  /** Aligned with the `checks` passed in. */
  readonly outcomes: readonly LimitOutcome[];
  /**
   * The shared store failed and this decision came from the local fallback
   * (`onError: local`); counted as `store_error`, never shown to the client.
   */
  readonly degraded?: boolean;
  /**
   * What the decision holds until its exchange ends (concurrency slots): hand it to
   * `settle` exactly once. Absent when nothing is held.
   */
  readonly hold?: StoreHold;
}

/**
 * What one decision holds in a store until its exchange ends: the slots of its
 * concurrency checks (`slots[i]` true for each check that took one) and, when it was
 * admitted, the units its rate checks took at `at` (which settlement may give back or
 * add to, in the window they were taken from). Opaque beyond that: each store keeps what
 * it needs (Redis: the lease members, whether the local fallback decided, the specs).
 */
export interface StoreHold {
  readonly checks: readonly LimitCheck[];
  /** Per check: this decision took a slot for it. */
  readonly slots: readonly boolean[];
  /** The decision was admitted: every rate check took its units. */
  readonly counted: boolean;
  /** When the units were taken, on the store's clock (Redis with `clock: redis`: its TIME). */
  readonly at: number;
}

/**
 * Holds limiter state. `decide` checks running blocks, evaluates every check and,
 * only if all pass, counts all of them atomically; violated checks with a block
 * duration start their block. A refused request consumes no quota and takes no slot,
 * except that `shadow` decisions take their slots even when refused (a shadow route
 * forwards every request, so each one is in flight).
 */
export interface RateLimitStore {
  readonly kind: 'memory' | 'redis';
  decide(checks: readonly LimitCheck[], now: number, shadow?: boolean): StoreDecision | Promise<StoreDecision>;
  /**
   * The exchange of a decision ended: gives back its slots and adds `deltas[i]` units to
   * rate check i (negative: gives back), in the window the units were taken from.
   * Called exactly once per hold; never throws (a store that cannot reach its backend
   * lets the slots' leases expire and drops the deltas). May be batched, but a freed slot
   * is usable again within 100 ms.
   */
  settle(hold: StoreHold, deltas?: readonly number[] | null): void;
  /** Resolves true once the store can decide, false after `timeoutMs` (remote stores). */
  ready?(timeoutMs: number): Promise<boolean>;
  /** Releases connections and timers. */
  close(): Promise<void>;
}

/** Raised by a store that could not decide (unreachable, timed out, circuit open). */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
