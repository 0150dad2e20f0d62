import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { Tollgate } from '../../src/app.js';
import { parseCommand, type ServeSettings } from '../../src/config/settings.js';
import { createLogger } from '../../src/observability/logger.js';
import { createMetrics } from '../../src/observability/metrics.js';

/** A clock tests move by hand. */
export class FakeClock {
  constructor(public nowMs = 1_764_000_000_000) {}
  readonly now = (): number => this.nowMs;
  advance(ms: number): void {
    this.nowMs += ms;
  }
}

/** Captures JSON log lines in memory. */
export class LogCapture extends Writable {
  readonly lines: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _enc: string, done: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() !== '') this.lines.push(JSON.parse(line) as Record<string, unknown>);
    }
    done();
  }
  events(name: string): Record<string, unknown>[] {
    return this.lines.filter((l) => l.event === name);
  }
  /** Lines whose message contains `fragment`. */
  count(fragment: string): number {
    return this.lines.filter((l) => String(l.msg).includes(fragment)).length;
  }
}

export function writePolicy(text: string, dir = mkdtempSync(path.join(tmpdir(), 'tollgate-test-'))): string {
  const file = path.join(dir, 'policies.yaml');
  writeFileSync(file, text);
  return file;
}

export interface TestTollgate {
  tollgate: Tollgate;
  url: string;
  adminUrl: string;
  clock: FakeClock;
  logs: LogCapture;
  file: string;
  close(): Promise<void>;
}

/** Starts an in-process Tollgate on ephemeral ports with the given policy text. */
export async function startTollgate(
  policy: string,
  options: { upstream?: string; env?: Record<string, string | undefined>; clock?: FakeClock; watch?: boolean; file?: string; args?: string[] } = {},
): Promise<TestTollgate> {
  const file = options.file ?? writePolicy(policy);
  const args = ['serve', '--config', file, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', ...(options.args ?? [])];
  if (options.upstream) args.push('--upstream', options.upstream);
  const command = parseCommand(args, {});
  if (command.command !== 'serve') throw new Error('unexpected');
  const settings: ServeSettings = command.settings;
  const clock = options.clock ?? new FakeClock();
  const logs = new LogCapture();
  const tollgate = await Tollgate.start({
    settings,
    env: options.env ?? {},
    clock: clock.now,
    logger: createLogger('info', logs),
    metrics: createMetrics({ defaultMetrics: false }),
    watch: options.watch ?? false,
  });
  return {
    tollgate,
    url: `http://127.0.0.1:${tollgate.proxyAddress.port}`,
    adminUrl: `http://127.0.0.1:${tollgate.adminAddress.port}`,
    clock,
    logs,
    file,
    close: () => tollgate.close(),
  };
}
