/**
 * Who is being limited right now, in bounded memory: refusals counted per route and
 * minute by a space-saving counter (Metwally, Agrawal, El Abbadi 2005), which keeps at
 * most `capacity` keys and never under-counts a key it keeps: a key that enters a full
 * counter takes the place (and the count, as its possible error) of the least counted
 * one, so a key refused more than 1/capacity of a minute's refusals is always kept.
 * Metrics cannot carry keys (their cardinality would be unbounded); this can.
 */
import type { RateReport } from '../limiter/limiter.js';

interface Item {
  key: string;
  count: number;
  /** The count it inherited when it replaced another key: the most it may over-count. */
  error: number;
  bucket: Bucket;
  prev: Item | null;
  next: Item | null;
}

/** Items of equal count, in a list ordered by count (the stream-summary structure). */
interface Bucket {
  count: number;
  head: Item | null;
  prev: Bucket | null;
  next: Bucket | null;
}

export interface Counted {
  readonly key: string;
  readonly count: number;
  readonly error: number;
}

/** A space-saving counter of unit increments: O(1) per `add`, at most `capacity` keys. */
export class SpaceSaving {
  readonly #capacity: number;
  readonly #items = new Map<string, Item>();
  /** The bucket of the lowest count. */
  #min: Bucket | null = null;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`capacity must be a positive integer, got ${capacity}`);
    this.#capacity = capacity;
  }

  get size(): number {
    return this.#items.size;
  }

  add(key: string): void {
    const item = this.#items.get(key);
    if (item !== undefined) {
      this.#increment(item);
      return;
    }
    if (this.#items.size < this.#capacity) {
      let bucket = this.#min;
      if (bucket === null || bucket.count !== 1) {
        bucket = { count: 1, head: null, prev: null, next: this.#min };
        if (this.#min !== null) this.#min.prev = bucket;
        this.#min = bucket;
      }
      const fresh: Item = { key, count: 1, error: 0, bucket, prev: null, next: null };
      attach(fresh, bucket);
      this.#items.set(key, fresh);
      return;
    }
    // Full: the newcomer replaces a least counted key and inherits its count.
    const victim = (this.#min as Bucket).head as Item;
    this.#items.delete(victim.key);
    victim.key = key;
    victim.error = victim.count;
    this.#items.set(key, victim);
    this.#increment(victim);
  }

  /** Every key kept, most counted first (ties by key). */
  entries(): Counted[] {
    const all: Counted[] = [];
    for (const item of this.#items.values()) all.push({ key: item.key, count: item.count, error: item.error });
    return all.sort((a, b) => b.count - a.count || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  #increment(item: Item): void {
    const from = item.bucket;
    const count = from.count + 1;
    let to = from.next;
    if (to === null || to.count !== count) {
      if (from.head === item && item.next === null) {
        // Alone in its bucket, and the next bucket counts more: count the bucket up in place.
        from.count = count;
        item.count = count;
        return;
      }
      to = { count, head: null, prev: from, next: from.next };
      if (from.next !== null) from.next.prev = to;
      from.next = to;
    }
    detach(item, from);
    if (from.head === null) this.#unlink(from);
    attach(item, to);
    item.count = count;
  }

  #unlink(bucket: Bucket): void {
    if (bucket.prev !== null) bucket.prev.next = bucket.next;
    else this.#min = bucket.next;
    if (bucket.next !== null) bucket.next.prev = bucket.prev;
  }
}

function attach(item: Item, bucket: Bucket): void {
  item.bucket = bucket;
  item.prev = null;
  item.next = bucket.head;
  if (bucket.head !== null) bucket.head.prev = item;
  bucket.head = item;
}

function detach(item: Item, bucket: Bucket): void {
  if (item.prev !== null) item.prev.next = item.next;
  else bucket.head = item.next;
  if (item.next !== null) item.next.prev = item.prev;
  item.prev = null;
  item.next = null;
}

/** One key's refusals over the minutes asked for. `key` is the store's client key (`u:alice`, `h#...`, an IP). */
export interface TopEntry {
  readonly route: string;
  readonly by: string;
  readonly key: string;
  readonly count: number;
}

export interface RefusalTopOptions {
  /** Keys kept per route and minute (default 200). */
  capacity?: number;
  /** Keys reported per route (default 100). */
  reported?: number;
  /** Minutes kept, the current one included (default 15). */
  minutes?: number;
}

/** What is kept per route and minute, and what a snapshot carries of it. */
const DEFAULT_CAPACITY = 200;
const DEFAULT_REPORTED = 100;
export const TOP_MINUTES = 15;
const MINUTE_MS = 60 * 1000; // 1m

/** A replica's counts of one minute, as shared through a shared store: route -> [by, key, count]. */
type Snapshot = Record<string, [string, string, number][]>;

/** Separates `by` from the client key inside a counter key (neither contains a newline). */
const SEP = '\n';

/**
 * Refusals per route and minute, kept for `minutes` minutes. `refused` is called by the
 * proxy for every refused request (not for shadow passes): one counter increment per
 * `by` that refused it (two limits by the same `by`, e.g. per minute and per hour, count
 * the request once). Nothing here talks to a store; sharing is the caller's (snapshots).
 */
export class RefusalTop {
  readonly #capacity: number;
  readonly #reported: number;
  readonly #minutes: number;
  readonly #byMinute = new Map<number, Map<string, SpaceSaving>>();
  /** Minutes counted into since the last `takeDirty`. */
  readonly #dirty = new Set<number>();
  #current = -1;
  #currentRoutes: Map<string, SpaceSaving> | undefined;

  constructor(options: RefusalTopOptions = {}) {
    this.#capacity = options.capacity ?? DEFAULT_CAPACITY;
    this.#reported = options.reported ?? DEFAULT_REPORTED;
    this.#minutes = options.minutes ?? TOP_MINUTES;
  }

  /** Minutes a `top` may look back, the current one included. */
  get minutes(): number {
    return this.#minutes;
  }

  /** A refused request on `routeId`: counts each refusing `by` once. */
  refused(routeId: string, report: RateReport, now: number): void {
    const { checks, outcomes } = report;
    for (let i = 0; i < outcomes.length; i++) {
      if (outcomes[i].allowed) continue;
      const limit = checks[i].limit;
      let seen = false;
      for (let j = 0; j < i; j++) if (!outcomes[j].allowed && checks[j].limit.by === limit.by) seen = true;
      if (!seen) this.record(routeId, limit.by, checks[i].key.slice(limit.keyPrefix.length), now);
    }
  }

  /** One refusal of `key` (a client key) by a limit `by` of `routeId`. */
  record(routeId: string, by: string, key: string, now: number): void {
    const minute = Math.floor(now / MINUTE_MS);
    let routes = this.#currentRoutes;
    if (minute !== this.#current || routes === undefined) routes = this.#enter(minute);
    let counter = routes.get(routeId);
    if (counter === undefined) {
      counter = new SpaceSaving(this.#capacity);
      routes.set(routeId, counter);
    }
    counter.add(by + SEP + key);
    this.#dirty.add(minute);
  }

  #enter(minute: number): Map<string, SpaceSaving> {
    let routes = this.#byMinute.get(minute);
    if (routes === undefined) {
      routes = new Map();
      this.#byMinute.set(minute, routes);
      for (const old of this.#byMinute.keys()) if (old <= minute - this.#minutes) this.#byMinute.delete(old);
    }
    this.#current = minute;
    this.#currentRoutes = routes;
    return routes;
  }

  /** The minutes counted into since the last call (to share), oldest first. */
  takeDirty(): number[] {
    const minutes = [...this.#dirty].sort((a, b) => a - b);
    this.#dirty.clear();
    return minutes;
  }

  /** `minute` is to be shared again (its last share failed). */
  markDirty(minute: number): void {
    if (this.#byMinute.has(minute)) this.#dirty.add(minute);
  }

  /** This replica's counts of `minute` as a snapshot string (top `reported` per route). */
  snapshot(minute: number): string {
    const out: Snapshot = {};
    for (const [route, counter] of this.#byMinute.get(minute) ?? []) {
      out[route] = counter
        .entries()
        .slice(0, this.#reported)
        .map((c) => {
          const cut = c.key.indexOf(SEP);
          return [c.key.slice(0, cut), c.key.slice(cut + 1), c.count];
        });
    }
    return JSON.stringify(out);
  }

  /** The minute numbers of the last `minutes` minutes at `now`, the current one included. */
  window(minutes: number, now: number): number[] {
    const current = Math.floor(now / MINUTE_MS);
    return Array.from({ length: minutes }, (_, i) => current - minutes + 1 + i);
  }

  /**
   * The keys refused most over `minutes` (the current one included), `reported` per route
   * at most, most refused first: this replica's counts plus `shared` snapshots of the
   * same minutes from other replicas. `route` narrows to one route.
   */
  top(minutes: number, now: number, route: string | undefined, shared: readonly string[] = []): TopEntry[] {
    const sums = new Map<string, Map<string, number>>();
    const add = (r: string, key: string, count: number): void => {
      if (route !== undefined && r !== route) return;
      let keys = sums.get(r);
      if (keys === undefined) sums.set(r, (keys = new Map()));
      keys.set(key, (keys.get(key) ?? 0) + count);
    };
    for (const minute of this.window(minutes, now)) {
      for (const [r, counter] of this.#byMinute.get(minute) ?? []) for (const c of counter.entries()) add(r, c.key, c.count);
    }
    for (const text of shared) {
      let snapshot: Snapshot;
      try {
        snapshot = JSON.parse(text) as Snapshot;
      } catch {
        continue; // a snapshot from another version, or cut: skip it rather than fail the answer
      }
      if (snapshot === null || typeof snapshot !== 'object') continue;
      for (const [r, entries] of Object.entries(snapshot)) {
        if (!Array.isArray(entries)) continue;
        for (const e of entries) {
          if (Array.isArray(e) && typeof e[0] === 'string' && typeof e[1] === 'string' && typeof e[2] === 'number') add(r, e[0] + SEP + e[1], e[2]);
        }
      }
    }
    const result: TopEntry[] = [];
    for (const [r, keys] of sums) {
      const entries = [...keys].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, this.#reported);
      for (const [key, count] of entries) {
        const cut = key.indexOf(SEP);
        result.push({ route: r, by: key.slice(0, cut), key: key.slice(cut + 1), count });
      }
    }
    return result.sort((a, b) => b.count - a.count || (a.route < b.route ? -1 : a.route > b.route ? 1 : a.key < b.key ? -1 : 1));
  }
}
