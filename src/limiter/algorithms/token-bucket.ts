import type { Algorithm, Verdict } from './types.js';

/**
 * Token bucket: holds up to `max` tokens, refilled continuously at `max` per window;
 * a request takes one token.
 * + Allows short bursts up to `max` while bounding the long-run rate; O(1).
 * - After an idle period a full burst is allowed at once.
 *
 * `tokens` is fractional; the Redis store keeps it with full double precision.
 */
export interface TokenBucketState {
  tokens: number;
  /** When `tokens` was last computed (ms). */
  at: number;
}

/** Tokens available at `now` (refill applied, capped at `max`). */
function available(state: TokenBucketState | undefined, max: number, windowMs: number, now: number): number {
  if (state === undefined) return max;
  const elapsed = now > state.at ? now - state.at : 0;
  return Math.min(max, state.tokens + (elapsed * max) / windowMs);
}

/** ms until the bucket holds `max` tokens again, starting from `tokens`. */
function timeToFull(tokens: number, max: number, windowMs: number): number {
  return Math.ceil(((max - tokens) * windowMs) / max);
}

export const tokenBucket: Algorithm<TokenBucketState> = {
  name: 'token-bucket',
  code: 'tb',
  peek(state, max, windowMs, now): Verdict {
    const tokens = available(state, max, windowMs, now);
    if (tokens >= 1) {
      const left = tokens - 1;
      return {
        allowed: true,
        remaining: Math.floor(left),
        resetAt: now + timeToFull(left, max, windowMs),
        retryAfterMs: 0,
        count: Math.ceil(max - left),
      };
    }
    return {
      allowed: false,
      remaining: 0,
      resetAt: now + timeToFull(tokens, max, windowMs),
      retryAfterMs: Math.max(1, Math.ceil(((1 - tokens) * windowMs) / max)),
      count: Math.ceil(max - tokens),
    };
  },
  consume(state, max, windowMs, now) {
    const tokens = available(state, max, windowMs, now) - 1;
    if (state === undefined) return { tokens, at: now };
    state.tokens = tokens;
    state.at = Math.max(now, state.at);
    return state;
  },
  ttlMs(state, max, windowMs, now) {
    return Math.max(1, timeToFull(available(state, max, windowMs, now), max, windowMs));
  },
};
