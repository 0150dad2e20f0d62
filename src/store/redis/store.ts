import { randomBytes } from 'node:crypto';
import type { RedisStoreConfig } from '../../config/types.js';
import { ALGORITHMS } from '../../limiter/algorithms/index.js';
import type { Verdict } from '../../limiter/algorithms/index.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { CompiledLimit, CompiledRateLimit } from '../../policy/types.js';
import { MemoryStore, outcome } from '../memory.js';
import type { BlockPage, KeyState, LimitCheck, LimitOutcome, RateLimitStore, StoreAdmin, StoreDecision, StoreHold } from '../types.js';
import { StoreUnavailableError } from '../types.js';
import { RedisAdmin } from './admin.js';
import { BlockCache } from './block-cache.js';
import { CircuitBreaker, DEFAULT_BREAKER } from './breaker.js';
import { createRedisClient, describeTarget } from './connection.js';
import type { RedisClient } from './connection.js';
import { HEARTBEAT_COMMAND, ReplicaHeartbeat } from './heartbeat.js';
import { blockIndexKey, hashTag } from './keys.js';
import { BlockInvalidation } from './invalidation.js';
import { Settler } from './settler.js';
import { DECIDE_LUA, HEARTBEAT_LUA, SCRIPT_SHA1 } from './scripts.js';

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
  /** How long a batch may wait for the call in flight (default HOLD_BEHIND_MS; tests). */
  holdBehindMs?: number;
}

export interface RedisStore extends RateLimitStore, StoreAdmin {
  readonly kind: 'redis';
  /** The breaker is open: decisions follow `onError` until a probe succeeds. */
  readonly degraded: boolean;
  /** Decision scripts sent to Redis so far (tests and the benchmark). */
  readonly roundTrips: number;
  /** Live replicas at the last heartbeat, else `expectedReplicas`. */
  readonly liveReplicas: number;
  /** Concurrency leases this replica holds. */
  readonly leasesHeld: number;
  /** Resolves once every slot release handed to `settle` so far has been applied in Redis. */
  settled(): Promise<void>;
  /** Renews every held lease now (the timer does this every third of the lease length). */
  renewLeases(): void;
  ready(timeoutMs: number): Promise<boolean>;
}

const STORE_LABEL = Object.freeze({ store: 'redis' });
/**
 * Bounds of one script call: a batch stops growing at either, so one call never
 * blocks Redis for long nor builds a huge command. A single decision with more
 * checks still goes alone.
 */
const MAX_BATCH_DECISIONS = 64;
const MAX_BATCH_CHECKS = 500;
/**
 * While a decide call is out, the next batch waits for its answer, so that under load
 * one call carries the decisions of several turns (fewer, larger calls: less CPU in the
 * proxy and in Redis per decision). At most this long: then it is sent anyway, so a
 * slow call does not hold the others (the wait counts against the batch's deadline).
 * Envoy's ratelimit has the same trade in REDIS_PIPELINE_WINDOW. Not with Cluster,
 * where one slow node would hold the calls to the others.
 */
const HOLD_BEHIND_MS = 2;
/**
 * With `clock: local` the proxy's clock decides windows but Redis's clock expires
 * keys. Extra TTL keeps state alive while any replica's clock still counts it; state
 * kept past its window reads as no history, so the slack costs only memory.
 */
const LOCAL_CLOCK_TTL_SLACK_MS = 2_000; // 2s
/** Fields of a check in the decide reply: the full form, or the short form ("+" first) of a check that passed with no block. */
const REPLY_FULL = 8;
const REPLY_SHORT = 4;
/**
 * What a Redis decision holds: the lease member of each slot it took (`members[i]`), or,
 * when the local fallback decided (`onError: local`), that fallback store.
 */
interface RedisHold extends StoreHold {
  readonly members: readonly (string | undefined)[] | null;
  readonly local: MemoryStore | null;
}

