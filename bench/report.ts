/** The bench's results: their shape (bench/results.json) and the printed table. */
import type { Summary } from './stats.js';
import type { WsBenchResult } from './ws.js';

/** One configuration of the features phase, against its store's plain route (same process layout). */
export interface FeatureRow {
  id: string;
  label: string;
  rps: Summary;
  cpuUsPerRequest: number;
  othersCpu: number;
  errors: number;
  /** req/s of this variant / req/s of the plain route, per round (absent for the plain rows). */
  vsPlain?: Summary;
  /** CPU per request of this variant / the plain route's, per round. */
  cpuVsPlain?: Summary;
}

/** What each feature may cost the benched route (req/s ratio to the same policy without it). */
const FEATURE_TARGETS: Readonly<Record<string, number>> = {
  'features-guards': 0.95,
  'features-concurrent': 0.95,
};

export interface ThroughputRow {
  id: string;
  label: string;
  rps: Summary;
  /** rps / direct rps, per round. */
  vsDirect: Summary;
  /** CPU time of the server under test per request (for `direct`: the upstream's). */
  cpuUsPerRequest: number;
  /** Share of the machine's CPU that processes outside the bench used during the runs (0.05 = 5%): noise. */
  othersCpu: number;
  /** Error responses and socket errors over all rounds. */
  errors: number;
  /** Scripts (EVALSHA/EVAL) Redis ran per request (Redis store only; target 1). */
  redisScriptsPerRequest?: number;
  /** Socket reads Redis processed per request: network round trips after batching. */
  redisReadsPerRequest?: number;
}

