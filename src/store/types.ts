import type { CompiledLimit, CompiledRateLimit } from '../policy/types.js';

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
  /**
   * The running block that refused this check was set by an operator (admin API): it
   * refuses even on shadow routes. Absent for every other outcome.
   */
  readonly manual?: boolean;
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

/**
 * What a store holds for one check's key now, without counting anything (admin
 * inspect). Times are absolute ms on the caller's clock.
 */
export interface KeyState {
  /** Units counted in the window (a concurrency check: slots held). */
  readonly count: number;
  /**
   * Units left as the key's last response showed them in X-RateLimit-Remaining (its
   * next request not counted yet); 0 while a block runs.
   */
  readonly remaining: number;
  /** When the limit is fully available again (X-RateLimit-Reset); includes a running block. */
  readonly resetAt: number;
  /** A block runs until this time; 0 = none. */
  readonly blockedUntil: number;
  /** The running block was set by an operator. */
  readonly manual: boolean;
  /** The operator's reason for a manual block ('' otherwise). */
  readonly reason: string;
  /**
   * Strikes remembered: for escalating blocks the strike of the last block while it is
   * remembered (`forgetAfter`), else 1 while an automatic block runs; 0 = none.
   */
  readonly strikes: number;
}

/** One running block, as the admin listing shows it. */
export interface BlockInfo {
  readonly limit: CompiledRateLimit;
  /** The check's store key (`limit.keyPrefix + clientKey`). */
  readonly key: string;
  /** Absolute ms on the caller's clock. */
  readonly until: number;
  /** See `KeyState.strikes`. */
  readonly strike: number;
  readonly manual: boolean;
  readonly reason: string;
}

/** A page of running blocks. */
export interface BlockPage {
  readonly blocks: readonly BlockInfo[];
  /** Opaque position after the last block examined, for the next page; null = the end. */
  readonly next: string | null;
}

/**
 * The admin API's operations on a store (incident response). Rate checks only, except
 * `inspect`, which also reads concurrency checks. Not on the request path: each call
 * may take a round trip of its own. With a shared store a change applies on every
 * replica within a second (their local block caches included).
 */
export interface StoreAdmin {
  /** The state of each check's key (see KeyState), counting nothing. */
  inspect(checks: readonly LimitCheck[], now: number): Promise<KeyState[]>;
  /**
   * Blocks each check's key for `ms` from now as a manual block (listed as manual, with
   * `reason`; refuses even on shadow routes). A longer running block is kept, turned
   * manual. Counters and strikes are left as they are. Answers the resulting states.
   */
  block(checks: readonly LimitCheck[], now: number, ms: number, reason: string): Promise<KeyState[]>;
  /** Lifts each key's block and forgets its strikes; counters stay. True where a block was running. */
  unblock(checks: readonly LimitCheck[], now: number): Promise<boolean[]>;
  /** Forgets each key's counters, block and strikes. True where the store held anything for it. */
  reset(checks: readonly LimitCheck[], now: number): Promise<boolean[]>;
  /**
   * Running blocks of `limits` (one route's rate limits), ordered by end and key, at
   * most `count`, after the position `after` of a previous page (null = the first).
   * Paging to the end lists every block that runs throughout exactly once, while
   * others start and end.
   */
  listBlocks(limits: readonly CompiledRateLimit[], after: string | null, count: number, now: number): Promise<BlockPage>;
  /**
   * Shared stores: publishes this replica's refusal counts of one minute (an opaque
   * snapshot) for the others' `GET /admin/top`. Absent for stores that are not shared.
   */
  shareTop?(minute: number, snapshot: string): Promise<void>;
  /** The other replicas' snapshots of these minutes (see `shareTop`). */
  sharedTop?(minutes: readonly number[]): Promise<string[]>;
}

/** Raised by a store that could not decide (unreachable, timed out, circuit open). */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
