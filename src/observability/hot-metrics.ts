/**
 * Per-request metric cells: plain numbers the hot path adds to, turned into prom-client
 * metrics at scrape time. prom-client hashes a child's label object on every `inc` and
 * `observe` (and allocates for it); a request updates three to five metrics, so this was
 * a few percent of Tollgate's CPU. The exposition is prom-client's own, byte for byte.
 *
 * - `CounterCell`: counts since the last scrape; `flushCounter` (in the counter's
 *   `collect`) adds them with one `inc(labels, n)` per cell and scrape.
 * - `HotHistogram`: a histogram metric registered with prom-client's registry, whose
 *   cells count per bucket in a typed array; its `get()` answers in the shape of
 *   prom-client's Histogram (test/observability/hot-metrics.test.ts compares the two).
 */
import type { Counter, Registry } from 'prom-client';

/** One label set of a counter: what was added since the last scrape. */
export class CounterCell {
  pending = 0;
  constructor(readonly labels: Readonly<Record<string, string>>) {}

  inc(): void {
    this.pending++;
  }
}

/** Adds every cell's pending count to `counter` (call from the counter's `collect`). */
export function flushCounter(counter: Counter<string>, cells: Iterable<CounterCell>): void {
  for (const cell of cells) {
    if (cell.pending === 0) continue;
    counter.inc(cell.labels, cell.pending);
    cell.pending = 0;
  }
}

/** One label set of a histogram: observations per bucket (not cumulative), their sum and count. */
export class HistogramCell {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    // The first bucket whose upper bound holds the value, as prom-client's findBound;
    // above every bound only +Inf (the count) sees it.
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]) {
        this.counts[i]++;
        break;
      }
    }
    this.sum += value;
    this.count++;
  }
}

/** A sample as prom-client's registry formats it (`sharedLabels` follow `labels`, e.g. `le`). */
interface SampleValue {
  labels: Record<string, string | number>;
  sharedLabels: Readonly<Record<string, string>>;
  value: number;
  metricName: string;
  /** As prom-client fills it (no exemplars here): null on buckets, undefined on _sum/_count. */
  exemplar: null | undefined;
}

export interface HotHistogramConfig {
  name: string;
  help: string;
  labelNames: readonly string[];
  /** Upper bounds, ascending (+Inf is implied). */
  buckets: readonly number[];
  registers: Registry[];
}

/**
 * A histogram whose observations go to cells (`cell(labels)`, kept by the caller), read
 * by prom-client's registry through `get()`/`getForPromString()` like any metric.
 */
export class HotHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;
  readonly labelNames: readonly string[];
  readonly #bounds: readonly number[];
  /** Cells by their label values joined (cold path only: `observe(labels, v)` and `cell()`). */
  readonly #cells = new Map<string, HistogramCell>();

  constructor(config: HotHistogramConfig) {
    this.name = config.name;
    this.help = config.help;
    this.labelNames = config.labelNames;
    this.#bounds = [...config.buckets];
    for (const registry of config.registers) registry.registerMetric(this as never);
  }

  /** The cell of `labels` (created on first use): keep it and call `observe` on it. */
  cell(labels: Readonly<Record<string, string>>): HistogramCell {
    const key = this.labelNames.map((name) => labels[name] ?? '').join('\u0000');
    let cell = this.#cells.get(key);
    if (cell === undefined) {
      cell = new HistogramCell(labels, this.#bounds);
      this.#cells.set(key, cell);
    }
    return cell;
  }

  /** An observation for `labels` (looks the cell up: for paths that are not per request). */
  observe(labels: Readonly<Record<string, string>>, value: number): void {
    this.cell(labels).observe(value);
  }

  reset(): void {
    for (const cell of this.#cells.values()) {
      cell.counts.fill(0);
      cell.sum = 0;
      cell.count = 0;
    }
  }

  /** What prom-client's Histogram.getForPromString answers: the registry formats it. */
  async getForPromString(): Promise<{ name: string; help: string; type: 'histogram'; values: SampleValue[]; aggregator: 'sum' }> {
    const values: SampleValue[] = [];
    const bucketName = `${this.name}_bucket`;
    for (const cell of this.#cells.values()) {
      if (cell.count === 0 && cell.sum === 0 && !cell.counts.some((n) => n !== 0)) continue; // never observed: no series yet
      let cumulative = 0;
      for (let i = 0; i < this.#bounds.length; i++) {
        cumulative += cell.counts[i];
        values.push({ labels: { le: this.#bounds[i] }, sharedLabels: cell.labels, value: cumulative, metricName: bucketName, exemplar: null });
      }
      values.push({ labels: { le: '+Inf' }, sharedLabels: cell.labels, value: cell.count, metricName: bucketName, exemplar: null });
      values.push({ labels: {}, sharedLabels: cell.labels, value: cell.sum, metricName: `${this.name}_sum`, exemplar: undefined });
      values.push({ labels: {}, sharedLabels: cell.labels, value: cell.count, metricName: `${this.name}_count`, exemplar: undefined });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  /** As prom-client's Histogram.get: shared labels merged into each sample's labels. */
  async get(): Promise<{ name: string; help: string; type: 'histogram'; values: Array<Omit<SampleValue, 'sharedLabels'>>; aggregator: 'sum' }> {
    const data = await this.getForPromString();
    return {
      ...data,
      values: data.values.map(({ sharedLabels, ...v }) => ({ ...v, labels: { ...v.labels, ...sharedLabels } })),
    };
  }
}
