/**
 * Cross-references inside the rendered manifests: what the Service, NetworkPolicy, probes
 * and mounts point at must be what Tollgate actually listens on and reads, as decided by
 * the real CLI settings parser and policy loader (see workload.ts).
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import type { V1Container, V1NetworkPolicy, V1Service } from '@kubernetes/client-node/dist/gen/models/all.js';
import { quantityToScalar } from '@kubernetes/client-node/dist/util.js';
import { parse } from 'yaml';
import { findObject, readRepoFile, renderKustomization, requireKubectl, selectorMatches, WORKLOAD_VARIANTS, type K8sObject } from './support.js';
import { exampleSecrets, POLICY_CONFIGMAP, preStopSeconds, readWorkload, resolvePort, type Workload } from './workload.js';

/** Memory budget of the contract: ~300 B RSS per tracked client key on top of ~80 MiB. */
const BYTES_PER_KEY = 300;
const BASE_BYTES = 80 * 1024 * 1024;
/** The app's own graceful shutdown, as budgeted in the deployment.yaml comment. */
const APP_SHUTDOWN_BUDGET_SECONDS = 10;

function render(t: TestContext, variant: string): K8sObject[] | undefined {
  const kubectl = requireKubectl(t);
  return kubectl === undefined ? undefined : renderKustomization(kubectl, variant);
}

function withWorkload(variant: string, check: (w: Workload) => void) {
  return (t: TestContext) => {
    const objects = render(t, variant);
    if (objects !== undefined) check(readWorkload(objects));
  };
}

function bytes(quantity: string | undefined): number {
  assert.ok(quantity !== undefined, 'quantity missing');
  return Number(quantityToScalar(quantity));
}

