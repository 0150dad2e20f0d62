/**
 * Grafana dashboard and Prometheus rules: well-formed, querying only metrics Tollgate
 * exports, counters always through rate()/increase(), PromQL accepted by promtool, and
 * the Kubernetes copies in k8s/overlays/monitoring generated from the sources.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test, type TestContext } from 'node:test';
import type { V1ConfigMap } from '@kubernetes/client-node/dist/gen/models/all.js';
import { parse, stringify } from 'yaml';
import {
  alertExpressions,
  dashboardPanels,
  exportedSeriesNames,
  loadAlertGroups,
  loadDashboard,
  metricNamesUsed,
  panelExpressions,
  TOLLGATE_METRICS,
  variableQuery,
  type RuleGroup,
} from './metric-names.js';
import { seriesSelectors } from './promql.js';
import { findObject, readRepoFile, renderKustomization, repoPath, requireKubectl, requireTool, selectorMatches, WORKLOAD_VARIANTS } from './support.js';
import { readWorkload, resolvePort } from './workload.js';

const dashboard = loadDashboard();
const groups = loadAlertGroups();
const DATASOURCE_UID = '${datasource}';
const COUNTER_SERIES = /(_total|_bucket|_count|_sum)$/;
const RATE_FUNCTIONS = new Set(['rate', 'increase', 'irate']);

const scratch = mkdtempSync(join(tmpdir(), 'tollgate-monitoring-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

function promtool(t: TestContext, ...args: string[]): string | undefined {
  const path = requireTool(t, 'promtool', 'prometheus');
  if (path === undefined) return undefined;
  try {
    return execFileSync(path, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    assert.fail(`promtool ${args.join(' ')} failed:\n${stdout}${stderr}`);
  }
}

/** Grafana's template variables replaced by values that keep the PromQL valid. */
function withoutGrafanaVariables(expr: string): string {
  return expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m').replace(/\$\{?\w+\}?/g, '.*');
}

describe('grafana/tollgate.json', () => {
  test('is an importable classic dashboard with schemaVersion >= 39', () => {
    assert.ok(dashboard.schemaVersion >= 39, `schemaVersion ${dashboard.schemaVersion}`);
    assert.equal(dashboard.uid, 'tollgate');
    assert.ok(dashboard.title);
    assert.ok(Array.isArray(dashboard.panels) && dashboard.panels.length > 0);
  });

  test('has a Prometheus datasource variable that every panel and query uses', () => {
    const datasource = dashboard.templating.list.find((v) => v.name === 'datasource');
    assert.equal(datasource?.type, 'datasource');
    assert.equal(datasource?.query, 'prometheus');
    for (const panel of dashboardPanels()) {
      assert.equal(panel.datasource?.uid, DATASOURCE_UID, `panel "${panel.title}"`);
      for (const target of panel.targets ?? []) assert.equal(target.datasource?.uid, DATASOURCE_UID, `panel "${panel.title}" ${target.refId}`);
    }
    for (const variable of dashboard.templating.list.filter((v) => v.type === 'query')) assert.equal(variable.datasource?.uid, DATASOURCE_UID, `variable ${variable.name}`);
  });

  test('has job, instance and route variables from label_values(tollgate_requests_total...)', () => {
    const byName = new Map(dashboard.templating.list.map((v) => [v.name, v]));
    assert.equal(variableQuery(byName.get('job') ?? { name: '', type: '' }), 'label_values(tollgate_requests_total, job)');
    assert.equal(variableQuery(byName.get('instance') ?? { name: '', type: '' }), 'label_values(tollgate_requests_total{job=~"$job"}, instance)');
    const route = byName.get('route');
    assert.equal(route && variableQuery(route), 'label_values(tollgate_requests_total{job=~"$job"}, route)');
    assert.equal(route?.multi, true);
    assert.equal(route?.includeAll, true);
  });

  test('panels have unique ids, queries, and a layout inside 24 columns without overlaps', () => {
    const ids = dashboard.panels.flatMap((p) => [p.id, ...(p.panels ?? []).map((c) => c.id)]);
    assert.equal(new Set(ids).size, ids.length, 'duplicate panel ids');
    const cells = new Set<string>();
    for (const panel of dashboard.panels) {
      const { x, y, w, h } = panel.gridPos;
      assert.ok(x >= 0 && w > 0 && x + w <= 24, `panel "${panel.title}" leaves the grid`);
      for (let row = y; row < y + h; row++) {
        for (let column = x; column < x + w; column++) {
          const cell = `${row},${column}`;
          assert.ok(!cells.has(cell), `panel "${panel.title}" overlaps another at ${cell}`);
          cells.add(cell);
        }
      }
      if (panel.type !== 'row') assert.ok((panel.targets ?? []).some((t) => t.expr), `panel "${panel.title}" has no query`);
    }
  });

  test('every panel filters by the job and instance variables', () => {
    for (const { where, expr } of panelExpressions()) {
      assert.match(expr, /job=~"\$job"/, where);
      assert.match(expr, /instance=~"\$instance"/, where);
    }
  });

  test('shows every Tollgate metric somewhere', () => {
    const shown = new Set(panelExpressions().flatMap(({ expr }) => seriesSelectors(expr).map((s) => s.metric.replace(/_(bucket|sum|count)$/, ''))));
    const missing = [...TOLLGATE_METRICS.counter, ...TOLLGATE_METRICS.histogram, ...TOLLGATE_METRICS.gauge].filter((m) => !shown.has(m));
    assert.deepEqual(missing, []);
  });
});

