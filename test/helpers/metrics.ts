/**
 * The one Prometheus text-format reader of the suite:
 * - `parseMetrics(text)`: every sample, with its labels;
 * - `sampleValue(text, name, labels)`: the one sample with exactly these labels;
 * - `sampleSum(text, name, labels)`: the sum of the samples that carry these labels;
 * - `metricTypes(text)`: `# TYPE` of each family;
 * - `scrape(adminUrl)`: GET /metrics (bounded), checked to be the text format.
 */
import assert from 'node:assert/strict';
import { request } from './http.js';

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const SAMPLE = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g;

function unescapeLabel(value: string): string {
  return value.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
}

/** Every sample of an exposition, in order; comments and blank lines are skipped. */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (m === null) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(LABEL)) labels[l[1]] = unescapeLabel(l[2]);
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

function labelsInclude(have: Readonly<Record<string, string>>, want: Readonly<Record<string, string>>): boolean {
  return Object.entries(want).every(([k, v]) => have[k] === v);
}

/**
 * The value of the sample of `name` whose labels are exactly `labels` (no more, no
 * fewer), or undefined when there is none.
 */
export function sampleValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.keys(labels).length;
  return parseMetrics(text).find((s) => s.name === name && Object.keys(s.labels).length === want && labelsInclude(s.labels, labels))?.value;
}

/** Sum of every sample of `name` whose labels include `labels`; NaN when there is none. */
export function sampleSum(text: string, name: string, labels: Record<string, string> = {}): number {
  const matching = parseMetrics(text).filter((s) => s.name === name && labelsInclude(s.labels, labels));
  return matching.length === 0 ? Number.NaN : matching.reduce((sum, s) => sum + s.value, 0);
}

/** `# TYPE` of every metric family: name -> counter | gauge | histogram | summary | untyped. */
export function metricTypes(text: string): Map<string, string> {
  const types = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) types.set(m[1], m[2]);
  return types;
}

/** GET `${adminUrl}/metrics` (with the request deadline); asserts a 200 in the text format. */
export async function scrape(adminUrl: string): Promise<string> {
  const reply = await request(adminUrl, '/metrics');
  assert.equal(reply.status, 200, `/metrics answered ${reply.status}: ${reply.body.slice(0, 200)}`);
  assert.match(String(reply.headers['content-type']), /^text\/plain/);
  return reply.body;
}
