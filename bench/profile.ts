/**
 * Where Tollgate's CPU goes under load: runs the benched route (bench/policies.ts, memory
 * store unless --redis) with `node --cpu-prof`, pinned as the bench pins it, for a fixed
 * wrk run, then prints the self time by function and by package or src/ module.
 * --undici profiles the bare passthrough instead (the baseline of the comparison).
 *
 *   npm run build && node --import tsx bench/profile.ts [--seconds 8] [--redis | --undici] [--top 30] [--features guards,concurrent,count,cost]
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runLoad } from './load.js';
import { BENCH_REQUEST, examplePolicy, writePolicyFile, type BenchFeatures } from './policies.js';
import { startServer, type Server } from './processes.js';
import { startBenchRedis } from './redis.js';

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : process.argv[i + 1];
};
const seconds = Number(arg('--seconds', '8'));
const top = Number(arg('--top', '30'));
const features = Object.fromEntries(arg('--features', '').split(',').filter(Boolean).map((f) => [f, true])) as BenchFeatures;
const root = fileURLToPath(new URL('..', import.meta.url));
const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url));

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function where(url: string): string {
  if (url === '') return '(native)';
  const nm = url.indexOf('node_modules/');
  if (nm >= 0) return url.slice(nm + 13).split('/')[0];
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return 'src/' + url.slice(dist + 6).replace(/\.js$/, '.ts');
  if (url.startsWith('node:')) return url;
  return url.split('/').slice(-2).join('/');
}

async function main(): Promise<void> {
  const servers: Server[] = [];
  const undici = process.argv.includes('--undici');
  const redis = process.argv.includes('--redis') && !undici ? await startBenchRedis(0) : undefined;
  try {
    const upstream = await startServer('upstream', 0, process.execPath, ['--import', 'tsx', here('./upstream.ts')]);
    servers.push(upstream);
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-profile-'));
    const upstreamUrl = `http://127.0.0.1:${upstream.port}`;
    const policy = examplePolicy(redis === undefined ? undefined : { url: redis.url, prefix: `profile-${process.pid}:` }, features);
    const serve = undici
      ? ['--import', 'tsx', here('./passthrough-undici.ts'), upstreamUrl]
      : [path.join(root, 'dist/cli.js'), 'serve', '--config', writePolicyFile('profile', policy), '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--upstream', upstreamUrl];
    const server = await startServer(undici ? 'undici' : 'tollgate', 1, process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, ...serve], { LOG_LEVEL: 'info' });
    servers.push(server);
    const url = `http://127.0.0.1:${server.port}${BENCH_REQUEST.path}`;
    await runLoad({ url, method: BENCH_REQUEST.method, headers: BENCH_REQUEST.headers, connections: 50, durationS: 2, cpu: 0 });
    const result = await runLoad({ url, method: BENCH_REQUEST.method, headers: BENCH_REQUEST.headers, connections: 50, durationS: seconds, cpu: 0 });
    await server.stop(); // SIGTERM: the drain ends the process and --cpu-prof writes its profile
    const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
    if (file === undefined) throw new Error(`no profile in ${dir}`);
    const profile = JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as Profile;
    const self = new Map<number, number>();
    profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
    const total = [...self.values()].reduce((a, b) => a + b, 0);
    const byFunction = new Map<string, number>();
    const byPlace = new Map<string, number>();
    for (const node of profile.nodes) {
      const us = self.get(node.id) ?? 0;
      if (us === 0) continue;
      const place = where(node.callFrame.url);
      const fn = `${node.callFrame.functionName || '(anonymous)'} ${place}:${node.callFrame.lineNumber + 1}`;
      byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
      byPlace.set(place, (byPlace.get(place) ?? 0) + us);
    }
    const pct = (us: number): string => `${((100 * us) / total).toFixed(1)}%`.padStart(6);
    console.log(`${result.rps.toFixed(0)} req/s over ${seconds} s; ${(total / 1e6).toFixed(1)} s of samples`);
    console.log('\nself time by place:');
    for (const [place, us] of [...byPlace].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${place}`);
    console.log('\nself time by function:');
    for (const [fn, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${fn}`);
    // What Tollgate adds over a bare passthrough lives here: its own modules and the libraries it calls per request.
    const ours = (fn: string): boolean => / src\/| prom-client:| lru-cache:| node:internal\/crypto/.test(fn);
    const own = [...byFunction].filter(([fn]) => ours(fn));
    console.log(`\nTollgate's own code and per-request libraries: ${pct(own.reduce((a, [, us]) => a + us, 0))} in all`);
    for (const [fn, us] of own.sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${fn}`);
  } finally {
    await Promise.allSettled(servers.map((s) => s.stop()));
    await redis?.close();
  }
}

void main();
