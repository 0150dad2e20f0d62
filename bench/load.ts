/**
 * One load run against one URL with wrk (preferred: C, cheap on the shared CPU) or
 * autocannon (installed with the dev dependencies) when wrk is missing.
 */
import { fileURLToPath } from 'node:url';
import { hasCommand, pinned, run } from './processes.js';

export type LoadTool = 'wrk' | 'autocannon';

/** wrk when installed; `TOLLGATE_BENCH_LOAD=autocannon` forces the fallback (to check it). */
export const loadTool: LoadTool = process.env.TOLLGATE_BENCH_LOAD !== 'autocannon' && hasCommand('wrk') ? 'wrk' : 'autocannon';

const WRK_SCRIPT = fileURLToPath(new URL('./wrk-report.lua', import.meta.url));
const AUTOCANNON = fileURLToPath(new URL('../node_modules/autocannon/autocannon.js', import.meta.url));

export interface LoadOptions {
  url: string;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  connections: number;
  durationS: number;
  /** Paced load: about this many requests per second in total (open loop for autocannon, per-connection delay for wrk). */
  rate?: number;
  /** CPU the load generator is pinned to. */
  cpu: number;
}

export interface LoadResult {
  requests: number;
  rps: number;
  /** Responses with status >= 400 (wrk) / outside 2xx (autocannon), plus socket errors and timeouts. */
  errors: number;
  p50Ms: number;
  p99Ms: number;
}

async function runWrk(o: LoadOptions): Promise<LoadResult> {
  // wrk reads whole seconds only (`-d1.5s` is a usage error).
  const args = ['-t1', `-c${o.connections}`, `-d${Math.max(1, Math.round(o.durationS))}s`, '-s', WRK_SCRIPT];
  for (const [name, value] of Object.entries(o.headers ?? {})) args.push('-H', `${name}: ${value}`);
  args.push(o.url);
  // Each connection waits `delay` before each request: connections / delay ~ rate.
  const delayMs = o.rate === undefined ? 0 : Math.round((o.connections * 1000) / o.rate);
  const [cmd, argv] = pinned(o.cpu, 'wrk', args);
  const out = await run(cmd, argv, { WRK_METHOD: o.method ?? 'GET', WRK_DELAY_MS: String(delayMs) });
  const line = out.split('\n').find((l) => l.startsWith('WRK_JSON '));
  if (line === undefined) throw new Error(`wrk printed no summary:\n${out}`);
  const r = JSON.parse(line.slice('WRK_JSON '.length)) as Record<string, number>;
  return {
    requests: r.requests,
    rps: r.requests / (r.durationUs / 1e6),
    errors: r.errorStatus + r.connectErrors + r.readErrors + r.writeErrors + r.timeouts,
    p50Ms: r.p50Us / 1000,
    p99Ms: r.p99Us / 1000,
  };
}

interface AutocannonJson {
  requests: { total: number };
  duration: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  latency: { p50: number; p99: number };
}

async function runAutocannon(o: LoadOptions): Promise<LoadResult> {
  const args = [AUTOCANNON, '-c', String(o.connections), '-d', String(o.durationS), '-m', o.method ?? 'GET', '--json'];
  for (const [name, value] of Object.entries(o.headers ?? {})) args.push('-H', `${name}=${value}`);
  if (o.rate !== undefined) args.push('-R', String(o.rate));
  args.push(o.url);
  const [cmd, argv] = pinned(o.cpu, process.execPath, args);
  const r = JSON.parse(await run(cmd, argv)) as AutocannonJson;
  return {
    requests: r.requests.total,
    rps: r.requests.total / r.duration,
    errors: r.non2xx + r.errors + r.timeouts,
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
  };
}

export function runLoad(options: LoadOptions): Promise<LoadResult> {
  return loadTool === 'wrk' ? runWrk(options) : runAutocannon(options);
}
