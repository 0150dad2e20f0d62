import type { Logger } from '../../observability/logger.js';
import type { RedisClient } from './connection.js';
import { hashTag } from './keys.js';
import { RENEW_LUA, SCRIPT_SHA1, SETTLE_LUA } from './scripts.js';

export interface SettlerOptions {
  client: RedisClient;
  logger: Logger;
  /** A lease lives this long unless renewed (store.redis.slotLease). */
  leaseMs: number;
  /** `clock: redis`: times are Redis TIME; else `clock()` is passed. */
  serverClock: boolean;
  clock: () => number;
  /** ms added to key TTLs (clock: local). */
  ttlSlack: number;
  cluster: boolean;
}

/** Leases per renewal call, settlements per settle call: keeps one script short on a busy replica. */
const MAX_PER_CALL = 500;

/** Settlements of one Cluster slot (all of one group without Cluster), in SETTLE_LUA's layout. */
interface SettleGroup {
  releaseKeys: string[];
  members: string[];
  adjustKeys: string[];
  /** Per adjustment: spec, taken at, delta. */
  adjustArgs: (string | number)[];
}

function newGroup(): SettleGroup {
  return { releaseKeys: [], members: [], adjustKeys: [], adjustArgs: [] };
}

/**
 * The work finished exchanges leave in Redis, and the slots this replica holds:
 * - slot releases and unit adjustments (count give-backs, cost settlements) are batched:
 *   one SETTLE call per event-loop turn (per Cluster slot) carries all of them;
 * - held slots are leases (members of a ZSET per key, scored by expiry, written by the
 *   decide script); every held lease is renewed each third of the lease length, so a
 *   replica that dies (SIGKILL) frees its slots when they expire. One timer for all
 *   leases, none per request.
 *
 * Failures are not retried: a release that fails leaves its lease to expire (the slot
 * stays taken for at most one lease length); a failed adjustment is dropped (counts err
 * on the side they were reserved on); a renewal that fails is tried again next period.
 */
export class Settler {
  readonly #options: SettlerOptions;
  /** member -> full key, for every lease this replica holds. */
  readonly #held = new Map<string, string>();
  /** Settlements of this turn, by hash tag ('' without Cluster). */
  #pending = new Map<string, SettleGroup>();
  #flushScheduled = false;
  /** Settle calls sent and not yet answered. */
  readonly #sending = new Set<Promise<unknown>>();
  readonly #timer: NodeJS.Timeout;
  #closed = false;

  constructor(options: SettlerOptions) {
    this.#options = options;
    this.#timer = setInterval(() => this.renew(), Math.max(1, Math.floor(options.leaseMs / 3)));
    this.#timer.unref();
  }

  /** Leases held now. */
  get size(): number {
    return this.#held.size;
  }

  /** The decide script took a lease `member` on `key` (full key, prefix included). */
  add(key: string, member: string): void {
    this.#held.set(member, key);
  }

  /** The exchange ended: give the lease back (batched). */
  release(member: string): void {
    const key = this.#held.get(member);
    if (key === undefined) return;
    this.#held.delete(member);
    if (this.#closed) return;
    const group = this.#group(key);
    group.releaseKeys.push(key);
    group.members.push(member);
    this.#schedule();
  }

  /**
   * A decide call whose answer never came (timed out, failed, unreadable) may still have
   * taken lease `member` on `key` in Redis: give it back now rather than leave the slot
   * taken for a whole lease. Removing a member that was never added is harmless.
   */
  abandon(key: string, member: string): void {
    this.#held.set(member, key);
    this.release(member);
  }

  /** Add `delta` units to the state at `key` (full key) as counted at `at` under `spec` (batched). */
  adjust(key: string, spec: string, at: number, delta: number): void {
    if (this.#closed) return;
    const group = this.#group(key);
    group.adjustKeys.push(key);
    group.adjustArgs.push(spec, at, delta);
    this.#schedule();
  }

  #group(key: string): SettleGroup {
    const tag = this.#options.cluster ? hashTag(key) : '';
    let group = this.#pending.get(tag);
    if (group === undefined) this.#pending.set(tag, (group = newGroup()));
    return group;
  }

  #schedule(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(this.#flush);
  }

  readonly #flush = (): void => {
    this.#flushScheduled = false;
    if (this.#pending.size === 0) return;
    const pending = this.#pending;
    this.#pending = new Map();
    const { serverClock, clock, ttlSlack } = this.#options;
    for (const group of pending.values()) {
      for (let from = 0; from < Math.max(group.releaseKeys.length, group.adjustKeys.length); from += MAX_PER_CALL) {
        const releases = group.releaseKeys.slice(from, from + MAX_PER_CALL);
        const adjustments = group.adjustKeys.slice(from, from + MAX_PER_CALL);
        const args = [releases.length, ttlSlack, serverClock ? '' : clock(), ...group.members.slice(from, from + MAX_PER_CALL), ...group.adjustArgs.slice(3 * from, 3 * (from + MAX_PER_CALL))];
        const sent = this.#eval('settle', SETTLE_LUA, [...releases, ...adjustments], args).catch((error: unknown) => {
          this.#options.logger.debug({ store: 'redis', err: error }, 'settlement failed: leases expire on their own, adjustments are dropped');
        });
        this.#sending.add(sent);
        void sent.finally(() => this.#sending.delete(sent));
      }
    }
  };

  /** Sends the settlements queued in this turn now and resolves once every one sent so far was answered. */
  async flushed(): Promise<void> {
    this.#flush();
    await Promise.all([...this.#sending]);
  }

  /** Renews every held lease (also called by the timer). */
  renew(): void {
    if (this.#closed || this.#held.size === 0 || this.#options.client.status !== 'ready') return;
    const byTag = new Map<string, [string[], string[]]>();
    for (const [member, key] of this.#held) {
      const tag = this.#options.cluster ? hashTag(key) : '';
      let group = byTag.get(tag);
      if (group === undefined) byTag.set(tag, (group = [[], []]));
      group[0].push(key);
      group[1].push(member);
    }
    const { leaseMs, serverClock, clock, ttlSlack } = this.#options;
    for (const [keys, members] of byTag.values()) {
      for (let from = 0; from < keys.length; from += MAX_PER_CALL) {
        const args = [leaseMs, serverClock ? '' : clock(), ttlSlack, ...members.slice(from, from + MAX_PER_CALL)];
        this.#eval('renew', RENEW_LUA, keys.slice(from, from + MAX_PER_CALL), args).catch((error: unknown) => {
          this.#options.logger.debug({ store: 'redis', err: error }, 'lease renewal failed: retried at the next period');
        });
      }
    }
  }

  /**
   * Stops renewing and sends the settlements still queued; leases still held expire on
   * their own (a drained replica released them already).
   */
  async close(): Promise<void> {
    await this.flushed();
    this.#closed = true;
    clearInterval(this.#timer);
    this.#held.clear();
  }

  /** EVALSHA, resent as EVAL on NOSCRIPT (as the decide call). */
  #eval(name: 'settle' | 'renew', lua: string, keys: string[], args: (string | number)[]): Promise<unknown> {
    const client = this.#options.client;
    const all = [...keys, ...args] as string[];
    return client.evalsha(SCRIPT_SHA1[name], keys.length, all).catch((error: unknown) => {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      return client.eval(lua, keys.length, all);
    });
  }
}
