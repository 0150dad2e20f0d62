import { LRUCache } from 'lru-cache';
import { ALGORITHMS } from '../limiter/algorithms/index.js';
import type { Verdict } from '../limiter/algorithms/index.js';
import type { LimitCheck, LimitOutcome, RateLimitStore, StoreDecision } from './types.js';

export interface MemoryStoreOptions {
  /** Bound on counter states (one per limit and client key). */
  maxKeys: number;
  /** Bound on running blocks, kept apart so a flood of new keys cannot lift a block. */
  maxBlocks: number;
  /** The clock `decide(…, now)` is called with; entries expire on it. */
  clock: () => number;
  /** A live entry was evicted because its bound was reached. */
  onEvict?: (structure: 'counters' | 'blocks') => void;
}

/**
 * In-process store: algorithm states in a bounded LRU, blocks in a second bounded LRU.
 * Decisions are synchronous, so check-all-then-count-all is atomic by construction.
 *
 * The decision procedure is shared with the Redis Lua script (store/redis/scripts.ts):
 * 1. for every check: read its block and its state; peek the algorithm;
 * 2. a check is violated if its key is blocked or the algorithm refuses;
 * 3. if none is violated, consume every check; else consume nothing and start
 *    the block of every algorithm-refused check that has `blockMs` and no running block.
 * A running block is never extended by the requests it refuses.
 */
export class MemoryStore implements RateLimitStore {
  readonly kind = 'memory' as const;
  readonly #counters: LRUCache<string, object>;
  readonly #blocks: LRUCache<string, number>;

  constructor(options: MemoryStoreOptions) {
    const perf = { now: options.clock };
    const onEvict = options.onEvict;
    const counters: LRUCache<string, object> = new LRUCache<string, object>({
      max: options.maxKeys,
      perf,
      ttlAutopurge: false,
      ttlResolution: 0,
      dispose: onEvict ? (_v, k, reason) => reason === 'evict' && counters.getRemainingTTL(k) > 0 && onEvict('counters') : undefined,
    });
    this.#counters = counters;
    this.#blocks = new LRUCache<string, number>({
      max: options.maxBlocks,
      perf,
      ttlAutopurge: false,
      ttlResolution: 0,
      dispose: onEvict ? (until, _k, reason) => reason === 'evict' && until > options.clock() && onEvict('blocks') : undefined,
    });
  }

  /** Number of tracked counter keys (for tests and sizing). */
  get size(): number {
    return this.#counters.size;
  }

  decide(checks: readonly LimitCheck[], now: number): StoreDecision {
    const n = checks.length;
    const verdicts: Verdict[] = new Array(n);
    const blockedUntil: number[] = new Array(n);
    let allowed = true;
    for (let i = 0; i < n; i++) {
      const check = checks[i];
      const until = this.#blocks.get(check.key) ?? 0;
      blockedUntil[i] = until > now ? until : 0;
      const verdict = ALGORITHMS[check.limit.algorithm].peek(
        this.#counters.get(check.key),
        check.max,
        check.limit.windowMs,
        now,
      );
      verdicts[i] = verdict;
      if (blockedUntil[i] !== 0 || !verdict.allowed) allowed = false;
    }

    const outcomes: LimitOutcome[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const check = checks[i];
      const verdict = verdicts[i];
      if (allowed) {
        this.#consume(check, now);
        outcomes[i] = outcome(check.max, verdict, 0, false, now);
      } else if (blockedUntil[i] === 0 && !verdict.allowed && check.limit.blockMs > 0) {
        const until = now + check.limit.blockMs;
        this.#blocks.set(check.key, until, { ttl: check.limit.blockMs });
        outcomes[i] = outcome(check.max, verdict, until, true, now);
      } else {
        outcomes[i] = outcome(check.max, verdict, blockedUntil[i], false, now);
      }
    }
    return { allowed, outcomes };
  }

  #consume(check: LimitCheck, now: number): void {
    const algorithm = ALGORITHMS[check.limit.algorithm];
    const { max } = check;
    const { windowMs } = check.limit;
    const state = algorithm.consume(this.#counters.get(check.key), max, windowMs, now);
    this.#counters.set(check.key, state, { ttl: algorithm.ttlMs(state, max, windowMs, now) });
  }

  async close(): Promise<void> {
    this.#counters.clear();
    this.#blocks.clear();
  }
}

/** Merges an algorithm verdict with the key's block (shared with the Lua script). */
export function outcome(max: number, verdict: Verdict, blockedUntil: number, blockStarted: boolean, now: number): LimitOutcome {
  if (blockedUntil === 0) {
    return {
      allowed: verdict.allowed,
      max,
      remaining: verdict.remaining,
      resetAt: verdict.resetAt,
      retryAfterMs: verdict.retryAfterMs,
      count: verdict.count,
      blockedUntil: 0,
      blockStarted: false,
    };
  }
  return {
    allowed: false,
    max,
    remaining: 0,
    resetAt: Math.max(verdict.resetAt, blockedUntil),
    retryAfterMs: Math.max(verdict.retryAfterMs, blockedUntil - now),
    // Refused: the request is not among the counted ones.
    count: verdict.allowed ? verdict.count - 1 : verdict.count,
    blockedUntil,
    blockStarted,
  };
}