describe('prometheus/alerts.yaml', () => {
  test('has named groups whose alerts carry a severity and a summary', () => {
    assert.ok(groups.length > 0);
    const names = groups.flatMap((g) => g.rules.map((r) => r.alert));
    assert.equal(new Set(names).size, names.length, 'duplicate alert names');
    for (const rule of groups.flatMap((g) => g.rules)) {
      assert.match(rule.labels?.severity ?? '', /^(info|warning|critical)$/, `${rule.alert}: severity`);
      assert.ok(rule.annotations?.summary, `${rule.alert}: summary`);
    }
  });

  test('covers rejection ratio (with a for:), store degraded and invalid config', () => {
    const byExpr = (pattern: RegExp) => groups.flatMap((g) => g.rules).filter((r) => pattern.test(r.expr));
    const rejection = byExpr(/decision=~"limited\|blocked"/);
    assert.equal(rejection.length, 1);
    assert.ok(rejection[0]?.for, 'the rejection alert needs a for: to ride out bursts');
    assert.match(rejection[0]?.expr ?? '', /by \([^)]*route[^)]*\)/, 'per route');
    assert.equal(byExpr(/tollgate_store_degraded/).length, 1);
    assert.equal(byExpr(/tollgate_config_valid\)? == 0/).length, 1);
  });

  test('promtool check rules accepts it', (t) => {
    const out = promtool(t, 'check', 'rules', repoPath('prometheus/alerts.yaml'));
    if (out !== undefined) assert.match(out, /SUCCESS/);
  });

  test('promtool test rules: alerts fire (and stay quiet) as prometheus/alerts.test.yaml expects', (t) => {
    const out = promtool(t, 'test', 'rules', repoPath('prometheus/alerts.test.yaml'));
    if (out !== undefined) assert.match(out, /SUCCESS/);
  });
});

describe('queries of the dashboard and the rules', () => {
  const all = [...panelExpressions(), ...alertExpressions()];

  test('wrap every counter and histogram series in rate() or increase()', () => {
    for (const { where, expr } of all) {
      const selectors = seriesSelectors(expr);
      assert.ok(selectors.length > 0, `${where}: selects no series`);
      for (const selector of selectors) {
        if (!COUNTER_SERIES.test(selector.metric)) continue;
        assert.ok(RATE_FUNCTIONS.has(selector.enclosingCall ?? ''), `${where}: ${selector.metric} is used raw (inside ${selector.enclosingCall ?? 'nothing'}); wrap it in rate() or increase()`);
      }
    }
  });

  test('the rate check catches a raw counter', () => {
    assert.deepEqual(seriesSelectors('sum(tollgate_requests_total)'), [{ metric: 'tollgate_requests_total', enclosingCall: 'sum' }]);
    assert.deepEqual(seriesSelectors('sum by (le) (rate(x_bucket{a="b"}[5m]))'), [{ metric: 'x_bucket', enclosingCall: 'rate' }]);
  });

  test('use only metrics Tollgate exports (metrics contract + prom-client defaults)', () => {
    const exported = exportedSeriesNames();
    const unknown = [...metricNamesUsed()].filter((name) => !exported.has(name));
    assert.deepEqual(unknown, []);
    assert.ok(!exported.has('nodejs_active_handles_total'), 'the excluded default metrics must not count as exported');
  });

  test('every panel query is valid PromQL (promtool, Grafana variables substituted)', (t) => {
    const rules = { groups: [{ name: 'dashboard', rules: panelExpressions().map(({ expr }, index) => ({ record: `dashboard:query_${index}`, expr: withoutGrafanaVariables(expr) })) }] };
    const file = join(scratch, 'dashboard-queries.yaml');
    writeFileSync(file, stringify(rules));
    const out = promtool(t, 'check', 'rules', file);
    if (out !== undefined) assert.match(out, new RegExp(`SUCCESS: ${rules.groups[0]?.rules.length} rules found`));
  });
});

