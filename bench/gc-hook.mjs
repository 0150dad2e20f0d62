// Preloaded into the Tollgate process by the memory run of bench/run.ts
// (`node --expose-gc --import ./bench/gc-hook.mjs dist/cli.js serve …`): on SIGUSR2 it
// forces full GCs and reports the heap on stderr, so RSS samples are not inflated by
// garbage that a later GC would free. Plain JS because Tollgate runs from dist/.
import v8 from 'node:v8';

process.on('SIGUSR2', () => {
  globalThis.gc?.();
  globalThis.gc?.();
  const m = process.memoryUsage();
  const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, { size: s.space_size, used: s.space_used_size }]));
  process.stderr.write(`${JSON.stringify({ event: 'bench_gc', rss: m.rss, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, spaces })}\n`);
});
