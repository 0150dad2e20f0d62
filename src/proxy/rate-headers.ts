import type { RateReport } from '../limiter/limiter.js';
import { concurrentPolicyItem } from '../policy/compile.js';

/** Unix seconds, rounded up, of an absolute ms time. */
function unixSeconds(ms: number): number {
  return Math.ceil(ms / 1000);
}

/** Seconds from now until `at`, rounded up, never negative. */
function secondsUntil(at: number, now: number): number {
  return at > now ? Math.ceil((at - now) / 1000) : 0;
}

/**
 * Sets X-RateLimit-* (the shown limit), RateLimit-Policy (every applied limit) and
 * RateLimit (the shown limit) per draft-ietf-httpapi-ratelimit-headers:
 * `RateLimit-Policy: "livekit-token.ip";q=20;w=60` and `RateLimit: "livekit-token.ip";r=19;t=60`.
 * A concurrency limit's item has no window: `"live-ws.user.concurrent";q=2;qu="concurrent-requests"`;
 * its remaining is the free slots after this request and its reset one second ahead.
 * A calendar window's `w` is its current period's length. Quotas are in cost units.
 */
export function rateLimitHeaders(report: RateReport, now: number): Record<string, string> {
  const { checks, outcomes, shown } = report;
  const outcome = outcomes[shown];
  const limit = checks[shown].limit;
  let policies = '';
  for (let i = 0; i < checks.length; i++) {
    const check = checks[i];
    if (i > 0) policies += ', ';
    const limit = check.limit;
    if (limit.type === 'concurrent') {
      policies += check.max === limit.limit ? limit.policyItem : concurrentPolicyItem(limit.policyName, check.max);
    } else if (limit.calendar !== null) {
      // A calendar period's `w` is the current period's length (months and local days vary).
      const period = limit.calendar.at(now);
      policies += `"${limit.policyName}";q=${check.max};w=${Math.ceil((period.end - period.start) / 1000)}`;
    } else {
      policies += check.max === limit.limit ? limit.policyItem : `"${limit.policyName}";q=${check.max};w=${limit.windowSeconds}`;
    }
  }
  return {
    'x-ratelimit-limit': String(outcome.max),
    'x-ratelimit-remaining': String(outcome.allowed ? outcome.remaining : 0),
    'x-ratelimit-reset': String(unixSeconds(outcome.resetAt)),
    'ratelimit-policy': policies,
    ratelimit: `"${limit.policyName}";r=${outcome.allowed ? outcome.remaining : 0};t=${secondsUntil(outcome.resetAt, now)}`,
  };
}

/** `Retry-After` in whole seconds, at least 1. */
export function retryAfterSeconds(retryAfterMs: number): number {
  return Math.max(1, Math.ceil(retryAfterMs / 1000));
}