const EMPTY_DECISION: StoreDecision = Object.freeze({ allowed: true, outcomes: Object.freeze([]) as readonly LimitOutcome[] });

/** A decision waiting for its batch to be sent. */
interface PendingDecision {
  readonly checks: readonly LimitCheck[];
  readonly now: number;
  /** A shadow route's decision: takes its slots even when refused. */
  readonly shadow: boolean;
  /** Let through by an open breaker: its failure re-arms the cool-down. */
  readonly probe: boolean;
  resolve: (decision: StoreDecision) => void;
  reject: (error: unknown) => void;
}

/** A decision that may start a block carries its route's index of running blocks. */
function indexed(checks: readonly LimitCheck[]): boolean {
  for (let i = 0; i < checks.length; i++) {
    const limit = checks[i].limit;
    if (limit.type === 'rate' && limit.blockMs > 0) return true;
  }
  return false;
}

/** Keys of a check beyond its state key: sliding-log's block key, an escalating limit's strike key. */
function extraKeys(check: LimitCheck): number {
  const limit = check.limit;
  if (limit.type === 'concurrent') return 0;
  return (limit.algorithm === 'sliding-log' ? 1 : 0) + (limit.blocks !== null ? 1 : 0);
}

/** A rate limit's block in a spec: its ms, or an escalating list "ms,ms,ms/forgetAfterMs". */
function blockSpec(limit: CompiledRateLimit): string {
  return limit.blocks === null ? String(limit.blockMs) : `${limit.blocks.join(',')}/${limit.forgetAfterMs}`;
}

/** Creates the Redis store; connects in the background and never throws on an unreachable Redis. */
export function createRedisStore(options: RedisStoreOptions): RedisStore {
  return new RedisRateLimitStore(options);
}

/**
 * The lease the decide script takes for check `check` of decision `decision` (0-based) of
 * batch `batchId`: the script names it "<batch>:<decision>:<check>", 1-based as Lua counts.
 */
