/**
 * Child processes of the benchmark: servers pinned to one CPU with `taskset`, found
 * ready by their JSON `listening` line, stopped by pid. Nothing is killed by name.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const READY_TIMEOUT_MS = 20_000; // 20s: tsx start-up on a busy 2-core machine
const STOP_GRACE_MS = 3_000; // 3s before SIGKILL

/** True when `taskset` exists and the machine has a CPU 1 to pin to. */
export const canPin: boolean = spawnSync('taskset', ['-c', '1', 'true']).status === 0;

/** `taskset -c CPU cmd args` when pinning is possible, else `cmd args`. */
export function pinned(cpu: number, command: string, args: string[]): [string, string[]] {
  return canPin ? ['taskset', ['-c', String(cpu), command, ...args]] : [command, args];
}

export interface Server {
  readonly name: string;
  readonly port: number;
  readonly pid: number;
  /** Lines the process wrote to stderr (last 50), for error messages and GC reports. */
  readonly stderr: string[];
  stop(): Promise<void>;
}

/** Listening lines: `{"event":"listening","port":N}`; Tollgate adds `listener: "admin" | "proxy"`. */
function readyPort(line: string): number | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const entry = JSON.parse(line) as { event?: string; listener?: string; port?: number };
    if (entry.event === 'listening' && (entry.listener === undefined || entry.listener === 'proxy')) return entry.port;
  } catch {
    // Not JSON: ignore.
  }
  return undefined;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** Spawns a server on `cpu` and resolves once it printed its listening line. */
export function startServer(name: string, cpu: number, command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Server> {
  const [cmd, argv] = pinned(cpu, command, args);
  const child = spawn(cmd, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderr.push(line);
    if (stderr.length > 50) stderr.shift();
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    if (!(await waitExit(child, STOP_GRACE_MS))) {
      child.kill('SIGKILL');
      await waitExit(child, STOP_GRACE_MS);
    }
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`${name}: not listening after ${READY_TIMEOUT_MS} ms\n${stderr.join('\n')}`));
    }, READY_TIMEOUT_MS);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name}: exited (${code ?? signal}) before listening\n${stderr.join('\n')}`));
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const port = readyPort(line);
      if (port === undefined) return;
      clearTimeout(timer);
      resolve({ name, port, pid: child.pid!, stderr, stop });
    });
  });
}

/** Runs a command to completion and returns its stdout (rejects on a non-zero exit). */
export function run(command: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${command} ${args.join(' ')}: exit ${code ?? signal}\n${err.slice(-2000)}`));
    });
  });
}

/** Resident set size of a process in bytes (VmRSS), or undefined where /proc is absent. */
export function rssBytes(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match === null ? undefined : Number(match[1]) * 1024;
  } catch {
    return undefined;
  }
}

export function hasCommand(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`]).status === 0;
}
