import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Env } from './config/env.js';
import { loadPolicyFile, formatIssue, type LoadedPolicy } from './config/load.js';
import { redactPolicy } from './config/redact.js';
import type { ListenAddress, ServeSettings } from './config/settings.js';
import type { ConfigIssue, StoreConfig } from './config/types.js';
import { watchConfigFile } from './config/watch.js';
import { Limiter } from './limiter/limiter.js';
import { createLogger, type Logger } from './observability/logger.js';
import { createMetrics, type Metrics } from './observability/metrics.js';
import { ViolationLog } from './observability/violations.js';
import { compilePolicy, type CompileOptions } from './policy/compile.js';
import { PolicyError } from './policy/errors.js';
import type { CompiledPolicy } from './policy/types.js';
import { createAdminApi } from './admin/api.js';
import { AdminToken, AuthFailures } from './admin/auth.js';
import { createAdminServer } from './admin/server.js';
import { RefusalTop } from './admin/top.js';
import { HttpForwarder } from './proxy/forward.js';
import { createProxyServer, type ActivePolicy, type ProxyServer } from './proxy/server.js';
import { UpgradeForwarder } from './proxy/upgrade.js';
import { MemoryStore } from './store/memory.js';
import type { RateLimitStore, StoreAdmin } from './store/types.js';

export class ConfigLoadError extends Error {
  override readonly name = 'ConfigLoadError';
  constructor(readonly issues: ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'));
  }
}

export interface TollgateOptions {
  settings: ServeSettings;
  env?: Record<string, string | undefined>;
  /** Injected in tests; Date.now otherwise. */
  clock?: () => number;
  logger?: Logger;
  metrics?: Metrics;
  /** Watch the config directory for edits (default true). */
  watch?: boolean;
  /** How often an admin token file is re-read (default 1 s; tests). */
  adminTokenPollMs?: number;
}

export type CompileResult = { ok: true; loaded: LoadedPolicy; policy: CompiledPolicy } | { ok: false; errors: ConfigIssue[] };

/**
 * Loads, validates and compiles a policy file: the one way from a file to a running
 * policy (start, reload and `tollgate validate`). Never throws; every problem, a compile
 * error included, is an issue at FILE:LINE:COL.
 * @param options.defaultUpstream used only when neither `options.upstream` nor the file
 *   names an upstream (`validate`: the upstream may come with `serve --upstream`)
 */
export function loadAndCompile(file: string, env: Env, options: CompileOptions & { defaultUpstream?: string } = {}): CompileResult {
  const result = loadPolicyFile(file, env);
  if (!result.ok) return result;
  const { config, hash } = result.policy;
  const { defaultUpstream, ...compileOptions } = options;
  try {
    const policy = compilePolicy(config, hash, { ...compileOptions, upstream: options.upstream ?? config.upstream ?? defaultUpstream });
    return { ok: true, loaded: result.policy, policy };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    // A PolicyError says where it is. Anything else is a bug in compilePolicy rather than
    // in the file, with no place to point at: 1:1, as for an unreadable file.
    const issue = error instanceof PolicyError ? result.locate(error.path, message) : { file, line: 1, col: 1, message };
    return { ok: false, errors: [issue] };
  }
}

export type ReloadResult = { ok: true; changed: boolean; hash: string } | { ok: false; errors: ConfigIssue[] };

function listen(server: http.Server, address: ListenAddress): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

function sameStore(a: StoreConfig, b: StoreConfig): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * How long a replaced upstream's forwarders stay open after a reload, on top of its
 * longest upstream timeout (see `#retire`).
 */
const RETIRED_FORWARDERS_GRACE_MS = 30 * 1000; // 30s

function closeForwarders(forwarders: ActivePolicy): Promise<void> {
  forwarders.ws.close();
  return forwarders.http.close();
}

/** How long start-up waits for Redis before listening anyway. */
const REDIS_START_WAIT_MS = 2_000; // 2s

