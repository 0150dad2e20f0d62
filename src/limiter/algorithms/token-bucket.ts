import type { Algorithm, Verdict } from './types.js';

/**
 * Token bucket in exact integer units: one token = windowMs units, so the bucket holds
 * max * windowMs units and refills `max` units per ms; a request takes `take` tokens
 * (take * windowMs units). Every quantity is an integer below 2^53, so no rounding drift
 * accumulates. The level may go below zero (a cost settled above its reservation): the
 * bucket then refills from that debt before admitting again.
 */
export interface TokenBucketState {
  /** Level in units (tokens * windowMs), an integer; negative = debt. */
  units: number;
  /** When `units` was last computed (ms). */
  at: number;
}

function available(state: TokenBucketState | undefined, max: number, windowMs: number, now: number): number {
  if (state === undefined) return max * windowMs;
  const elapsed = now > state.at ? now - state.at : 0;
  return Math.min(max * windowMs, state.units + elapsed * max);
}

export const tokenBucket: Algorithm<TokenBucketState> = {
  name: 'token-bucket',
  code: 'tb',
  peek(state, max, windowMs, now, need = 1, take = need): Verdict {
    const cap = max * windowMs;
    const units = available(state, max, windowMs, now);
    if (units >= need * windowMs) {
      const left = units - take * windowMs;
      return {
        allowed: true,
        remaining: left > 0 ? Math.floor(left / windowMs) : 0,
        resetAt: now + Math.ceil((cap - left) / max),
        retryAfterMs: 0,
        count: Math.ceil((cap - left) / windowMs),
      };
    }
    return {
      allowed: false,
      remaining: 0,
      resetAt: now + Math.ceil((cap - units) / max),
      retryAfterMs: Math.ceil((need * windowMs - units) / max),
      count: Math.ceil((cap - units) / windowMs),
    };
  },
  consume(state, max, windowMs, now, take = 1) {
    const units = available(state, max, windowMs, now) - take * windowMs;
    if (state === undefined) return { units, at: now };
    state.units = units;
    state.at = Math.max(now, state.at);
    return state;
  },
  adjust(state, max, windowMs, now, delta) {
    // No state is a full bucket: a give-back changes nothing, a charge starts from full.
    const units = Math.min(max * windowMs, available(state, max, windowMs, now) - delta * windowMs);
    if (state === undefined) return delta > 0 ? { units, at: now } : state;
    state.units = units;
    state.at = Math.max(now, state.at);
    return state;
  },
  ttlMs(state, max, windowMs, now) {
    return Math.max(1, Math.ceil((max * windowMs - available(state, max, windowMs, now)) / max));
  },
};