for (const variant of WORKLOAD_VARIANTS) {
  describe(`${variant} manifests`, () => {
    test('the mounted policy loads with the real loader, without warnings, from the container env', withWorkload(variant, (w) => {
      // readWorkload throws on errors or warnings; reaching here means it loaded.
      assert.equal(w.policy.upstream, 'http://127.0.0.1:3000', 'upstream is the app container over loopback');
    }));

    test('Deployment, Service and NetworkPolicy selectors all match the pod labels', withWorkload(variant, (w) => {
      const podLabels = w.deployment.spec?.template.metadata?.labels;
      assert.ok(selectorMatches(w.deployment.spec?.selector.matchLabels, podLabels), 'Deployment selector');
      assert.ok(selectorMatches(findObject<V1Service>(w.objects, 'Service').spec?.selector, podLabels), 'Service selector');
      assert.ok(selectorMatches(findObject<V1NetworkPolicy>(w.objects, 'NetworkPolicy').spec?.podSelector?.matchLabels, podLabels), 'NetworkPolicy podSelector');
    }));

    test('Tollgate keeps the image entrypoint (tini) and its CMD', withWorkload(variant, (w) => {
      assert.equal(w.tollgate.command, undefined, 'overriding command would drop tini as PID 1');
      assert.equal(w.tollgate.args, undefined);
      assert.match(w.tollgate.image ?? '', /^[^:]+\/tollgate:\d+\.\d+\.\d+$/, 'a versioned tollgate image');
    }));

    test('the Service targets Tollgate\'s proxy port by number; the container declares it and the admin port', withWorkload(variant, (w) => {
      const { listen, admin } = w.settings;
      const ports = w.tollgate.ports ?? [];
      assert.ok(ports.some((p) => p.containerPort === listen.port), `tollgate must declare containerPort ${listen.port}`);
      assert.ok(ports.some((p) => p.containerPort === admin.port && p.name === 'admin'), `tollgate must declare containerPort ${admin.port} named admin`);
      const service = findObject<V1Service>(w.objects, 'Service');
      assert.ok((service.spec?.ports ?? []).length > 0);
      for (const port of service.spec?.ports ?? []) assert.equal(port.targetPort, listen.port, `Service port ${port.name} must target ${listen.port} by number`);
    }));

    test('probes hit the admin port: startup and liveness /healthz, readiness /readyz', withWorkload(variant, (w) => {
      const expected = { startupProbe: '/healthz', livenessProbe: '/healthz', readinessProbe: '/readyz' } as const;
      for (const [probe, path] of Object.entries(expected)) {
        const action = w.tollgate[probe as keyof typeof expected]?.httpGet;
        assert.ok(action, `tollgate needs an httpGet ${probe}`);
        assert.equal(action.path, path, probe);
        assert.equal(resolvePort(w.tollgate, action.port as number | string), w.settings.admin.port, `${probe} port`);
      }
    }));

    test('the policy ConfigMap is mounted as the directory TOLLGATE_CONFIG lives in, without subPath, under a fixed name', withWorkload(variant, (w) => {
      const directory = dirname(w.settings.configFile);
      assert.equal(directory, '/etc/tollgate');
      const mounts = (w.tollgate.volumeMounts ?? []).filter((m) => m.mountPath === directory);
      assert.equal(mounts.length, 1, `one mount at ${directory}`);
      const mount = mounts[0];
      assert.equal(mount?.subPath, undefined, 'subPath mounts are never updated: hot reload would silently stop');
      assert.equal(mount?.subPathExpr, undefined);
      assert.equal(mount?.readOnly, true);
      const volume = w.pod.volumes?.find((v) => v.name === mount?.name);
      assert.equal(volume?.configMap?.name, POLICY_CONFIGMAP, 'the volume is the policy ConfigMap, under its plain name (no hash suffix)');
      const configMaps = w.objects.filter((o) => o.kind === 'ConfigMap').map((o) => o.metadata.name);
      assert.deepEqual(configMaps, [POLICY_CONFIGMAP], 'exactly one ConfigMap, named without a hash suffix');
    }));

    test('the NetworkPolicy admits only the proxy and admin ports, never the app behind Tollgate', withWorkload(variant, (w) => {
      const policy = findObject<V1NetworkPolicy>(w.objects, 'NetworkPolicy');
      assert.ok(policy.spec?.policyTypes?.includes('Ingress'));
      const rules = policy.spec?.ingress ?? [];
      assert.ok(rules.length > 0, 'no ingress rule would block everything, probes aside');
      const admitted = new Set<number>();
      for (const rule of rules) {
        assert.ok((rule.ports ?? []).length > 0, 'an ingress rule without ports admits every port, including the app\'s');
        for (const port of rule.ports ?? []) {
          assert.equal(typeof port.port, 'number', 'numeric ports: a name could resolve to the app container');
          admitted.add(port.port as number);
        }
      }
      assert.deepEqual([...admitted].sort(), [w.settings.listen.port, w.settings.admin.port].sort());
      const appPort = Number(new URL(w.policy.upstream ?? '').port);
      assert.ok(!admitted.has(appPort), `the app port ${appPort} must not be reachable around Tollgate`);
    }));

    test('container port names are valid IANA service names of <= 15 characters, unique in the pod', withWorkload(variant, (w) => {
      const names = w.containers.flatMap((c) => (c.ports ?? []).map((p) => p.name)).filter((n): n is string => n !== undefined);
      for (const name of names) assert.match(name, /^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/, `port name "${name}"`);
      assert.equal(new Set(names).size, names.length, 'duplicate port names');
    }));

    test('every container runs with a restricted securityContext', withWorkload(variant, (w) => {
      const podContext = w.pod.securityContext ?? {};
      for (const container of w.containers) {
        const context = container.securityContext ?? {};
        const id = `container ${container.name}`;
        assert.equal(context.runAsNonRoot ?? podContext.runAsNonRoot, true, `${id}: runAsNonRoot`);
        assert.notEqual(context.runAsUser ?? podContext.runAsUser, 0, `${id}: runAsUser 0`);
        assert.equal(context.readOnlyRootFilesystem, true, `${id}: readOnlyRootFilesystem`);
        assert.equal(context.allowPrivilegeEscalation, false, `${id}: allowPrivilegeEscalation`);
        assert.ok(context.capabilities?.drop?.includes('ALL'), `${id}: capabilities.drop ALL`);
        assert.deepEqual(context.capabilities?.add ?? [], [], `${id}: no added capabilities`);
        assert.equal(context.privileged ?? false, false, `${id}: privileged`);
        assert.equal((context.seccompProfile ?? podContext.seccompProfile)?.type, 'RuntimeDefault', `${id}: seccompProfile`);
      }
    }));

    test('terminationGracePeriodSeconds covers app preStop + app shutdown + Tollgate preStop + drain', withWorkload(variant, (w) => {
      assert.equal(w.tollgate.env?.find((e) => e.name === 'TOLLGATE_DRAIN_TIMEOUT')?.value !== undefined, true, 'set TOLLGATE_DRAIN_TIMEOUT explicitly, next to the grace period it must fit in');
      const drain = w.settings.drainTimeoutMs / 1000;
      const apps = w.containers.filter((c) => c !== w.tollgate);
      const appPreStop = Math.max(...apps.map(preStopSeconds));
      const tollgatePreStop = preStopSeconds(w.tollgate);
      assert.ok(appPreStop > 0, 'the app needs a preStop sleep: it gets SIGTERM before the sidecar, while endpoints still route to the pod');
      assert.ok(tollgatePreStop > 0, 'Tollgate needs a preStop sleep before its drain');
      const needed = appPreStop + APP_SHUTDOWN_BUDGET_SECONDS + tollgatePreStop + drain;
      const grace = w.pod.terminationGracePeriodSeconds ?? 30;
      assert.ok(grace >= needed, `terminationGracePeriodSeconds ${grace} < ${appPreStop} + ${APP_SHUTDOWN_BUDGET_SECONDS} + ${tollgatePreStop} + ${drain} = ${needed}`);
    }));

    test('Tollgate\'s memory limit fits maxKeys of the policy, and V8\'s heap cap fits the limit', withWorkload(variant, (w) => {
      const limit = bytes(w.tollgate.resources?.limits?.memory);
      const needed = w.policy.store.memory.maxKeys * BYTES_PER_KEY + BASE_BYTES;
      assert.ok(limit >= needed, `memory limit ${limit} B < ${w.policy.store.memory.maxKeys} keys x ${BYTES_PER_KEY} B + 80 MiB = ${needed} B`);
      assert.ok(limit <= needed * 2, `memory limit ${limit} B is more than twice the budget ${needed} B: lower it or raise maxKeys`);
      const heap = /--max-old-space-size=(\d+)/.exec(w.env.NODE_OPTIONS ?? '');
      if (heap) assert.ok(Number(heap[1]) * 1024 * 1024 < limit, 'max-old-space-size must stay below the container memory limit');
    }));

    test('every container has CPU and memory requests and a memory limit, and a pinned image tag', withWorkload(variant, (w) => {
      for (const container of w.containers) {
        assert.ok(container.resources?.requests?.cpu, `${container.name}: cpu request`);
        assert.ok(container.resources?.requests?.memory, `${container.name}: memory request`);
        assert.ok(container.resources?.limits?.memory, `${container.name}: memory limit`);
        assert.ok(bytes(container.resources.requests.memory) <= bytes(container.resources.limits.memory), `${container.name}: request <= limit`);
        assert.match(container.image ?? '', /:(?!latest$)[\w.-]+$/, `${container.name}: image needs an explicit tag other than latest`);
      }
    }));

    test('secrets come from Secrets: secret-looking env uses secretKeyRef (a *_FILE one names a file of a Secret volume), and no Secret object ships', withWorkload(variant, (w) => {
      for (const container of w.containers) {
        for (const variable of container.env ?? []) {
          if (/_FILE$/.test(variable.name)) {
            const mount = (container.volumeMounts ?? []).find((m) => variable.value?.startsWith(m.mountPath + '/'));
            const volume = w.pod.volumes?.find((v) => v.name === mount?.name);
            assert.ok(volume?.secret?.secretName, `${container.name}: env ${variable.name} must name a file of a mounted Secret`);
            continue;
          }
          if (/SECRET|PASSWORD|TOKEN|KEY|REDIS_URL/i.test(variable.name)) {
            assert.ok(variable.valueFrom?.secretKeyRef, `${container.name}: env ${variable.name} must come from a Secret`);
          }
        }
      }
      assert.deepEqual(w.objects.filter((o) => o.kind === 'Secret').map((o) => o.metadata.name), [], 'create Secrets out of band (k8s/examples shows their shape)');
    }));

    test('the admin token is a file of the optional Secret tollgate-admin-token, mounted read-only as a directory (rotation applies), never an env value', withWorkload(variant, (w) => {
      assert.equal(w.env.TOLLGATE_ADMIN_TOKEN, undefined, 'a token in env would need a restart to rotate and shows in `kubectl describe`');
      const source = w.settings.adminToken;
      assert.ok(source !== undefined && 'file' in source, 'TOLLGATE_ADMIN_TOKEN_FILE is set: the admin API can be turned on');
      const mount = (w.tollgate.volumeMounts ?? []).find((m) => source.file.startsWith(m.mountPath + '/'));
      assert.ok(mount, `a volume is mounted where ${source.file} lives`);
      assert.equal(mount.readOnly, true);
      assert.equal(mount.subPath, undefined, 'a subPath mount is never updated: a rotated token would not apply');
      assert.notEqual(mount.mountPath, dirname(w.settings.configFile), 'not inside the policy directory');
      const secret = w.pod.volumes?.find((v) => v.name === mount.name)?.secret;
      assert.equal(secret?.secretName, 'tollgate-admin-token');
      assert.equal(secret?.optional, true, 'the pod starts without it (admin API off)');
      const item = secret?.items?.find((i) => `${mount.mountPath}/${i.path}` === source.file);
      assert.ok(item, `the Secret key mounted at ${source.file}`);
      assert.ok(exampleSecrets().get('tollgate-admin-token')?.[item.key] !== undefined, 'k8s/examples shows the Secret');
      // Readable by Tollgate's group only (fsGroup), not by others.
      assert.equal((secret?.defaultMode ?? 0o644) & 0o007, 0, 'not world-readable');
      assert.equal(w.pod.securityContext?.fsGroup, w.tollgate.securityContext?.runAsGroup ?? w.pod.securityContext?.runAsGroup);
    }));

    test('the admin port stays unexposed: no Service port targets it, by number or by name', withWorkload(variant, (w) => {
      const adminNames = new Set((w.tollgate.ports ?? []).filter((p) => p.containerPort === w.settings.admin.port).map((p) => p.name));
      for (const service of w.objects.filter((o) => o.kind === 'Service') as unknown as V1Service[]) {
        for (const port of service.spec?.ports ?? []) {
          assert.notEqual(port.targetPort, w.settings.admin.port, `Service ${service.metadata?.name} port ${port.name} exposes the admin port`);
          assert.ok(!adminNames.has(String(port.targetPort)), `Service ${service.metadata?.name} port ${port.name} exposes the admin port by name`);
          assert.notEqual(port.port, w.settings.admin.port, `Service ${service.metadata?.name} listens on the admin port number`);
        }
      }
    }));

    test('the pod template sets no Prometheus scrape annotations (they would overwrite the app\'s own)', withWorkload(variant, (w) => {
      const annotations = Object.keys(w.deployment.spec?.template.metadata?.annotations ?? {});
      assert.deepEqual(annotations.filter((a) => a.startsWith('prometheus.io/')), []);
    }));
  });
}

