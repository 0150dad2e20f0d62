/**
 * WebSocket message throughput through a `session:` route (ws's parser both ways,
 * every limit configured) against the raw tunnel of a route without one, in the same
 * Tollgate process and the same run, as a ratio (target >= 0.8). Method as in
 * ../shared/BENCH.md: Tollgate alone on CPU 1, the load and the ws echo upstream on
 * CPU 0, one unrecorded warm-up each, then rounds in a rotating order; medians and
 * min-max over rounds, ratios paired per round. About 30 s.
 *
 *   npm run build && node --import tsx bench/ws.ts [--rounds N] [--seconds S]
 *
 * `runWsBench()` is what bench/run.ts can call to add the figure to a full run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { writePolicyFile } from './policies.js';
import { canPin, pinned, startServer, type Server } from './processes.js';
import { benchCpuMs, cpuTimeMs, machineBusyMs, rotate, summarize, type Summary } from './stats.js';

const LOAD_CPU = 0;
const PROXY_CPU = 1;
const CONNECTIONS = 16;
const WINDOW = 32; // messages in flight per connection
const PAYLOAD_BYTES = 64;

const root = fileURLToPath(new URL('..', import.meta.url));
const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url));

export interface WsBenchOptions {
  rounds: number;
  durationS: number;
  warmupS: number;
  /** Tollgate's dist/cli.js (default: this checkout's). */
  cli?: string;
}

export interface WsBenchResult {
  pinned: boolean;
  connections: number;
  window: number;
  payloadBytes: number;
  /** Echoed messages per second (each crosses Tollgate twice). */
  raw: Summary;
  session: Summary;
  /** session / raw, per round. */
  ratio: Summary;
  /** Tollgate CPU (user+system) per echoed message, µs. */
  cpuUsPerMessage: { raw: Summary; session: Summary };
  /** Tollgate CPU over wall time while counting (1 = CPU 1 saturated). */
  proxyBusy: { raw: Summary; session: Summary };
  /** Share of the machine used by processes outside the bench while counting (noise; above ~0.1 do not compare). */
  othersCpu: Summary;
  errors: number;
}

function policy(upstreamPort: number): string {
  return `upstream: http://127.0.0.1:${upstreamPort}
routes:
  - id: ws-raw
    match: { path: /ws/raw, websocket: true }
    limits: []
  - id: ws-session
    match: { path: /ws/session, websocket: true }
    limits: []
    session:
      maxDuration: 1h
      idleTimeout: 10m
      maxMessageSize: 1mb
      messages: { limit: 1000000000, window: 1m }
`;
}

interface Sample {
  rate: number;
  cpuUsPerMessage: number;
  busy: number;
  others: number;
  errors: number;
}

/** The long-lived load generator (bench/ws-load.ts) on the load CPU, driven one run per stdin line. */
class Loader {
  readonly #child: ChildProcess;
  readonly #lines: Interface;
  readonly #waiting: Array<(line: string) => void> = [];

  constructor() {
    const [cmd, argv] = pinned(LOAD_CPU, process.execPath, ['--import', 'tsx', here('ws-load.ts'), String(CONNECTIONS), String(WINDOW), String(PAYLOAD_BYTES)]);
    this.#child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'inherit'] });
    this.#lines = createInterface({ input: this.#child.stdout! });
    this.#lines.on('line', (line) => this.#waiting.shift()?.(line));
  }

  get pid(): number {
    return this.#child.pid!;
  }

  /** One run: `onStart` when counting begins, then the result. */
  async run(url: string, durationS: number, onStart: () => void = () => {}): Promise<{ messages: number; seconds: number; errors: number }> {
    const next = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('ws load generator: no answer')), (durationS + 20) * 1000);
        this.#waiting.push((line) => {
          clearTimeout(timer);
          resolve(line);
        });
      });
    const started = next();
    this.#child.stdin!.write(`${url} ${durationS * 1000}\n`);
    const first = await started;
    if (first !== 'start') return JSON.parse(first) as { messages: number; seconds: number; errors: number };
    const done = next();
    onStart();
    return JSON.parse(await done) as { messages: number; seconds: number; errors: number };
  }

  stop(): void {
    this.#child.stdin!.end();
    this.#child.kill('SIGTERM');
  }
}