describe('k8s/overlays/monitoring', () => {
  test('generated files are up to date (npm run gen:k8s)', () => {
    try {
      execFileSync(process.execPath, [repoPath('scripts/gen-k8s-monitoring.mjs'), '--check'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (error) {
      assert.fail((error as { stderr?: string }).stderr ?? String(error));
    }
  });

  test('the PrometheusRule holds exactly the groups of prometheus/alerts.yaml', (t) => {
    const kubectl = requireKubectl(t);
    if (kubectl === undefined) return;
    const rule = findObject<{ spec: { groups: RuleGroup[] } }>(renderKustomization(kubectl, 'k8s/overlays/monitoring'), 'PrometheusRule');
    assert.deepEqual(rule.spec.groups, groups);
  });

  test('the dashboard ConfigMap carries grafana/tollgate.json for the Grafana sidecar, small enough for kubectl apply', (t) => {
    const kubectl = requireKubectl(t);
    if (kubectl === undefined) return;
    const configMap = findObject<V1ConfigMap>(renderKustomization(kubectl, 'k8s/overlays/monitoring'), 'ConfigMap');
    assert.equal(configMap.metadata?.labels?.grafana_dashboard, '1');
    const json = configMap.data?.['tollgate.json'];
    assert.ok(json);
    assert.deepEqual(JSON.parse(json), dashboard);
    // Client-side apply stores the object in an annotation limited to 256 KiB.
    assert.ok(Buffer.byteLength(json) < 200 * 1024, `dashboard is ${Buffer.byteLength(json)} bytes`);
    assert.equal(readRepoFile('grafana/tollgate.json'), json, 'byte-identical to the source');
  });

  test('the PodMonitor scrapes /metrics on the admin port of the pods of every workload variant', (t) => {
    const kubectl = requireKubectl(t);
    if (kubectl === undefined) return;
    const podMonitor = findObject<{ spec: { selector: { matchLabels?: Record<string, string> }; podMetricsEndpoints: Array<{ port?: string; path?: string }> } }>(
      renderKustomization(kubectl, 'k8s/overlays/monitoring'),
      'PodMonitor',
    );
    const [endpoint] = podMonitor.spec.podMetricsEndpoints;
    assert.equal(podMonitor.spec.podMetricsEndpoints.length, 1);
    assert.equal(endpoint?.path, '/metrics');
    for (const variant of WORKLOAD_VARIANTS) {
      const w = readWorkload(renderKustomization(kubectl, variant));
      assert.ok(selectorMatches(podMonitor.spec.selector.matchLabels, w.deployment.spec?.template.metadata?.labels), `${variant}: PodMonitor selector`);
      assert.equal(resolvePort(w.tollgate, endpoint?.port), w.settings.admin.port, `${variant}: PodMonitor port "${endpoint?.port}"`);
    }
  });

  test('base stays free of Prometheus-operator kinds', (t) => {
    const kubectl = requireKubectl(t);
    if (kubectl === undefined) return;
    const kinds = renderKustomization(kubectl, 'k8s/base').map((o) => o.apiVersion);
    assert.ok(!kinds.some((k) => k.startsWith('monitoring.coreos.com/')));
    assert.deepEqual(parse(readRepoFile('k8s/base/kustomization.yaml')).resources.filter((r: string) => /monitor|rule|dashboard/i.test(r)), []);
  });
});
