import { Cluster } from 'ioredis';
import type { Logger } from '../../observability/logger.js';
import type { RedisClient } from './connection.js';

export interface InvalidationOptions {
  /** The store's client; the subscriber is a duplicate of it (a connection in subscriber mode can do nothing else). */
  client: RedisClient;
  /** `prefix + 'admin:blocks'`. */
  channel: string;
  logger: Logger;
  /**
   * Another replica (or this one) changed the blocks of these keys (store keys without
   * the prefix); `lifted`: the change lifted them (unblock, reset) rather than set one.
   */
  onKeys(keys: readonly string[], lifted: boolean): void;
  /** Subscribed (at start or again after a disconnect): anything learnt before may be stale. */
  onLive(): void;
  /** The subscription dropped: changes elsewhere can no longer be heard until `onLive`. */
  onDown(): void;
  /** How often the idle subscriber pings, so a dead connection is noticed (default 5 s). */
  pingMs?: number;
}

/** An idle subscriber is pinged this often; the socket timeout then drops a dead one. */
const PING_MS = 5_000; // 5s

/**
 * Tells every replica's local block cache about blocks changed through the admin API:
 * a change is PUBLISHed with the keys it touched, and each replica's subscriber drops
 * their entries (Redis delivers within milliseconds, so well inside the 1 s promise).
 * Pub/sub is fire-and-forget: a replica whose subscriber was disconnected may have
 * missed messages, so the cache is cleared whenever the subscription is (re)made and
 * caches nothing while it is down (`onDown`). The PUBLISH goes over the store's own
 * connection; in a Cluster it reaches subscribers on every node.
 */
export class BlockInvalidation {
  readonly #options: InvalidationOptions;
  /** The subscriber, created by `start` (when the store's connection first comes up). */
  #sub: RedisClient | undefined;
  #timer: NodeJS.Timeout | undefined;
  #live = false;
  #closed = false;
  readonly #waiters = new Set<() => void>();

  constructor(options: InvalidationOptions) {
    this.#options = options;
  }

  /**
   * Opens the subscriber (once; later calls do nothing). Called when the store's own
   * connection is first ready: no second connection is dialled to a Redis that is not
   * there, and creating the store stays cheap.
   */
  start(): void {
    if (this.#sub !== undefined || this.#closed) return;
    const options = this.#options;
    const { client, channel, logger } = options;
    // Subscribed on every 'ready', which is where going live is noticed (a second SUBSCRIBE
    // of the same channel by ioredis's own resubscription is harmless).
    const sub = client instanceof Cluster ? client.duplicate() : client.duplicate({ connectionName: 'tollgate-sub' });
    this.#sub = sub;
    sub.on('ready', () => {
      sub.subscribe(channel).then(
        () => {
          if (this.#closed) return;
          this.#live = true;
          options.onLive();
          for (const waiter of [...this.#waiters]) waiter();
        },
        (error: unknown) => logger.debug({ store: 'redis', err: error }, 'block invalidation: subscribe failed (retried on reconnect)'),
      );
    });
    sub.on('message', (from: string, message: string) => {
      if (from !== channel) return;
      let change: { keys?: unknown; lifted?: unknown };
      try {
        change = JSON.parse(message) as { keys?: unknown; lifted?: unknown };
      } catch {
        return;
      }
      if (change === null || !Array.isArray(change.keys)) return;
      options.onKeys(change.keys.filter((k): k is string => typeof k === 'string'), change.lifted === true);
    });
    const down = (): void => {
      if (!this.#live) return;
      this.#live = false;
      options.onDown();
    };
    sub.on('close', down);
    sub.on('end', down);
    // Connection errors are the main client's to report; this one only stops caching.
    sub.on('error', (error: Error) => logger.debug({ store: 'redis', err: error.message }, 'block invalidation subscriber error'));
    this.#timer = setInterval(() => {
      if (this.#live) sub.ping().catch(() => undefined);
    }, options.pingMs ?? PING_MS);
    this.#timer.unref();
  }

  /** Subscribed: changes made through other replicas are heard. */
  get live(): boolean {
    return this.#live;
  }

  /** Resolves true once subscribed, false after `timeoutMs`. */
  whenLive(timeoutMs: number): Promise<boolean> {
    if (this.#live) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(done);
        resolve(this.#live);
      };
      const timer = setTimeout(done, timeoutMs);
      timer.unref();
      this.#waiters.add(done);
    });
  }

  /** Tells every replica (this one included) that these keys' blocks changed (`lifted`: unblocked or reset). */
  async publish(keys: readonly string[], lifted: boolean): Promise<void> {
    if (keys.length === 0) return;
    await this.#options.client.publish(this.#options.channel, JSON.stringify({ keys, lifted }));
  }

  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#live = false;
    for (const waiter of [...this.#waiters]) waiter();
    this.#sub?.disconnect();
  }
}
