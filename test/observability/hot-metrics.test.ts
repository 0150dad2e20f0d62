/**
 * The hot metric cells against prom-client's own metrics: the same observations must give
 * the same exposition, byte for byte (the metrics contract and the dashboard read it).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Counter, Histogram, Registry } from 'prom-client';
import { CounterCell, flushCounter, HotHistogram } from '../../src/observability/hot-metrics.js';

const BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];
const LABELS = [
  { route: 'a', status_class: '2xx' },
  { route: 'a', status_class: '5xx' },
  { route: 'b"\\x', status_class: 'error' },
];

describe('HotHistogram', () => {
  it('exposes exactly what prom-client Histogram exposes for the same observations', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ labels: fc.integer({ min: 0, max: LABELS.length - 1 }), value: fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom(...BUCKETS, 0, 30, 1e-9)) }), { maxLength: 60 }),
        async (observations) => {
          const reference = new Registry();
          const hotRegistry = new Registry();
          const config = { name: 'h_seconds', help: 'Help text.', labelNames: ['route', 'status_class'], buckets: BUCKETS };
          const histogram = new Histogram({ ...config, registers: [reference] });
          const hot = new HotHistogram({ ...config, registers: [hotRegistry] });
          // Cells are made at their first observation, as HotMetrics makes them: series keep that order, as prom-client's do.
          for (const { labels, value } of observations) {
            histogram.observe(LABELS[labels], value);
            hot.cell(LABELS[labels]).observe(value);
          }
          assert.equal(await hotRegistry.metrics(), await reference.metrics());
          assert.deepEqual(await hot.get(), await histogram.get());
        },
      ),
      { seed: 1_764_000_000, numRuns: 100 },
    );
  });

  it('a cell never observed has no series; reset clears them as prom-client does', async () => {
    const registry = new Registry();
    const hot = new HotHistogram({ name: 'h', help: 'h', labelNames: ['store'], buckets: [1], registers: [registry] });
    hot.cell({ store: 'memory' });
    assert.doesNotMatch(await registry.metrics(), /h_bucket/);
    hot.observe({ store: 'memory' }, 0.5);
    assert.match(await registry.metrics(), /h_bucket\{le="1",store="memory"\} 1/);
    hot.reset();
    assert.doesNotMatch(await registry.metrics(), /h_bucket/);
  });
});

describe('counter cells', () => {
  it('add their counts at scrape time: the same exposition as incrementing the counter per call', async () => {
    const reference = new Registry();
    const hotRegistry = new Registry();
    const direct = new Counter({ name: 'c_total', help: 'c', labelNames: ['route', 'decision'], registers: [reference] });
    const cells = [new CounterCell({ route: 'a', decision: 'allowed' }), new CounterCell({ route: 'a', decision: 'limited' })];
    const flushed = new Counter({
      name: 'c_total',
      help: 'c',
      labelNames: ['route', 'decision'],
      registers: [hotRegistry],
      collect() {
        flushCounter(this, cells);
      },
    });
    for (let i = 0; i < 7; i++) {
      direct.inc(cells[i % 2].labels);
      cells[i % 2].inc();
    }
    assert.equal(await hotRegistry.metrics(), await reference.metrics());
    // Counted once: a second scrape adds nothing new.
    assert.equal(await hotRegistry.metrics(), await reference.metrics());
    cells[1].inc();
    direct.inc(cells[1].labels);
    assert.equal(await hotRegistry.metrics(), await reference.metrics());
    assert.equal((await flushed.get()).values.length, 2);
  });
});
