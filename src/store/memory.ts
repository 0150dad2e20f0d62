import { LRUCache } from 'lru-cache';
import { ALGORITHMS } from '../limiter/algorithms/index.js';
import type { Verdict } from '../limiter/algorithms/index.js';
import type { SlidingLogState } from '../limiter/algorithms/sliding-log.js';
import type { CompiledRateLimit } from '../policy/types.js';
import type { BlockInfo, BlockPage, KeyState, LimitCheck, LimitOutcome, RateLimitStore, StoreAdmin, StoreDecision, StoreHold } from './types.js';

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

/**
 * A key's block and strikes: the block runs until `until`; its strike count is
 * remembered until `forgetAt`. `manual`: an operator set the block (admin API), with
 * `reason`; it keeps the strikes it found.
 */
interface BlockRecord {
  until: number;
  strike: number;
  forgetAt: number;
  manual: boolean;
  reason: string;
}

/**
 * A key's counter state in the counters LRU, with its own expiry (the LRU keeps no
 * TTLs: one lookup per check, and no set for a key it already holds) and the key's block
 * record while one is known (the same object the blocks LRU holds).
 */
interface Entry {
  /** The algorithm's state; no history once expired. */
  state: object | undefined;
  /**
   * When the state expires, in whole seconds (rounded up) since the store's epoch: a
   * small integer V8 keeps in the object itself, where a ms timestamp would need a heap
   * number of its own per key. A state kept up to 1 s past its TTL decides as no state
   * would (the TTL only bounds how long a state can matter).
   */
  expires: number;
  block: BlockRecord | null;
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
 * In-process store: algorithm states in a bounded LRU (one lookup per check: a key's
 * entry carries its state, its expiry and its block record), blocks (and strikes) in a
 * second bounded LRU that a flood of new keys cannot evict (read only when a key has no
 * entry), held concurrency slots in a plain map. Decisions are synchronous, so
 * check-all-then-count-all is atomic by construction.
 *
 * The decision procedure is shared with the Redis Lua script (store/redis/scripts.ts):
 * 1. for every check: read its block and its state; peek the algorithm for the check's
 *    units (a concurrency check: are fewer than `max` slots of its key held?);
 * 2. a check is violated if its key is blocked or the algorithm refuses;
 * 3. if none is violated, consume every check (its `take` units; a slot for each
 *    concurrency check); else consume nothing and start the block of every
 *    algorithm-refused check that has a block and no running block (the next strike's
 *    length for escalating blocks). A shadow decision takes its slots either way,
 *    unless a manual block (set by an operator) refused it: that refuses for real.
 * A running block is never extended by the requests it refuses.
 *
 * Held slots are never evicted (an eviction would hand a slot out twice): the map holds
 * one entry per key with slots in flight, so it is bounded by what is in flight.
 */
export class MemoryStore implements RateLimitStore, StoreAdmin {
  readonly kind = 'memory' as const;
  readonly #counters: LRUCache<string, Entry>;
  readonly #blocks: LRUCache<string, BlockRecord>;
  /** Held slots per key; a key without slots has no entry. */
  readonly #slots = new Map<string, number>();
  readonly #clock: () => number;
  /** Origin of entries' `expires` (whole seconds). */
  readonly #epochMs: number;
  readonly #window: WindowAt = { windowMs: 0, start: undefined };
  /** Per check of the decision being made, reused (decide is synchronous and not re-entered). */
  readonly #verdicts: Verdict[] = [];
  readonly #blockedUntil: number[] = [];
  readonly #entries: (Entry | undefined)[] = [];
  readonly #records: (BlockRecord | undefined)[] = [];

