import type { Algorithm, Verdict } from './types.js';

/**
 * Fixed window: a counter per aligned window (`now - now % window`), or per calendar
 * period when the caller gives the period's `start` (months, local days).
 * + O(1), the cheapest state. - Allows up to 2x the limit across a window boundary.
 */
export interface FixedWindowState {
  /** Start of the window the count belongs to (ms). */
  start: number;
  count: number;
}

function windowStart(windowMs: number, now: number, start: number | undefined): number {
  return start === undefined ? now - (now % windowMs) : start;
}

function currentCount(state: FixedWindowState | undefined, start: number): number {
  return state !== undefined && state.start === start ? state.count : 0;
}

export const fixedWindow: Algorithm<FixedWindowState> = {
  name: 'fixed-window',
  code: 'fw',
  peek(state, max, windowMs, now, need = 1, take = need, periodStart?): Verdict {
    const start = windowStart(windowMs, now, periodStart);
    const count = currentCount(state, start);
    const resetAt = start + windowMs;
    if (count + need <= max) {
      return { allowed: true, remaining: Math.max(0, max - count - take), resetAt, retryAfterMs: 0, count: count + take };
    }
    return { allowed: false, remaining: 0, resetAt, retryAfterMs: resetAt - now, count };
  },
  consume(state, _max, windowMs, now, take = 1, periodStart?) {
    const start = windowStart(windowMs, now, periodStart);
    const count = currentCount(state, start) + take;
    if (state === undefined) return { start, count };
    state.start = start;
    state.count = count;
    return state;
  },
  adjust(state, _max, windowMs, _now, delta, takenAt, takenStart?) {
    // Only the window it was taken from: a later window starts from its own count.
    if (state === undefined || state.start !== windowStart(windowMs, takenAt, takenStart)) return state;
    state.count = Math.max(0, state.count + delta);
    return state;
  },
  ttlMs(state, _max, windowMs, now) {
    return Math.max(1, state.start + windowMs - now);
  },
};
