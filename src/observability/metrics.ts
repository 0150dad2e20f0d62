import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { CounterCell, flushCounter, HotHistogram, type HistogramCell } from './hot-metrics.js';

/**
 * Every metric Tollgate exports, declared in one place. Names and labels are a
 * public contract (dashboard, alerts). Never label by user id, IP or key.
 */
export interface Metrics {
  readonly registry: Registry;
  readonly requests: Counter<'route' | 'decision'>;
  readonly limitExceeded: Counter<'route' | 'limit_by'>;
  readonly blocksStarted: Counter<'route' | 'limit_by' | 'level'>;
  readonly guardRefusals: Counter<'route' | 'guard'>;
  readonly costHeaderInvalid: Counter<'route'>;
  readonly nearLimit: Counter<'route' | 'limit_by'>;
  readonly decisionDuration: HotHistogram;
  readonly upstreamDuration: HotHistogram;
  readonly storeErrors: Counter<'store'>;
  readonly storeDegraded: Gauge;
  readonly storeEvictions: Counter;
  readonly identityErrors: Counter<'kind'>;
  readonly configReloads: Counter<'result'>;
  readonly configLastReloadSuccess: Gauge;
  readonly configInfo: Gauge<'hash'>;
  readonly configValid: Gauge;
  readonly inflight: Gauge;
  readonly concurrentSlots: Gauge<'route'>;
  /** Open WebSocket tunnels (raw and session) by route. */
  readonly websocketSessions: Gauge<'route'>;
  /** Closed WebSocket tunnels by route and reason (see CloseReason in src/sessions/types.ts). */
  readonly websocketClosed: Counter<'route' | 'reason'>;
  readonly websocketSessionDuration: HotHistogram;
  /** Changes made through the admin API: block, unblock, reset. */
  readonly adminActions: Counter<'action'>;
  /** Cached labelled children for the per-request metrics. */
  readonly hot: HotMetrics;
}

/**
 * Cells of one metric, kept by their two label values in nested maps: no key string or
 * closure is built per call (the second value is '' for one label). `all` lists them for
 * the scrape.
 */
class CellCache<C> {
  readonly #byFirst = new Map<string, Map<string, C>>();
  readonly #make: (first: string, second: string) => C;
  readonly all: C[] = [];

  constructor(make: (first: string, second: string) => C) {
    this.#make = make;
  }

  get(first: string, second: string): C {
    let inner = this.#byFirst.get(first);
    if (inner === undefined) {
      inner = new Map();
      this.#byFirst.set(first, inner);
    }
    let cell = inner.get(second);
    if (cell === undefined) {
      cell = this.#make(first, second);
      inner.set(second, cell);
      this.all.push(cell);
    }
    return cell;
  }
}

/**
 * The per-request metric calls. Each adds to a plain cell (./hot-metrics.ts); the
 * counters' `collect` and the hot histograms hand the cells to prom-client at scrape
 * time, so a request pays no label hashing. Label values are route ids, decisions and
 * `by` values: bounded by the policy.
 */
export class HotMetrics {
  /** Requests and tunnels in flight; read by the gauge at scrape time (no prom-client call per request). */
  inflight = 0;
  /** Concurrency slots this replica holds, per route; read by the gauge at scrape time. */
  readonly slotsByRoute = new Map<string, number>();
  readonly requests = new CellCache((route, decision) => new CounterCell({ route, decision }));
  readonly nearLimits = new CellCache((route, by) => new CounterCell({ route, limit_by: by }));
  readonly limitsExceeded = new CellCache((route, by) => new CounterCell({ route, limit_by: by }));
  /** By route, then `by` and level (blocks start rarely: the joined key is built only then). */
  readonly blocksStarted = new CellCache((route, byLevel) => {
    const split = byLevel.lastIndexOf(' ');
    return new CounterCell({ route, limit_by: byLevel.slice(0, split), level: byLevel.slice(split + 1) });
  });
  readonly guardRefusals = new CellCache((route, guard) => new CounterCell({ route, guard }));
  readonly costHeadersInvalid = new CellCache((route) => new CounterCell({ route }));
  readonly #decisionDuration: CellCache<HistogramCell>;
  readonly #upstreamDuration: CellCache<HistogramCell>;