/** How often this replica shares its refusal counts (`GET /admin/top` on a shared store). */
const TOP_SHARE_MS = 1_000; // 1s

/** The store named by the policy; Redis is loaded only when asked for. */
async function createStore(config: StoreConfig, clock: () => number, logger: Logger, metrics: Metrics): Promise<RateLimitStore & StoreAdmin> {
  if (config.type === 'redis' && config.redis !== undefined) {
    const { createRedisStore } = await import('./store/redis/index.js');
    const store = createRedisStore({ config: config.redis, clock, logger, metrics, memoryFallback: config.memory });
    // Bounded: Tollgate must start (and serve per onError) with Redis unreachable.
    if (!(await store.ready(REDIS_START_WAIT_MS))) {
      logger.warn({ event: 'store_unavailable_at_start', store: 'redis' }, 'redis not reachable at start: serving per onError until it is');
    }
    return store;
  }
  let lastLog = 0;
  return new MemoryStore({
    maxKeys: config.memory.maxKeys,
    maxBlocks: config.memory.maxBlocks,
    clock,
    onEvict: (structure) => {
      metrics.storeEvictions.inc();
      const now = Date.now();
      if (now - lastLog > 10_000) {
        lastLog = now;
        logger.warn({ event: 'store_eviction', structure }, `memory bound reached: evicting least recently used ${structure} (raise store.memory.maxKeys/maxBlocks)`);
      }
    },
  });
}

/**
 * One running Tollgate: the proxy and admin listeners, the store, and the active
 * policy, which reloads swap atomically (requests in flight keep the one they
 * started with; counters survive because store keys do not depend on limit values).
 */
export class Tollgate {
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly store: RateLimitStore & StoreAdmin;
  #active: ActivePolicy;
  #loaded: LoadedPolicy;
  readonly #settings: ServeSettings;
  readonly #env: Record<string, string | undefined>;
  readonly #clock: () => number;
  readonly #violations: ViolationLog;
  readonly #proxy: ProxyServer;
  readonly #admin: http.Server;
  readonly #adminToken: AdminToken;
  readonly #top: RefusalTop;
  /** Shares the refusal counts with other replicas (shared stores only). */
  readonly #topShare: NodeJS.Timeout | undefined;
  #watcher: { close(): void } | undefined;
  /** Forwarders of upstreams a reload replaced, with the timer that closes them. */
  readonly #retired = new Map<ActivePolicy, NodeJS.Timeout>();
  #ready = false;
  #draining = false;
  /** The file's bytes and the errors of the last failed reload on a file change (see `reload`). */
  #lastFailure: string | undefined;
  #proxyAddress: AddressInfo | undefined;
  #adminAddress: AddressInfo | undefined;

