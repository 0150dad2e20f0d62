/**
 * Shared plumbing for the offline checks of the shipping artefacts (Dockerfile, k8s/,
 * grafana/, prometheus/): repository paths, external tools, and kustomize rendering.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { parseAllDocuments } from 'yaml';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));

export function repoPath(relative: string): string {
  return join(REPO, relative);
}

export function readRepoFile(relative: string): string {
  return readFileSync(repoPath(relative), 'utf8');
}

/** Absolute path of an executable on PATH (or given as a path), undefined when absent. */
export function findExecutable(name: string): string | undefined {
  const candidates = name.includes('/') ? [name] : (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((dir) => join(dir, name));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

/**
 * The tool's path; when it is missing, skips the test locally but fails it in CI
 * (CI=true), where .ci/run installs it. `debianPackage` names what to install.
 */
export function requireTool(t: TestContext, name: string, debianPackage: string): string | undefined {
  const found = findExecutable(name);
  if (found !== undefined) return found;
  const message = `${name} not found on PATH (apt-get install -y ${debianPackage})`;
  if (process.env.CI === 'true') throw new Error(`${message}; CI must install it`);
  t.skip(message);
  return undefined;
}

/** kubectl to render with: $KUBECTL (e.g. Debian's v1.20 with kustomize v2) or kubectl on PATH. */
export function requireKubectl(t: TestContext): string | undefined {
  const override = process.env.KUBECTL;
  if (override !== undefined && override !== '') {
    const found = findExecutable(override);
    if (found === undefined) throw new Error(`KUBECTL=${override} is not an executable`);
    return found;
  }
  return requireTool(t, 'kubectl', 'kubernetes-client');
}

/** A rendered Kubernetes object; fields are checked by the model validators before use. */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

/** The kustomizations shipped under k8s/, relative to the repository. */
export const VARIANTS = ['k8s/base', 'k8s/overlays/legacy-sidecar', 'k8s/overlays/redis', 'k8s/overlays/monitoring'] as const;
export type Variant = (typeof VARIANTS)[number];
/** The variants that run the pods (monitoring only adds objects next to one of them). */
export const WORKLOAD_VARIANTS = ['k8s/base', 'k8s/overlays/legacy-sidecar', 'k8s/overlays/redis'] as const;

const rendered = new Map<string, K8sObject[]>();

/** `kubectl kustomize DIR`, parsed; memoised per process. */
export function renderKustomization(kubectl: string, dir: string): K8sObject[] {
  const key = `${kubectl}\0${dir}`;
  const cached = rendered.get(key);
  if (cached !== undefined) return cached;
  let stdout: string;
  try {
    // stderr piped: kustomize v5 prints deprecation warnings for the v2 spellings we keep.
    stdout = execFileSync(kubectl, ['kustomize', repoPath(dir)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    throw new Error(`kubectl kustomize ${dir} failed: ${stderr.trim() || String(error)}`);
  }
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(stdout)) {
    if (doc.errors.length > 0) throw new Error(`${dir}: rendered YAML does not parse: ${doc.errors[0]?.message}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    objects.push(value as K8sObject);
  }
  rendered.set(key, objects);
  return objects;
}

export function findObject<T = K8sObject>(objects: readonly K8sObject[], kind: string, name?: string): T {
  const matches = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (matches.length !== 1) throw new Error(`expected exactly one ${kind}${name ? ` named ${name}` : ''}, found ${matches.length}`);
  return matches[0] as T;
}

/** True when every key/value of `selector` is among `labels`. */
export function selectorMatches(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  if (selector === undefined || Object.keys(selector).length === 0) return false; // an empty selector is never what we mean
  return Object.entries(selector).every(([key, value]) => labels?.[key] === value);
}