  constructor(decisionDuration: HotHistogram, upstreamDuration: HotHistogram) {
    this.#decisionDuration = new CellCache((store) => decisionDuration.cell({ store }));
    this.#upstreamDuration = new CellCache((route, statusClass) => upstreamDuration.cell({ route, status_class: statusClass }));
  }

  /** Slots taken (+) or given back (-) on `route`. */
  slots(route: string, delta: number): void {
    this.slotsByRoute.set(route, (this.slotsByRoute.get(route) ?? 0) + delta);
  }

  request(route: string, decision: Decision): void {
    this.requests.get(route, decision).pending++;
  }

  nearLimit(route: string, limitBy: string): void {
    this.nearLimits.get(route, limitBy).pending++;
  }

  limitExceeded(route: string, limitBy: string): void {
    this.limitsExceeded.get(route, limitBy).pending++;
  }

  /** A block started; `level` = min(strike, blocks in the list), 1 for a single block duration. */
  blockStarted(route: string, limitBy: string, level: number): void {
    this.blocksStarted.get(route, `${limitBy} ${level}`).pending++;
  }

  invalidCost(route: string): void {
    this.costHeadersInvalid.get(route, '').pending++;
  }

  guardRefused(route: string, guard: string): void {
    this.guardRefusals.get(route, guard).pending++;
  }

  decision(store: string, seconds: number): void {
    this.#decisionDuration.get(store, '').observe(seconds);
  }

  upstream(route: string, statusClass: string, seconds: number): void {
    this.#upstreamDuration.get(route, statusClass).observe(seconds);
  }
}

export type Decision = 'allowed' | 'limited' | 'blocked' | 'bypassed' | 'shadow_limited' | 'store_error' | 'guard_refused';

/** prom-client default gauges that `promtool check metrics` rejects (a gauge named *_total). */
const EXCLUDED_DEFAULTS = new Set(['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']);

