/**
 * The metric names the dashboard and the alert rules depend on, and the names Tollgate
 * promises to export. `metricNamesUsed()` is also what a live test compares with a real
 * Tollgate's GET /metrics.
 */
import { parse } from 'yaml';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { labelValuesMetric, seriesSelectors } from './promql.js';
import { readRepoFile } from './support.js';

/** Tollgate's own metrics, by type (the metrics contract). */
export const TOLLGATE_METRICS = {
  counter: [
    'tollgate_requests_total',
    'tollgate_limit_exceeded_total',
    'tollgate_blocks_started_total',
    'tollgate_guard_refusals_total',
    'tollgate_near_limit_total',
    'tollgate_store_errors_total',
    'tollgate_store_evictions_total',
    'tollgate_identity_errors_total',
    'tollgate_config_reloads_total',
    'tollgate_websocket_closed_total',
    'tollgate_cost_header_invalid_total',
  ],
  histogram: ['tollgate_decision_duration_seconds', 'tollgate_upstream_duration_seconds', 'tollgate_websocket_session_duration_seconds'],
  gauge: [
    'tollgate_store_degraded',
    'tollgate_config_last_reload_success_timestamp_seconds',
    'tollgate_config_info',
    'tollgate_config_valid',
    'tollgate_inflight_requests',
    'tollgate_websocket_sessions',
    'tollgate_concurrent_slots',
  ],
} as const;

/** prom-client default metrics Tollgate does not export. */
const EXCLUDED_DEFAULTS = new Set(['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']);

const HISTOGRAM_SERIES = ['_bucket', '_sum', '_count'];

/** Every series name Tollgate's /metrics may contain (histograms as _bucket/_sum/_count). */
export function exportedSeriesNames(): Set<string> {
  const names = new Set<string>([...TOLLGATE_METRICS.counter, ...TOLLGATE_METRICS.gauge]);
  for (const histogram of TOLLGATE_METRICS.histogram) for (const suffix of HISTOGRAM_SERIES) names.add(`${histogram}${suffix}`);
  // prom-client's own list of default metrics, so this stays right across its versions.
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  for (const metric of registry.getMetricsAsArray()) {
    const { name, type } = metric as unknown as { name: string; type: string };
    if (EXCLUDED_DEFAULTS.has(name)) continue;
    if (type === 'histogram' || type === 'summary') for (const suffix of HISTOGRAM_SERIES) names.add(`${name}${suffix}`);
    else names.add(name);
  }
  return names;
}

export interface DashboardTarget {
  expr?: string;
  refId?: string;
  datasource?: { type?: string; uid?: string };
}
export interface DashboardPanel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: DashboardTarget[];
  panels?: DashboardPanel[];
}
export interface DashboardVariable {
  name: string;
  type: string;
  query?: string | { query?: string };
  definition?: string;
  datasource?: { type?: string; uid?: string };
  multi?: boolean;
  includeAll?: boolean;
}
export interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: DashboardPanel[];
  templating: { list: DashboardVariable[] };
}

export function loadDashboard(): Dashboard {
  return JSON.parse(readRepoFile('grafana/tollgate.json')) as Dashboard;
}

/** Panels in display order, rows' nested panels included, rows themselves excluded. */
export function dashboardPanels(dashboard: Dashboard = loadDashboard()): DashboardPanel[] {
  return dashboard.panels.flatMap((p) => (p.type === 'row' ? (p.panels ?? []) : [p]));
}

export function variableQuery(variable: DashboardVariable): string | undefined {
  return typeof variable.query === 'string' ? variable.query : variable.query?.query;
}

export interface AlertRule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
export interface RuleGroup {
  name: string;
  rules: AlertRule[];
}

export function loadAlertGroups(): RuleGroup[] {
  return (parse(readRepoFile('prometheus/alerts.yaml')) as { groups: RuleGroup[] }).groups;
}

/** Panel title (or alert name) -> PromQL expressions, for the per-query checks. */
export function panelExpressions(dashboard: Dashboard = loadDashboard()): Array<{ where: string; expr: string }> {
  return dashboardPanels(dashboard).flatMap((panel) =>
    (panel.targets ?? []).filter((t) => t.expr !== undefined).map((t) => ({ where: `panel "${panel.title}" ${t.refId ?? ''}`.trim(), expr: t.expr as string })),
  );
}

export function alertExpressions(groups: RuleGroup[] = loadAlertGroups()): Array<{ where: string; expr: string }> {
  return groups.flatMap((g) => g.rules.map((r) => ({ where: `rule ${r.alert ?? r.record}`, expr: r.expr })));
}

/**
 * Every series name the dashboard (panels and variable queries) and the alert rules
 * select, as it appears in the /metrics exposition (histograms by their _bucket/_sum/_count).
 */
export function metricNamesUsed(): Set<string> {
  const names = new Set<string>();
  for (const { expr } of [...panelExpressions(), ...alertExpressions()]) for (const s of seriesSelectors(expr)) names.add(s.metric);
  for (const variable of loadDashboard().templating.list) {
    const query = variableQuery(variable);
    const metric = variable.type === 'query' && query !== undefined ? labelValuesMetric(query) : undefined;
    if (metric !== undefined) names.add(metric);
  }
  return names;
}