  constructor(options: MemoryStoreOptions) {
    const onEvict = options.onEvict;
    const clock = options.clock;
    this.#clock = clock;
    this.#epochMs = Math.floor(clock() / 1000) * 1000;
    this.#counters = new LRUCache<string, Entry>({
      max: options.maxKeys,
      dispose: onEvict ? (entry, _k, reason) => reason === 'evict' && this.#live(entry, clock()) && onEvict('counters') : undefined,
    });
    this.#blocks = new LRUCache<string, BlockRecord>({
      max: options.maxBlocks,
      perf: { now: clock },
      ttlAutopurge: false,
      ttlResolution: 0,
      dispose: (record, key, reason) => {
        if (reason !== 'evict') return;
        // maxBlocks bounds the blocks that run: an evicted one ends on the key's entry too.
        const entry = this.#counters.peek(key);
        if (entry !== undefined && entry.block === record) entry.block = null;
        if (onEvict !== undefined && Math.max(record.until, record.forgetAt) > clock()) onEvict('blocks');
      },
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
    const verdicts = this.#verdicts;
    const blockedUntil = this.#blockedUntil;
    const entries = this.#entries;
    const records = this.#records;
    const window = this.#window;
    let allowed = true;
    let slotChecks = 0;
    let settling = false;
    /** A running manual block refused a check: the decision is refused even for shadow. */
    let manual = false;
    for (let i = 0; i < n; i++) {
      const check = checks[i];
      const limit = check.limit;
      let verdict: Verdict;
      if (limit.type === 'concurrent') {
        slotChecks++;
        blockedUntil[i] = 0;
        entries[i] = undefined;
        records[i] = undefined;
        verdict = slotVerdict(this.#slots.get(check.key) ?? 0, check.max, now);
      } else {
        const entry = this.#counters.get(check.key);
        // A key without an entry may still be blocked: its entry was evicted, the block was not.
        const record = entry !== undefined ? (entry.block ?? undefined) : this.#blocks.size === 0 ? undefined : this.#blocks.get(check.key);
        entries[i] = entry;
        records[i] = record;
        const until = record === undefined ? 0 : record.until;
        blockedUntil[i] = until > now ? until : 0;
        if (blockedUntil[i] !== 0 && record!.manual) manual = true;
        windowAt(limit, now, window);
        const state = entry !== undefined && this.#live(entry, now) ? entry.state : undefined;
        verdict = ALGORITHMS[limit.algorithm].peek(state, check.max, window.windowMs, now, limit.need, limit.take, window.start);
        if (limit.settles) settling = true;
      }
      verdicts[i] = verdict;
      if (blockedUntil[i] !== 0 || !verdict.allowed) allowed = false;
    }

    const outcomes: LimitOutcome[] = new Array(n);
    const takeSlots = slotChecks > 0 && (allowed || (shadow && !manual));
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
        this.#consume(check, limit, entries[i], records[i], now);
        outcomes[i] = outcome(check.max, verdict, 0, false, now, 0);
      } else if (blockedUntil[i] === 0 && !verdict.allowed && limit.blockMs > 0) {
        // Read afresh: an earlier check of this decision on the same key may have written it.
        const entry = this.#counters.get(check.key);
        const block = blockFor(limit, entry?.block ?? this.#blocks.get(check.key), now);
        const until = now + block.ms;
        const forgetAt = limit.blocks === null ? until : until + limit.forgetAfterMs;
        this.#setBlock(check.key, { until, strike: block.strike, forgetAt, manual: false, reason: '' }, entry, now);
        outcomes[i] = outcome(check.max, verdict, until, true, now, block.strike);
      } else {
        const byOperator = manual && blockedUntil[i] !== 0 && records[i]?.manual === true;
        outcomes[i] = outcome(check.max, verdict, blockedUntil[i], false, now, 0, byOperator);
      }
    }
    // Drop the references the scratch arrays hold: a decision keeps no state alive.
    entries.fill(undefined, 0, n);
    records.fill(undefined, 0, n);
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

