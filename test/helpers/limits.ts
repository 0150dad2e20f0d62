/**
 * Compiled limits for store and limiter tests, built by the compiler itself
 * (`compileLimit`), so a fixture always has every field a policy's limit has:
 * - `rateLimit(options)`: a rate limit (algorithm, window, block, escalation, cost, count, calendar);
 * - `concurrencyLimit(options)`: a concurrency limit;
 * - `checkOf(limit, client, max?)`: one check of it for a client key.
 */
import type { AlgorithmName, CalendarPeriodConfig, CostHeaderConfig, LimitBy } from '../../src/config/types.js';
import { compileLimit } from '../../src/policy/compile.js';
import type { CompiledConcurrencyLimit, CompiledLimit, CompiledRateLimit } from '../../src/policy/types.js';
import type { LimitCheck } from '../../src/store/types.js';

/** `by` values a policy accepts; any other `by` of a fixture just names the limit in its keys. */
const POLICY_BY = /^(ip|user|global|header:.+)$/;

/**
 * The limit compiled with `by` (a name that is not a policy `by` is compiled as `ip`,
 * and keeps its own name in the key prefix, so fixtures can tell limits apart).
 */
function withName<T extends CompiledLimit>(limit: T, by: string, keyPrefix: string | undefined): T {
  if (keyPrefix !== undefined) return { ...limit, keyPrefix };
  if (POLICY_BY.test(by)) return limit;
  return { ...limit, by, policyName: `${limit.routeId}.${by}`, keyPrefix: limit.keyPrefix.replace(`}:ip:`, `}:${by}:`) };
}

export interface RateLimitOptions {
  routeId?: string;
  /** A policy `by`, or any name (compiled as `ip`, named in the keys). */
  by?: string;
  limit: number;
  windowMs: number;
  algorithm: AlgorithmName;
  blockMs?: number;
  /** Escalating blocks (two or more). */
  blocks?: number[];
  forgetAfterMs?: number;
  cost?: number | CostHeaderConfig;
  /** `count.status`, already expanded to codes. */
  countStatus?: number[];
  period?: CalendarPeriodConfig;
  index?: number;
  /** Replaces the compiled key prefix (a per-run namespace, a vector's prefix). */
  keyPrefix?: string;
}

export function rateLimit(options: RateLimitOptions): CompiledRateLimit {
  const by = options.by ?? 'ip';
  const limit = compileLimit(
    options.routeId ?? 'r',
    {
      by: (POLICY_BY.test(by) ? by : 'ip') as LimitBy,
      limit: options.limit,
      windowMs: options.windowMs,
      ...(options.period !== undefined && { period: options.period }),
      ...(options.blocks !== undefined ? { blockMs: options.blocks[0], blocks: options.blocks } : options.blockMs !== undefined && options.blockMs > 0 ? { blockMs: options.blockMs } : {}),
      ...(options.forgetAfterMs !== undefined && { forgetAfterMs: options.forgetAfterMs }),
      ...(options.cost !== undefined && { cost: options.cost }),
      ...(options.countStatus !== undefined && { count: { status: options.countStatus } }),
      for: 'any',
      algorithm: options.algorithm,
    },
    options.index ?? 0,
    options.algorithm,
    false,
  ) as CompiledRateLimit;
  return withName(limit, by, options.keyPrefix);
}

export function concurrencyLimit(options: { routeId?: string; by?: string; concurrent: number; index?: number; keyPrefix?: string }): CompiledConcurrencyLimit {
  const by = options.by ?? 'ip';
  const limit = compileLimit(
    options.routeId ?? 'r',
    { by: (POLICY_BY.test(by) ? by : 'ip') as LimitBy, concurrent: options.concurrent, for: 'any' },
    options.index ?? 0,
    'sliding-window',
    false,
  ) as CompiledConcurrencyLimit;
  return withName(limit, by, options.keyPrefix);
}

/** The check of `limit` for `client` (its key under the limit's prefix), at `max` (default: the limit). */
export function checkOf(limit: CompiledLimit, client: string, max: number = limit.limit): LimitCheck {
  return { limit, key: limit.keyPrefix + client, max };
}
