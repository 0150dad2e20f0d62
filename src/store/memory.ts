import { LRUCache } from 'lru-cache';
import { ALGORITHMS } from '../limiter/algorithms/index.js';
import type { Verdict } from '../limiter/algorithms/index.js';
import type { CompiledRateLimit } from '../policy/types.js';
import type { LimitCheck, LimitOutcome, RateLimitStore, StoreDecision, StoreHold } from './types.js';

export interface MemoryStoreOptions {
  /** Bound on counter states (one per limit and client key). */
  maxKeys: number;
  /** Bound on running blocks (and strikes), kept apart so a flood of new keys cannot lift a block. */
  maxBlocks: number;
  /** The clock `decide(…, now)` is called with; entries expire on it. */
  clock: () => number;
  /** A live entry was evicted because its bound was reached. */
  onEvict?: (structure: 'counters' | 'blocks') => void;
}

/** A concurrency check's answer is asked again after this long (the `Retry-After` of a full key). */
export const SLOT_RETRY_MS = 1_000; // 1s

/** A key's block and strikes: the block runs until `until`; its strike count is remembered until `forgetAt`. */
interface BlockRecord {
  until: number;
  strike: number;
  forgetAt: number;
}

/** The window a rate check is decided in: its length and, for calendar periods, its start. */
interface WindowAt {
  windowMs: number;
  start: number | undefined;
}

/** Where `limit` counts at `t` (written into `out`: no allocation per check). */
export function windowAt(limit: CompiledRateLimit, t: number, out: WindowAt): WindowAt {
  const calendar = limit.calendar;
  if (calendar === null) {
    out.windowMs = limit.windowMs;
    out.start = undefined;
  } else {
    const period = calendar.at(t);
    out.windowMs = period.end - period.start;
    out.start = period.start;
  }
  return out;
}

/**
 * The block a refusal starts (shared with the Lua script): its strike (the previous
 * block's + 1 while that one's strikes are remembered, else 1) and its length (the
 * strike's entry of an escalating list, the last repeating).
 */
export function blockFor(limit: CompiledRateLimit, previous: { strike: number; forgetAt: number } | undefined, now: number): { strike: number; ms: number } {
  const blocks = limit.blocks;
  if (blocks === null) return { strike: 1, ms: limit.blockMs };
  const strike = previous !== undefined && previous.forgetAt > now ? previous.strike + 1 : 1;
  return { strike, ms: blocks[Math.min(strike, blocks.length) - 1] };
}

/**
 * In-process store: algorithm states in a bounded LRU, blocks (and strikes) in a second
 * bounded LRU, held concurrency slots in a plain map. Decisions are synchronous, so
 * check-all-then-count-all is atomic by construction.
 *
 * The decision procedure is shared with the Redis Lua script (store/redis/scripts.ts):
 * 1. for every check: read its block and its state; peek the algorithm for the check's
 *    units (a concurrency check: are fewer than `max` slots of its key held?);
 * 2. a check is violated if its key is blocked or the algorithm refuses;
 * 3. if none is violated, consume every check (its `take` units; a slot for each
 *    concurrency check); else consume nothing and start the block of every
 *    algorithm-refused check that has a block and no running block (the next strike's
 *    length for escalating blocks). A shadow decision takes its slots either way.
 * A running block is never extended by the requests it refuses.
 *
 * Held slots are never evicted (an eviction would hand a slot out twice): the map holds
 * one entry per key with slots in flight, so it is bounded by what is in flight.
 */
export class MemoryStore implements RateLimitStore {
  readonly kind = 'memory' as const;
  readonly #counters: LRUCache<string, object>;
  readonly #blocks: LRUCache<string, BlockRecord>;
  /** Held slots per key; a key without slots has no entry. */
  readonly #slots = new Map<string, number>();
  readonly #clock: () => number;
  readonly #window: WindowAt = { windowMs: 0, start: undefined };