describe('variant specifics', () => {
  test('base: Tollgate is a native sidecar (init container with restartPolicy Always) and nothing needs an operator', (t) => {
    const objects = render(t, 'k8s/base');
    if (objects === undefined) return;
    const w = readWorkload(objects);
    assert.equal(w.native, true);
    assert.equal(w.tollgate.restartPolicy, 'Always');
    assert.ok(w.tollgate.startupProbe, 'the startupProbe is what holds the app back until Tollgate is up');
    assert.deepEqual([...new Set(objects.map((o) => o.apiVersion))].sort(), ['apps/v1', 'networking.k8s.io/v1', 'v1']);
    assert.equal(w.policy.store.type, 'memory');
  });

  test('legacy-sidecar: Tollgate moves unchanged into containers, without restartPolicy', (t) => {
    const base = render(t, 'k8s/base');
    const legacy = render(t, 'k8s/overlays/legacy-sidecar');
    if (base === undefined || legacy === undefined) return;
    const b = readWorkload(base);
    const l = readWorkload(legacy);
    assert.equal(l.native, false);
    assert.ok(!(l.pod.initContainers ?? []).some((c) => c.name === 'tollgate'), 'no tollgate init container left');
    assert.ok(l.pod.containers.includes(l.tollgate));
    assert.equal(l.tollgate.restartPolicy, undefined, 'restartPolicy is only valid on init containers');
    const { restartPolicy: _dropped, ...expected } = b.tollgate;
    assert.deepEqual(l.tollgate as V1Container, expected, 'the container spec must move unchanged');
    assert.deepEqual(l.pod.containers.filter((c) => c.name !== 'tollgate'), b.pod.containers, 'the app containers are untouched');
  });

  test('redis: shared Redis store from a Secret, expectedReplicas = replicas, and the rest of the policy as in base', (t) => {
    const base = render(t, 'k8s/base');
    const redis = render(t, 'k8s/overlays/redis');
    if (base === undefined || redis === undefined) return;
    const b = readWorkload(base);
    const r = readWorkload(redis);
    assert.equal(r.policy.store.type, 'redis');
    assert.equal(r.policy.store.redis?.url, r.env.REDIS_URL, 'the url comes from REDIS_URL');
    assert.ok(r.tollgate.env?.find((e) => e.name === 'REDIS_URL')?.valueFrom?.secretKeyRef, 'REDIS_URL from a Secret');
    const replicas = r.deployment.spec?.replicas ?? 1;
    assert.ok(replicas > 1);
    assert.equal(r.policy.store.redis?.expectedReplicas, replicas, 'degraded mode divides limits by expectedReplicas');
    const { store: _redisStore, ...redisRest } = r.policy;
    const { store: _memoryStore, ...baseRest } = b.policy;
    assert.deepEqual(redisRest, baseRest, 'k8s/overlays/redis/policies.yaml drifted from the base policy');
    assert.deepEqual(r.policy.store.memory, b.policy.store.memory, 'the local fallback is sized like base');
  });

  test('example Secrets cover every secretKeyRef and Secret volume, and are not part of any kustomization', (t) => {
    const secrets = exampleSecrets();
    for (const variant of WORKLOAD_VARIANTS) {
      const objects = render(t, variant);
      if (objects === undefined) return;
      const workload = readWorkload(objects);
      for (const container of workload.containers) {
        for (const variable of container.env ?? []) {
          const ref = variable.valueFrom?.secretKeyRef;
          if (ref) assert.ok(secrets.get(ref.name ?? '')?.[ref.key] !== undefined, `${variant}: ${ref.name}/${ref.key} has no example`);
        }
      }
      for (const volume of workload.pod.volumes ?? []) {
        const secret = volume.secret;
        if (secret === undefined) continue;
        const example = secrets.get(secret.secretName ?? '');
        assert.ok(example !== undefined, `${variant}: Secret volume ${secret.secretName} has no example`);
        for (const item of secret.items ?? []) assert.ok(example[item.key] !== undefined, `${variant}: ${secret.secretName}/${item.key} has no example`);
      }
    }
    const kustomizations = ['k8s/base', ...readdirSync(new URL('../../k8s/overlays', import.meta.url)).map((d) => `k8s/overlays/${d}`)];
    for (const dir of kustomizations) {
      const text = readRepoFile(`${dir}/kustomization.yaml`);
      assert.doesNotMatch(text, /examples/, `${dir} must not include k8s/examples`);
      assert.doesNotMatch(JSON.stringify(parse(text)), /secretGenerator/, `${dir}: no secrets in git`);
    }
  });
});
