import type { AlgorithmName } from '../../config/types.js';

/**
 * The verdict of an algorithm for one more request (cost 1) at `now`.
 * All times are integer unix milliseconds; the Lua mirror computes the same
 * numbers with the same IEEE-754 operations in the same order.
 */
export interface Verdict {
  allowed: boolean;
  /** Requests left after this one if allowed; 0 if refused. */
  remaining: number;
  /**
   * When the limit resets (absolute ms): the end of the current window for the window
   * algorithms, the time the bucket is full again for the token bucket, the time the newest
   * logged request leaves the window for the log. Never before `now + retryAfterMs`.
   */
  resetAt: number;
  /** 0 if allowed; else ms until a request of cost 1 would be allowed (no other traffic). */
  retryAfterMs: number;
  /** Requests in the window, counting this one if allowed (a whole number). */
  count: number;
}

/**
 * An algorithm is three pure functions of (state, max, windowMs, now); no I/O, no clock.
 * `S` is the algorithm's own compact state; `undefined` means "no history".
 */
export interface Algorithm<S> {
  readonly name: AlgorithmName;
  /** Short code used in store keys. */
  readonly code: string;
  /** The verdict for one more request; never mutates `state`. */
  peek(state: S | undefined, max: number, windowMs: number, now: number): Verdict;
  /** The state after counting one request at `now`. May reuse (mutate) `state`. */
  consume(state: S | undefined, max: number, windowMs: number, now: number): S;
  /** ms from `now` after which `state` is equivalent to no history (>= 1); the store's TTL. */
  ttlMs(state: S, max: number, windowMs: number, now: number): number;
}
