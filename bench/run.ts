/**
 * `npm run bench`: throughput, light-load latency and memory per tracked client of
 * Tollgate beside its baselines, measured in one run (method: ../shared/BENCH.md and
 * docs/performance.md). Prints a table and writes bench/results.json.
 *
 *   node --import tsx bench/run.ts [--quick]      (--quick: ~30 s smoke run)
 *   TOLLGATE_BENCH_CLI=/other/checkout/dist/cli.js node --import tsx bench/run.ts
 *                                                 (measures another build, e.g. a candidate fix)
 *
 * Layout: the load generator, the upstream and the bench's Redis on CPU 0; the server
 * under test alone on CPU 1. Every figure that is compared is measured in the same run,
 * in interleaved rounds with a rotating order; only ratios and medians are reported.
 */
import { existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { runLoad, loadTool, type LoadResult } from './load.js';
import { BENCH_REQUEST, PER_IP_PATH, examplePolicy, perIpPolicy, writePolicyFile, type BenchFeatures } from './policies.js';
import { runWsBench, type WsBenchResult } from './ws.js';
import { canPin, pinned, rssBytes, run, startServer, type Server } from './processes.js';
import { OWN_READS_PER_SNAPSHOT, startBenchRedis, type BenchRedis } from './redis.js';
import { printReport, type Results, type ThroughputRow } from './report.js';
import { benchCpuMs, cpuTimeMs, machineBusyMs, median, rotate, summarize } from './stats.js';

const LOAD_CPU = 0;
const PROXY_CPU = 1;
const HARD_LIMIT_MS = 300_000; // the whole bench must stop by itself within 5 minutes

interface Plan {
  /** Throughput rounds: every configuration once per round; ratios are paired per round. */
  rounds: number;
  /** Rounds and seconds of the features phase (each feature against the same policy without it). */
  featureRounds: number;
  featureDurationS: number;
  /** The WebSocket session-vs-raw run (bench/ws.ts). */
  wsRounds: number;
  wsDurationS: number;
  latencyRounds: number;
  durationS: number;
  warmupS: number;
  latencyS: number;
  /**
   * N of the memory run (RSS is read after N and after 2N distinct client IPs): at most
   * this many, fewer if the proxy is too slow to send N in `memoryPhaseS` seconds.
   */
  memoryClients: number;
  memoryPhaseS: number;
  storeClients: number;
}

const FULL: Plan = {
  rounds: 5,
  featureRounds: 4,
  featureDurationS: 2,
  wsRounds: 3,
  wsDurationS: 2,
  latencyRounds: 4,
  durationS: 3,
  warmupS: 1,
  latencyS: 3,
  memoryClients: 200_000,
  memoryPhaseS: 16,
  storeClients: 200_000,
};
const QUICK: Plan = {
  rounds: 1,
  featureRounds: 1,
  featureDurationS: 1,
  wsRounds: 1,
  wsDurationS: 1,
  latencyRounds: 1,
  durationS: 2,
  warmupS: 1,
  latencyS: 2,
  memoryClients: 20_000,
  memoryPhaseS: 3,
  storeClients: 50_000,
};
const CONNECTIONS = 50;
const LATENCY_CONNECTIONS = 16;
const LATENCY_RATE = 1000; // req/s

const root = fileURLToPath(new URL('..', import.meta.url));
const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url));
const cli = process.env.TOLLGATE_BENCH_CLI ?? `${root}dist/cli.js`;
const node = process.execPath;
const tsx = ['--import', 'tsx'];

/** One thing the load is pointed at; `pid` is the process whose CPU time is reported. */
interface Target {
  id: string;
  label: string;
  url: string;
  pid: number;
  redis?: BenchRedis;
}

const servers: Server[] = [];
let benchRedis: BenchRedis | undefined;

async function stopAll(): Promise<void> {
  await Promise.allSettled(servers.splice(0).map((s) => s.stop()));
  await benchRedis?.close();
  benchRedis = undefined;
}

