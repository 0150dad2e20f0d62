/**
 * In-process Tollgate for tests, built the one way production builds it (`Tollgate.start`):
 * - `startTollgate(policy, options)`: ephemeral ports, injected clock, captured logs, own metrics;
 * - `startWithEcho(policy, options)`: the same in front of a fresh echo upstream, one `close()`;
 * - `startInFrontOf(upstream, policy, options)`: the same in front of any upstream the test built;
 * - `withStore(policy, store)`: a policy text with a `store:` section (also for CLI processes);
 * - `writePolicy(text)`, `writeLinkedPolicy(text)`, `LogCapture`.
 */
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Tollgate } from '../../src/app.js';
import { parseCommand } from '../../src/config/settings.js';
import type { RedisStoreConfig, StoreConfig } from '../../src/config/types.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics, type Metrics } from '../../src/observability/metrics.js';
import { FakeClock } from './clock.js';
import { scrape } from './metrics.js';
import { startEchoUpstream, type EchoUpstream, type Upstream } from './upstream.js';
import { eventually, withDeadline } from './wait.js';

/**
 * Bounds of starting and stopping, so a Tollgate that hangs there fails the test with
 * a message instead of running into the runner's timeout. Start may wait 2 s for an
 * unreachable Redis (app.ts); stop waits up to 1 s for Redis to answer QUIT (store.ts).
 */
const START_WAIT_MS = 15_000; // 15s
const CLOSE_WAIT_MS = 10_000; // 10s

type LogLine = Record<string, unknown>;

/** Captures JSON log lines in memory. */
export class LogCapture extends Writable {
  readonly lines: LogLine[] = [];
  override _write(chunk: Buffer, _enc: string, done: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() !== '') this.lines.push(JSON.parse(line) as LogLine);
    }
    done();
  }
  /** Lines whose `event` is `name`. */
  events(name: string): LogLine[] {
    return this.lines.filter((l) => l.event === name);
  }
  /** How many lines' message contains `fragment`. */
  count(fragment: string): number {
    return this.lines.filter((l) => String(l.msg).includes(fragment)).length;
  }
  /** The first line (logged already or later) for which `test` is true; rejects after `timeoutMs`. */
  waitFor(test: (line: LogLine) => boolean, options: { timeoutMs?: number; what?: string } = {}): Promise<LogLine> {
    return eventually(() => this.lines.find(test) ?? false, { what: options.what ?? 'a matching log line', timeoutMs: options.timeoutMs });
  }
}

/** Writes `text` as `policies.yaml` in a fresh temp directory (or `dir`); returns its path. */
export function writePolicy(text: string, dir = mkdtempSync(path.join(tmpdir(), 'tollgate-test-'))): string {
  const file = path.join(dir, 'policies.yaml');
  writeFileSync(file, text);
  return file;
}

/**
 * A policy file that is a symlink into another directory (`link` -> `real`). The
 * directory watch cannot see edits of the target, so only SIGHUP (or `reload()`)
 * picks up what `write` puts there.
 */
export function writeLinkedPolicy(text: string): { link: string; real: string; write(text: string): void } {
  const real = writePolicy(text);
  const linkDir = path.join(mkdtempSync(path.join(tmpdir(), 'tollgate-link-')), 'conf');
  mkdirSync(linkDir);
  const link = path.join(linkDir, 'policies.yaml');
  symlinkSync(real, link);
  return { link, real, write: (next) => writeFileSync(real, next) };
}

/**
 * A policy's `store:` section as tests give it: Redis settings as `createRedisStore`
 * takes them (`redisStoreConfig()` in ./redis.ts builds them), or memory bounds.
 */
export type TestStore = { redis: RedisStoreConfig; memory?: Partial<StoreConfig['memory']> } | { memory: Partial<StoreConfig['memory']> };

/** The policy YAML of `store` (flow style: JSON is YAML), durations spelled as the file spells them. */
function storeYaml(store: TestStore): string {
  const lines = ['store:', `  type: ${'redis' in store ? 'redis' : 'memory'}`];
  if (store.memory !== undefined) lines.push(`  memory: ${JSON.stringify(store.memory)}`);
  if ('redis' in store) {
    const { timeoutMs, slotLeaseMs, ...redis } = store.redis;
    lines.push(`  redis: ${JSON.stringify({ ...redis, timeout: `${timeoutMs}ms`, slotLease: `${slotLeaseMs}ms` })}`);
  }
  return lines.join('\n') + '\n';
}

/** `policy` with `store` appended as its `store:` section (the policy must not have one). */
export function withStore(policy: string, store: TestStore): string {
  if (/^store:/m.test(policy)) throw new Error('the policy already has a store: section; pass the store in one place');
  return `${policy.replace(/\n*$/, '\n')}${storeYaml(store)}`;
}

