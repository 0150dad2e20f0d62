/**
 * Instructions per request of Tollgate or the bare undici passthrough, counted by
 * callgrind: steady where CPU time on a shared host is not (it leaves out the kernel's
 * side, which strace shows to be the same syscalls for both: 2 read, 1 writev, 1 write).
 * The server runs under `valgrind --tool=callgrind --instr-atstart=no`; after 8,000
 * warm-up requests counting is switched on for N requests of the bench's request and
 * policy over C keep-alive connections, then off. (After 4,000 the passthrough's count
 * swung 0.26-0.33M, its JIT still tiering up in the counted window; after 8,000 it read
 * 0.217-0.218M.)
 *
 *   npm run build && node --import tsx bench/instructions.ts tollgate|undici [--requests 3000] [--connections 50] [--dist DIR] [--redis] [--features guards,concurrent,count,cost] [--keep DIR] [--warmup 8000]
 *
 * --features: those features on the benched route (bench/policies.ts, as bench/profile.ts
 * takes them), for what a feature costs where it is configured, without the host's noise.
 *
 * --redis: Tollgate on the Redis store (its own redis-server; a 5 s deadline, as the
 * server runs ~50x slower under valgrind). Batches are then larger than at full speed,
 * so the script calls per request are printed beside the count; compare memory and
 * Redis at the same --connections.
 * Needs valgrind (apt-get install -y valgrind); slow (~1 minute per run).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BENCH_REQUEST, examplePolicy, writePolicyFile, type BenchFeatures } from './policies.js';
import { hasCommand, startServer } from './processes.js';
import { startBenchRedis } from './redis.js';

const option = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : process.argv[i + 1];
};
const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url));
const target = process.argv[2];
if (target !== 'tollgate' && target !== 'undici') throw new Error('usage: bench/instructions.ts tollgate|undici [--requests N] [--connections C] [--dist DIR]');
if (!hasCommand('valgrind')) throw new Error('valgrind is not installed (apt-get install -y valgrind)');
const requests = Number(option('--requests', '3000'));
const connections = Number(option('--connections', '50'));
const dist = path.resolve(option('--dist', here('../dist')));
const WARMUP = Number(option('--warmup', '8000'));

const redis = process.argv.includes('--redis') && target === 'tollgate' ? await startBenchRedis(0) : undefined;
const featureList = option('--features', '').split(',').filter(Boolean);
const knownFeatures = ['guards', 'concurrent', 'count', 'cost'];
for (const f of featureList) if (!knownFeatures.includes(f)) throw new Error(`unknown feature ${f}: ${knownFeatures.join(', ')}`);
const features = Object.fromEntries(featureList.map((f) => [f, true])) as BenchFeatures;
const policy = examplePolicy(redis === undefined ? undefined : { url: redis.url, prefix: 'bench-instructions:', timeout: '5s' }, features);
// --keep DIR: leave the callgrind files there (for callgrind_annotate) instead of a temp dir removed after.
const keep = process.argv.includes('--keep') ? path.resolve(option('--keep', '')) : undefined;
const out = keep ?? mkdtempSync(path.join(tmpdir(), 'tollgate-callgrind-'));
const upstream = await startServer('upstream', 0, process.execPath, ['--import', 'tsx', here('./upstream.ts')]);
const upstreamUrl = `http://127.0.0.1:${upstream.port}`;
const valgrind = ['--tool=callgrind', '--instr-atstart=no', '--smc-check=all', `--callgrind-out-file=${out}/callgrind.%p`, process.execPath];
const args =
  target === 'undici'
    ? [...valgrind, '--import', 'tsx', here('./passthrough-undici.ts'), upstreamUrl]
    : [...valgrind, path.join(dist, 'cli.js'), 'serve', '--config', writePolicyFile('instructions', policy), '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--upstream', upstreamUrl];
const server = await startServer(target, 1, 'valgrind', args, { LOG_LEVEL: 'info' });

const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
function request(): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request({ port: server.port, path: BENCH_REQUEST.path, method: BENCH_REQUEST.method, headers: BENCH_REQUEST.headers, agent, timeout: 30_000 }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
      res.resume();
      res.on('end', resolve);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', reject);
    req.end();
  });
}
async function send(n: number): Promise<void> {
  let sent = 0;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (sent++ < n) await request();
    }),
  );
}

try {
  await send(WARMUP);
  const before = await redis?.counters();
  execFileSync('callgrind_control', ['-i', 'on', String(server.pid)], { stdio: 'ignore' });
  await send(requests);
  execFileSync('callgrind_control', ['-i', 'off', String(server.pid)], { stdio: 'ignore' });
  const after = await redis?.counters();
  execFileSync('callgrind_control', ['-d', String(server.pid)], { stdio: 'ignore' });
  let total = 0;
  for (const file of readdirSync(out)) {
    const totals = /^totals:\s*(\d+)/m.exec(readFileSync(path.join(out, file), 'utf8'));
    if (totals) total += Number(totals[1]);
  }
  const scripts = before !== undefined && after !== undefined ? `, redis: ${((after.scripts - before.scripts) / requests).toFixed(3)} scripts/request` : '';
  const label = `${target}${redis === undefined ? '' : ' (redis)'}${featureList.length === 0 ? '' : ` + ${featureList.join(' + ')}`}${dist === here('../dist') ? '' : ` (${dist})`}`;
  console.log(`${label}: ${(total / requests / 1e6).toFixed(3)}M instructions/request over ${requests} requests, ${connections} connections${scripts}`);
} finally {
  agent.destroy();
  await server.stop();
  await upstream.stop();
  await redis?.close();
  if (keep === undefined) rmSync(out, { recursive: true, force: true });
}
