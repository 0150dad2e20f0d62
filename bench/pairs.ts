/**
 * Many short interleaved rounds of a few Tollgate configurations, for A/B questions the
 * full bench answers too coarsely on a noisy host: each round runs every target once
 * (rotating the order) and the ratio of each target to the first is taken per round.
 *
 *   node --import tsx bench/pairs.ts [--rounds 12] [--seconds 3] TARGET...
 *
 * TARGET is `undici` (the bare passthrough), `memory`, `redis`, or a feature on the memory
 * store (`guards`, `concurrent`, `count`, `cost`: see bench/policies.ts), a Tollgate target
 * optionally `@DIST` for another build's dist/ directory (inside this checkout, so its
 * imports resolve): `memory redis` (the default) measures Redis / memory; `undici memory`
 * what Tollgate costs over the passthrough; `memory guards` what the guards cost;
 * `redis@.bench/dist-before redis` compares two builds on Redis. Each target is compared
 * with the first by req/s and by CPU per request, per round.
 * Same layout as bench/run.ts: load, upstream and Redis on CPU 0, Tollgate on CPU 1.
 */
import { fileURLToPath } from 'node:url';
import { runLoad } from './load.js';
import { BENCH_REQUEST, examplePolicy, writePolicyFile } from './policies.js';
import { startServer, type Server } from './processes.js';
import { startBenchRedis, type BenchRedis } from './redis.js';
import { cpuTimeMs, median, rotate } from './stats.js';

const LOAD_CPU = 0;
const PROXY_CPU = 1;
const CONNECTIONS = 50;
const WARMUP_S = 2;

const root = fileURLToPath(new URL('..', import.meta.url));

interface Target {
  label: string;
  server: Server;
}

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(name);
  return at === -1 ? fallback : Number(process.argv[at + 1]);
}

function targetSpecs(): string[] {
  const specs: string[] = [];
  for (let i = 2; i < process.argv.length; i++) {
    if (process.argv[i].startsWith('--')) i++;
    else specs.push(process.argv[i]);
  }
  return specs.length > 0 ? specs : ['memory', 'redis'];
}

const servers: Server[] = [];
let redis: BenchRedis | undefined;

async function stopAll(): Promise<void> {
  await Promise.allSettled(servers.splice(0).map((s) => s.stop()));
  await redis?.close();
}

async function main(): Promise<void> {
  const rounds = option('--rounds', 12);
  const seconds = option('--seconds', 3);
  const node = process.execPath;
  const upstream = await startServer('upstream', LOAD_CPU, node, ['--import', 'tsx', fileURLToPath(new URL('./upstream.ts', import.meta.url))]);
  servers.push(upstream);
  const upstreamUrl = `http://127.0.0.1:${upstream.port}`;
  const targets: Target[] = [];
  for (const [index, spec] of targetSpecs().entries()) {
    const [kind, dist = 'dist'] = spec.split('@');
    if (kind === 'undici') {
      const server = await startServer(spec, PROXY_CPU, node, ['--import', 'tsx', fileURLToPath(new URL('./passthrough-undici.ts', import.meta.url)), upstreamUrl]);
      servers.push(server);
      targets.push({ label: spec, server });
      continue;
    }
    const features = ['guards', 'concurrent', 'count', 'cost'];
    if (kind !== 'memory' && kind !== 'redis' && !features.includes(kind)) {
      throw new Error(`unknown target ${spec}: undici, memory[@DIST], redis[@DIST] or ${features.join('|')}[@DIST]`);
    }
    if (kind === 'redis') redis ??= await startBenchRedis(LOAD_CPU);
    const policy =
      kind === 'memory'
        ? examplePolicy()
        : kind === 'redis'
          ? examplePolicy({ url: redis!.url, prefix: `tollgate-pairs-${process.pid}-${index}:` })
          : examplePolicy(undefined, { [kind]: true });
    const cli = `${root}${dist.replace(/\/$/, '')}/cli.js`;
    const args = [cli, 'serve', '--config', writePolicyFile(`pairs-${index}`, policy), '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--upstream', upstreamUrl];
    const server = await startServer(spec, PROXY_CPU, node, args, { LOG_LEVEL: 'info' });
    servers.push(server);
    targets.push({ label: spec, server });
  }
  const load = (t: Target, durationS: number) =>
    runLoad({ url: `http://127.0.0.1:${t.server.port}${BENCH_REQUEST.path}`, method: 'POST', headers: BENCH_REQUEST.headers, connections: CONNECTIONS, durationS, cpu: LOAD_CPU });

  for (const t of targets) await load(t, WARMUP_S);
  const rps = new Map<string, number[]>(targets.map((t) => [t.label, []]));
  const cpus = new Map<string, number[]>(targets.map((t) => [t.label, []]));
  for (let round = 0; round < rounds; round++) {
    for (const t of rotate(targets, round)) {
      const cpuBefore = cpuTimeMs(t.server.pid) ?? Number.NaN;
      const redisBefore = redis?.pid === undefined ? Number.NaN : (cpuTimeMs(redis.pid) ?? Number.NaN);
      const result = await load(t, seconds);
      const cpu = (((cpuTimeMs(t.server.pid) ?? Number.NaN) - cpuBefore) * 1000) / result.requests;
      const redisCpu = redis?.pid === undefined ? Number.NaN : (((cpuTimeMs(redis.pid) ?? Number.NaN) - redisBefore) * 1000) / result.requests;
      rps.get(t.label)!.push(result.rps);
      cpus.get(t.label)!.push(cpu);
      const redisNote = t.label.startsWith('redis') ? `  redis ${redisCpu.toFixed(1)} µs/req` : '';
      console.log(`round ${String(round + 1).padStart(2)}  ${t.label.padEnd(28)} ${Math.round(result.rps).toString().padStart(6)} req/s  ${cpu.toFixed(1)} µs/req${redisNote}  errors ${result.errors}`);
    }
  }
  const base = rps.get(targets[0].label)!;
  const baseCpu = cpus.get(targets[0].label)!;
  for (const t of targets.slice(1)) {
    const ratios = rps.get(t.label)!.map((x, i) => x / base[i]);
    const cpuRatios = cpus.get(t.label)!.map((x, i) => x / baseCpu[i]);
    console.log(`${t.label} / ${targets[0].label}: req/s median ${median(ratios).toFixed(2)}  pairs ${ratios.map((r) => r.toFixed(2)).join(' ')}`);
    console.log(`${t.label} / ${targets[0].label}: CPU per request median ${median(cpuRatios).toFixed(2)}  pairs ${cpuRatios.map((r) => r.toFixed(2)).join(' ')}`);
  }
}

main()
  .catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(() => void stopAll());
