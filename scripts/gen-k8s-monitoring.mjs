#!/usr/bin/env node
// Generates the Kubernetes wrappers of the monitoring artefacts, so each has one source:
//   grafana/tollgate.json    -> k8s/overlays/monitoring/grafana-dashboard.yaml (ConfigMap for Grafana's sidecar)
//   prometheus/alerts.yaml   -> k8s/overlays/monitoring/prometheusrule.yaml    (PrometheusRule)
// Usage: node scripts/gen-k8s-monitoring.mjs          write the files (npm run gen:k8s)
//        node scripts/gen-k8s-monitoring.mjs --check  exit 1 if a file is out of date (used by the tests)
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Document, isSeq, parseDocument, stringify } from 'yaml';

const repo = (path) => fileURLToPath(new URL(`../${path}`, import.meta.url));
const DASHBOARD_SOURCE = 'grafana/tollgate.json';
const ALERTS_SOURCE = 'prometheus/alerts.yaml';
const OUT_DIR = 'k8s/overlays/monitoring';

function header(source) {
  return `# GENERATED from ${source} by scripts/gen-k8s-monitoring.mjs; do not edit.\n# Change the source, then run: npm run gen:k8s\n`;
}

// lineWidth 0: never fold long lines (the dashboard JSON stays byte-identical to its source,
// and alert texts keep their {{ templates }} on one line).
const YAML_OPTIONS = { lineWidth: 0 };

function dashboardConfigMap() {
  const text = readFileSync(repo(DASHBOARD_SOURCE), 'utf8');
  JSON.parse(text); // refuse to wrap a file Grafana could not import
  const configMap = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: 'tollgate-dashboard',
      labels: {
        'app.kubernetes.io/name': 'tollgate',
        // Picked up by the Grafana sidecar of kube-prometheus-stack / the grafana chart.
        grafana_dashboard: '1',
      },
    },
    data: { 'tollgate.json': text },
  };
  return header(DASHBOARD_SOURCE) + stringify(configMap, { ...YAML_OPTIONS, blockQuote: 'literal' });
}

function prometheusRule() {
  const alerts = parseDocument(readFileSync(repo(ALERTS_SOURCE), 'utf8'));
  if (alerts.errors.length > 0) throw new Error(`${ALERTS_SOURCE}: ${alerts.errors[0].message}`);
  // The groups node itself (not a plain copy) so rule comments and block styles carry over.
  const groups = alerts.get('groups', true);
  if (!isSeq(groups)) throw new Error(`${ALERTS_SOURCE}: expected a top-level "groups" list`);
  const rule = new Document({
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: { name: 'tollgate', labels: { 'app.kubernetes.io/name': 'tollgate' } },
    spec: { groups: [] },
  });
  rule.setIn(['spec', 'groups'], groups);
  return header(ALERTS_SOURCE) + rule.toString(YAML_OPTIONS);
}

/** Generated path (relative to the repository) -> expected content. */
export function generatedFiles() {
  return new Map([
    [`${OUT_DIR}/grafana-dashboard.yaml`, dashboardConfigMap()],
    [`${OUT_DIR}/prometheusrule.yaml`, prometheusRule()],
  ]);
}

function main() {
  const check = process.argv.includes('--check');
  const stale = [];
  for (const [path, content] of generatedFiles()) {
    let current;
    try {
      current = readFileSync(repo(path), 'utf8');
    } catch {
      current = undefined;
    }
    if (current === content) continue;
    if (check) stale.push(path);
    else {
      writeFileSync(repo(path), content);
      console.log(`wrote ${path}`);
    }
  }
  if (stale.length > 0) {
    console.error(`out of date: ${stale.join(', ')}; run: npm run gen:k8s`);
    process.exitCode = 1;
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main();
