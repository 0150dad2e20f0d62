/**
 * Every kustomization under k8s/ renders, and every rendered object is valid against the
 * Kubernetes / Prometheus-operator schemas, without unknown fields.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { PodMonitor, PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { Deployment } from 'kubernetes-models/apps/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { ConfigMap, Secret, Service } from 'kubernetes-models/v1';
import { renderKustomization, requireKubectl, VARIANTS, type K8sObject } from './support.js';
import { modelTypeName, unknownFields } from './unknown-fields.js';

type Validated = new (data: never) => { validate(): void };

/** kubernetes-models 4.5.1 / prometheus-operator 4 validators by `apiVersion kind`. */
const VALIDATORS: Record<string, Validated> = {
  'v1 ConfigMap': ConfigMap,
  'v1 Secret': Secret,
  'v1 Service': Service,
  'apps/v1 Deployment': Deployment,
  'networking.k8s.io/v1 NetworkPolicy': NetworkPolicy,
  'monitoring.coreos.com/v1 PodMonitor': PodMonitor,
  'monitoring.coreos.com/v1 PrometheusRule': PrometheusRule,
};

/**
 * Field names of the custom resources we ship, from the CRD typings of
 * @kubernetes-models/prometheus-operator (its validators, like the built-in ones, accept
 * unknown keys). Only the levels we write are listed; deeper levels are left to the
 * validator, and rule groups are checked strictly by promtool (monitoring.test.ts).
 */
const CRD_FIELDS: Record<string, Record<string, readonly string[]>> = {
  PodMonitor: {
    '': ['apiVersion', 'kind', 'metadata', 'spec'],
    spec: ['attachMetadata', 'jobLabel', 'labelLimit', 'labelNameLengthLimit', 'labelValueLengthLimit', 'namespaceSelector', 'podMetricsEndpoints', 'podTargetLabels', 'sampleLimit', 'selector', 'targetLimit'],
    'spec.podMetricsEndpoints[]': [
      'authorization', 'basicAuth', 'bearerTokenSecret', 'enableHttp2', 'filterRunning', 'followRedirects', 'honorLabels', 'honorTimestamps', 'interval',
      'metricRelabelings', 'oauth2', 'params', 'path', 'port', 'proxyUrl', 'relabelings', 'scheme', 'scrapeTimeout', 'targetPort', 'tlsConfig',
    ],
    'spec.selector': ['matchExpressions', 'matchLabels'],
  },
  PrometheusRule: {
    '': ['apiVersion', 'kind', 'metadata', 'spec'],
    spec: ['groups'],
  },
};

function crdUnknownFields(object: K8sObject): string[] {
  const levels = CRD_FIELDS[object.kind];
  if (levels === undefined) throw new Error(`no field list for custom resource ${object.kind}`);
  const found = unknownFields(object.metadata, 'V1ObjectMeta', 'metadata');
  for (const [level, allowed] of Object.entries(levels)) {
    const steps = level === '' ? [] : level.split('.');
    let nodes: unknown[] = [object];
    for (const step of steps) {
      const key = step.replace(/\[\]$/, '');
      nodes = nodes.flatMap((n) => {
        const child = (n as Record<string, unknown> | undefined)?.[key];
        return step.endsWith('[]') ? ((child as unknown[] | undefined) ?? []) : child === undefined ? [] : [child];
      });
    }
    for (const node of nodes) {
      for (const key of Object.keys(node as object)) if (!allowed.includes(key)) found.push(level === '' ? key : `${level}.${key}`);
    }
  }
  return found;
}

for (const variant of VARIANTS) {
  describe(`kubectl kustomize ${variant}`, () => {
    test('renders, and every object is schema-valid with no unknown fields', (t) => {
      const kubectl = requireKubectl(t);
      if (kubectl === undefined) return;
      const objects = renderKustomization(kubectl, variant);
      assert.ok(objects.length > 0, 'rendered nothing');
      for (const object of objects) {
        const id = `${object.kind}/${object.metadata?.name}`;
        const Model = VALIDATORS[`${object.apiVersion} ${object.kind}`];
        assert.ok(Model, `${id}: no validator for ${object.apiVersion} ${object.kind}; add one to VALIDATORS`);
        assert.doesNotThrow(() => new Model(object as never).validate(), `${id} is not valid`);
        const typeName = modelTypeName(object.apiVersion, object.kind);
        const unknown = typeName !== undefined ? unknownFields(object, typeName) : crdUnknownFields(object);
        assert.deepEqual(unknown, [], `${id}: unknown fields`);
      }
      const ids = objects.map((o) => `${o.apiVersion} ${o.kind} ${o.metadata.name}`);
      assert.equal(new Set(ids).size, ids.length, 'duplicate objects');
    });
  });
}

describe('the schema checks themselves', () => {
  test('catch a misspelt field and a wrong type', () => {
    const deployment = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'x' },
      spec: { selector: { matchLabels: { a: 'b' } }, template: { metadata: { labels: { a: 'b' } }, spec: { containers: [{ name: 'c', image: 'i', readinesProbe: {} }] } } },
    };
    assert.deepEqual(unknownFields(deployment, 'V1Deployment'), ['spec.template.spec.containers[0].readinesProbe']);
    const wrongType = { ...deployment, spec: { ...deployment.spec, replicas: 'two' } };
    assert.throws(() => new Deployment(wrongType as never).validate());
    const podMonitor = { apiVersion: 'monitoring.coreos.com/v1', kind: 'PodMonitor', metadata: { name: 'x' }, spec: { selector: {}, podMetricsEndpoints: [{ prot: 'admin' }] } };
    assert.deepEqual(crdUnknownFields(podMonitor as K8sObject), ['spec.podMetricsEndpoints[].prot']);
  });
});
