import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { createMetrics } from '../../src/observability/metrics.js';
import { request } from '../helpers/http.js';
import { metricTypes } from '../helpers/metrics.js';
import { startWithEcho, type TollgateWithEcho } from '../helpers/tollgate.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

const POLICY = `
clientIp:
  trustedProxies: [127.0.0.1/32]
allow:
  ips: [10.9.9.9]
routes:
  - id: api
    match: { path: /api/* }
    limits:
      - { by: ip, limit: 3, window: 1m, block: 1m }
  - id: shadowed
    match: { path: /shadow/* }
    mode: shadow
    limits:
      - { by: ip, limit: 1, window: 1m }
`;

/**
 * A real Tollgate as production runs it (prom-client default metrics included) that
 * has taken every decision once; started on first use, shared by the file, stopped after it.
 */
let running: Promise<TollgateWithEcho> | undefined;
function driven(): Promise<TollgateWithEcho> {
  running ??= (async () => {
    const tg = await startWithEcho(POLICY, { metrics: createMetrics() });
    await driveEveryDecision(tg.url);
    return tg;
  })();
  return running;
}
after(async () => (await running)?.close());

/** Drives one request of each decision Tollgate can take with a memory store. */
async function driveEveryDecision(url: string): Promise<void> {
  const statuses: number[] = [];
  const hit = async (p: string, ip: string): Promise<void> => {
    statuses.push((await request(url, p, { headers: { 'x-forwarded-for': ip } })).status);
  };
  await hit('/nowhere', '198.51.100.1'); // bypassed (_unmatched)
  await hit('/api/a', '10.9.9.9'); // bypassed (allowlisted)
  for (let i = 0; i < 3; i++) await hit('/api/a', '198.51.100.2'); // allowed (the last ones near the limit)
  await hit('/api/a', '198.51.100.2'); // limited, block started
  await hit('/api/a', '198.51.100.2'); // blocked
  await hit('/shadow/a', '198.51.100.3'); // allowed
  await hit('/shadow/a', '198.51.100.3'); // shadow_limited
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429, 200, 200]);
}

describe('promtool check metrics', () => {
  let tg: TollgateWithEcho;
  before(async () => {
    tg = await driven();
  });

  test('default process/Node metrics are exported, minus the gauges named *_total', async () => {
    const types = metricTypes(await tg.scrape());
    assert.equal(types.get('process_cpu_seconds_total'), 'counter');
    assert.equal(types.get('process_resident_memory_bytes'), 'gauge');
    assert.equal(types.get('nodejs_heap_size_used_bytes'), 'gauge');
    for (const [name, type] of types) {
      if (type !== 'counter') assert.ok(!name.endsWith('_total'), `${name} is a ${type} named *_total`);
    }
  });

  test('accepts the live /metrics output', (t) => {
    return tg.scrape().then((text) => {
      assert.ok(text.includes('tollgate_requests_total{route="api",decision="blocked"} 1'), 'the scrape covers every decision');
      const run = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 20_000 });
      if ((run.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
        // CI must install it (Debian/Ubuntu: apt-get install prometheus).
        if (process.env.CI === 'true') assert.fail('promtool is not installed (apt-get install -y prometheus)');
        t.skip('promtool not installed (apt-get install -y prometheus); CI=true makes this a failure');
        return;
      }
      assert.equal(run.error, undefined);
      assert.equal(`${run.stdout}${run.stderr}`.trim(), '', 'promtool reported problems');
      assert.equal(run.status, 0);
    });
  });
});

// ---- dashboard and alert rules against a live exposition ----

const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);

/**
 * Metric names in a PromQL expression (or a Grafana `label_values(...)` query):
 * identifiers left after removing strings, label matchers, ranges, grouping clauses,
 * function names and Grafana `$variables`.
 */
function metricNamesIn(expr: string): string[] {
  const cleaned = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/label_values\(\s*([^,)]*?)\s*,\s*[\w$]+\s*\)/g, '$1')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\$\{?\w+\}?/g, ' ');
  const names = new Set<string>();
  for (const m of cleaned.matchAll(/(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?/g)) {
    if (m[2] !== undefined || PROMQL_WORDS.has(m[1].toLowerCase())) continue;
    if (/^\d/.test(m[1])) continue;
    names.add(m[1]);
  }
  return [...names];
}

