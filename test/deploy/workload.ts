/**
 * The rendered pod of a workload variant, read the way Tollgate will see it: the
 * container's env on top of the image's ENV, parsed by the real CLI settings parser,
 * and the mounted policy loaded by the real policy loader.
 */
import { basename, dirname } from 'node:path';
import type { V1ConfigMap, V1Container, V1Deployment, V1EnvVar, V1PodSpec } from '@kubernetes/client-node/dist/gen/models/all.js';
import { parse } from 'yaml';
import { formatIssue, loadPolicyText } from '../../src/config/load.js';
import { parseCommand, type ServeSettings } from '../../src/config/settings.js';
import type { PolicyConfig } from '../../src/config/types.js';
import { parseStages, stageEnv, type Stage } from './dockerfile.js';
import { findObject, readRepoFile, type K8sObject } from './support.js';

export const TOLLGATE_CONTAINER = 'tollgate';
export const POLICY_CONFIGMAP = 'tollgate-policy';

export interface Workload {
  objects: K8sObject[];
  deployment: V1Deployment;
  pod: V1PodSpec;
  tollgate: V1Container;
  /** Whether Tollgate is a native sidecar (an init container) rather than a plain container. */
  native: boolean;
  /** Every container of the pod, init containers first. */
  containers: V1Container[];
  /** Tollgate's environment: image ENV, then the container's env (secrets from k8s/examples). */
  env: Record<string, string>;
  settings: ServeSettings;
  policyText: string;
  policy: PolicyConfig;
}

const runtimeStage = (): Stage => {
  const stages = parseStages(readRepoFile('Dockerfile'));
  return stages[stages.length - 1] as Stage;
};

/** Secret name -> key -> value, from the example Secrets in k8s/examples. */
export function exampleSecrets(): Map<string, Record<string, string>> {
  const secrets = new Map<string, Record<string, string>>();
  for (const file of ['k8s/examples/tollgate-secrets.example.yaml', 'k8s/examples/tollgate-redis.example.yaml', 'k8s/examples/tollgate-admin-token.example.yaml']) {
    const secret = parse(readRepoFile(file)) as { kind: string; metadata: { name: string }; stringData: Record<string, string> };
    if (secret.kind !== 'Secret') throw new Error(`${file} is not a Secret`);
    secrets.set(secret.metadata.name, secret.stringData);
  }
  return secrets;
}

function envValue(variable: V1EnvVar, secrets: Map<string, Record<string, string>>): string {
  if (variable.value !== undefined) return variable.value;
  const ref = variable.valueFrom?.secretKeyRef;
  if (ref === undefined) throw new Error(`env ${variable.name}: only value and secretKeyRef are expected`);
  const value = secrets.get(ref.name ?? '')?.[ref.key];
  if (value === undefined) throw new Error(`env ${variable.name}: no example for Secret ${ref.name} key ${ref.key} in k8s/examples`);
  return value;
}

export function readWorkload(objects: K8sObject[]): Workload {
  const deployment = findObject<V1Deployment>(objects, 'Deployment');
  const pod = deployment.spec?.template.spec;
  if (pod === undefined) throw new Error('Deployment has no pod template');
  const containers = [...(pod.initContainers ?? []), ...pod.containers];
  const matches = containers.filter((c) => c.name === TOLLGATE_CONTAINER);
  if (matches.length !== 1) throw new Error(`expected one container named ${TOLLGATE_CONTAINER}, found ${matches.length}`);
  const tollgate = matches[0] as V1Container;
  const native = (pod.initContainers ?? []).includes(tollgate);

  const secrets = exampleSecrets();
  const env: Record<string, string> = { ...stageEnv(runtimeStage()) };
  for (const variable of tollgate.env ?? []) env[variable.name] = envValue(variable, secrets);
  const command = parseCommand(['serve', ...(tollgate.args ?? [])], env);
  if (command.command !== 'serve') throw new Error('the tollgate container does not run `serve`');
  const settings = command.settings;

  const mount = (tollgate.volumeMounts ?? []).find((m) => m.mountPath === dirname(settings.configFile));
  const volume = pod.volumes?.find((v) => v.name === mount?.name);
  const configMap = findObject<V1ConfigMap>(objects, 'ConfigMap', volume?.configMap?.name ?? POLICY_CONFIGMAP);
  const policyText = configMap.data?.[basename(settings.configFile)];
  if (policyText === undefined) throw new Error(`ConfigMap ${configMap.metadata?.name} has no key ${basename(settings.configFile)}`);
  const loaded = loadPolicyText(policyText, `ConfigMap ${configMap.metadata?.name}`, env);
  if (!loaded.ok) throw new Error(`the mounted policy does not load:\n${loaded.errors.map(formatIssue).join('\n')}`);
  if (loaded.policy.warnings.length > 0) throw new Error(`the mounted policy loads with warnings:\n${loaded.policy.warnings.map(formatIssue).join('\n')}`);

  return { objects, deployment, pod, tollgate, native, containers, env, settings, policyText, policy: loaded.policy.config };
}

/** Seconds a preStop hook waits: `exec: [sleep, N]` or the `sleep` action; 0 without a hook. */
export function preStopSeconds(container: V1Container): number {
  const preStop = container.lifecycle?.preStop;
  if (preStop === undefined) return 0;
  if (preStop.sleep !== undefined) return preStop.sleep.seconds;
  const command = preStop.exec?.command ?? [];
  if (command.length === 2 && command[0] === 'sleep' && /^\d+$/.test(command[1] as string)) return Number(command[1]);
  throw new Error(`${container.name}: preStop is not a plain sleep: ${JSON.stringify(preStop)}`);
}

/** A probe's or rule's port (number or container port name) as a number. */
export function resolvePort(container: V1Container, port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port;
  return container.ports?.find((p) => p.name === port)?.containerPort;
}
