/**
 * Memory-run driver: sends COUNT requests to URL, each from a distinct synthetic client
 * IP in X-Forwarded-For (believed because the bench policy trusts 127.0.0.1), numbered
 * from START. Prints `{"sent":…,"ok":…,"failed":…,"ms":…}`.
 * Usage: flood.ts URL START COUNT [CONNECTIONS]
 */
import { Pool } from 'undici';

const [url, startText, countText, connectionsText = '64'] = process.argv.slice(2);
const start = Number(startText);
const count = Number(countText);
const connections = Number(connectionsText);

/** Client number -> a distinct IPv4 address in 10.0.0.0/8 (16.7M of them). */
function syntheticIp(n: number): string {
  return `10.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

const target = new URL(url);
const pool = new Pool(target.origin, { connections, pipelining: 1 });
let next = start;
const end = start + count;
let ok = 0;
let failed = 0;

async function worker(): Promise<void> {
  while (next < end) {
    const n = next++;
    try {
      const res = await pool.request({ path: target.pathname, method: 'GET', headers: { 'x-forwarded-for': syntheticIp(n) } });
      await res.body.dump();
      if (res.statusCode >= 200 && res.statusCode < 300) ok++;
      else failed++;
    } catch {
      failed++;
    }
  }
}

const began = performance.now();
await Promise.all(Array.from({ length: connections }, worker));
const ms = performance.now() - began;
await pool.close();
process.stdout.write(JSON.stringify({ sent: count, ok, failed, ms: Math.round(ms) }) + '\n');