  /** A key's block record, in the blocks LRU (where a flood cannot evict it) and on its entry. */
  #setBlock(key: string, record: BlockRecord, entry: Entry | undefined, now: number): void {
    this.#blocks.set(key, record, { ttl: Math.max(1, Math.max(record.until, record.forgetAt) - now) });
    if (entry !== undefined) entry.block = record;
  }

  /** Adds `delta` units to what `check` took at `takenAt`, in the window it took them from. */
  #adjust(check: LimitCheck, limit: CompiledRateLimit, takenAt: number, delta: number): void {
    const algorithm = ALGORITHMS[limit.algorithm];
    if (algorithm.adjust === undefined) return;
    const now = this.#clock();
    const window = windowAt(limit, takenAt, this.#window);
    const entry = this.#counters.get(check.key);
    const current = entry !== undefined && this.#live(entry, now) ? entry.state : undefined;
    const state = algorithm.adjust(current, check.max, window.windowMs, now, delta, takenAt, window.start);
    if (state === undefined) return;
    // The TTL of the window the units went to (the same length for all but calendar periods).
    this.#store(check.key, entry, state, now + algorithm.ttlMs(state, check.max, window.windowMs, now, window.start), null);
  }

  #consume(check: LimitCheck, limit: CompiledRateLimit, entry: Entry | undefined, record: BlockRecord | undefined, now: number): void {
    const algorithm = ALGORITHMS[limit.algorithm];
    const { max } = check;
    const window = windowAt(limit, now, this.#window);
    // A key new to the store that this decision checks twice: the first consume made its entry.
    if (entry === undefined) entry = this.#counters.get(check.key);
    const current = entry !== undefined && this.#live(entry, now) ? entry.state : undefined;
    const state = algorithm.consume(current, max, window.windowMs, now, limit.take, window.start);
    this.#store(check.key, entry, state, now + algorithm.ttlMs(state, max, window.windowMs, now, window.start), record ?? null);
  }

  /** Writes a state into the key's entry (algorithms mutate states in place: a known key needs no set). */
  #store(key: string, entry: Entry | undefined, state: object, expiresAt: number, block: BlockRecord | null): void {
    if (entry === undefined) {
      this.#counters.set(key, { state, expires: this.#expires(expiresAt), block: block ?? this.#blocks.get(key) ?? null });
      return;
    }
    entry.state = state;
    entry.expires = this.#expires(expiresAt);
  }

  #expires(expiresAt: number): number {
    return Math.ceil((expiresAt - this.#epochMs) / 1000);
  }

  #live(entry: Entry, now: number): boolean {
    return this.#epochMs + entry.expires * 1000 > now;
  }

  /** The key's counter state as of `now` (undefined once expired), without touching recency. */
  #stateOf(key: string, now: number): object | undefined {
    const entry = this.#counters.peek(key);
    return entry !== undefined && this.#live(entry, now) ? entry.state : undefined;
  }

  /** The key's block record: its entry's, else the blocks LRU's. */
  #recordOf(key: string): BlockRecord | undefined {
    return this.#counters.peek(key)?.block ?? this.#blocks.peek(key);
  }

  async inspect(checks: readonly LimitCheck[], now: number): Promise<KeyState[]> {
    return checks.map((check) => this.#inspect(check, now));
  }

  #inspect(check: LimitCheck, now: number): KeyState {
    const limit = check.limit;
    if (limit.type === 'concurrent') {
      const held = this.#slots.get(check.key) ?? 0;
      return { count: held, remaining: Math.max(0, check.max - held), resetAt: now, blockedUntil: 0, manual: false, reason: '', strikes: 0 };
    }
    const window = windowAt(limit, now, this.#window);
    const verdict = inspectVerdict(limit, this.#stateOf(check.key, now), check.max, window.windowMs, now, window.start);
    return keyState(limit, verdict, this.#recordOf(check.key), now);
  }

  async block(checks: readonly LimitCheck[], now: number, ms: number, reason: string): Promise<KeyState[]> {
    for (const check of checks) {
      if (check.limit.type !== 'rate') continue;
      const previous = this.#recordOf(check.key);
      const running = previous !== undefined && previous.until > now ? previous.until : 0;
      const until = Math.max(running, now + ms);
      // Strikes are the limit's own: a manual block keeps what it finds and adds none.
      const remembered = previous !== undefined && previous.forgetAt > now;
      const record: BlockRecord = {
        until,
        strike: remembered ? previous.strike : 0,
        forgetAt: remembered ? previous.forgetAt : 0,
        manual: true,
        reason,
      };
      this.#setBlock(check.key, record, this.#counters.peek(check.key), now);
    }
    return this.inspect(checks, now);
  }

  async unblock(checks: readonly LimitCheck[], now: number): Promise<boolean[]> {
    return checks.map((check) => {
      const record = this.#recordOf(check.key);
      this.#blocks.delete(check.key);
      const entry = this.#counters.peek(check.key);
      if (entry !== undefined) entry.block = null;
      return record !== undefined && record.until > now;
    });
  }

  async reset(checks: readonly LimitCheck[], now: number): Promise<boolean[]> {
    return checks.map((check) => {
      if (check.limit.type !== 'rate') return false;
      const record = this.#recordOf(check.key);
      const held = this.#stateOf(check.key, now) !== undefined || (record !== undefined && Math.max(record.until, record.forgetAt) > now);
      this.#counters.delete(check.key);
      this.#blocks.delete(check.key);
      return held;
    });
  }

  /**
   * Scans the block map (bounded by `maxBlocks`): the admin listing is rare and this
   * keeps the request path free of any index upkeep. Positions are `blockPosition`s.
   */
  async listBlocks(limits: readonly CompiledRateLimit[], after: string | null, count: number, now: number): Promise<BlockPage> {
    if (limits.length === 0 || count <= 0) return { blocks: [], next: null };
    const found: { position: string; info: BlockInfo }[] = [];
    for (const [key, record] of this.#blocks.entries()) {
      if (record.until <= now) continue;
      const limit = limits.find((l) => key.startsWith(l.keyPrefix));
      if (limit === undefined) continue;
      const position = blockPosition(record.until, key);
      if (after !== null && position <= after) continue;
      const strike = strikesOf(limit, record, now);
      found.push({ position, info: { limit, key, until: record.until, strike, manual: record.manual, reason: record.reason } });
    }
    found.sort((a, b) => (a.position < b.position ? -1 : a.position > b.position ? 1 : 0));
    const page = found.slice(0, count);
    return { blocks: page.map((f) => f.info), next: found.length > count ? page[page.length - 1].position : null };
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

/**
 * A running block's place in the admin listing: its end (zero-padded, so text order is
 * time order) and its key. The Redis store's index of running blocks uses the same form.
 */
export function blockPosition(until: number, key: string): string {
  return String(until).padStart(15, '0') + ':' + key;
}

/** See `KeyState.strikes` (shared with the Lua script). */
function strikesOf(limit: CompiledRateLimit, record: BlockRecord | undefined, now: number): number {
  if (record === undefined) return 0;
  if (limit.blocks !== null) return record.forgetAt > now ? record.strike : 0;
  return record.until > now && !record.manual ? 1 : 0;
}

/**
 * The verdict an admin inspect reports: the algorithm's answer for a request that needs
 * and takes nothing, i.e. the quota as the key's last response showed it (shared with the
 * Lua script). The log, whose peek counts one request, is read directly.
 */
function inspectVerdict(limit: CompiledRateLimit, state: object | undefined, max: number, windowMs: number, now: number, start: number | undefined): Verdict {
  if (limit.algorithm !== 'sliding-log') return ALGORITHMS[limit.algorithm].peek(state, max, windowMs, now, 0, 0, start);
  const log = state as SlidingLogState | undefined;
  let count = 0;
  if (log !== undefined) for (const at of log) if (at > now - windowMs) count++;
  const resetAt = count > 0 ? (log as SlidingLogState)[(log as SlidingLogState).length - 1] + windowMs : now;
  return { allowed: count < max, remaining: Math.max(0, max - count), resetAt, retryAfterMs: 0, count };
}

/** An inspect verdict merged with the key's block record. */
function keyState(limit: CompiledRateLimit, verdict: Verdict, record: BlockRecord | undefined, now: number): KeyState {
  const blockedUntil = record !== undefined && record.until > now ? record.until : 0;
  const manual = blockedUntil !== 0 && record!.manual;
  return {
    count: verdict.count,
    remaining: blockedUntil !== 0 ? 0 : verdict.remaining,
    resetAt: Math.max(verdict.resetAt, blockedUntil),
    blockedUntil,
    manual,
    reason: manual ? record!.reason : '',
    strikes: strikesOf(limit, record, now),
  };
}

/** Merges an algorithm verdict with the key's block (shared with the Lua script); `manual`: an operator's block. */
export function outcome(max: number, verdict: Verdict, blockedUntil: number, blockStarted: boolean, now: number, strike: number, manual = false): LimitOutcome {
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
  const refused: LimitOutcome = {
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
  return manual ? { ...refused, manual: true } : refused;
}