function leaseMember(batchId: string, decision: number, check: number): string {
  return `${batchId}:${decision + 1}:${check + 1}`;
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
  /** Hears of blocks changed through any replica's admin API (absent without a block cache). */
  readonly #invalidation: BlockInvalidation | undefined;
  readonly #admin: RedisAdmin;
  /** Index key of running blocks per route id. */
  readonly #indexKeys = new Map<string, string>();
  readonly #heartbeat: ReplicaHeartbeat;
  readonly #settler: Settler;
  readonly #leaseMs: number;
  readonly #prefix: string;
  /** Where Redis is, without credentials (for logs). */
  readonly #target: string;
  readonly #timeoutMs: number;
  readonly #serverClock: boolean;
  readonly #ttlSlack: number;
  readonly #requestIdPrefix: string;
  readonly #cluster: boolean;
  /** Decisions of this event-loop turn, sent together by `#flush`. */
  #queue: PendingDecision[] = [];
  #flushScheduled = false;
  /** Decide calls sent and not yet settled (answered, failed or timed out). */
  #inFlight = 0;
  /** Set while the queue waits for the call in flight (see HOLD_BEHIND_MS). */
  #holdTimer: NodeJS.Timeout | undefined;
  /** Set by `close` while it waits for the calls in flight to settle. */
  #whenIdle: (() => void) | undefined;
  readonly #holdMs: number;
  /** performance.now() when the oldest queued decision arrived. */
  #queuedAt = 0;
  #fallback: MemoryStore | undefined;
  #requestSeq = 0;
  /** Spec argument per compiled limit (see #spec); weak, so a reloaded policy's limits go. */
  readonly #specs = new WeakMap<CompiledLimit, { max: number; periodStart: number; spec: string }>();
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
    this.#cluster = config.cluster !== undefined;
    this.#holdMs = options.holdBehindMs ?? HOLD_BEHIND_MS;
    const replicaId = options.replicaId ?? randomBytes(6).toString('base64url');
    this.#requestIdPrefix = replicaId + '.';
    // The cache starts suspended: it fills only once changes made elsewhere can be heard.
    this.#blocks = options.blockCache === false ? undefined : new BlockCache(options.memoryFallback.maxBlocks, { suspended: true });
    this.#breaker = new CircuitBreaker({
      failures: options.breaker?.failures ?? DEFAULT_BREAKER.failures,
      coolDownMs: options.breaker?.coolDownMs ?? DEFAULT_BREAKER.coolDownMs,
      clock: options.clock,
      onChange: (open) => this.#onBreakerChange(open),
    });
    this.#metrics?.storeDegraded.set(0);

    this.#client = createRedisClient(config);
    this.#client.defineCommand(HEARTBEAT_COMMAND, { numberOfKeys: 1, lua: HEARTBEAT_LUA });
    const blocks = this.#blocks;
    this.#invalidation =
      blocks === undefined
        ? undefined
        : new BlockInvalidation({
            client: this.#client,
            channel: this.#prefix + 'admin:blocks',
            logger: this.#logger,
            onKeys: (keys, lifted) => {
              for (const key of keys) blocks.delete(key, lifted);
            },
            onLive: () => blocks.resume(),
            onDown: () => blocks.suspend(),
          });
    this.#admin = new RedisAdmin({
      client: this.#client,
      prefix: this.#prefix,
      serverClock: this.#serverClock,
      ttlSlack: this.#ttlSlack,
      spec: (check, now) => this.#spec(check, now),
      invalidate: (keys, lifted) => this.#invalidate(keys, lifted),
      replicaId,
    });
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
      this.#invalidation?.start();
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
    this.#leaseMs = config.slotLeaseMs;
    this.#settler = new Settler({
      client: this.#client,
      logger: this.#logger,
      leaseMs: config.slotLeaseMs,
      serverClock: this.#serverClock,
      clock: options.clock,
      ttlSlack: this.#ttlSlack,
      cluster: this.#cluster,
    });
  }

  get degraded(): boolean {
    return this.#breaker.open;
  }

  /**
   * Resolves true once connected (and the first heartbeat counted this replica), false
   * after `timeoutMs`. Start-up waits on it briefly so the first requests after
   * "listening" are not decided by the fallback; an unreachable Redis only delays start.
   */
  async ready(timeoutMs: number): Promise<boolean> {
    const started = Date.now();
    const ready = await this.#connected(timeoutMs);
    // The block cache works once the replica hears of changes made elsewhere: wait for
    // that too (within the same budget), but the store can decide either way.
    if (ready) await this.#invalidation?.whenLive(Math.max(0, timeoutMs - (Date.now() - started)));
    return ready;
  }

  #connected(timeoutMs: number): Promise<boolean> {
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

  /** Leases of concurrency slots this replica holds in Redis (tests). */
  get leasesHeld(): number {
    return this.#settler.size;
  }

  /** Resolves once every slot release handed to `settle` so far has been applied in Redis. */
  settled(): Promise<void> {
    return this.#settler.flushed();
  }

  renewLeases(): void {
    this.#settler.renew();
  }

  decide(checks: readonly LimitCheck[], now: number, shadow = false): StoreDecision | Promise<StoreDecision> {
    const n = checks.length;
    if (n === 0) return EMPTY_DECISION;
    if (this.#closed) return Promise.reject(new StoreUnavailableError('redis store closed'));
    // A shadow decision must reach Redis to take its slots, blocked or not.
    if (this.#blocks !== undefined && this.#blocks.size !== 0 && !shadow) {
      const cached = this.#blocks.decide(checks, now);
      if (cached !== undefined) return cached;
    }
    const probe = this.#breaker.open;
    if (!this.#breaker.allow()) return this.#skipped(checks, now, shadow);
    if (this.#client.status !== 'ready') {
      // Offline queue is off: sending now would only fail; fail without the round trip.
      return this.#settleFailure(checks, now, shadow, probe, new Error(`redis not ready (${this.#client.status})`));
    }
    return new Promise<StoreDecision>((resolve, reject) => {
      // The deadline counts from the oldest decision's arrival, not from the flush.
      if (this.#queue.push({ checks, now, shadow, probe, resolve, reject }) === 1) this.#queuedAt = performance.now();
      if (this.#flushScheduled || this.#holdTimer !== undefined) return;
      if (this.#inFlight > 0 && !this.#cluster) {
        this.#holdTimer = setTimeout(this.#flush, this.#holdMs);
        return;
      }
      this.#scheduleFlush();
    });
  }

  /** After the poll phase: every request parsed from the sockets in this turn joins. */
  #scheduleFlush(): void {
    this.#flushScheduled = true;
    setImmediate(this.#flush);
  }

  /** A decide call settled: a queue held behind it goes now. */
  #callSettled(): void {
    if (--this.#inFlight !== 0) return;
    if (this.#whenIdle !== undefined) {
      const idle = this.#whenIdle;
      this.#whenIdle = undefined;
      idle();
    }
    if (this.#holdTimer === undefined) return;
    clearTimeout(this.#holdTimer);
    this.#holdTimer = undefined;
    if (!this.#flushScheduled) this.#scheduleFlush();
  }

  /** Sends the queued decisions: one script call per hash tag (Cluster slot) and bounded batch. */
  readonly #flush = (): void => {
    this.#flushScheduled = false;
    if (this.#holdTimer !== undefined) {
      clearTimeout(this.#holdTimer);
      this.#holdTimer = undefined;
    }
    const queue = this.#queue;
    if (queue.length === 0) return;
    this.#queue = [];
    const queuedAt = this.#queuedAt;
    if (!this.#cluster) {
      this.#sendInBatches(queue, queuedAt);
      return;
    }
    const groups = new Map<string, PendingDecision[]>();
    for (const pending of queue) {
      const tag = hashTag(this.#prefix + pending.checks[0].key);
      const group = groups.get(tag);
      if (group === undefined) groups.set(tag, [pending]);
      else group.push(pending);
    }
    for (const group of groups.values()) this.#sendInBatches(group, queuedAt);
  };

  #sendInBatches(queue: readonly PendingDecision[], queuedAt: number): void {
    let from = 0;
    let checks = 0;
    for (let i = 0; i < queue.length; i++) {
      const n = queue[i].checks.length;
      if (i > from && (i - from === MAX_BATCH_DECISIONS || checks + n > MAX_BATCH_CHECKS)) {
        this.#send(queue.slice(from, i), checks, queuedAt);
        from = i;
        checks = 0;
      }
      checks += n;
    }
    if (from === 0) this.#send(queue, checks, queuedAt);
    else this.#send(queue.slice(from), checks, queuedAt);
  }

  /** One script call for `batch` (`checks` = their checks in all), with one deadline. */
  #send(batch: readonly PendingDecision[], checks: number, queuedAt: number): void {
    let reply: Promise<unknown>;
    let batchId = '';
    let settled = false;
    try {
      const keyCount = this.#keyCount(batch, checks);
      batchId = this.#requestIdPrefix + (this.#requestSeq++).toString(36);
      reply = this.#evalDecide(this.#args(batch, checks, keyCount, batchId), keyCount, () => settled);
    } catch (error) {
      this.#failBatch(batch, error);
      return;
    }
    this.#roundTrips++;
    this.#inFlight++;
    // This timer is the batch's hard deadline: ioredis's commandTimeout is only a
    // backstop (connection.ts) and does not bound a NOSCRIPT resend.
    const budget = Math.max(1, this.#timeoutMs - (performance.now() - queuedAt));
    const expire = (): void => {
      if (settled) return;
      settled = true;
      this.#callSettled();
      this.#abandonLeases(batch, batchId);
      this.#failBatch(batch, new Error(`redis timed out after ${this.#timeoutMs}ms`));
    };
    // After a turn that ran past the budget (a burst, a GC pause) this timer fires in the
    // timers phase, before the poll phase reads a reply that may already be waiting:
    // look once more after that poll, or our own slowness would pass as a Redis failure
    // and send the batch to onError (with `local`, admitting over the shared limit).
    const timer = setTimeout(() => setImmediate(expire), budget);
    reply.then(
      (value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#callSettled();
        let decisions: StoreDecision[];
        try {
          decisions = this.#fromReply(batch, checks, value, batchId);
        } catch (error) {
          this.#abandonLeases(batch, batchId);
          this.#failBatch(batch, error);
          return;
        }
        this.#breaker.success();
        this.#fallback = undefined;
        // Answered while the store closes: the settler's last flush would not see these
        // exchanges end, so their leases go back now rather than at the lease's expiry.
        if (this.#closed) this.#abandonLeases(batch, batchId);
        for (let i = 0; i < batch.length; i++) batch[i].resolve(decisions[i]);
      },
      (error: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#callSettled();
        this.#abandonLeases(batch, batchId);
        this.#failBatch(batch, error);
      },
    );
  }

  /** The script of a batch was sent but its answer is lost: any lease it took is given back. */
  #abandonLeases(batch: readonly PendingDecision[], batchId: string): void {
    for (let d = 0; d < batch.length; d++) {
      const checks = batch[d].checks;
      for (let i = 0; i < checks.length; i++) {
        if (checks[i].limit.type === 'concurrent') this.#settler.abandon(this.#prefix + checks[i].key, leaseMember(batchId, d, i));
      }
    }
  }

  /** The batch failed: one failure for the breaker and metrics; each decision follows onError. */
  #failBatch(batch: readonly PendingDecision[], error: unknown): void {
    let probe = false;
    for (const pending of batch) if (pending.probe) probe = true;
    this.#recordFailure(probe, error);
    const reason = this.#lastError;
    for (const pending of batch) {
      try {
        pending.resolve(this.#unavailable(pending.checks, pending.now, pending.shadow, reason));
      } catch (failure) {
        pending.reject(failure);
      }
    }
  }

  inspect(checks: readonly LimitCheck[], now: number): Promise<KeyState[]> {
    return this.#admin.inspect(checks, now);
  }

  block(checks: readonly LimitCheck[], now: number, ms: number, reason: string): Promise<KeyState[]> {
    return this.#admin.block(checks, now, ms, reason);
  }

  unblock(checks: readonly LimitCheck[], now: number): Promise<boolean[]> {
    return this.#admin.unblock(checks, now);
  }

  reset(checks: readonly LimitCheck[], now: number): Promise<boolean[]> {
    return this.#admin.reset(checks, now);
  }

  listBlocks(limits: readonly CompiledRateLimit[], after: string | null, count: number, now: number): Promise<BlockPage> {
    return this.#admin.listBlocks(limits, after, count, now);
  }

  shareTop(minute: number, snapshot: string): Promise<void> {
    return this.#admin.shareTop(minute, snapshot);
  }

  sharedTop(minutes: readonly number[]): Promise<string[]> {
    return this.#admin.sharedTop(minutes);
  }

  /** Drops the keys from this replica's block cache now and tells the others (pub/sub). */
  async #invalidate(keys: readonly string[], lifted: boolean): Promise<void> {
    for (const key of keys) this.#blocks?.delete(key, lifted);
    await this.#invalidation?.publish(keys, lifted);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#invalidation?.close();
    // Every decision asked for before close gets its answer: a queue (held behind the call
    // in flight, or waiting for its turn) goes now, and the calls out are waited for (each
    // ends by its deadline). Their leases are given back (#send) before the settler's last
    // flush, instead of staying taken for a lease length.
    if (this.#queue.length > 0) this.#flush();
    if (this.#inFlight > 0) await new Promise<void>((resolve) => (this.#whenIdle = resolve));
    await this.#settler.close();
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

  /**
   * EVALSHA, resent as EVAL on NOSCRIPT (a SCRIPT FLUSH or a restarted Redis; the
   * script did not run). Not a `defineCommand` script: those need a fixed key count,
   * and defining one for a new count while an auto-pipeline is open misaligns that
   * pipeline's replies. EVALSHA is a known command, so Cluster routes it by its first
   * key (a batch holds one hash tag). It is not auto-pipelined (connection.ts).
   */
  #evalDecide(args: (string | number)[], keyCount: number, expired: () => boolean): Promise<unknown> {
    const client = this.#client;
    return client.evalsha(SCRIPT_SHA1.decide, keyCount, args as string[]).catch((error: unknown) => {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      // Past its deadline the batch was answered by onError and its leases given back
      // (a release queued behind the EVALSHA): a resend now would take them again.
      if (expired()) throw error;
      return client.eval(DECIDE_LUA, keyCount, args as string[]);
    });
  }

  /** Keys of a batch: one per check, plus sliding-log's block keys and escalating limits' strike keys. */
  #keyCount(batch: readonly PendingDecision[], checkCount: number): number {
    let keyCount = checkCount;
    for (let d = 0; d < batch.length; d++) {
      const checks = batch[d].checks;
      for (let i = 0; i < checks.length; i++) keyCount += extraKeys(checks[i]);
      if (indexed(checks)) keyCount++;
    }
    return keyCount;
  }

  /** KEYS then ARGV of the decide script for a batch (layout documented in scripts.ts). */
  #args(batch: readonly PendingDecision[], checkCount: number, keyCount: number, batchId: string): (string | number)[] {
    const prefix = this.#prefix;
    const args: (string | number)[] = new Array(keyCount + checkCount + 3 * batch.length + 2);
    let a = 0;
    for (let d = 0; d < batch.length; d++) {
      const checks = batch[d].checks;
      for (let i = 0; i < checks.length; i++) {
        const key = prefix + checks[i].key;
        args[a++] = key;
        const limit = checks[i].limit;
        if (limit.type === 'concurrent') continue;
        if (limit.algorithm === 'sliding-log') args[a++] = key + ':b';
        if (limit.blocks !== null) args[a++] = key + ':s';
      }
      if (indexed(checks)) args[a++] = this.#indexKey(checks[0].limit.routeId);
    }
    args[a++] = this.#ttlSlack;
    args[a++] = batchId;
    const serverClock = this.#serverClock;
    for (let d = 0; d < batch.length; d++) {
      const { checks, now, shadow } = batch[d];
      args[a++] = serverClock ? '' : now;
      args[a++] = checks.length;
      args[a++] = indexed(checks) ? (shadow ? 'si' : 'i') : shadow ? 's' : '';
      for (let i = 0; i < checks.length; i++) args[a++] = this.#spec(checks[i], now);
    }
    return args;
  }

  #indexKey(routeId: string): string {
    let key = this.#indexKeys.get(routeId);
    if (key === undefined) {
      key = blockIndexKey(this.#prefix, routeId);
      this.#indexKeys.set(routeId, key);
    }
    return key;
  }

  /**
   * A check's spec argument (layout in scripts.ts). Kept per limit for the last `max`
   * asked (the tier's or the divided limit can differ per request) and, for calendar
   * periods, the current period, so the common case builds no string.
   */
  #spec(check: LimitCheck, now: number): string {
    const limit = check.limit;
    const cached = this.#specs.get(limit);
    if (limit.type === 'concurrent') {
      if (cached !== undefined && cached.max === check.max) return cached.spec;
      const spec = `cc ${check.max} ${this.#leaseMs} 0 1 1`;
      this.#specs.set(limit, { max: check.max, periodStart: 0, spec });
      return spec;
    }
    const calendar = limit.calendar;
    const period = calendar?.at(now);
    if (cached !== undefined && cached.max === check.max && (period === undefined || cached.periodStart === period.start)) return cached.spec;
    let spec = `${ALGORITHMS[limit.algorithm].code} ${check.max} ${limit.windowMs} ${blockSpec(limit)} ${limit.need} ${limit.take}`;
    if (calendar !== null && period !== undefined) {
      // The script picks the period by its own clock: give it the neighbours too.
      spec += ` ${calendar.previous(period).start} ${period.start} ${period.end} ${calendar.next(period).end}`;
    }
    this.#specs.set(limit, { max: check.max, periodStart: period?.start ?? 0, spec });
    return spec;
  }

  /** Splits the script's reply for a batch (`checkCount` checks in all) into its decisions. */
  #fromReply(batch: readonly PendingDecision[], checkCount: number, value: unknown, batchId: string): StoreDecision[] {
    const reply = typeof value === 'string' ? value.split(' ') : undefined;
    // Checked whole before any outcome is read (reading one caches blocks and records leases).
    let end = 1;
    let read = 0;
    if (reply !== undefined) {
      for (; read < checkCount && end < reply.length; read++) end += reply[end] === '+' ? REPLY_SHORT : REPLY_FULL;
    }
    if (reply === undefined || read !== checkCount || end !== reply.length) {
      throw new Error('unexpected reply from the decide script');
    }
    const serverNow = +reply[0];
    const decisions: StoreDecision[] = new Array(batch.length);
    for (let i = 0, start = 1; i < batch.length; i++) {
      const { checks, now, shadow } = batch[i];
      decisions[i] = this.#decision(checks, now, shadow, reply, start, serverNow, batchId, i);
      for (let c = 0; c < checks.length; c++) start += reply[start] === '+' ? REPLY_SHORT : REPLY_FULL;
    }
    return decisions;
  }

  /**
   * The outcomes of one decision, read from `reply` at `start`. With `clock: redis`
   * absolute times come in Redis time and are moved to the local clock by their
   * distance from Redis's `now`.
   */
  #decision(
    checks: readonly LimitCheck[],
    now: number,
    shadow: boolean,
    reply: readonly string[],
    start: number,
    serverNow: number,
    batchId: string,
    decisionIndex: number,
  ): StoreDecision {
    const n = checks.length;
    const offset = this.#serverClock ? now - serverNow : 0;
    const verdict = this.#verdict;
    const outcomes: LimitOutcome[] = new Array(n);
    let allowed = true;
    let slotChecks = 0;
    let settling = false;
    /** An operator's block refused: refused for real, even for shadow (no slots taken). */
    let manual = false;
    for (let i = 0, b = start; i < n; i++) {
      let blockedUntil = 0;
      let started = false;
      let strike = 0;
      let byOperator = false;
      if (reply[b] === '+') {
        verdict.allowed = true;
        verdict.remaining = +reply[b + 1];
        verdict.resetAt = +reply[b + 2] + offset;
        verdict.retryAfterMs = 0;
        verdict.count = +reply[b + 3];
        b += REPLY_SHORT;
      } else {
        verdict.allowed = reply[b] === '1';
        verdict.remaining = +reply[b + 1];
        verdict.resetAt = +reply[b + 2] + offset;
        verdict.retryAfterMs = +reply[b + 3];
        verdict.count = +reply[b + 4];
        blockedUntil = +reply[b + 5];
        if (blockedUntil !== 0) blockedUntil += offset;
        started = reply[b + 6] === '1';
        byOperator = reply[b + 6] === '2';
        if (byOperator) manual = true;
        strike = +reply[b + 7];
        b += REPLY_FULL;
      }
      const result = outcome(checks[i].max, verdict, blockedUntil, started, now, strike, byOperator);
      if (blockedUntil !== 0) this.#blocks?.add(checks[i].key, result, now);
      if (!result.allowed) allowed = false;
      const limit = checks[i].limit;
      if (limit.type === 'concurrent') slotChecks++;
      else if (limit.settles) settling = true;
      outcomes[i] = result;
    }
    const takeSlots = slotChecks > 0 && (allowed || (shadow && !manual));
    if (!takeSlots && !(settling && allowed)) return { allowed, outcomes };
    // The script took a lease for every concurrency check (member "<batch>:<decision>:<check>").
    const slots: boolean[] = new Array<boolean>(n).fill(false);
    const members: (string | undefined)[] = new Array<string | undefined>(n);
    if (takeSlots) {
      for (let i = 0; i < n; i++) {
        if (checks[i].limit.type !== 'concurrent') continue;
        const member = leaseMember(batchId, decisionIndex, i);
        slots[i] = true;
        members[i] = member;
        this.#settler.add(this.#prefix + checks[i].key, member);
      }
    }
    // Adjustments name the window by the time the units were taken, on the script's clock.
    const at = this.#serverClock ? serverNow : now;
    const hold: RedisHold = { checks, slots, counted: allowed, at, members, local: null };
    return { allowed, outcomes, hold };
  }

  settle(hold: StoreHold, deltas?: readonly number[] | null): void {
    const { local, members } = hold as RedisHold;
    if (local !== null) {
      // Taken by the fallback of an outage; a later outage starts a new fallback (fresh counts).
      if (local === this.#fallback) local.settle(hold, deltas);
      return;
    }
    if (members !== null) {
      for (let i = 0; i < members.length; i++) {
        const member = members[i];
        if (member !== undefined) this.#settler.release(member);
      }
    }
    if (deltas == null || !hold.counted) return;
    const checks = hold.checks;
    for (let i = 0; i < checks.length; i++) {
      const delta = deltas[i];
      if (delta === 0 || checks[i].limit.type === 'concurrent') continue;
      this.#settler.adjust(this.#prefix + checks[i].key, this.#spec(checks[i], hold.at), hold.at, delta);
    }
  }

  /** A failure detected before sending: answered synchronously (`local`) or as a rejection. */
  #settleFailure(checks: readonly LimitCheck[], now: number, shadow: boolean, probe: boolean, error: unknown): StoreDecision | Promise<StoreDecision> {
    this.#recordFailure(probe, error);
    try {
      return this.#unavailable(checks, now, shadow, this.#lastError);
    } catch (unavailable) {
      return Promise.reject(unavailable);
    }
  }

  /** The breaker is open: answer without Redis, as cheaply as possible (one shared error). */
  #skipped(checks: readonly LimitCheck[], now: number, shadow: boolean): StoreDecision | Promise<StoreDecision> {
    if (this.#config.onError === 'local') return this.#unavailable(checks, now, shadow, '');
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
  #unavailable(checks: readonly LimitCheck[], now: number, shadow: boolean, reason: string): StoreDecision {
    if (this.#config.onError !== 'local') {
      throw new StoreUnavailableError(`redis store unavailable: ${reason}`);
    }
    const replicas = this.liveReplicas;
    const local: LimitCheck[] = new Array(checks.length);
    for (let i = 0; i < checks.length; i++) {
      const { limit, key, max } = checks[i];
      // Never below what one request needs, or a weighted request could never pass.
      local[i] = { limit, key, max: Math.max(limit.type === 'concurrent' ? 1 : limit.need, Math.floor(max / replicas)) };
    }
    // Fresh counts for every outage: the fallback is dropped when Redis answers again.
    this.#fallback ??= new MemoryStore({
      maxKeys: this.#options.memoryFallback.maxKeys,
      maxBlocks: this.#options.memoryFallback.maxBlocks,
      clock: this.#options.clock,
      onEvict: this.#metrics ? () => this.#metrics?.storeEvictions.inc() : undefined,
    });
    const fallback = this.#fallback;
    const decision = fallback.decide(local, now, shadow);
    if (decision.hold === undefined) return { allowed: decision.allowed, outcomes: decision.outcomes, degraded: true };
    const { slots, counted, at } = decision.hold;
    const hold: RedisHold = { checks: decision.hold.checks, slots, counted, at, members: null, local: fallback };
    return { allowed: decision.allowed, outcomes: decision.outcomes, degraded: true, hold };
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
