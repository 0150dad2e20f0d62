import { LRUCache } from 'lru-cache';
import { ALGORITHMS } from '../limiter/algorithms/index.js';
import type { Verdict } from '../limiter/algorithms/index.js';
import type { LimitCheck, LimitOutcome, RateLimitStore, StoreDecision, StoreHold } from './types.js';

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

/** A concurrency check's answer is asked again after this long (the `Retry-After` of a full key). */
export const SLOT_RETRY_MS = 1_000; // 1s

/**
 * In-process store: algorithm states in a bounded LRU, blocks in a second bounded LRU,
 * held concurrency slots in a plain map. Decisions are synchronous, so
 * check-all-then-count-all is atomic by construction.
 *
 * The decision procedure is shared with the Redis Lua script (store/redis/scripts.ts):
 * 1. for every check: read its block and its state; peek the algorithm (a concurrency
 *    check: are fewer than `max` slots of its key held?);
 * 2. a check is violated if its key is blocked or the algorithm refuses;
 * 3. if none is violated, consume every check (take a slot for each concurrency check);
 *    else consume nothing and start the block of every algorithm-refused check that has
 *    `blockMs` and no running block. A shadow decision takes its slots either way.
 * A running block is never extended by the requests it refuses.
 *
 * Held slots are never evicted (an eviction would hand a slot out twice): the map holds
 * one entry per key with slots in flight, so it is bounded by what is in flight.
 */
export class MemoryStore implements RateLimitStore {
  readonly kind = 'memory' as const;
  readonly #counters: LRUCache<string, object>;
  readonly #blocks: LRUCache<string, number>;
  /** Held slots per key; a key without slots has no entry. */
  readonly #slots = new Map<string, number>();

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

  /** Slots held for `key` now (tests). */
  slotsHeld(key: string): number {
    return this.#slots.get(key) ?? 0;
  }

  decide(checks: readonly LimitCheck[], now: number, shadow = false): StoreDecision {
    const n = checks.length;
    const verdicts: Verdict[] = new Array(n);
    const blockedUntil: number[] = new Array(n);
    let allowed = true;
    let slotChecks = 0;
    for (let i = 0; i < n; i++) {
      const check = checks[i];
      const limit = check.limit;
      let verdict: Verdict;
      if (limit.type === 'concurrent') {
        slotChecks++;
        blockedUntil[i] = 0;
        verdict = slotVerdict(this.#slots.get(check.key) ?? 0, check.max, now);
      } else {
        const until = this.#blocks.get(check.key) ?? 0;
        blockedUntil[i] = until > now ? until : 0;
        verdict = ALGORITHMS[limit.algorithm].peek(this.#counters.get(check.key), check.max, limit.windowMs, now);
      }
      verdicts[i] = verdict;
      if (blockedUntil[i] !== 0 || !verdict.allowed) allowed = false;
    }

    const outcomes: LimitOutcome[] = new Array(n);
    const takeSlots = slotChecks > 0 && (allowed || shadow);
    const slots: boolean[] | undefined = takeSlots ? new Array<boolean>(n).fill(false) : undefined;
    for (let i = 0; i < n; i++) {
      const check = checks[i];
      const limit = check.limit;
      const verdict = verdicts[i];
      if (limit.type === 'concurrent') {
        if (slots !== undefined) {
          this.#slots.set(check.key, (this.#slots.get(check.key) ?? 0) + 1);
          slots[i] = true;
        }
        outcomes[i] = outcome(check.max, verdict, 0, false, now);
      } else if (allowed) {
        this.#consume(check, now);
        outcomes[i] = outcome(check.max, verdict, 0, false, now);
      } else if (blockedUntil[i] === 0 && !verdict.allowed && limit.blockMs > 0) {
        const until = now + limit.blockMs;
        this.#blocks.set(check.key, until, { ttl: limit.blockMs });
        outcomes[i] = outcome(check.max, verdict, until, true, now);
      } else {
        outcomes[i] = outcome(check.max, verdict, blockedUntil[i], false, now);
      }
    }
    return slots === undefined ? { allowed, outcomes } : { allowed, outcomes, hold: { checks, slots } };
  }

  settle(hold: StoreHold): void {
    const { checks, slots } = hold;
    for (let i = 0; i < checks.length; i++) {
      if (!slots[i]) continue;
      const key = checks[i].key;
      const held = this.#slots.get(key) ?? 0;
      if (held <= 1) this.#slots.delete(key);
      else this.#slots.set(key, held - 1);
    }
  }

  #consume(check: LimitCheck, now: number): void {
    const limit = check.limit;
    if (limit.type === 'concurrent') return;
    const algorithm = ALGORITHMS[limit.algorithm];
    const { max } = check;
    const { windowMs } = limit;
    const state = algorithm.consume(this.#counters.get(check.key), max, windowMs, now);
    this.#counters.set(check.key, state, { ttl: algorithm.ttlMs(state, max, windowMs, now) });
  }

  async close(): Promise<void> {
    this.#counters.clear();
    this.#blocks.clear();
    this.#slots.clear();
  }
}

/**
 * A concurrency check as an algorithm verdict (shared with the Lua script): allowed
 * while fewer than `max` slots are held; `remaining` is the free slots after this
 * request; a refusal is asked again after SLOT_RETRY_MS.
 */
export function slotVerdict(held: number, max: number, now: number): Verdict {
  if (held + 1 <= max) {
    return { allowed: true, remaining: max - held - 1, resetAt: now + SLOT_RETRY_MS, retryAfterMs: 0, count: held + 1 };
  }
  return { allowed: false, remaining: 0, resetAt: now + SLOT_RETRY_MS, retryAfterMs: SLOT_RETRY_MS, count: held };
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