export interface StartOptions {
  /** `--upstream` (overrides the file's `upstream:`). */
  upstream?: string;
  /** The environment `${VAR}`s expand from (default: empty, never the developer's). */
  env?: Record<string, string | undefined>;
  /** Default: a new FakeClock at T0. */
  clock?: FakeClock;
  /** Watch the policy file's directory (default false: tests reload by calling `tollgate.reload()`). */
  watch?: boolean;
  /** Run this existing policy file; the `policy` text is then ignored. */
  file?: string;
  /** Extra `serve` flags, e.g. `['--drain-timeout', '1s']`. */
  args?: string[];
  /** The store section to run with (appended to the policy text). */
  store?: TestStore;
  /** Default: a fresh registry without prom-client's default process metrics. */
  metrics?: Metrics;
  /** Default 'info' (captured in `logs`). */
  logLevel?: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
}

export interface TestTollgate {
  readonly tollgate: Tollgate;
  /** `http://127.0.0.1:PORT` of the proxy and admin listeners. */
  readonly url: string;
  readonly adminUrl: string;
  readonly port: number;
  readonly clock: FakeClock;
  readonly logs: LogCapture;
  readonly metrics: Metrics;
  /** The policy file it runs (edit it, then `tollgate.reload()`). */
  readonly file: string;
  /** GET /metrics through the admin listener. */
  scrape(): Promise<string>;
  /** Immediate stop (`Tollgate.close`); idempotent. */
  close(): Promise<void>;
}

/** Starts an in-process Tollgate on ephemeral loopback ports with the given policy text. */
export async function startTollgate(policy: string, options: StartOptions = {}): Promise<TestTollgate> {
  const file = options.file ?? writePolicy(options.store === undefined ? policy : withStore(policy, options.store));
  if (options.file !== undefined && options.store !== undefined) throw new Error('store goes with a policy text, not with file');
  const args = ['serve', '--config', file, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', ...(options.args ?? [])];
  if (options.upstream !== undefined) args.push('--upstream', options.upstream);
  const command = parseCommand(args, {});
  if (command.command !== 'serve') throw new Error(`unexpected command ${command.command}`);
  const clock = options.clock ?? new FakeClock();
  const logs = new LogCapture();
  const metrics = options.metrics ?? createMetrics({ defaultMetrics: false });
  const tollgate = await withDeadline(
    Tollgate.start({
      settings: command.settings,
      env: options.env ?? {},
      clock: clock.now,
      logger: createLogger(options.logLevel ?? 'info', logs),
      metrics,
      watch: options.watch ?? false,
    }),
    START_WAIT_MS,
    `Tollgate to start on ${file}`,
  );
  const adminUrl = `http://127.0.0.1:${tollgate.adminAddress.port}`;
  let closing: Promise<void> | undefined;
  return {
    tollgate,
    url: `http://127.0.0.1:${tollgate.proxyAddress.port}`,
    adminUrl,
    port: tollgate.proxyAddress.port,
    clock,
    logs,
    metrics,
    file,
    scrape: () => scrape(adminUrl),
    close: () => (closing ??= withDeadline(tollgate.close(), CLOSE_WAIT_MS, 'Tollgate.close() to finish')),
  };
}

export interface TollgateInFront<U extends Upstream> extends TestTollgate {
  /** The upstream every request is forwarded to (`--upstream`). */
  readonly upstream: U;
}

/**
 * A Tollgate forwarding to `upstream` (`--upstream`, over the file's `upstream:`);
 * `close()` stops both, the upstream also when Tollgate fails to start.
 */
export async function startInFrontOf<U extends Upstream>(upstream: U, policy: string, options: Omit<StartOptions, 'upstream'> = {}): Promise<TollgateInFront<U>> {
  let tg: TestTollgate;
  try {
    tg = await startTollgate(policy, { ...options, upstream: upstream.url });
  } catch (error) {
    await upstream.close();
    throw error;
  }
  const closeTollgate = tg.close;
  let closing: Promise<void> | undefined;
  return Object.assign(tg, {
    upstream,
    close: () =>
      (closing ??= (async () => {
        await closeTollgate();
        await upstream.close();
      })()),
  });
}

export type TollgateWithEcho = TollgateInFront<EchoUpstream>;

/** A fresh echo upstream and a Tollgate forwarding to it; `close()` stops both. */
export async function startWithEcho(policy: string, options: Omit<StartOptions, 'upstream'> = {}): Promise<TollgateWithEcho> {
  return startInFrontOf(await startEchoUpstream(), policy, options);
}
