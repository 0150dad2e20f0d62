/**
 * Redis for tests. `sharedRedis()` gives a server to run decisions against:
 * REDIS_URL if set, else 127.0.0.1:6379 if it answers PING, else a spawned one.
 * Tests that kill, hang or reconfigure Redis spawn their own (`spawnRedis`,
 * `startCluster`, `startSentinel`) and stop it by pid. The shared server is never
 * flushed or stopped: every test writes under its own random prefix.
 *
 * Without any Redis a test skips, except under CI=true where it fails.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { AlgorithmName } from '../../src/config/types.js';
import type { CompiledRateLimit } from '../../src/policy/types.js';
import { rateLimit } from './limits.js';
import type { LimitCheck, StoreDecision } from '../../src/store/types.js';

export interface RedisTarget {
  readonly url: string;
  readonly host: string;
  readonly port: number;
}

/** A unique key prefix for one test (keys of concurrent tests never meet). */
export function testPrefix(name: string): string {
  return `tgtest:${name}:${randomBytes(4).toString('hex')}:`;
}

/** Resolves true if a Redis at host:port answers PING within `timeoutMs`. */
export function ping(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    let answer = '';
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data) => {
      answer += data.toString('latin1');
      if (answer.includes('\r\n')) done(answer.startsWith('+PONG'));
    });
    socket.on('error', () => done(false));
  });
}