/** Processes of the bench that are running now (their CPU time is the bench's, not noise). */
function livePids(): number[] {
  const pids = servers.map((s) => s.pid);
  if (benchRedis?.pid !== undefined) pids.push(benchRedis.pid);
  return pids;
}

async function start(name: string, cpu: number, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Server> {
  const server = await startServer(name, cpu, node, args, env);
  servers.push(server);
  return server;
}

function tollgateArgs(config: string, upstream: string, nodeFlags: string[] = []): string[] {
  return [...nodeFlags, cli, 'serve', '--config', config, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--upstream', upstream];
}

const TOLLGATE_ENV = { LOG_LEVEL: 'info' }; // info: the listening line carries the port

function load(target: Target, durationS: number, paced = false): Promise<LoadResult> {
  return runLoad({
    url: target.url + BENCH_REQUEST.path,
    method: BENCH_REQUEST.method,
    headers: BENCH_REQUEST.headers,
    connections: paced ? LATENCY_CONNECTIONS : CONNECTIONS,
    durationS,
    rate: paced ? LATENCY_RATE : undefined,
    cpu: LOAD_CPU,
  });
}

interface Sample {
  rps: number;
  errors: number;
  cpuUsPerRequest: number;
  /** Share of the machine's CPU used by processes outside the bench during the run (noise). */
  othersCpu: number;
  redisScriptsPerRequest?: number;
  redisReadsPerRequest?: number;
}

async function measure(target: Target, durationS: number): Promise<Sample> {
  const cpuBefore = cpuTimeMs(target.pid) ?? Number.NaN;
  const busyBefore = (machineBusyMs() ?? Number.NaN) - benchCpuMs(livePids());
  const redisBefore = await target.redis?.counters();
  const began = performance.now();
  const result = await load(target, durationS);
  const elapsedMs = performance.now() - began;
  const cpuAfter = cpuTimeMs(target.pid) ?? Number.NaN;
  const busyAfter = (machineBusyMs() ?? Number.NaN) - benchCpuMs(livePids());
  const redisAfter = await target.redis?.counters();
  const sample: Sample = {
    rps: result.rps,
    errors: result.errors,
    cpuUsPerRequest: ((cpuAfter - cpuBefore) * 1000) / result.requests,
    othersCpu: Math.max(0, busyAfter - busyBefore) / (elapsedMs * os.cpus().length),
  };
  if (redisBefore !== undefined && redisAfter !== undefined) {
    sample.redisScriptsPerRequest = (redisAfter.scripts - redisBefore.scripts) / result.requests;
    sample.redisReadsPerRequest = (redisAfter.reads - redisBefore.reads - OWN_READS_PER_SNAPSHOT) / result.requests;
  }
  return sample;
}

/** Rounds over every target in a rotating order, after one unrecorded warm-up each. */
async function throughput(targets: Target[], plan: { rounds: number; durationS: number; warmupS: number }): Promise<Map<string, Sample[]>> {
  for (const target of targets) await load(target, plan.warmupS);
  const samples = new Map<string, Sample[]>(targets.map((t) => [t.id, []]));
  for (let round = 0; round < plan.rounds; round++) {
    for (const target of rotate(targets, round)) {
      const sample = await measure(target, plan.durationS);
      samples.get(target.id)!.push(sample);
      console.error(`  round ${round + 1}/${plan.rounds} ${target.label.padEnd(34)} ${Math.round(sample.rps).toString().padStart(6)} req/s`);
    }
  }
  return samples;
}

/** Paced runs (~LATENCY_RATE req/s) over direct, the bare passthrough and Tollgate, rotating. */
async function latency(targets: Target[], plan: Plan): Promise<Results['latency']> {
  const runs = new Map<string, LoadResult[]>(targets.map((t) => [t.id, []]));
  for (let round = 0; round < plan.latencyRounds; round++) {
    for (const target of rotate(targets, round)) runs.get(target.id)!.push(await load(target, plan.latencyS, true));
  }
  const rows = targets.map((t) => {
    const r = runs.get(t.id)!;
    return {
      id: t.id,
      label: t.label,
      rps: median(r.map((x) => x.rps)),
      p50Ms: median(r.map((x) => x.p50Ms)),
      p99Ms: median(r.map((x) => x.p99Ms)),
      errors: r.reduce((s, x) => s + x.errors, 0),
    };
  });
  const p99 = (id: string): number => rows.find((r) => r.id === id)!.p99Ms;
  return {
    rate: LATENCY_RATE,
    connections: LATENCY_CONNECTIONS,
    durationS: plan.latencyS,
    rounds: plan.latencyRounds,
    rows,
    addedP99Ms: p99('tollgate-memory') - p99('direct'),
    passthroughAddedP99Ms: p99('undici') - p99('direct'),
  };
}

interface MemoryReading {
  rss: number;
  heapUsed: number;
  heapTotal: number;
}

/** Forces full GCs in the Tollgate process (gc-hook.mjs), then reads RSS a few times. */
async function settledMemory(server: Server): Promise<MemoryReading> {
  const reports = (): string[] => server.stderr.filter((l) => l.includes('"bench_gc"'));
  const before = reports().length;
  process.kill(server.pid, 'SIGUSR2');
  let heap = { heapUsed: Number.NaN, heapTotal: Number.NaN };
  for (let waited = 0; waited < 5_000 && reports().length === before; waited += 20) await new Promise((r) => setTimeout(r, 20));
  if (reports().length > before) heap = JSON.parse(reports().at(-1)!) as typeof heap;
  const rss: number[] = [];
  for (let i = 0; i < 5; i++) {
    await new Promise((r) => setTimeout(r, 50));
    rss.push(rssBytes(server.pid) ?? Number.NaN);
  }
  return { rss: median(rss), heapUsed: heap.heapUsed, heapTotal: heap.heapTotal };
}

async function flood(url: string, from: number, count: number): Promise<{ ok: number; failed: number; ms: number }> {
  const [cmd, args] = pinned(LOAD_CPU, node, [...tsx, here('./flood.ts'), url, String(from), String(count)]);
  const out = await run(cmd, args);
  return JSON.parse(out.trim().split('\n').pop()!) as { ok: number; failed: number; ms: number };
}

/** @param expectedRps Tollgate's measured throughput: sizes N so each phase fits `memoryPhaseS`. */
async function memoryPerClient(upstream: string, plan: Plan, expectedRps: number): Promise<Results['memory']> {
  const policy = writePolicyFile('per-ip', perIpPolicy());
  const server = await start('tollgate (memory run)', PROXY_CPU, tollgateArgs(policy, upstream, ['--expose-gc', '--import', here('./gc-hook.mjs')]), TOLLGATE_ENV);
  const url = `http://127.0.0.1:${server.port}${PER_IP_PATH}`;
  const phases: Results['memory']['phases'] = [];
  let tracked = 0;
  const phase = async (count: number): Promise<number> => {
    const r = await flood(url, tracked, count);
    tracked += count;
    const m = await settledMemory(server);
    phases.push({ clients: tracked, ...m, failed: r.failed, ms: r.ms });
    const rate = count / (r.ms / 1000);
    console.error(`  memory: ${tracked} clients tracked, RSS ${(m.rss / 2 ** 20).toFixed(1)} MiB (${Math.round(rate)} req/s)`);
    return rate;
  };
  // Warm-up: JIT, connection pools, lru-cache's lazily allocated arrays.
  const warmRate = await phase(Math.min(10_000, Math.ceil(plan.memoryClients / 10)));
  // The flood's client (undici on the load CPU) reaches ~3/4 of wrk's rate.
  const rate = Number.isFinite(expectedRps) ? 0.75 * expectedRps : warmRate;
  const n = Math.max(10_000, Math.min(plan.memoryClients, Math.floor((rate * plan.memoryPhaseS) / 10_000) * 10_000));
  await phase(n);
  await phase(n);
  await server.stop();
  const [, one, two] = phases;
  return {
    clients: n,
    phases,
    rssBytesPerClient: (two.rss - one.rss) / n,
    heapBytesPerClient: (two.heapUsed - one.heapUsed) / n,
    heapFreeBytesPerClient: (two.heapTotal - two.heapUsed - (one.heapTotal - one.heapUsed)) / n,
  };
}

async function storeOnly(plan: Plan): Promise<Results['storeOnly']> {
  const out = await run(node, ['--expose-gc', ...tsx, here('./store-memory.ts'), String(plan.storeClients)]);
  return JSON.parse(out.trim().split('\n').pop()!) as Results['storeOnly'];
}

/** Each feature variant against its store's plain route, paired per round (req/s and CPU per request). */
function featureRows(targets: Target[], samples: Map<string, Sample[]>): NonNullable<Results['features']> {
  return targets.map((t) => {
    const base = t.redis === undefined ? 'features-memory' : 'features-redis';
    const s = samples.get(t.id)!;
    return {
      id: t.id,
      label: t.label,
      rps: summarize(s.map((x) => x.rps)),
      cpuUsPerRequest: median(s.map((x) => x.cpuUsPerRequest)),
      othersCpu: median(s.map((x) => x.othersCpu)),
      errors: s.reduce((sum, x) => sum + x.errors, 0),
      vsPlain: t.id === base ? undefined : pairedRatio(samples, t.id, base),
      cpuVsPlain: t.id === base ? undefined : pairedCpuRatio(samples, t.id, base),
    };
  });
}

function rowsOf(targets: Target[], samples: Map<string, Sample[]>, directId: string): ThroughputRow[] {
  const directRps = samples.get(directId)!.map((s) => s.rps);
  return targets.map((t) => {
    const s = samples.get(t.id)!;
    const scripts = s.map((x) => x.redisScriptsPerRequest).filter((x): x is number => x !== undefined);
    const reads = s.map((x) => x.redisReadsPerRequest).filter((x): x is number => x !== undefined);
    return {
      id: t.id,
      label: t.label,
      rps: summarize(s.map((x) => x.rps)),
      vsDirect: summarize(s.map((x, i) => x.rps / directRps[i])),
      cpuUsPerRequest: median(s.map((x) => x.cpuUsPerRequest)),
      othersCpu: median(s.map((x) => x.othersCpu)),
      errors: s.reduce((sum, x) => sum + x.errors, 0),
      ...(scripts.length > 0 && { redisScriptsPerRequest: median(scripts), redisReadsPerRequest: median(reads) }),
    };
  });
}

/** Ratio a/b of req/s per round (both measured in the same round), summarised over rounds. */
function pairedRatio(samples: Map<string, Sample[]>, a: string, b: string) {
  const x = samples.get(a);
  const y = samples.get(b);
  if (x === undefined || y === undefined) return undefined;
  return summarize(x.map((s, i) => s.rps / y[i].rps));
}

/**
 * Ratio a/b of CPU per request per round: what `a` costs per request relative to `b`
 * (1.11 = 11% more). The verdict where both saturate their core: req/s then also carries
 * the load generator's and the host's swings, CPU per request does not.
 */
function pairedCpuRatio(samples: Map<string, Sample[]>, a: string, b: string) {
  const x = samples.get(a);
  const y = samples.get(b);
  if (x === undefined || y === undefined) return undefined;
  return summarize(x.map((s, i) => s.cpuUsPerRequest / y[i].cpuUsPerRequest));
}

/** A Tollgate configuration of the features phase: a policy variant on the memory or the Redis store. */
interface Variant {
  id: string;
  label: string;
  features: BenchFeatures;
  redis: boolean;
}

const VARIANTS: readonly Variant[] = [
  { id: 'features-memory', label: 'memory, plain route', features: {}, redis: false },
  { id: 'features-guards', label: 'memory + guards', features: { guards: true }, redis: false },
  { id: 'features-concurrent', label: 'memory + concurrent', features: { concurrent: true }, redis: false },
  { id: 'features-count', label: 'memory + count', features: { count: true }, redis: false },
  { id: 'features-cost', label: 'memory + cost header', features: { cost: true }, redis: false },
  { id: 'features-redis', label: 'Redis, plain route', features: {}, redis: true },
  { id: 'features-redis-count', label: 'Redis + count', features: { count: true }, redis: true },
  { id: 'features-redis-cost', label: 'Redis + cost header', features: { cost: true }, redis: true },
];

async function main(): Promise<void> {
  const plan = process.argv.includes('--quick') ? QUICK : FULL;
  const began = Date.now();
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run \`npm run build\` first (npm run bench does)`);
  const notes: string[] = [];
  if (!canPin) notes.push('taskset unavailable: processes are not pinned, numbers are noisier');
  if (loadTool === 'autocannon') notes.push('load generated with autocannon, not wrk (apt-get install -y wrk): heavier on the load CPU, so ratios to direct are lower; latency in whole ms with bursty pacing');

  console.error(`bench: ${plan === QUICK ? 'quick' : 'full'} run, load by ${loadTool}`);
  const upstream = await start('upstream', LOAD_CPU, [...tsx, here('./upstream.ts')]);
  const upstreamUrl = `http://127.0.0.1:${upstream.port}`;
  const undici = await start('undici passthrough', PROXY_CPU, [...tsx, here('./passthrough-undici.ts'), upstreamUrl]);
  const httpProxy = await start('http-proxy passthrough', PROXY_CPU, [...tsx, here('./passthrough-http-proxy.ts'), upstreamUrl]);
  const memory = await start('tollgate (memory)', PROXY_CPU, tollgateArgs(writePolicyFile('memory', examplePolicy()), upstreamUrl), TOLLGATE_ENV);
  const targets: Target[] = [
    { id: 'direct', label: 'direct to upstream', url: upstreamUrl, pid: upstream.pid },
    { id: 'undici', label: 'undici Pool.stream passthrough', url: `http://127.0.0.1:${undici.port}`, pid: undici.pid },
    { id: 'http-proxy', label: 'http-proxy passthrough (keep-alive)', url: `http://127.0.0.1:${httpProxy.port}`, pid: httpProxy.pid },
    { id: 'tollgate-memory', label: 'Tollgate, memory store', url: `http://127.0.0.1:${memory.port}`, pid: memory.pid },
  ];

  const prefix = `tollgate-bench-${process.pid}-${Date.now()}:`;
  try {
    benchRedis = await startBenchRedis(LOAD_CPU);
    if (!benchRedis.own) notes.push('redis-server not on PATH: used the shared Redis at 127.0.0.1:6379; its command counts include other clients');
    const config = writePolicyFile('redis', examplePolicy({ url: benchRedis.url, prefix }));
    const redisTollgate = await start('tollgate (redis)', PROXY_CPU, tollgateArgs(config, upstreamUrl), TOLLGATE_ENV);
    targets.push({ id: 'tollgate-redis', label: 'Tollgate, Redis store', url: `http://127.0.0.1:${redisTollgate.port}`, pid: redisTollgate.pid, redis: benchRedis });
  } catch (error) {
    notes.push(`Redis store skipped: ${(error as Error).message.split('\n').slice(0, 3).join(' | ')}`);
  }

  console.error(`throughput: ${plan.rounds} round(s) of ${plan.durationS} s per configuration, ${CONNECTIONS} connections`);
  const samples = await throughput(targets, plan);
  console.error(`latency: ~${LATENCY_RATE} req/s`);
  const lat = await latency(
    targets.filter((t) => t.id === 'direct' || t.id === 'undici' || t.id === 'tollgate-memory'),
    plan,
  );
  // Features: each variant of the benched route against the same policy without it, in
  // its own interleaved rounds (the baselines' processes stay idle meanwhile).
  const featureTargets: Target[] = [];
  for (const variant of VARIANTS) {
    if (variant.redis && benchRedis === undefined) continue;
    const policy = examplePolicy(variant.redis && benchRedis !== undefined ? { url: benchRedis.url, prefix: `${prefix}${variant.id}:` } : undefined, variant.features);
    const server = await start(`tollgate (${variant.label})`, PROXY_CPU, tollgateArgs(writePolicyFile(variant.id, policy), upstreamUrl), TOLLGATE_ENV);
    featureTargets.push({ id: variant.id, label: variant.label, url: `http://127.0.0.1:${server.port}`, pid: server.pid, ...(variant.redis && { redis: benchRedis }) });
  }
  console.error(`features: ${plan.featureRounds} round(s) of ${plan.featureDurationS} s per configuration`);
  const featureSamples = await throughput(featureTargets, { rounds: plan.featureRounds, durationS: plan.featureDurationS, warmupS: 1 });
  await stopAll();
  console.error('websocket: session route vs raw tunnel');
  let ws: WsBenchResult | undefined;
  try {
    ws = await runWsBench({ rounds: plan.wsRounds, durationS: plan.wsDurationS, warmupS: 1, cli });
  } catch (error) {
    notes.push(`WebSocket bench failed: ${(error as Error).message.split('\n')[0]}`);
  }
  // The memory run needs only an upstream; the proxies above are stopped to free CPU 1.
  const memUpstream = await start('upstream (memory run)', LOAD_CPU, [...tsx, here('./upstream.ts')]);
  const mem = await memoryPerClient(`http://127.0.0.1:${memUpstream.port}`, plan, median(samples.get('tollgate-memory')!.map((x) => x.rps)));
  await stopAll();
  const store = await storeOnly(plan);

  const rows = rowsOf(targets, samples, 'direct');
  for (const row of rows) {
    if (row.id.startsWith('tollgate') && row.errors > 0) notes.push(`${row.label}: ${row.errors} error responses (expected 0: nothing should be refused)`);
    // Decisions are micro-batched (one script per event-loop turn), so well under 1 is expected; none is not.
    if (row.id === 'tollgate-redis' && row.redisScriptsPerRequest !== undefined && row.redisScriptsPerRequest === 0) {
      notes.push('Redis store: no script reached Redis; is the store deciding locally?');
    }
  }
  const results: Results = {
    date: new Date().toISOString(),
    mode: plan === QUICK ? 'quick' : 'full',
    machine: {
      cpu: os.cpus()[0]?.model ?? 'unknown',
      cores: os.cpus().length,
      memoryGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      loadTool,
      pinned: canPin,
    },
    plan: { ...plan, connections: CONNECTIONS, request: `${BENCH_REQUEST.method} ${BENCH_REQUEST.path}`, tollgate: cli },
    throughput: rows,
    features: featureTargets.length === 0 ? undefined : featureRows(featureTargets, featureSamples),
    ratios: {
      tollgateVsPassthrough: pairedRatio(samples, 'tollgate-memory', 'undici'),
      tollgateVsPassthroughCpu: pairedCpuRatio(samples, 'tollgate-memory', 'undici'),
      redisVsMemory: pairedRatio(samples, 'tollgate-redis', 'tollgate-memory'),
      redisVsMemoryCpu: pairedCpuRatio(samples, 'tollgate-redis', 'tollgate-memory'),
      undiciVsHttpProxy: pairedRatio(samples, 'undici', 'http-proxy'),
    },
    websocket: ws,
    latency: lat,
    memory: mem,
    storeOnly: store,
    notes,
    elapsedS: Math.round((Date.now() - began) / 1000),
  };
  writeFileSync(here('./results.json'), JSON.stringify(results, null, 2) + '\n');
  printReport(results);
}

const deadline = setTimeout(() => {
  console.error(`bench: still running after ${HARD_LIMIT_MS / 1000} s; stopping`);
  void stopAll().finally(() => process.exit(1));
}, HARD_LIMIT_MS);
deadline.unref();
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void stopAll().finally(() => process.exit(130)));

main().then(
  () => clearTimeout(deadline),
  async (error: unknown) => {
    console.error(error);
    await stopAll();
    process.exitCode = 1;
  },
);
