import type { Logger } from '../../observability/logger.js';
import type { RedisClient } from './connection.js';
import { hashTag } from './keys.js';
import { RENEW_LUA, SCRIPT_SHA1, SETTLE_LUA } from './scripts.js';

export interface LeaseKeeperOptions {
  client: RedisClient;
  logger: Logger;
  /** A lease lives this long unless renewed (store.redis.slotLease). */
  leaseMs: number;
  /** `clock: redis`: lease times are Redis TIME; else `clock()` is passed. */
  serverClock: boolean;
  clock: () => number;
  /** ms added to key TTLs (clock: local). */
  ttlSlack: number;
  cluster: boolean;
}

/** Leases per renewal call: keeps one script short on a busy replica. */
const RENEW_BATCH = 500;

/**
 * The concurrency slots this replica holds in Redis, as leases (members of a ZSET per
 * key, scored by expiry, written by the decide script). It renews every held lease each
 * third of the lease length, so a replica that dies (SIGKILL) frees its slots when they
 * expire, and releases the slots of finished exchanges in one script call per
 * event-loop turn. One timer for all leases, none per request.
 *
 * Failures are not retried: a release that fails leaves its lease to expire (the slot
 * stays taken for at most one lease length); a renewal that fails is tried again at the
 * next period.
 */
export class LeaseKeeper {
  readonly #options: LeaseKeeperOptions;
  /** member -> full key, for every lease this replica holds. */
  readonly #held = new Map<string, string>();
  /** Releases of this turn: full keys and members, aligned. */
  #releaseKeys: string[] = [];
  #releaseMembers: string[] = [];
  #flushScheduled = false;
  /** Release calls sent and not yet answered. */
  readonly #sending = new Set<Promise<unknown>>();
  readonly #timer: NodeJS.Timeout;
  #closed = false;

  constructor(options: LeaseKeeperOptions) {
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
    this.#releaseKeys.push(key);
    this.#releaseMembers.push(member);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(this.#flush);
  }

  readonly #flush = (): void => {
    this.#flushScheduled = false;
    const keys = this.#releaseKeys;
    const members = this.#releaseMembers;
    if (keys.length === 0) return;
    this.#releaseKeys = [];
    this.#releaseMembers = [];
    for (const [groupKeys, groupMembers] of this.#groups(keys, members)) {
      const sent = this.#eval('settle', SETTLE_LUA, groupKeys, groupMembers).catch((error: unknown) => {
        this.#options.logger.debug({ store: 'redis', err: error }, 'slot release failed: the lease expires on its own');
      });
      this.#sending.add(sent);
      void sent.finally(() => this.#sending.delete(sent));
    }
  };

  /** Sends the releases queued in this turn now and resolves once every release sent so far was answered. */
  async flushed(): Promise<void> {
    this.#flush();
    await Promise.all([...this.#sending]);
  }

  /** Renews every held lease (also called by the timer). */
  renew(): void {
    if (this.#closed || this.#held.size === 0 || this.#options.client.status !== 'ready') return;
    const keys: string[] = [];
    const members: string[] = [];
    for (const [member, key] of this.#held) {
      keys.push(key);
      members.push(member);
    }
    const { leaseMs, serverClock, clock, ttlSlack } = this.#options;
    for (const [groupKeys, groupMembers] of this.#groups(keys, members)) {
      for (let from = 0; from < groupKeys.length; from += RENEW_BATCH) {
        const batchKeys = groupKeys.slice(from, from + RENEW_BATCH);
        const args = [leaseMs, serverClock ? '' : clock(), ttlSlack, ...groupMembers.slice(from, from + RENEW_BATCH)];
        this.#eval('renew', RENEW_LUA, batchKeys, args).catch((error: unknown) => {
          this.#options.logger.debug({ store: 'redis', err: error }, 'lease renewal failed: retried at the next period');
        });
      }
    }
  }

  /**
   * Stops renewing and sends the releases still queued; leases still held expire on their
   * own (a drained replica released them already).
   */
  async close(): Promise<void> {
    await this.flushed();
    this.#closed = true;
    clearInterval(this.#timer);
    this.#held.clear();
  }

  /** Keys and members grouped by Cluster slot (one group without Cluster). */
  #groups(keys: string[], members: string[]): Iterable<[string[], string[]]> {
    if (!this.#options.cluster) return [[keys, members]];
    const groups = new Map<string, [string[], string[]]>();
    for (let i = 0; i < keys.length; i++) {
      const tag = hashTag(keys[i]);
      let group = groups.get(tag);
      if (group === undefined) groups.set(tag, (group = [[], []]));
      group[0].push(keys[i]);
      group[1].push(members[i]);
    }
    return groups.values();
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