async function measure(loader: Loader, url: string, pids: number[], tollgatePid: number, durationS: number): Promise<Sample> {
  let cpuBefore = Number.NaN;
  let busyBefore = Number.NaN;
  let began = 0;
  const result = await loader.run(url, durationS, () => {
    cpuBefore = cpuTimeMs(tollgatePid) ?? Number.NaN;
    busyBefore = (machineBusyMs() ?? Number.NaN) - benchCpuMs(pids);
    began = performance.now();
  });
  const wallMs = performance.now() - began;
  const cpuMs = (cpuTimeMs(tollgatePid) ?? Number.NaN) - cpuBefore;
  const othersMs = (machineBusyMs() ?? Number.NaN) - benchCpuMs(pids) - busyBefore;
  return {
    rate: result.messages / result.seconds,
    cpuUsPerMessage: (cpuMs * 1000) / result.messages,
    busy: cpuMs / wallMs,
    others: Math.max(0, othersMs) / (wallMs * os.cpus().length),
    errors: result.errors,
  };
}

export async function runWsBench(options: WsBenchOptions): Promise<WsBenchResult> {
  const servers: Server[] = [];
  let loader: Loader | undefined;
  try {
    const upstream = await startServer('ws-upstream', LOAD_CPU, process.execPath, ['--import', 'tsx', here('ws-upstream.ts')]);
    servers.push(upstream);
    const config = writePolicyFile('ws', policy(upstream.port));
    const cli = options.cli ?? `${root}dist/cli.js`;
    const tollgate = await startServer('tollgate', PROXY_CPU, process.execPath, [cli, 'serve', '--config', config, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0'], {
      LOG_LEVEL: 'info', // the listening line carries the port
    });
    servers.push(tollgate);
    loader = new Loader();
    const pids = [upstream.pid, tollgate.pid, loader.pid];
    const targets = [
      { id: 'raw' as const, url: `ws://127.0.0.1:${tollgate.port}/ws/raw` },
      { id: 'session' as const, url: `ws://127.0.0.1:${tollgate.port}/ws/session` },
    ];
    for (const target of targets) await loader.run(target.url, options.warmupS);
    const samples = { raw: [] as Sample[], session: [] as Sample[] };
    for (let round = 0; round < options.rounds; round++) {
      for (const target of rotate(targets, round)) {
        const sample = await measure(loader, target.url, pids, tollgate.pid, options.durationS);
        samples[target.id].push(sample);
        console.error(
          `  round ${round + 1}/${options.rounds} ${target.id.padEnd(8)} ${Math.round(sample.rate).toString().padStart(7)} msg/s  ` +
            `${sample.cpuUsPerMessage.toFixed(2)} µs/msg  busy ${sample.busy.toFixed(2)}  others ${sample.others.toFixed(2)}`,
        );
      }
    }
    const pick = (id: 'raw' | 'session', f: (s: Sample) => number): Summary => summarize(samples[id].map(f));
    return {
      pinned: canPin,
      connections: CONNECTIONS,
      window: WINDOW,
      payloadBytes: PAYLOAD_BYTES,
      raw: pick('raw', (s) => s.rate),
      session: pick('session', (s) => s.rate),
      ratio: summarize(samples.session.map((s, i) => s.rate / samples.raw[i].rate)),
      cpuUsPerMessage: { raw: pick('raw', (s) => s.cpuUsPerMessage), session: pick('session', (s) => s.cpuUsPerMessage) },
      proxyBusy: { raw: pick('raw', (s) => s.busy), session: pick('session', (s) => s.busy) },
      othersCpu: summarize([...samples.raw, ...samples.session].map((s) => s.others)),
      errors: [...samples.raw, ...samples.session].reduce((sum, s) => sum + s.errors, 0),
    };
  } finally {
    loader?.stop();
    await Promise.allSettled(servers.map((s) => s.stop()));
  }
}

function range(s: Summary, digits = 0): string {
  return `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}-${s.max.toFixed(digits)})`;
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argument = (name: string, fallback: number): number => {
    const index = process.argv.indexOf(name);
    return index < 0 ? fallback : Number(process.argv[index + 1]);
  };
  const hardLimit = setTimeout(() => {
    console.error('bench/ws.ts: over its time limit, stopping');
    process.exit(1);
  }, 120_000);
  hardLimit.unref();
  const r = await runWsBench({ rounds: argument('--rounds', 3), durationS: argument('--seconds', 3), warmupS: 1 });
  console.log(`WebSocket echo, ${r.connections} connections x ${r.window} in flight, ${r.payloadBytes}-byte messages${r.pinned ? '' : ' (not pinned)'}`);
  console.log(`  raw tunnel        ${range(r.raw)} msg/s   ${range(r.cpuUsPerMessage.raw, 2)} µs/msg   proxy busy ${range(r.proxyBusy.raw, 2)}`);
  console.log(`  session: route    ${range(r.session)} msg/s   ${range(r.cpuUsPerMessage.session, 2)} µs/msg   proxy busy ${range(r.proxyBusy.session, 2)}`);
  console.log(`  session / raw     ${range(r.ratio, 2)}   (target >= 0.8)   errors ${r.errors}   others CPU ${range(r.othersCpu, 2)}`);
}
