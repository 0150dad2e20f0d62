import type { AlgorithmName } from '../../config/types.js';

/**
 * The verdict of an algorithm for one more request at `now` that needs `need` units
 * left and takes `take` units (both 1 for a plain request; a weight N: N and N; a cost
 * read from the response: 1 and the reservation). All times are integer unix
 * milliseconds; the Lua mirror computes the same numbers with the same IEEE-754
 * operations in the same order.
 */
export interface Verdict {
  allowed: boolean;
  /** Units left after this request takes its units if allowed (never negative); 0 if refused. */
  remaining: number;
  /**
   * When the limit resets (absolute ms): the end of the current window for the window
   * algorithms, the time the bucket is full again for the token bucket, the time the newest
   * logged request leaves the window for the log. Never before `now + retryAfterMs`.
   */
  resetAt: number;
  /** 0 if allowed; else ms until a request needing `need` units would be allowed (no other traffic). */
  retryAfterMs: number;
  /** Units counted in the window, with this request's `take` if allowed (a whole number). */
  count: number;
}

/**
 * An algorithm is pure functions of (state, max, windowMs, now, ...); no I/O, no clock.
 * `S` is the algorithm's own compact state; `undefined` means "no history".
 *
 * `start` (fixed-window only) is the start of the current period when periods are not
 * epoch-aligned multiples of `windowMs` (calendar months, local days): `windowMs` is then
 * that period's length. Omitted: `now - now % windowMs`.
 */
export interface Algorithm<S> {
  readonly name: AlgorithmName;
  /** Short code used in store keys. */
  readonly code: string;
  /** The verdict for one more request; never mutates `state`. */
  peek(state: S | undefined, max: number, windowMs: number, now: number, need?: number, take?: number, start?: number): Verdict;
  /** The state after counting `take` (default 1) units at `now`. May reuse (mutate) `state`. */
  consume(state: S | undefined, max: number, windowMs: number, now: number, take?: number, start?: number): S;
  /**
   * The state after adding `delta` units (negative: giving back) to what was counted at
   * `takenAt`, in the window it was counted in: nothing changes once the state has moved
   * past that window (a token bucket has no windows: a give-back refills it, capped at its
   * capacity). Counts never go below 0. `takenStart`: the start of the period `takenAt`
   * fell in, for non-aligned periods (fixed-window). Undefined: the algorithm cannot
   * adjust (sliding-log).
   */
  adjust?(state: S | undefined, max: number, windowMs: number, now: number, delta: number, takenAt: number, takenStart?: number): S | undefined;
  /** ms from `now` after which `state` is equivalent to no history (>= 1); the store's TTL. */
  ttlMs(state: S, max: number, windowMs: number, now: number, start?: number): number;
}