  private constructor(options: TollgateOptions, loaded: LoadedPolicy, policy: CompiledPolicy, logger: Logger, metrics: Metrics, store: RateLimitStore & StoreAdmin) {
    this.#settings = options.settings;
    this.#env = options.env ?? process.env;
    this.#clock = options.clock ?? Date.now;
    this.logger = logger;
    this.metrics = metrics;
    this.#loaded = loaded;
    this.#active = { policy, http: new HttpForwarder(policy.upstream), ws: new UpgradeForwarder(policy.upstream) };
    this.store = store;
    const redis = loaded.config.store.type === 'redis' ? loaded.config.store.redis : undefined;
    const onErrorStatus = redis?.onErrorStatus ?? 503;
    const limiter = new Limiter({
      store: this.store,
      onStoreError: redis?.onError === 'allow' ? 'allow' : 'deny',
      events: {
        slots: (route, delta) => metrics.hot.slots(route, delta),
        invalidCost: (route) => metrics.hot.invalidCost(route),
      },
    });
    this.#violations = new ViolationLog(logger, { clock: this.#clock });
    this.#top = new RefusalTop();
    this.#proxy = createProxyServer(
      {
        limiter,
        metrics,
        logger,
        violations: this.#violations,
        top: this.#top,
        clock: this.#clock,
        active: () => this.#active,
        onErrorStatus: () => onErrorStatus,
        draining: () => this.#draining,
      },
      {
        headersTimeoutMs: options.settings.headersTimeoutMs,
        requestTimeoutMs: options.settings.requestTimeoutMs,
        keepAliveTimeoutMs: options.settings.keepAliveTimeoutMs,
      },
    );
    this.#adminToken = new AdminToken(options.settings.adminToken, { logger, pollMs: options.adminTokenPollMs });
    this.#topShare = store.shareTop === undefined ? undefined : setInterval(() => this.#shareTop(), TOP_SHARE_MS);
    this.#topShare?.unref();
    this.#admin = createAdminServer({
      metrics,
      admin: createAdminApi({
        store,
        policy: () => this.#active.policy,
        token: this.#adminToken,
        failures: new AuthFailures(),
        top: this.#top,
        clock: this.#clock,
        logger,
        metrics,
      }),
      ready: () => this.#ready && !this.#draining,
      config: () => ({
        hash: this.#loaded.hash,
        loadedAt: new Date(this.#active.policy.loadedAt).toISOString(),
        file: this.#loaded.file,
        policy: redactPolicy(this.#loaded.config),
      }),
    });
    metrics.configInfo.set({ hash: loaded.hash }, 1);
    metrics.configValid.set(1);
    metrics.configLastReloadSuccess.set(Math.floor(Date.now() / 1000));
  }

  /** Loads the policy (throws ConfigLoadError when invalid), then starts both listeners. */
  static async start(options: TollgateOptions): Promise<Tollgate> {
    const logger = options.logger ?? createLogger(options.settings.logLevel);
    const metrics = options.metrics ?? createMetrics();
    const clock = options.clock ?? Date.now;
    const result = loadAndCompile(options.settings.configFile, options.env ?? process.env, Tollgate.#compileOptions(options.settings, clock, logger, metrics));
    if (!result.ok) throw new ConfigLoadError(result.errors);
    for (const warning of result.loaded.warnings) logger.warn({ event: 'config_warning' }, formatIssue(warning));
    const store = await createStore(result.loaded.config.store, clock, logger, metrics);
    const tollgate = new Tollgate(options, result.loaded, result.policy, logger, metrics, store);
    try {
      await tollgate.#listen();
    } catch (error) {
      // E.g. EADDRINUSE: release what did start (the admin listener, the store) so the process can exit.
      await tollgate.close();
      throw error;
    }
    if (options.watch !== false) {
      tollgate.#watcher = watchConfigFile(options.settings.configFile, () => void tollgate.reload('file_change'), {
        onError: (error) => logger.warn({ event: 'config_watch_failed', err: error }, 'policy file not watched: edits reload on SIGHUP only'),
      });
    }
    return tollgate;
  }

  /** The same for start and every reload. */
  static #compileOptions(settings: ServeSettings, clock: () => number, logger: Logger, metrics: Metrics): CompileOptions {
    return {
      upstream: settings.upstream,
      // Token expiry runs on the same clock as the limits.
      now: clock,
      identityEvents: {
        onError(kind: string) {
          metrics.identityErrors.inc({ kind });
          logger.warn({ event: 'identity_error', kind }, 'identity provider failing: users are treated as anonymous');
        },
      },
    };
  }

  /** Sends this replica's refusal counts of the minutes that changed to the shared store. */
  #shareTop(): void {
    const share = this.store.shareTop?.bind(this.store);
    if (share === undefined) return;
    for (const minute of this.#top.takeDirty()) {
      share(minute, this.#top.snapshot(minute)).catch((error: unknown) => {
        this.#top.markDirty(minute);
        this.logger.debug({ event: 'admin_top_share_failed', err: (error as Error).message }, 'refusal counts not shared (retried in a second)');
      });
    }
  }

  get proxyAddress(): AddressInfo {
    return this.#proxyAddress as AddressInfo;
  }

  get adminAddress(): AddressInfo {
    return this.#adminAddress as AddressInfo;
  }

  get policy(): CompiledPolicy {
    return this.#active.policy;
  }

  async #listen(): Promise<void> {
    // The bound ports are logged even at LOG_LEVEL=warn/error: with `--listen :0` they are
    // the only way to find the listener (silent stays silent).
    const startup = this.logger.level === 'silent' ? this.logger : this.logger.child({}, { level: 'info' });
    this.#adminAddress = await listen(this.#admin, this.#settings.admin);
    startup.info({ event: 'listening', listener: 'admin', host: this.#adminAddress.address, port: this.#adminAddress.port }, 'admin listening');
    this.#proxyAddress = await listen(this.#proxy.server, this.#settings.listen);
    startup.info(
      { event: 'listening', listener: 'proxy', host: this.#proxyAddress.address, port: this.#proxyAddress.port, upstream: this.#active.policy.upstream.origin },
      'proxy listening',
    );
    this.#ready = true;
  }

  /**
   * Re-reads the policy file. Only a fully valid file replaces the active policy;
   * an invalid one is logged (FILE:LINE:COL) and counted, and the old one stays.
   */
  reload(trigger: 'file_change' | 'sighup' | 'api' = 'api'): ReloadResult {
    const result = loadAndCompile(this.#settings.configFile, this.#env, Tollgate.#compileOptions(this.#settings, this.#clock, this.logger, this.metrics));
    if (!result.ok) {
      if (trigger === 'file_change') {
        // The watcher sees the whole directory: a log file written there (this failure's own
        // line, say) would retry the same broken edit forever. Same bytes, same errors: nothing new.
        const failure = failureFingerprint(this.#settings.configFile, result.errors);
        if (failure === this.#lastFailure) return { ok: false, errors: result.errors };
        this.#lastFailure = failure;
      }
      this.metrics.configReloads.inc({ result: 'failure' });
      this.metrics.configValid.set(0);
      for (const issue of result.errors) this.logger.error({ event: 'config_reload_failed', trigger }, formatIssue(issue));
      return { ok: false, errors: result.errors };
    }
    this.#lastFailure = undefined;
    const { loaded, policy } = result;
    if (loaded.contentHash === this.#loaded.contentHash) {
      // The file (and the schema files it names) that is running: keep its compiled policy (and identity caches).
      policy.identity?.close?.();
      this.metrics.configValid.set(1);
      return { ok: true, changed: false, hash: loaded.hash };
    }
    for (const warning of loaded.warnings) this.logger.warn({ event: 'config_warning' }, formatIssue(warning));
    if (!sameStore(loaded.config.store, this.#loaded.config.store)) {
      this.logger.warn({ event: 'config_store_changed' }, 'store settings changed: they apply at the next restart; limits reload now');
    }
    const previous = this.#active;
    const sameUpstream = previous.policy.upstream.origin === policy.upstream.origin;
    this.#active = {
      policy,
      http: sameUpstream ? previous.http : new HttpForwarder(policy.upstream),
      ws: sameUpstream ? previous.ws : new UpgradeForwarder(policy.upstream),
    };
    const previousHash = this.#loaded.hash;
    this.#loaded = loaded;
    if (!sameUpstream) this.#retire(previous);
    previous.policy.identity?.close?.();
    this.metrics.configReloads.inc({ result: 'success' });
    this.metrics.configValid.set(1);
    this.metrics.configLastReloadSuccess.set(Math.floor(Date.now() / 1000));
    this.metrics.configInfo.remove({ hash: previousHash });
    this.metrics.configInfo.set({ hash: loaded.hash }, 1);
    this.logger.info({ event: 'config_reloaded', trigger, hash: loaded.hash, routes: policy.routes.length }, 'policy reloaded');
    return { ok: true, changed: true, hash: loaded.hash };
  }

  /**
   * Closes a replaced upstream's forwarders later rather than now. A request takes the
   * active forwarders when it arrives but forwards only after its evaluation (a Redis
   * round trip, a JWKS fetch): had the pool been closed meanwhile, it would get a 502.
   * A timer is simpler than counting each forwarder's users (which only the proxy could
   * do) and enough: evaluations end within their own few-second timeouts, well inside the
   * grace. The longest upstream timeout is added for WebSocket handshakes started on the
   * old agent, which closing it would cut; HTTP requests already sent are waited for by the
   * pool's close(). Shutdown closes them at once (`#closeRest`).
   */
  #retire(forwarders: ActivePolicy): void {
    const { policy } = forwarders;
    const longestTimeoutMs = Math.max(policy.upstreamTimeoutMs, ...policy.routes.map((route) => route.upstreamTimeoutMs));
    const timer = setTimeout(() => {
      this.#retired.delete(forwarders);
      void closeForwarders(forwarders);
    }, RETIRED_FORWARDERS_GRACE_MS + longestTimeoutMs);
    timer.unref();
    this.#retired.set(forwarders, timer);
  }

  /**
   * Graceful stop: not ready at once, stop accepting, let in-flight requests finish
   * and close WebSocket tunnels properly (1001 at the next frame boundary, so clients
   * reconnect elsewhere) until `drainTimeoutMs`, then cut what is left.
   */
  async shutdown(drainTimeoutMs = this.#settings.drainTimeoutMs): Promise<void> {
    if (this.#draining) return;
    this.#draining = true;
    this.logger.info({ event: 'draining', drainTimeoutMs }, 'draining: not ready, finishing in-flight requests');
    this.#watcher?.close();
    const server = this.#proxy.server;
    const closed = closeServer(server);
    const deadline = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), drainTimeoutMs).unref());
    const tunnelsClosed = this.#proxy.tunnels.drain();
    // Responses that went out before the drain said keep-alive: close their connections
    // once idle instead of waiting for the keep-alive timeout.
    const idleSweep = setInterval(() => server.closeIdleConnections(), 100);
    const outcome = await Promise.race([Promise.all([closed, tunnelsClosed]).then(() => 'drained' as const), deadline]);
    clearInterval(idleSweep);
    if (outcome === 'timeout') {
      this.logger.warn({ event: 'drain_timeout', tunnels: this.#proxy.tunnels.size }, 'drain timeout: closing remaining connections');
      server.closeAllConnections();
      this.#proxy.tunnels.destroyAll();
      await closed;
    }
    await this.#closeRest();
    this.logger.info({ event: 'stopped' }, 'stopped');
  }

  /** Immediate stop (tests). */
  async close(): Promise<void> {
    this.#draining = true;
    this.#watcher?.close();
    this.#proxy.server.closeAllConnections();
    this.#proxy.tunnels.destroyAll();
    await closeServer(this.#proxy.server);
    await this.#closeRest();
  }

  async #closeRest(): Promise<void> {
    this.#violations.close();
    this.#adminToken.close();
    if (this.#topShare !== undefined) clearInterval(this.#topShare);
    this.#proxy.tunnels.close();
    this.#active.policy.identity?.close?.();
    const retired = [...this.#retired].map(([forwarders, timer]) => {
      clearTimeout(timer);
      return closeForwarders(forwarders);
    });
    this.#retired.clear();
    await Promise.allSettled([closeForwarders(this.#active), ...retired, this.store.close()]);
    this.#admin.closeAllConnections();
    await closeServer(this.#admin);
  }
}

/** What a failed load read and said: the file's bytes (or why they could not be read) and its errors. */
function failureFingerprint(file: string, errors: readonly ConfigIssue[]): string {
  const hash = createHash('sha256');
  try {
    hash.update(readFileSync(file));
  } catch (error) {
    hash.update(`unreadable: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
  }
  for (const issue of errors) hash.update(`\n${formatIssue(issue)}`);
  return hash.digest('hex');
}