/** Sends one command (inline protocol) and returns the raw reply text. */
export function rawCommand(host: string, port: number, command: string, timeoutMs = 2_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host, port });
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no reply to ${command.split(' ')[0]} from ${host}:${port}`));
    }, timeoutMs);
    socket.on('connect', () => socket.write(command + '\r\n'));
    socket.on('data', (data) => {
      answer += data.toString('latin1');
      if (answer.endsWith('\r\n') && isComplete(answer)) {
        clearTimeout(timer);
        socket.destroy();
        resolve(answer);
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/** Enough RESP parsing to know a reply is complete: the end offset of the reply at `at`, or -1. */
function replyEnd(reply: string, at: number): number {
  const header = reply.indexOf('\r\n', at);
  if (header < 0) return -1;
  const type = reply[at];
  if (type === '$') {
    const length = Number(reply.slice(at + 1, header));
    const end = length < 0 ? header + 2 : header + 2 + length + 2;
    return reply.length >= end ? end : -1;
  }
  if (type === '*') {
    let end = header + 2;
    for (let items = Number(reply.slice(at + 1, header)); items > 0 && end >= 0; items--) end = replyEnd(reply, end);
    return end;
  }
  return header + 2;
}

function isComplete(reply: string): boolean {
  return replyEnd(reply, 0) >= 0;
}

/** A TCP port nothing listens on (and, with `busOffset`, port + offset too). */
export async function freePort(busOffset?: number): Promise<number> {
  for (;;) {
    const port = busOffset === undefined ? await ephemeralPort() : 20_000 + Math.floor(Math.random() * 30_000);
    if (busOffset === undefined) return port;
    if ((await portFree(port)) && (await portFree(port + busOffset))) return port;
  }
}

function ephemeralPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.on('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

export function redisServerAvailable(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** A redis-server this test started; stopped by pid. */
export interface SpawnedRedis extends RedisTarget {
  readonly pid: number;
  /** SIGKILL: the server vanishes with its data. */
  kill(): Promise<void>;
  /** SIGSTOP / SIGCONT: the server keeps its sockets but stops answering. */
  pause(): void;
  resume(): void;
  /** Starts a fresh server on the same port (after `kill`). */
  restart(): Promise<void>;
  /** Kills the server (if running) and removes its files. */
  stop(): Promise<void>;
}

export interface SpawnOptions {
  /** Extra redis-server arguments (e.g. cluster mode). */
  args?: readonly string[];
  port?: number;
  /** Working directory for the server's files (default: a fresh temp dir, removed on stop). */
  dir?: string;
}

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 10_000, everyMs = 25): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Starts `redis-server` on a free port with persistence off and waits until it answers. */
export async function spawnRedis(options: SpawnOptions = {}): Promise<SpawnedRedis> {
  const port = options.port ?? (await freePort());
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'tollgate-redis-'));
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...(options.args ?? [])];
  let child: ChildProcess | undefined;
  const start = async (): Promise<void> => {
    child = spawn('redis-server', args, { stdio: 'ignore' });
    const started = child;
    await waitFor(`redis-server on port ${port}`, async () => {
      if (started.exitCode !== null) throw new Error(`redis-server on port ${port} exited with ${started.exitCode}`);
      return ping('127.0.0.1', port, 200);
    });
  };
  await start();
  const signal = async (name: NodeJS.Signals): Promise<void> => {
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const running = child;
    process.kill(running.pid as number, name);
    await exited(running);
  };
  /** SIGSTOP/SIGCONT a running server; a no-op once it has exited. */
  const signalRunning = (name: NodeJS.Signals): void => {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid as number, name);
  };
  return {
    url: `redis://127.0.0.1:${port}`,
    host: '127.0.0.1',
    port,
    get pid() {
      return child?.pid as number;
    },
    kill: () => signal('SIGKILL'),
    pause: () => signalRunning('SIGSTOP'),
    resume: () => signalRunning('SIGCONT'),
    restart: async () => {
      await signal('SIGKILL');
      await start();
    },
    stop: async () => {
      await signal('SIGKILL');
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

let shared: Promise<(RedisTarget & { stop?: () => Promise<void> }) | undefined> | undefined;

/**
 * The Redis for ordinary decision tests, or undefined (test should skip) when there is
 * none and CI is not set. A spawned fallback is stopped by `stopSharedRedis()`.
 */
export function sharedRedis(): Promise<RedisTarget | undefined> {
  shared ??= (async () => {
    const fromEnv = process.env.REDIS_URL;
    if (fromEnv !== undefined && fromEnv !== '') {
      const url = new URL(fromEnv);
      return { url: fromEnv, host: url.hostname, port: Number(url.port || 6379) };
    }
    if (await ping('127.0.0.1', 6379)) return { url: 'redis://127.0.0.1:6379', host: '127.0.0.1', port: 6379 };
    if (redisServerAvailable()) return spawnRedis();
    if (process.env.CI === 'true') throw new Error('no Redis: set REDIS_URL, run one on 127.0.0.1:6379 or put redis-server on PATH');
    return undefined;
  })();
  return shared;
}

/** Stops the spawned fallback server, if `sharedRedis` had to start one. */
export async function stopSharedRedis(): Promise<void> {
  const target = await shared?.catch(() => undefined);
  await target?.stop?.();
}

/**
 * For tests that must spawn servers: skips (or, under CI=true, fails) when
 * redis-server is not on PATH. Returns false when the test was skipped.
 */
export function requireRedisServer(t: TestContext): boolean {
  if (redisServerAvailable()) return true;
  if (process.env.CI === 'true') throw new Error('redis-server is not on PATH');
  t.skip('redis-server is not on PATH');
  return false;
}

/** Skips (or under CI fails) when no Redis is reachable; else the shared target. */
export async function requireSharedRedis(t: TestContext): Promise<RedisTarget | undefined> {
  const target = await sharedRedis();
  if (target === undefined) t.skip('no Redis reachable (set REDIS_URL or start redis-server)');
  return target;
}

export interface SpawnedCluster {
  readonly nodes: readonly { host: string; port: number }[];
  stop(): Promise<void>;
}

/** Three masters, no replicas, all slots assigned; ready when every node says cluster_state:ok. */
export async function startCluster(masters = 3): Promise<SpawnedCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-cluster-'));
  const servers: SpawnedRedis[] = [];
  try {
    for (let i = 0; i < masters; i++) {
      const port = await freePort(10_000);
      servers.push(
        await spawnRedis({
          port,
          dir,
          args: ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`), '--cluster-node-timeout', '2000'],
        }),
      );
    }
    const create = spawnSync(
      'redis-cli',
      ['--cluster', 'create', ...servers.map((s) => `127.0.0.1:${s.port}`), '--cluster-replicas', '0', '--cluster-yes'],
      { encoding: 'utf8', timeout: 20_000 },
    );
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
    for (const server of servers) {
      await waitFor(`cluster_state:ok on ${server.port}`, async () =>
        (await rawCommand('127.0.0.1', server.port, 'CLUSTER INFO')).includes('cluster_state:ok'),
      );
    }
  } catch (error) {
    await Promise.all(servers.map((s) => s.stop()));
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    nodes: servers.map((s) => ({ host: s.host, port: s.port })),
    stop: async () => {
      await Promise.all(servers.map((s) => s.stop()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface SpawnedSentinel {
  readonly master: SpawnedRedis;
  readonly sentinel: { host: string; port: number };
  readonly name: string;
  stop(): Promise<void>;
}

/** A master and one sentinel monitoring it (quorum 1) under the name `mymaster`. */
export async function startSentinel(): Promise<SpawnedSentinel> {
  const name = 'mymaster';
  const master = await spawnRedis();
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-sentinel-'));
  const port = await freePort();
  const config = join(dir, 'sentinel.conf');
  writeFileSync(config, [`port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, `sentinel monitor ${name} 127.0.0.1 ${master.port} 1`, ''].join('\n'));
  const child = spawn('redis-server', [config, '--sentinel'], { stdio: 'ignore' });
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid as number, 'SIGKILL');
      await exited(child);
    }
    await master.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(`sentinel on port ${port} knows ${name}`, async () => {
      if (child.exitCode !== null) throw new Error(`sentinel exited with ${child.exitCode}`);
      try {
        return (await rawCommand('127.0.0.1', port, `SENTINEL get-master-addr-by-name ${name}`, 300)).includes(String(master.port));
      } catch {
        return false;
      }
    });
  } catch (error) {
    await stop();
    throw error;
  }
  return { master, sentinel: { host: '127.0.0.1', port }, name, stop };
}

/** A compiled rate limit for store tests (see ./limits.ts). */
export function limitFixture(options: {
  routeId?: string;
  by?: string;
  limit: number;
  windowMs: number;
  blockMs?: number;
  algorithm: AlgorithmName;
  index?: number;
}): CompiledRateLimit {
  return rateLimit(options);
}

/** Polls until `decide` answers from Redis (not rejected, not degraded). */
export async function waitUntilShared(
  decide: (checks: readonly LimitCheck[], now: number) => StoreDecision | Promise<StoreDecision>,
  timeoutMs = 10_000,
): Promise<void> {
  const limit = limitFixture({ routeId: 'ready', limit: 1_000_000_000, windowMs: 1_000, algorithm: 'fixed-window' });
  const checks = [{ limit, key: limit.keyPrefix + 'probe', max: limit.limit }];
  await waitFor(
    'the Redis store to answer',
    async () => {
      try {
        return (await decide(checks, Date.now())).degraded !== true;
      } catch {
        return false;
      }
    },
    timeoutMs,
  );
}