export function createMetrics(options: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics !== false) {
    collectDefaultMetrics({ register: registry });
    for (const name of EXCLUDED_DEFAULTS) registry.removeSingleMetric(name);
  }
  const registers = [registry];
  const metrics = {
    requests: new Counter({
      name: 'tollgate_requests_total',
      help: 'Requests by route and rate-limit decision.',
      labelNames: ['route', 'decision'],
      registers,
      collect() {
        if (hot !== undefined) flushCounter(this, hot.requests.all);
      },
    }),
    limitExceeded: new Counter({
      name: 'tollgate_limit_exceeded_total',
      help: 'Requests refused (or shadow-refused) by each limit.',
      labelNames: ['route', 'limit_by'],
      registers,
      collect() {
        if (hot !== undefined) flushCounter(this, hot.limitsExceeded.all);
      },
    }),
    blocksStarted: new Counter({
      name: 'tollgate_blocks_started_total',
      help: 'Blocks started after a limit was exceeded, by escalation level (1 to the length of the block list).',
      labelNames: ['route', 'limit_by', 'level'],
      registers,
      collect() {
        if (hot !== undefined) flushCounter(this, hot.blocksStarted.all);
      },
    }),
    costHeaderInvalid: new Counter({
      name: 'tollgate_cost_header_invalid_total',
      help: "Upstream cost headers that were malformed or repeated (the request's reservation was charged).",
      labelNames: ['route'],
      registers,
      collect() {
        if (hot !== undefined) flushCounter(this, hot.costHeadersInvalid.all);
      },
    }),
    guardRefusals: new Counter({
      name: 'tollgate_guard_refusals_total',
      help: 'Requests refused by a guard (methods, origins, cors, maxBodySize, contentTypes, body, csrf, auth; path for INVALID_PATH, host for INVALID_HOST).',
      labelNames: ['route', 'guard'],
      registers,
      collect() {
        if (hot !== undefined) flushCounter(this, hot.guardRefusals.all);
      },
    }),
    nearLimit: new Counter({
      name: 'tollgate_near_limit_total',
      help: 'Requests allowed with less than 20% of the quota left.',
      labelNames: ['route', 'limit_by'],
      registers,
      collect() {
        if (hot !== undefined) flushCounter(this, hot.nearLimits.all);
      },
    }),
    decisionDuration: new HotHistogram({
      name: 'tollgate_decision_duration_seconds',
      help: 'Time to reach a rate-limit decision (identity, store round trip).',
      labelNames: ['store'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      registers,
    }),
    upstreamDuration: new HotHistogram({
      name: 'tollgate_upstream_duration_seconds',
      help: 'Time from forwarding a request to the upstream response headers.',
      labelNames: ['route', 'status_class'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    storeErrors: new Counter({
      name: 'tollgate_store_errors_total',
      help: 'Store operations that failed or timed out.',
      labelNames: ['store'],
      registers,
    }),
    storeDegraded: new Gauge({
      name: 'tollgate_store_degraded',
      help: '1 while the shared store is failing and onError applies.',
      registers,
    }),
    storeEvictions: new Counter({
      name: 'tollgate_store_evictions_total',
      help: 'Live in-memory entries evicted because the memory bound was reached.',
      registers,
    }),
    identityErrors: new Counter({
      name: 'tollgate_identity_errors_total',
      help: 'Identity provider failures (e.g. jwks_unreachable).',
      labelNames: ['kind'],
      registers,
    }),
    configReloads: new Counter({
      name: 'tollgate_config_reloads_total',
      help: 'Policy reloads by result (start-up not counted).',
      labelNames: ['result'],
      registers,
    }),
    configLastReloadSuccess: new Gauge({
      name: 'tollgate_config_last_reload_success_timestamp_seconds',
      help: 'Unix time of the last successful policy load.',
      registers,
    }),
    configInfo: new Gauge({
      name: 'tollgate_config_info',
      help: 'The active policy, labelled by the sha256 of its file.',
      labelNames: ['hash'],
      registers,
    }),
    configValid: new Gauge({
      name: 'tollgate_config_valid',
      help: '1 if the policy file on disk loads, 0 while it fails to.',
      registers,
    }),
    inflight: new Gauge({
      name: 'tollgate_inflight_requests',
      help: 'Requests (and WebSocket tunnels) being proxied.',
      registers,
      collect() {
        if (hot !== undefined) this.set(hot.inflight);
      },
    }),
    concurrentSlots: new Gauge({
      name: 'tollgate_concurrent_slots',
      help: 'Concurrency slots (requests or WebSocket sessions in flight under a concurrent limit) this replica holds.',
      labelNames: ['route'],
      registers,
      collect() {
        if (hot === undefined) return;
        // A route whose slots all went back keeps its series at 0 (the gauge must not vanish mid-incident).
        for (const [route, held] of hot.slotsByRoute) this.set({ route }, held);
      },
    }),
    websocketSessions: new Gauge({
      name: 'tollgate_websocket_sessions',
      help: 'Open WebSocket tunnels (with or without session limits).',
      labelNames: ['route'],
      registers,
    }),
    websocketClosed: new Counter({
      name: 'tollgate_websocket_closed_total',
      help: 'Closed WebSocket tunnels by reason: client, upstream, max_duration, idle, message_rate, message_size, drain, error.',
      labelNames: ['route', 'reason'],
      registers,
    }),
    websocketSessionDuration: new HotHistogram({
      name: 'tollgate_websocket_session_duration_seconds',
      help: 'How long WebSocket tunnels stayed open.',
      labelNames: ['route'],
      buckets: [0.1, 1, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400],
      registers,
    }),
    adminActions: new Counter({
      name: 'tollgate_admin_actions_total',
      help: 'Changes made through the admin API, by action: block, unblock, reset.',
      labelNames: ['action'],
      registers,
    }),
  };
  // Every action's series exists from the start (0), so a rate() over them never starts blank.
  for (const action of ['block', 'unblock', 'reset']) metrics.adminActions.inc({ action }, 0);
  const hot: HotMetrics = new HotMetrics(metrics.decisionDuration, metrics.upstreamDuration);
  return { registry, ...metrics, hot };
}