  constructor(options: MemoryStoreOptions) {
    const perf = { now: options.clock };
    const onEvict = options.onEvict;
    this.#clock = options.clock;
    const counters: LRUCache<string, object> = new LRUCache<string, object>({
      max: options.maxKeys,
      perf,
      ttlAutopurge: false,
      ttlResolution: 0,
      dispose: onEvict ? (_v, k, reason) => reason === 'evict' && counters.getRemainingTTL(k) > 0 && onEvict('counters') : undefined,
    });
    this.#counters = counters;
    this.#blocks = new LRUCache<string, BlockRecord>({
      max: options.maxBlocks,
      perf,
      ttlAutopurge: false,
      ttlResolution: 0,
      dispose: onEvict
        ? (record, _k, reason) => reason === 'evict' && Math.max(record.until, record.forgetAt) > options.clock() && onEvict('blocks')
        : undefined,
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
    const window = this.#window;
    let allowed = true;
    let slotChecks = 0;
    let settling = false;
    for (let i = 0; i < n; i++) {
      const check = checks[i];
      const limit = check.limit;
      let verdict: Verdict;
      if (limit.type === 'concurrent') {
        slotChecks++;
        blockedUntil[i] = 0;
        verdict = slotVerdict(this.#slots.get(check.key) ?? 0, check.max, now);
      } else {
        const until = this.#blocks.get(check.key)?.until ?? 0;
        blockedUntil[i] = until > now ? until : 0;
        windowAt(limit, now, window);
        verdict = ALGORITHMS[limit.algorithm].peek(this.#counters.get(check.key), check.max, window.windowMs, now, limit.need, limit.take, window.start);
        if (limit.settles) settling = true;
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
        outcomes[i] = outcome(check.max, verdict, 0, false, now, 0);
      } else if (allowed) {
        this.#consume(check, limit, now);
        outcomes[i] = outcome(check.max, verdict, 0, false, now, 0);
      } else if (blockedUntil[i] === 0 && !verdict.allowed && limit.blockMs > 0) {
        const block = blockFor(limit, this.#blocks.get(check.key), now);
        const until = now + block.ms;
        const forgetAt = limit.blocks === null ? until : until + limit.forgetAfterMs;
        this.#blocks.set(check.key, { until, strike: block.strike, forgetAt }, { ttl: forgetAt - now });
        outcomes[i] = outcome(check.max, verdict, until, true, now, block.strike);
      } else {
        outcomes[i] = outcome(check.max, verdict, blockedUntil[i], false, now, 0);
      }
    }
    if (slots === undefined && !(settling && allowed)) return { allowed, outcomes };
    const hold: StoreHold = { checks, slots: slots ?? new Array<boolean>(n).fill(false), counted: allowed, at: now };
    return { allowed, outcomes, hold };
  }

  settle(hold: StoreHold, deltas?: readonly number[] | null): void {
    const { checks, slots } = hold;
    for (let i = 0; i < checks.length; i++) {
      const check = checks[i];
      const limit = check.limit;
      if (slots[i]) {
        const held = this.#slots.get(check.key) ?? 0;
        if (held <= 1) this.#slots.delete(check.key);
        else this.#slots.set(check.key, held - 1);
      } else if (hold.counted && deltas != null && deltas[i] !== 0 && limit.type === 'rate') {
        this.#adjust(check, limit, hold.at, deltas[i]);
      }
    }
  }

  /** Adds `delta` units to what `check` took at `takenAt`, in the window it took them from. */
  #adjust(check: LimitCheck, limit: CompiledRateLimit, takenAt: number, delta: number): void {
    const algorithm = ALGORITHMS[limit.algorithm];
    if (algorithm.adjust === undefined) return;
    const now = this.#clock();
    const window = windowAt(limit, takenAt, this.#window);
    const state = algorithm.adjust(this.#counters.get(check.key), check.max, window.windowMs, now, delta, takenAt, window.start);
    if (state === undefined) return;
    // The TTL of the window the units went to (the same length for all but calendar periods).
    this.#counters.set(check.key, state, { ttl: algorithm.ttlMs(state, check.max, window.windowMs, now, window.start) });
  }

  #consume(check: LimitCheck, limit: CompiledRateLimit, now: number): void {
    const algorithm = ALGORITHMS[limit.algorithm];
    const { max } = check;
    const window = windowAt(limit, now, this.#window);
    const state = algorithm.consume(this.#counters.get(check.key), max, window.windowMs, now, limit.take, window.start);
    this.#counters.set(check.key, state, { ttl: algorithm.ttlMs(state, max, window.windowMs, now, window.start) });
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
export function outcome(max: number, verdict: Verdict, blockedUntil: number, blockStarted: boolean, now: number, strike: number): LimitOutcome {
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
      strike: 0,
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
    strike,
  };
}
