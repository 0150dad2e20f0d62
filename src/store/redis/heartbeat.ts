import type { Logger } from '../../observability/logger.js';
import type { RedisClient } from './connection.js';

/** The heartbeat script as ioredis exposes it after `defineCommand`. */
type HeartbeatCommand = (key: string, replicaId: string, liveMs: number, ttlMs: number) => Promise<number>;

export const HEARTBEAT_COMMAND = 'tgHeartbeat';

export interface HeartbeatOptions {
  client: RedisClient;
  /** The replicas sorted set. */
  key: string;
  replicaId: string;
  logger: Logger;
  intervalMs?: number;
  /** A replica not seen for this long no longer counts as live. */
  liveMs?: number;
}

/**
 * Each replica records itself every second in one sorted set (score = Redis TIME) and
 * learns how many replicas were seen in the last 5 s: the divisor of the limits when
 * decisions fall back to local memory (`onError: local`).
 */
export class ReplicaHeartbeat {
  readonly #client: RedisClient;
  readonly #key: string;
  readonly #replicaId: string;
  readonly #logger: Logger;
  readonly #intervalMs: number;
  readonly #liveMs: number;
  #timer: NodeJS.Timeout | undefined;
  #inFlight = false;
  #live: number | undefined;

  constructor(options: HeartbeatOptions) {
    this.#client = options.client;
    this.#key = options.key;
    this.#replicaId = options.replicaId;
    this.#logger = options.logger;
    this.#intervalMs = options.intervalMs ?? 1_000; // 1s
    this.#liveMs = options.liveMs ?? 5_000; // 5s
  }

  /** Live replicas at the last successful beat; undefined before the first one. */
  get live(): number | undefined {
    return this.#live;
  }

  start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => void this.beat(), this.#intervalMs);
    this.#timer.unref();
    void this.beat();
  }

  /** One beat; failures are ignored (the last count stays in force). */
  async beat(): Promise<void> {
    if (this.#inFlight || this.#client.status !== 'ready') return;
    this.#inFlight = true;
    try {
      const command = (this.#client as unknown as Record<string, HeartbeatCommand>)[HEARTBEAT_COMMAND];
      // The set outlives a beat by two live windows: a dead fleet's set disappears on its own.
      const live = await command.call(this.#client, this.#key, this.#replicaId, this.#liveMs, 2 * this.#liveMs);
      if (live !== this.#live) this.#logger.debug({ replicas: live }, 'live tollgate replicas changed');
      this.#live = live;
    } catch (error) {
      this.#logger.debug({ err: error }, 'replica heartbeat failed');
    } finally {
      this.#inFlight = false;
    }
  }

  /** Stops beating and leaves the set, so the others stop counting this replica at once. */
  async stop(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#client.status !== 'ready') return;
    try {
      await this.#client.zrem(this.#key, this.#replicaId);
    } catch {
      // Best effort: the entry ages out of the live window anyway.
    }
  }
}
