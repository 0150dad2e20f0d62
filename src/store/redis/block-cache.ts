import { LRUCache } from 'lru-cache';
import type { LimitCheck, LimitOutcome, StoreDecision } from '../types.js';

/** How long a key dropped by an admin change is not cached again. */
const DROPPED_MS = 1_000; // 1s

/** What Redis said about a blocked key, in local time. */
interface BlockEntry {
  /** The block ends. */
  readonly until: number;
  /** A request would be allowed again (block and algorithm); >= until. */
  readonly retryAt: number;
  readonly resetAt: number;
  readonly count: number;
  /** An operator set the block (admin API). */
  readonly manual: boolean;
}

/**
 * Keys Redis said are blocked, with the local time their block ends. While a key is
 * blocked its requests are refused here, so a blocked attacker costs no round trip.
 * A blocked key counts nothing on any replica, so Redis's last answer for it (when a
 * request is allowed again, when the quota resets) holds until the block ends.
 * Bounded: an evicted entry only means the next request asks Redis again.
 *
 * An operator may lift or change a block through any replica: the store drops the
 * entries it is told about (`delete`, pub/sub), and while it cannot hear about changes
 * (`suspend`: its subscription is down) it caches nothing.
 */
export class BlockCache {
  readonly #entries: LRUCache<string, BlockEntry>;
  /**
   * Keys dropped by `delete` in the last second: an answer Redis gave before the change
   * may still be on its way on the other connection, and must not put the entry back.
   * Made at the first lift (most replicas never see one).
   */
  #dropped: LRUCache<string, true> | undefined;
  #suspended: boolean;

  constructor(maxEntries: number, options: { suspended?: boolean } = {}) {
    this.#entries = new LRUCache<string, BlockEntry>({ max: maxEntries });
    this.#suspended = options.suspended === true;
  }

  /** Forgets everything and caches nothing until `resume`. */
  suspend(): void {
    this.#suspended = true;
    this.#entries.clear();
  }

  /** Caches again, starting empty (what was learnt before may be stale). */
  resume(): void {
    this.#entries.clear();
    this.#suspended = false;
  }

  /**
   * Drops a key's entry (its block was changed elsewhere); `lifted`: the block was lifted,
   * so for a second an answer saying it is blocked is not cached again.
   */
  delete(key: string, lifted: boolean): void {
    this.#entries.delete(key);
    if (lifted) (this.#dropped ??= new LRUCache<string, true>({ max: 10_000, ttl: DROPPED_MS })).set(key, true);
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Records the refusal of a blocked key (`outcome.blockedUntil > 0`), received at `now`. */
  add(key: string, outcome: LimitOutcome, now: number): void {
    if (this.#suspended || (this.#dropped !== undefined && this.#dropped.has(key))) return;
    this.#entries.set(key, {
      until: outcome.blockedUntil,
      retryAt: now + outcome.retryAfterMs,
      resetAt: outcome.resetAt,
      count: outcome.count,
      manual: outcome.manual === true,
    });
  }

  /**
   * The local answer when any check's key is still blocked at `now`, else undefined.
   * The blocked checks are refused as Redis refused them; the others are not evaluated
   * (no Redis state was read), so they are reported as allowed with their full quota
   * and `resetAt = now`. Nothing is counted and no other block starts.
   */
  decide(checks: readonly LimitCheck[], now: number): StoreDecision | undefined {
    let blocked = false;
    for (let i = 0; i < checks.length; i++) {
      const entry = this.#entries.get(checks[i].key);
      if (entry === undefined) continue;
      if (entry.until > now) blocked = true;
      else this.#entries.delete(checks[i].key);
    }
    if (!blocked) return undefined;
    const outcomes: LimitOutcome[] = new Array(checks.length);
    for (let i = 0; i < checks.length; i++) {
      const { key, max } = checks[i];
      const entry = this.#entries.get(key);
      if (entry === undefined) {
        outcomes[i] = { allowed: true, max, remaining: max, resetAt: now, retryAfterMs: 0, count: 0, blockedUntil: 0, blockStarted: false, strike: 0 };
        continue;
      }
      const refused: LimitOutcome = {
        allowed: false,
        max,
        remaining: 0,
        resetAt: entry.resetAt,
        retryAfterMs: entry.retryAt - now,
        count: entry.count,
        blockedUntil: entry.until,
        blockStarted: false,
        strike: 0,
      };
      outcomes[i] = entry.manual ? { ...refused, manual: true } : refused;
    }
    return { allowed: false, outcomes };
  }

  clear(): void {
    this.#entries.clear();
  }
}
