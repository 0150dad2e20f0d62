import { randomBytes } from 'node:crypto';
import type { RedisStoreConfig } from '../../config/types.js';
import { ALGORITHMS } from '../../limiter/algorithms/index.js';
import type { Verdict } from '../../limiter/algorithms/index.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import { MemoryStore, outcome } from '../memory.js';
import type { LimitCheck, LimitOutcome, RateLimitStore, StoreDecision } from '../types.js';
import { StoreUnavailableError } from '../types.js';
import { BlockCache } from './block-cache.js';
import { CircuitBreaker, DEFAULT_BREAKER } from './breaker.js';
import { createRedisClient, describeTarget } from './connection.js';
import type { RedisClient } from './connection.js';
import { HEARTBEAT_COMMAND, ReplicaHeartbeat } from './heartbeat.js';
import { DECIDE_LUA, HEARTBEAT_LUA } from './scripts.js';

export interface RedisStoreOptions {
  config: RedisStoreConfig;
  /** Local clock (ms): breaker cool-down and the local fallback's expiries. */
  clock: () => number;
  logger: Logger;
  /** storeErrors{store:'redis'}, storeDegraded, storeEvictions (local fallback). */
  metrics?: Metrics;
  /** Bounds of the in-memory store used by `onError: local` (and of the block cache). */
  memoryFallback: { maxKeys: number; maxBlocks: number };
  /** Identifies this replica in the heartbeat set; default random. */
  replicaId?: string;
  /** Circuit breaker tuning; default 3 consecutive failures, 1 s cool-down. */
  breaker?: { failures?: number; coolDownMs?: number };
  /**
   * Answer keys known to be blocked locally until their block ends (default true).
   * Tests that compare every outcome with MemoryStore turn it off.
   */
  blockCache?: boolean;
  /** Heartbeat period (default 1 s). */
  heartbeatMs?: number;
}

export interface RedisStore extends RateLimitStore {
  readonly kind: 'redis';
  /** The breaker is open: decisions follow `onError` until a probe succeeds. */
  readonly degraded: boolean;
  /** Decision scripts sent to Redis so far (tests and the benchmark). */
  readonly roundTrips: number;
  /** Live replicas at the last heartbeat, else `expectedReplicas`. */
  readonly liveReplicas: number;
  ready(timeoutMs: number): Promise<boolean>;
}

const STORE_LABEL = Object.freeze({ store: 'redis' });
/** Commands defined up front; routes with more limits get theirs on first use. */
const PREDEFINED_CHECKS = 16;
/**
 * With `clock: local` the proxy's clock decides windows but Redis's clock expires
 * keys. Extra TTL keeps state alive while any replica's clock still counts it; state
 * kept past its window reads as no history, so the slack costs only memory.
 */
const LOCAL_CLOCK_TTL_SLACK_MS = 2_000; // 2s
/** Numbers per check in the script's reply. */
const REPLY_STRIDE = 7;
const EMPTY_DECISION: StoreDecision = Object.freeze({ allowed: true, outcomes: Object.freeze([]) as readonly LimitOutcome[] });

type DecideCommand = (args: (string | number)[]) => Promise<unknown>;

/** Creates the Redis store; connects in the background and never throws on an unreachable Redis. */
export function createRedisStore(options: RedisStoreOptions): RedisStore {
  return new RedisRateLimitStore(options);
}

/** The script command name for `n` checks: a fixed key count per command (Cluster routing). */
function decideCommandName(n: number): string {
  return 'tgDecide' + n;
}

