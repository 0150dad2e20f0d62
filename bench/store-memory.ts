/**
 * Store-only memory per tracked client: a MemoryStore decides one request for each of
 * N, then 2N distinct client IPs (the per-IP limit of the bench policy, real key
 * prefix), with full GCs before each reading. Needs `--expose-gc`.
 * Usage: node --expose-gc --import tsx bench/store-memory.ts N
 * Prints `{"clients":N,"heapBytesPerKey":…,"rssBytesPerKey":…,"heapBaseline":…}`.
 */
import { loadPolicyFile } from '../src/config/load.js';
import { compilePolicy } from '../src/policy/compile.js';
import { MemoryStore } from '../src/store/memory.js';
import { perIpPolicy, writePolicyFile } from './policies.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc');

const clients = Number(process.argv[2] ?? 200_000);
const loaded = loadPolicyFile(writePolicyFile('store', perIpPolicy()), {});
if (!loaded.ok) throw new Error(JSON.stringify(loaded.errors));
const policy = compilePolicy(loaded.policy.config, loaded.policy.hash, { upstream: 'http://127.0.0.1:9' });
const limit = policy.routes[0].limits[0];
const { maxKeys, maxBlocks } = loaded.policy.config.store.memory;
const now = Date.now();
const store = new MemoryStore({ maxKeys, maxBlocks, clock: () => now });

function ip(n: number): string {
  return `10.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

function track(from: number, to: number): void {
  for (let n = from; n < to; n++) {
    const decision = store.decide([{ limit, key: limit.keyPrefix + ip(n), max: limit.limit }], now);
    if (!decision.allowed) throw new Error('bench limit refused a request');
  }
}

function settle(): { heap: number; rss: number } {
  for (let i = 0; i < 3; i++) gc!();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, rss: m.rss };
}

const base = settle();
track(0, clients);
const one = settle();
track(clients, 2 * clients);
const two = settle();
if (store.size !== 2 * clients) throw new Error(`expected ${2 * clients} keys, store holds ${store.size}`);
process.stdout.write(
  JSON.stringify({
    clients,
    keyExample: limit.keyPrefix + ip(clients),
    heapBytesPerKey: Math.round((two.heap - one.heap) / clients),
    rssBytesPerKey: Math.round((two.rss - one.rss) / clients),
    heapBaseline: base.heap,
  }) + '\n',
);
