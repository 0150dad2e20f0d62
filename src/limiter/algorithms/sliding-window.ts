import type { Algorithm, Verdict } from './types.js';

/**
 * Sliding window, weighted counter (Cloudflare/Envoy style): the estimate is
 * `prev * (window - elapsed) / window + cur` where `cur` counts the current aligned
 * window and `prev` the one before. The default.
 * + O(1) time and three numbers of state; smooth at window boundaries.
 * - An estimate: assumes the previous window's requests were evenly spread.
 */
export interface SlidingWindowState {
  /** Start of the current aligned window (ms). */
  start: number;
  cur: number;
  prev: number;
}

/** Scratch result of rotating a state to the window containing `now`. */
interface Counts {
  start: number;
  cur: number;
  prev: number;
}

function rotate(state: SlidingWindowState | undefined, windowMs: number, now: number, out: Counts): Counts {
  const start = now - (now % windowMs);
  out.start = start;
  if (state === undefined || state.start < start - windowMs || state.start > start) {
    out.cur = 0;
    out.prev = 0;
  } else if (state.start === start) {
    out.cur = state.cur;
    out.prev = state.prev;
  } else {
    out.cur = 0;
    out.prev = state.cur;
  }
  return out;
}

const scratch: Counts = { start: 0, cur: 0, prev: 0 };

/**
 * Earliest wait (ms from now) until `estimate + need <= max`, with no further traffic
 * (`need <= max`). Keep the operation order identical to the Lua mirror.
 */
function waitMs(c: Counts, max: number, windowMs: number, now: number, need: number): number {
  // Still inside the current window: the previous window's weight decays.
  if (c.cur + need <= max && c.prev > 0) {
    const elapsed = Math.ceil(windowMs - ((max - c.cur - need) * windowMs) / c.prev);
    if (elapsed < windowMs) return c.start + elapsed - now;
  }
  // In the next window the current count becomes the decaying one.
  const next = c.start + windowMs;
  if (c.cur <= max - need) return next - now;
  const elapsed = Math.ceil(windowMs - ((max - need) * windowMs) / c.cur);
  return next + elapsed - now;
}

export const slidingWindow: Algorithm<SlidingWindowState> = {
  name: 'sliding-window',
  code: 'sw',
  peek(state, max, windowMs, now, need = 1, take = need): Verdict {
    const c = rotate(state, windowMs, now, scratch);
    const estimate = (c.prev * (windowMs - (now - c.start))) / windowMs + c.cur;
    const resetAt = c.start + windowMs;
    if (estimate + need <= max) {
      return {
        allowed: true,
        remaining: Math.max(0, Math.floor(max - estimate - take)),
        resetAt,
        retryAfterMs: 0,
        count: Math.ceil(estimate) + take,
      };
    }
    // At least 1 ms: guards the rounding edge where the exact wait is a hair above 0.
    const retryAfterMs = Math.max(1, waitMs(c, max, windowMs, now, need));
    return {
      allowed: false,
      remaining: 0,
      resetAt: Math.max(resetAt, now + retryAfterMs),
      retryAfterMs,
      count: Math.ceil(estimate),
    };
  },
  consume(state, _max, windowMs, now, take = 1) {
    const c = rotate(state, windowMs, now, scratch);
    if (state === undefined) return { start: c.start, cur: c.cur + take, prev: c.prev };
    state.start = c.start;
    state.cur = c.cur + take;
    state.prev = c.prev;
    return state;
  },
  adjust(state, _max, windowMs, now, delta, takenAt) {
    if (state === undefined) return state;
    const c = rotate(state, windowMs, now, scratch);
    const takenStart = takenAt - (takenAt % windowMs);
    state.start = c.start;
    state.cur = c.cur;
    state.prev = c.prev;
    // The window it was taken from is the current one or, once rotated, the previous one.
    if (takenStart === c.start) state.cur = Math.max(0, c.cur + delta);
    else if (takenStart === c.start - windowMs) state.prev = Math.max(0, c.prev + delta);
    return state;
  },
  ttlMs(state, _max, windowMs, now) {
    // The current count still weighs on the next window.
    return Math.max(1, state.start + 2 * windowMs - now);
  },
};