interface LatencyFigures {
  id: string;
  label: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

export interface Results {
  date: string;
  mode: 'full' | 'quick';
  machine: { cpu: string; cores: number; memoryGiB: number; node: string; loadTool: string; pinned: boolean };
  plan: Record<string, unknown>;
  throughput: ThroughputRow[];
  /** The features phase: guards, concurrency, count, cost header (memory and Redis) beside the plain route. */
  features?: FeatureRow[];
  /** req/s ratios and (…Cpu) CPU-per-request ratios, paired per round. */
  ratios: {
    tollgateVsPassthrough?: Summary;
    tollgateVsPassthroughCpu?: Summary;
    redisVsMemory?: Summary;
    redisVsMemoryCpu?: Summary;
    undiciVsHttpProxy?: Summary;
  };
  websocket?: WsBenchResult;
  latency: {
    rate: number;
    connections: number;
    durationS: number;
    rounds: number;
    rows: LatencyFigures[];
    /** Tollgate (memory store) p99 minus direct p99. */
    addedP99Ms: number;
    /** The bare undici passthrough's p99 minus direct p99: what any proxy hop costs here. */
    passthroughAddedP99Ms: number;
  };
  memory: {
    clients: number;
    phases: { clients: number; rss: number; heapUsed: number; heapTotal: number; failed: number; ms: number }[];
    rssBytesPerClient: number;
    /** Live V8 heap after full GC. */
    heapBytesPerClient: number;
    /** Growth of V8's committed-but-free heap (kept from the flood's garbage), per client. */
    heapFreeBytesPerClient: number;
  };
  storeOnly: { clients: number; keyExample: string; heapBytesPerKey: number; rssBytesPerKey: number };
  notes: string[];
  elapsedS: number;
}

const k = (n: number): string => (n >= 10_000 ? `${(n / 1000).toFixed(1)}k` : String(Math.round(n)));
const f2 = (n: number): string => n.toFixed(2);
const mib = (n: number): string => `${(n / 2 ** 20).toFixed(1)} MiB`;

function spread(s: Summary, fmt: (n: number) => string): string {
  return s.samples.length > 1 ? `${fmt(s.median)} (${fmt(s.min)}-${fmt(s.max)})` : fmt(s.median);
}

function verdict(ok: boolean): string {
  return ok ? 'ok' : 'MISSED';
}

export function printReport(r: Results): void {
  const out: string[] = [];
  const m = r.machine;
  out.push(`Tollgate bench (${r.mode}), ${r.date}`);
  out.push(`${m.cpu} x${m.cores}, ${m.memoryGiB} GiB, Node ${m.node}, load: ${m.loadTool}, ${m.pinned ? 'pinned: load+upstream+redis CPU0, proxy CPU1' : 'not pinned'}`);
  out.push('');
  out.push(`Throughput: ${String(r.plan.request)}, ${String(r.plan.connections)} connections, ${String(r.plan.durationS)} s x ${String(r.plan.rounds)} rounds, median (min-max)`);
  out.push(`${'configuration'.padEnd(36)}${'req/s'.padEnd(22)}${'x direct'.padEnd(20)}${'CPU us/req'.padEnd(12)}${'others CPU'.padEnd(12)}errors`);
  for (const row of r.throughput) {
    out.push(
      `${row.label.padEnd(36)}${spread(row.rps, k).padEnd(22)}${spread(row.vsDirect, f2).padEnd(20)}${(Number.isNaN(row.cpuUsPerRequest) ? '-' : row.cpuUsPerRequest.toFixed(1)).padEnd(12)}${(Number.isNaN(row.othersCpu) ? '-' : `${Math.round(row.othersCpu * 100)}%`).padEnd(12)}${row.errors}`,
    );
  }
  const busiest = Math.max(...r.throughput.map((row) => row.othersCpu).filter((x) => !Number.isNaN(x)));
  out.push(`("others CPU": share of the ${m.cores} CPUs used by processes outside the bench during the runs; above ~10% the machine is too busy for stable figures)`);
  if (busiest > 0.1) out.push(`WARNING: other processes used up to ${Math.round(busiest * 100)}% of the CPUs during these runs; re-run on a quieter machine before comparing`);
  out.push('');
  const { tollgateVsPassthrough: tp, tollgateVsPassthroughCpu: tpc, redisVsMemory: rm, redisVsMemoryCpu: rmc, undiciVsHttpProxy: uh } = r.ratios;
  if (tpc) out.push(`Tollgate / undici, CPU per req  ${spread(tpc, f2).padEnd(22)} target <= 1.11  ${verdict(tpc.median <= 1.11)}  (the verdict where both saturate their core)`);
  if (tp) out.push(`Tollgate / undici passthrough   ${spread(tp, f2).padEnd(22)} target >= 0.90  ${verdict(tp.median >= 0.9)}  (req/s)`);
  if (rm) out.push(`Redis store / memory store      ${spread(rm, f2).padEnd(22)} target >= 0.85  ${verdict(rm.median >= 0.85)}  (req/s)`);
  else out.push('Redis store / memory store      not measured (see notes)');
  if (rmc) out.push(`Redis / memory, CPU per req     ${spread(rmc, f2)}`);
  const redisRow = r.throughput.find((row) => row.id === 'tollgate-redis');
  if (redisRow?.redisScriptsPerRequest !== undefined) {
    out.push(`Redis scripts per request       ${f2(redisRow.redisScriptsPerRequest).padEnd(22)} target <= 1     ${verdict(redisRow.redisScriptsPerRequest <= 1.01)}  (micro-batched)`);
    out.push(`Redis socket reads per request  ${f2(redisRow.redisReadsPerRequest ?? Number.NaN).padEnd(22)} (round trips seen by Redis; < 1 = several decisions per call)`);
  }
  if (uh) out.push(`undici / http-proxy passthrough ${spread(uh, f2)}`);
  out.push('');
  if (r.features !== undefined) {
    out.push(`Features on the benched route (${String(r.plan.featureDurationS)} s x ${String(r.plan.featureRounds)} rounds): each against the same policy without it`);
    out.push(`${'configuration'.padEnd(28)}${'req/s'.padEnd(20)}${'x plain'.padEnd(20)}${'CPU us/req'.padEnd(12)}${'CPU x plain'.padEnd(20)}errors`);
    for (const row of r.features) {
      const target = FEATURE_TARGETS[row.id];
      const ratio = row.vsPlain === undefined ? '-' : spread(row.vsPlain, f2);
      const judged = target === undefined || row.vsPlain === undefined ? '' : `  target >= ${target.toFixed(2)} ${verdict(row.vsPlain.median >= target)}`;
      out.push(
        `${row.label.padEnd(28)}${spread(row.rps, k).padEnd(20)}${ratio.padEnd(20)}${row.cpuUsPerRequest.toFixed(1).padEnd(12)}${(row.cpuVsPlain === undefined ? '-' : spread(row.cpuVsPlain, f2)).padEnd(20)}${row.errors}${judged}`,
      );
    }
    out.push('');
  }
  const ws = r.websocket;
  if (ws !== undefined) {
    out.push(`WebSocket messages (${ws.connections} connections x ${ws.window} in flight, ${ws.payloadBytes}-byte messages, echo upstream)`);
    out.push(`  raw tunnel      ${spread(ws.raw, k)} msg/s, CPU ${ws.cpuUsPerMessage.raw.median.toFixed(1)} us/msg, proxy busy ${Math.round(ws.proxyBusy.raw.median * 100)}%`);
    out.push(`  session: route  ${spread(ws.session, k)} msg/s, CPU ${ws.cpuUsPerMessage.session.median.toFixed(1)} us/msg, proxy busy ${Math.round(ws.proxyBusy.session.median * 100)}%`);
    out.push(`  session / raw   ${spread(ws.ratio, f2).padEnd(22)} target >= 0.80  ${verdict(ws.ratio.median >= 0.8)}`);
    out.push('');
  }
  const l = r.latency;
  out.push(`Latency at ~${l.rate} req/s (${l.connections} connections, random pacing, ${l.durationS} s x ${l.rounds}, median of rounds)`);
  for (const row of l.rows) {
    out.push(`  ${row.label.padEnd(34)}${`${Math.round(row.rps)} req/s`.padEnd(12)}p50 ${row.p50Ms.toFixed(2)} ms  p99 ${row.p99Ms.toFixed(2)} ms  errors ${row.errors}`);
  }
  // autocannon reports whole milliseconds and paces in bursts: its percentiles cannot judge a 1 ms target.
  const latencyVerdict = m.loadTool === 'wrk' ? verdict(l.addedP99Ms <= 1) : 'n/a (needs wrk)';
  out.push(`  Tollgate added p99 over direct    ${`${l.addedP99Ms.toFixed(2)} ms`.padEnd(24)}target <= 1 ms  ${latencyVerdict}`);
  out.push(`  (bare passthrough added p99       ${l.passthroughAddedP99Ms.toFixed(2)} ms: the cost of any proxy hop here)`);
  out.push('');
  const mem = r.memory;
  out.push(`Memory per tracked client (Tollgate process, memory store, N = ${k(mem.clients)} then 2N client IPs via X-Forwarded-For, after forced GC)`);
  out.push(`  RSS: ${mem.phases.map((p) => `${k(p.clients)} clients ${mib(p.rss)}`).join(', ')}`);
  out.push(`  RSS bytes per client   ${Math.round(mem.rssBytesPerClient).toString().padEnd(10)} target <= 300  ${verdict(mem.rssBytesPerClient <= 300)}`);
  out.push(`  heap bytes per client  ${Math.round(mem.heapBytesPerClient).toString().padEnd(10)} (live V8 heap after full GC)`);
  out.push(`  free heap per client   ${Math.round(mem.heapFreeBytesPerClient).toString().padEnd(10)} (V8 pages kept committed after GC: part of RSS, not of client state)`);
  const failed = mem.phases.reduce((s, p) => s + p.failed, 0);
  if (failed > 0) out.push(`  ${failed} requests of the memory run failed`);
  const so = r.storeOnly;
  out.push(`  store-only bytes/key   heap ${so.heapBytesPerKey}, RSS ${so.rssBytesPerKey} (MemoryStore in-process, ${k(so.clients)} then 2N keys like "${so.keyExample}")`);
  if (r.notes.length > 0) {
    out.push('');
    out.push('Notes:');
    for (const note of r.notes) out.push(`  - ${note}`);
  }
  out.push('');
  out.push(`${r.elapsedS} s; results in bench/results.json`);
  console.log(out.join('\n'));
}