class RedisRateLimitStore implements RedisStore {
  readonly kind = 'redis' as const;
  readonly #client: RedisClient;
  readonly #config: RedisStoreConfig;
  readonly #options: RedisStoreOptions;
  readonly #logger: Logger;
  readonly #metrics: Metrics | undefined;
  readonly #breaker: CircuitBreaker;
  readonly #blocks: BlockCache | undefined;
  readonly #heartbeat: ReplicaHeartbeat;
  readonly #prefix: string;
  /** Where Redis is, without credentials (for logs). */
  readonly #target: string;
  readonly #timeoutMs: number;
  readonly #serverClock: boolean;
  readonly #ttlSlack: number;
  readonly #requestIdPrefix: string;
  readonly #commands: (DecideCommand | undefined)[] = [];
  #fallback: MemoryStore | undefined;
  #requestSeq = 0;
  #roundTrips = 0;
  #lastError = '';
  /** Rejection shared by every decision the open breaker skips (an Error per request would cost its stack). */
  #openError: StoreUnavailableError | undefined;
  #closed = false;
  /** Scratch verdict handed to `outcome`, which copies what it needs. */
  readonly #verdict: Verdict = { allowed: false, remaining: 0, resetAt: 0, retryAfterMs: 0, count: 0 };

  constructor(options: RedisStoreOptions) {
    const { config } = options;
    this.#options = options;
    this.#config = config;
    this.#logger = options.logger;
    this.#metrics = options.metrics;
    this.#prefix = config.prefix;
    this.#target = describeTarget(config);
    this.#timeoutMs = config.timeoutMs;
    this.#serverClock = config.clock === 'redis';
    this.#ttlSlack = this.#serverClock ? 0 : LOCAL_CLOCK_TTL_SLACK_MS;
    const replicaId = options.replicaId ?? randomBytes(6).toString('base64url');
    this.#requestIdPrefix = replicaId + '.';
    this.#blocks = options.blockCache === false ? undefined : new BlockCache(options.memoryFallback.maxBlocks);
    this.#breaker = new CircuitBreaker({
      failures: options.breaker?.failures ?? DEFAULT_BREAKER.failures,
      coolDownMs: options.breaker?.coolDownMs ?? DEFAULT_BREAKER.coolDownMs,
      clock: options.clock,
      onChange: (open) => this.#onBreakerChange(open),
    });
    this.#metrics?.storeDegraded.set(0);

    this.#client = createRedisClient(config);
    for (let n = 1; n <= PREDEFINED_CHECKS; n++) this.#defineDecide(n);
    this.#client.defineCommand(HEARTBEAT_COMMAND, { numberOfKeys: 1, lua: HEARTBEAT_LUA });
    this.#heartbeat = new ReplicaHeartbeat({
      client: this.#client,
      key: this.#prefix + 'replicas',
      replicaId,
      logger: this.#logger,
      intervalMs: options.heartbeatMs,
    });

    const target = this.#target;
    let connected = false;
    let failing = false;
    this.#client.on('ready', () => {
      this.#logger.info({ store: 'redis', target }, connected ? 'redis reconnected' : 'redis connected');
      connected = true;
      failing = false;
      this.#breaker.probeNow();
      void this.#heartbeat.beat();
    });
    // Connection errors repeat on every reconnect attempt: warn once until connected again.
    this.#client.on('error', (error: Error) => {
      this.#lastError = error.message;
      if (failing) {
        this.#logger.debug({ store: 'redis', target, err: error.message }, 'redis connection error');
        return;
      }
      failing = true;
      this.#logger.warn({ store: 'redis', target, err: error.message }, 'redis connection failed: reconnecting in the background');
    });
    this.#heartbeat.start();
  }

  get degraded(): boolean {
    return this.#breaker.open;
  }

  /**
   * Resolves true once connected (and the first heartbeat counted this replica), false
   * after `timeoutMs`. Start-up waits on it briefly so the first requests after
   * "listening" are not decided by the fallback; an unreachable Redis only delays start.
   */
  ready(timeoutMs: number): Promise<boolean> {
    if (this.#client.status === 'ready') return Promise.resolve(true);
    return new Promise((resolve) => {
      const onReady = (): void => {
        clearTimeout(timer);
        // The 'ready' listener above starts a heartbeat; give it its round trip.
        void this.#heartbeat.beat().then(
          () => resolve(true),
          () => resolve(true),
        );
      };
      const timer = setTimeout(() => {
        this.#client.off('ready', onReady);
        resolve(false);
      }, timeoutMs);
      timer.unref();
      this.#client.once('ready', onReady);
    });
  }

  get roundTrips(): number {
    return this.#roundTrips;
  }

  get liveReplicas(): number {
    return this.#heartbeat.live ?? this.#config.expectedReplicas;
  }

  decide(checks: readonly LimitCheck[], now: number): StoreDecision | Promise<StoreDecision> {
    const n = checks.length;
    if (n === 0) return EMPTY_DECISION;
    if (this.#closed) return Promise.reject(new StoreUnavailableError('redis store closed'));
    if (this.#blocks !== undefined && this.#blocks.size !== 0) {
      const cached = this.#blocks.decide(checks, now);
      if (cached !== undefined) return cached;
    }
    const probe = this.#breaker.open;
    if (!this.#breaker.allow()) return this.#skipped(checks, now);
    if (this.#client.status !== 'ready') {
      // Offline queue is off: sending now would only fail; fail without the round trip.
      return this.#settleFailure(checks, now, probe, new Error(`redis not ready (${this.#client.status})`));
    }
    const reply = this.#command(n).call(this.#client, this.#args(checks, now));
    this.#roundTrips++;
    return new Promise<StoreDecision>((resolve, reject) => {
      let settled = false;
      // ioredis's commandTimeout cannot bound a call queued behind an auto-pipeline in
      // flight, nor a NOSCRIPT resend: this timer is the decision's hard deadline.
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        this.#finishFailure(checks, now, probe, new Error(`redis timed out after ${this.#timeoutMs}ms`), resolve, reject);
      }, this.#timeoutMs);
      reply.then(
        (value) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          let decision: StoreDecision;
          try {
            decision = this.#fromReply(checks, now, value);
          } catch (error) {
            this.#finishFailure(checks, now, probe, error, resolve, reject);
            return;
          }
          this.#breaker.success();
          this.#fallback = undefined;
          resolve(decision);
        },
        (error: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          this.#finishFailure(checks, now, probe, error, resolve, reject);
        },
      );
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#heartbeat.stop();
    // A hung Redis may never answer QUIT: wait at most 1 s; disconnect stops the reconnect
    // loop either way (and settles a pending QUIT, hence the catch).
    const quit = this.#client.quit().catch(() => undefined);
    await Promise.race([quit, new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
    this.#client.disconnect();
    this.#blocks?.clear();
    await this.#fallback?.close();
    this.#fallback = undefined;
  }

  #defineDecide(n: number): DecideCommand {
    const name = decideCommandName(n);
    this.#client.defineCommand(name, { numberOfKeys: 2 * n, lua: DECIDE_LUA });
    const command = (this.#client as unknown as Record<string, DecideCommand>)[name];
    this.#commands[n] = command;
    return command;
  }

  #command(n: number): DecideCommand {
    return this.#commands[n] ?? this.#defineDecide(n);
  }

  /** KEYS then ARGV of the decide script (layout documented in scripts.ts). */
  #args(checks: readonly LimitCheck[], now: number): (string | number)[] {
    const n = checks.length;
    const args: (string | number)[] = new Array(6 * n + 3);
    const prefix = this.#prefix;
    let a = 0;
    for (let i = 0; i < n; i++) {
      const key = prefix + checks[i].key;
      args[a++] = key;
      args[a++] = key + ':b';
    }
    args[a++] = this.#serverClock ? '' : now;
    args[a++] = this.#ttlSlack;
    args[a++] = this.#requestIdPrefix + (this.#requestSeq++).toString(36);
    for (let i = 0; i < n; i++) {
      const check = checks[i];
      const limit = check.limit;
      args[a++] = ALGORITHMS[limit.algorithm].code;
      args[a++] = check.max;
      args[a++] = limit.windowMs;
      args[a++] = limit.blockMs;
    }
    return args;
  }

  /**
   * Turns the script reply into outcomes. With `clock: redis` absolute times come in
   * Redis time and are moved to the local clock by their distance from Redis's `now`.
   */
  #fromReply(checks: readonly LimitCheck[], now: number, value: unknown): StoreDecision {
    const n = checks.length;
    const reply = typeof value === 'string' ? value.split(' ') : undefined;
    if (reply === undefined || reply.length !== 1 + REPLY_STRIDE * n) {
      throw new Error('unexpected reply from the decide script');
    }
    const offset = this.#serverClock ? now - +reply[0] : 0;
    const verdict = this.#verdict;
    const outcomes: LimitOutcome[] = new Array(n);
    let allowed = true;
    for (let i = 0, b = 1; i < n; i++, b += REPLY_STRIDE) {
      verdict.allowed = reply[b] === '1';
      verdict.remaining = +reply[b + 1];
      verdict.resetAt = +reply[b + 2] + offset;
      verdict.retryAfterMs = +reply[b + 3];
      verdict.count = +reply[b + 4];
      let blockedUntil = +reply[b + 5];
      if (blockedUntil !== 0) blockedUntil += offset;
      const result = outcome(checks[i].max, verdict, blockedUntil, reply[b + 6] === '1', now);
      if (blockedUntil !== 0) this.#blocks?.add(checks[i].key, result, now);
      if (!result.allowed) allowed = false;
      outcomes[i] = result;
    }
    return { allowed, outcomes };
  }

  #finishFailure(
    checks: readonly LimitCheck[],
    now: number,
    probe: boolean,
    error: unknown,
    resolve: (decision: StoreDecision) => void,
    reject: (error: unknown) => void,
  ): void {
    this.#recordFailure(probe, error);
    try {
      resolve(this.#unavailable(checks, now, this.#lastError));
    } catch (failure) {
      reject(failure);
    }
  }

  /** A failure detected before sending: answered synchronously (`local`) or as a rejection. */
  #settleFailure(checks: readonly LimitCheck[], now: number, probe: boolean, error: unknown): StoreDecision | Promise<StoreDecision> {
    this.#recordFailure(probe, error);
    try {
      return this.#unavailable(checks, now, this.#lastError);
    } catch (unavailable) {
      return Promise.reject(unavailable);
    }
  }

  /** The breaker is open: answer without Redis, as cheaply as possible (one shared error). */
  #skipped(checks: readonly LimitCheck[], now: number): StoreDecision | Promise<StoreDecision> {
    if (this.#config.onError === 'local') return this.#unavailable(checks, now, '');
    this.#openError ??= new StoreUnavailableError(`redis store unavailable: circuit open after: ${this.#lastError}`);
    return Promise.reject(this.#openError);
  }

  #recordFailure(probe: boolean, error: unknown): void {
    this.#lastError = error instanceof Error ? error.message : String(error);
    this.#metrics?.storeErrors.inc(STORE_LABEL);
    this.#breaker.failure(probe);
  }

  /**
   * The answer without Redis: `local` decides from an in-memory store with each limit
   * divided by the live replicas; `allow`/`deny` throw for the limiter to apply.
   */
  #unavailable(checks: readonly LimitCheck[], now: number, reason: string): StoreDecision {
    if (this.#config.onError !== 'local') {
      throw new StoreUnavailableError(`redis store unavailable: ${reason}`);
    }
    const replicas = this.liveReplicas;
    const local: LimitCheck[] = new Array(checks.length);
    for (let i = 0; i < checks.length; i++) {
      const { limit, key, max } = checks[i];
      local[i] = { limit, key, max: Math.max(1, Math.floor(max / replicas)) };
    }
    // Fresh counts for every outage: the fallback is dropped when Redis answers again.
    this.#fallback ??= new MemoryStore({
      maxKeys: this.#options.memoryFallback.maxKeys,
      maxBlocks: this.#options.memoryFallback.maxBlocks,
      clock: this.#options.clock,
      onEvict: this.#metrics ? () => this.#metrics?.storeEvictions.inc() : undefined,
    });
    const decision = this.#fallback.decide(local, now);
    return { allowed: decision.allowed, outcomes: decision.outcomes, degraded: true };
  }

  #onBreakerChange(open: boolean): void {
    this.#openError = undefined;
    this.#metrics?.storeDegraded.set(open ? 1 : 0);
    const context = { store: 'redis', target: this.#target, onError: this.#config.onError };
    if (open) {
      this.#logger.warn({ ...context, err: this.#lastError }, 'redis store degraded: decisions follow onError until Redis answers');
    } else {
      this.#logger.info(context, 'redis store healthy again: shared limits restored');
    }
  }
}
