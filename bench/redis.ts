/**
 * The Redis the bench measures against: its own `redis-server` on a free loopback port,
 * pinned to the load CPU, without persistence, so its command counter sees Tollgate
 * alone. Without redis-server on PATH it falls back to 127.0.0.1:6379 (shared: the
 * counts may then include other clients' commands).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net, { type AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { hasCommand, pinned } from './processes.js';

const READY_TIMEOUT_MS = 10_000; // 10s

export interface BenchRedis {
  readonly url: string;
  /** True when the bench started this server (its counters are ours alone). */
  readonly own: boolean;
  /** The server process the bench started, if it did. */
  readonly pid: number | undefined;
  /** The server's counters so far; differences over a run give per-request figures. */
  counters(): Promise<RedisCounters>;
  close(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function connect(port: number): Promise<Redis> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    const client = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => {}); // connect() rejects too; retried below until the deadline
    try {
      await client.connect();
      await client.ping();
      return client;
    } catch (error) {
      client.disconnect();
      if (Date.now() > deadline) throw error;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export interface RedisCounters {
  /** Scripts run (EVALSHA + EVAL calls): one per decision is the target. */
  scripts: number;
  /**
   * Socket reads the server processed (`total_reads_processed`): network round trips as
   * Redis sees them; below one per decision when decisions are batched.
   */
  reads: number;
}

/** Reads done by `counters()` itself between two snapshots (its two INFO commands). */
export const OWN_READS_PER_SNAPSHOT = 2;

function field(info: string, pattern: RegExp): number {
  const match = pattern.exec(info);
  return match === null ? 0 : Number(match[1]);
}

export async function startBenchRedis(cpu: number): Promise<BenchRedis> {
  let child: ChildProcess | undefined;
  let port = 6379;
  if (hasCommand('redis-server')) {
    port = await freePort();
    const [cmd, args] = pinned(cpu, 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning']);
    child = spawn(cmd, args, { stdio: 'ignore' });
  }
  const client = await connect(port);
  return {
    url: `redis://127.0.0.1:${port}`,
    own: child !== undefined,
    pid: child?.pid,
    async counters() {
      const stats = await client.info('stats');
      const commands = await client.info('commandstats');
      return {
        scripts: field(commands, /cmdstat_evalsha:calls=(\d+)/) + field(commands, /cmdstat_eval:calls=(\d+)/),
        reads: field(stats, /total_reads_processed:(\d+)/),
      };
    },
    async close() {
      client.disconnect();
      if (child !== undefined && child.exitCode === null) {
        const exited = new Promise((r) => child!.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}