/** Every PromQL text of the dashboard: panel targets and variable queries. */
function dashboardQueries(dashboard: unknown): string[] {
  const out: string[] = [];
  const walk = (node: unknown, key: string): void => {
    if (typeof node === 'string') {
      if (key === 'expr' || key === 'query') out.push(node);
    } else if (Array.isArray(node)) {
      for (const item of node) walk(item, key);
    } else if (node !== null && typeof node === 'object') {
      for (const [k, v] of Object.entries(node)) walk(v, k);
    }
  };
  walk(dashboard, '');
  // The datasource variable's query is a plugin id ("prometheus"), not PromQL.
  return out.filter((q) => /[({]/.test(q));
}

function ruleExprs(rules: unknown): string[] {
  const groups = (rules as { groups: { rules: { expr: string | number }[] }[] }).groups;
  return groups.flatMap((g) => g.rules.map((r) => String(r.expr)));
}

/** Names used by the shipped dashboard and rules: the deploy module's list when present, plus our own parse. */
async function metricNamesUsedByDeploy(): Promise<Set<string>> {
  const dashboard = path.join(ROOT, 'grafana/tollgate.json');
  const alerts = path.join(ROOT, 'prometheus/alerts.yaml');
  assert.ok(existsSync(dashboard), 'grafana/tollgate.json is missing');
  assert.ok(existsSync(alerts), 'prometheus/alerts.yaml is missing');
  const names = new Set<string>();
  for (const q of dashboardQueries(JSON.parse(readFileSync(dashboard, 'utf8')))) for (const n of metricNamesIn(q)) names.add(n);
  for (const e of ruleExprs(parseYaml(readFileSync(alerts, 'utf8')))) for (const n of metricNamesIn(e)) names.add(n);
  const shared = path.join(ROOT, 'test/deploy/metric-names.ts');
  if (existsSync(shared)) {
    const mod = (await import(pathToFileURL(shared).href)) as { metricNamesUsed?: () => Iterable<string> | Promise<Iterable<string>> };
    if (typeof mod.metricNamesUsed === 'function') for (const n of await mod.metricNamesUsed()) names.add(n);
  }
  return names;
}

describe('dashboard and alert rules use only exported metrics', () => {
  test('the PromQL name extraction finds metrics, not functions, labels or variables', () => {
    assert.deepEqual(
      metricNamesIn('histogram_quantile(0.99, sum by (le, route) (rate(tollgate_upstream_duration_seconds_bucket{job=~"$job",route=~"$route"}[$__rate_interval])))'),
      ['tollgate_upstream_duration_seconds_bucket'],
    );
    assert.deepEqual(metricNamesIn('label_values(tollgate_requests_total{job=~"$job"}, route)'), ['tollgate_requests_total']);
    assert.deepEqual(
      metricNamesIn('sum(rate(a_total{decision=~"limited|blocked"}[5m])) / on (job) group_left sum(rate(b_total[5m])) > 0.2 and time() - c_seconds > 1e3'),
      ['a_total', 'b_total', 'c_seconds'],
    );
  });

  let tg: TollgateWithEcho;
  before(async () => {
    tg = await driven();
  });

  test('every metric name in grafana/tollgate.json and prometheus/alerts.yaml is exported', async () => {
    const used = await metricNamesUsedByDeploy();
    assert.ok(used.has('tollgate_requests_total') && used.has('process_cpu_seconds_total'), `too few names found: ${[...used].join(', ')}`);
    const types = metricTypes(await tg.scrape());
    const missing: string[] = [];
    for (const name of used) {
      if (types.has(name)) continue;
      const histogram = /^(.*)_(bucket|sum|count)$/.exec(name);
      const baseType = histogram === null ? undefined : types.get(histogram[1]);
      if (baseType === 'histogram' || (baseType === 'summary' && histogram?.[2] !== 'bucket')) continue;
      missing.push(name);
    }
    assert.deepEqual(missing, [], `used by the dashboard/rules but not exported: ${missing.join(', ')}`);
  });
});
