import type { Algorithm, Verdict } from './types.js';

/**
 * Fixed window: a counter per aligned window (`now - now % window`).
 * + O(1), the cheapest state. - Allows up to 2x the limit across a window boundary.
 */
export interface FixedWindowState {
  /** Start of the window the count belongs to (ms). */
  start: number;
  count: number;
}

function currentCount(state: FixedWindowState | undefined, start: number): number {
  return state !== undefined && state.start === start ? state.count : 0;
}

export const fixedWindow: Algorithm<FixedWindowState> = {
  name: 'fixed-window',
  code: 'fw',
  peek(state, max, windowMs, now): Verdict {
    const start = now - (now % windowMs);
    const count = currentCount(state, start);
    const resetAt = start + windowMs;
    if (count + 1 <= max) {
      return { allowed: true, remaining: max - count - 1, resetAt, retryAfterMs: 0, count: count + 1 };
    }
    return { allowed: false, remaining: 0, resetAt, retryAfterMs: resetAt - now, count };
  },
  consume(state, _max, windowMs, now) {
    const start = now - (now % windowMs);
    const count = currentCount(state, start) + 1;
    if (state === undefined) return { start, count };
    state.start = start;
    state.count = count;
    return state;
  },
  ttlMs(state, _max, windowMs, now) {
    return Math.max(1, state.start + windowMs - now);
  },
};
