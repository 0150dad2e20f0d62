/**
 * The one harness for real `node dist/cli.js` processes, as a pod runs them:
 * - `serveCli(args, env)`: `tollgate serve` on ephemeral ports, resolved once listening;
 * - `spawnCli(args, env)`: any command, with its JSON log lines and stderr;
 * - `runCli(args, env)`: a command run to completion (e.g. `validate`).
 * Every wait (a log line, the exit) has a deadline; the environment is exactly `env`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withDeadline } from './wait.js';

/** The built CLI; `npm test` builds it first (`npm run build`). */
export const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli.js');

/**
 * Bound on any wait for the child, so a hung process fails the test instead of stalling
 * the suite. Longer than WAIT_MS (wait.ts): a process start (node + tsc output + a
 * policy load) on a loaded 2-core box takes up to a few seconds.
 */
const DEFAULT_WAIT_MS = 10 * 1000; // 10s

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A running `node dist/cli.js ...`, with its JSON log lines (stdout) and stderr text. */
export interface CliProcess {
  readonly child: ChildProcess;
  /** Parsed JSON log lines from stdout, in order (non-JSON lines are kept as `{ text }`). */
  readonly logs: Record<string, unknown>[];
  stderr(): string;
  /** Resolves with the first log line (seen or future) for which `test` is true. */
  waitForLog(test: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** How the process ended, or undefined while it runs. */
  exit(): Exit | undefined;
  /** Resolves when the process exits; rejects (with the last logs) after `timeoutMs`. */
  waitForExit(timeoutMs?: number): Promise<Exit>;
  /** Sends a signal (no-op once exited). */
  signal(name: NodeJS.Signals): void;
  /** Kills the process (SIGKILL) if it still runs, and waits for its exit. */
  stop(): Promise<Exit>;
}

function assertBuilt(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
}

/**
 * Spawns the CLI with exactly `env` (plus PATH), so the developer's TOLLGATE_* variables
 * never leak into a test.
 */
export function spawnCli(args: readonly string[], env: Record<string, string | undefined> = {}): CliProcess {
  assertBuilt();
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  let pending = '';
  const waiters = new Set<() => void>();
  const notify = (): void => {
    for (const waiter of [...waiters]) waiter();
  };
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    let newline: number;
    while ((newline = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      if (line === '') continue;
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ text: line });
      }
    }
    notify();
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  let exit: Exit | undefined;
  const exited = new Promise<Exit>((resolve) => {
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
  });
  // Log lines still in the pipe arrive before 'close'.
  child.on('close', notify);

  return {
    child,
    logs,
    stderr: () => stderr,
    exit: () => exit,
    waitForExit: (timeoutMs = DEFAULT_WAIT_MS) =>
      withDeadline(exited, timeoutMs, `${args.join(' ')} to exit; last logs: ${JSON.stringify(logs.slice(-5)).slice(0, 1000)}; stderr: ${stderr.slice(-500)}`),
    waitForLog(test, timeoutMs = DEFAULT_WAIT_MS) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no matching log line within ${timeoutMs}ms; logs: ${JSON.stringify(logs).slice(0, 2000)}; stderr: ${stderr}`));
        }, timeoutMs);
        const check = (): void => {
          const found = logs.find(test);
          if (found !== undefined) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve(found);
          } else if (exit !== undefined && child.stdout!.readableEnded) {
            clearTimeout(timer);
            waiters.delete(check);
            reject(new Error(`process exited (${JSON.stringify(exit)}) without a matching log line; stderr: ${stderr}`));
          }
        };
        waiters.add(check);
        check();
      });
    },
    signal(name) {
      if (exit === undefined) child.kill(name);
    },
    async stop() {
      if (exit === undefined) child.kill('SIGKILL');
      // SIGKILL cannot be ignored; the deadline is for a wedged kernel or a lost 'exit'.
      return withDeadline(exited, DEFAULT_WAIT_MS, `${args.join(' ')} to die of SIGKILL`);
    },
  };
}

/** Runs the CLI to completion (e.g. `validate`); past `timeoutMs` it is killed and the call rejects. */
export async function runCli(args: readonly string[], env: Record<string, string | undefined> = {}, timeoutMs = DEFAULT_WAIT_MS): Promise<Exit & { stdout: string; stderr: string }> {
  assertBuilt();
  const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const closed = new Promise<Exit>((resolve) => child.on('close', (c, s) => resolve({ code: c, signal: s })));
  try {
    const { code, signal } = await withDeadline(closed, timeoutMs, `tollgate ${args.join(' ')} to finish`);
    return { code, signal, stdout, stderr };
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
}

export interface ServingCli extends CliProcess {
  /** `http://127.0.0.1:PORT` of the proxy and admin listeners, from their `listening` log lines. */
  readonly url: string;
  readonly adminUrl: string;
  readonly port: number;
  readonly adminPort: number;
}

/**
 * `tollgate serve`, by default on ephemeral loopback ports (`ephemeralPorts: false` leaves
 * the listen addresses to `args` and `env`); resolves once both listeners logged
 * `{"event":"listening"}`, or rejects with the logs and stderr.
 */
export async function serveCli(
  args: readonly string[],
  env: Record<string, string | undefined> = {},
  options: { ephemeralPorts?: boolean } = {},
): Promise<ServingCli> {
  const ports = options.ephemeralPorts === false ? [] : ['--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0'];
  const cli = spawnCli(['serve', ...ports, ...args], env);
  try {
    const proxy = await cli.waitForLog((l) => l.event === 'listening' && l.listener === 'proxy');
    const admin = await cli.waitForLog((l) => l.event === 'listening' && l.listener === 'admin');
    const port = Number(proxy.port);
    const adminPort = Number(admin.port);
    return Object.assign(cli, { url: `http://127.0.0.1:${port}`, adminUrl: `http://127.0.0.1:${adminPort}`, port, adminPort });
  } catch (error) {
    await cli.stop();
    throw error;
  }
}
