import type { Algorithm, Verdict } from './types.js';

/**
 * Sliding log: the timestamps of the counted requests of the last window; a request
 * is allowed while fewer than `max` of them are newer than `now - window`.
 * + Exact: no boundary burst, no estimate.
 * - O(max) memory per key and O(log max) time; use for small limits on costly endpoints.
 *
 * State: timestamps in ascending order (may hold expired entries; they are ignored).
 */
export type SlidingLogState = number[];

/** Index of the first entry newer than `now - windowMs` (entries are ascending). */
function firstLive(log: SlidingLogState, windowMs: number, now: number): number {
  const cutoff = now - windowMs;
  let lo = 0;
  let hi = log.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (log[mid] <= cutoff) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export const slidingLog: Algorithm<SlidingLogState> = {
  name: 'sliding-log',
  code: 'sl',
  peek(state, max, windowMs, now): Verdict {
    const first = state === undefined ? 0 : firstLive(state, windowMs, now);
    const count = state === undefined ? 0 : state.length - first;
    if (count + 1 <= max) {
      return { allowed: true, remaining: max - count - 1, resetAt: now + windowMs, retryAfterMs: 0, count: count + 1 };
    }
    // The (count - max + 1)-th oldest live entry must leave the window first.
    const log = state as SlidingLogState;
    const retryAfterMs = log[first + count - max] + windowMs - now;
    return { allowed: false, remaining: 0, resetAt: log[log.length - 1] + windowMs, retryAfterMs, count };
  },
  consume(state, _max, windowMs, now) {
    if (state === undefined) return [now];
    const first = firstLive(state, windowMs, now);
    if (first > 0) state.splice(0, first);
    // Keep ascending order even if the caller's clock stepped back.
    let i = state.length;
    while (i > 0 && state[i - 1] > now) i--;
    state.splice(i, 0, now);
    return state;
  },
  ttlMs(state, _max, windowMs, now) {
    return Math.max(1, state[state.length - 1] + windowMs - now);
  },
};
