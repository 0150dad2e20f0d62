import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

const CLI = path.resolve(import.meta.dirname, '../../dist/cli.js');

/** The real process, as a pod runs it: `node dist/cli.js serve ...`, JSON logs on stdout. */
class Served {
  readonly lines: Record<string, unknown>[] = [];
  stderr = '';
  readonly exited: Promise<number | null>;
  #partial = '';

  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      const parts = (this.#partial + chunk).split('\n');
      this.#partial = parts.pop() ?? '';
      for (const line of parts) if (line.trim() !== '') this.lines.push(JSON.parse(line) as Record<string, unknown>);
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  events(name: string): Record<string, unknown>[] {
    return this.lines.filter((l) => l.event === name);
  }

  port(listener: 'proxy' | 'admin'): number {
    return this.events('listening').find((l) => l.listener === listener)?.port as number;
  }
}

async function eventually(check: () => Promise<void> | void, deadlineMs = 10_000): Promise<void> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > end) throw error;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? NaN : Number(line.slice(series.length + 1));
}

const policy = (limit: number) => `
routes:
  - id: api
    match: { path: /api/* }
    limits:
      - { by: ip, limit: ${limit}, window: 1m }
`;

describe('SIGHUP reloads a running process', { skip: !existsSync(CLI) && process.env.CI !== 'true' ? 'dist/cli.js missing: run npm run build' : false }, () => {
  let upstream: EchoUpstream;
  let served: Served;
  let real: string;
  let dirs: string[];
  before(async () => {
    assert.ok(existsSync(CLI), 'dist/cli.js missing: npm run build');
    upstream = await startEchoUpstream();
    // The policy is a symlink into another directory: the directory watch cannot see edits
    // of the target, so only SIGHUP can trigger the reload this test observes.
    const linkDir = mkdtempSync(path.join(tmpdir(), 'tollgate-sighup-link-'));
    const realDir = mkdtempSync(path.join(tmpdir(), 'tollgate-sighup-real-'));
    dirs = [linkDir, realDir];
    real = path.join(realDir, 'policies.yaml');
    writeFileSync(real, policy(2));
    mkdirSync(path.join(linkDir, 'conf'));
    const file = path.join(linkDir, 'conf', 'policies.yaml');
    symlinkSync(real, file);
    const child = spawn(process.execPath, [CLI, 'serve', '--config', file, '--listen', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--upstream', upstream.url, '--drain-timeout', '2s'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH, LOG_LEVEL: 'info' },
    });
    served = new Served(child);
    await eventually(() => assert.ok(served.port('proxy') > 0 && served.port('admin') > 0, `not listening; stderr: ${served.stderr}`));
  });
  after(async () => {
    if (served.child.exitCode === null) served.child.kill('SIGKILL');
    await served.exited;
    await upstream.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  const proxy = () => `http://127.0.0.1:${served.port('proxy')}`;
  const admin = () => `http://127.0.0.1:${served.port('admin')}`;
  const status = async (p: string) => {
    const res = await fetch(`${proxy()}${p}`);
    await res.arrayBuffer();
    return res.status;
  };
  const metrics = async () => (await fetch(`${admin()}/metrics`)).text();

  test('a valid edit applies on SIGHUP, keeping the counts', async () => {
    assert.deepEqual([await status('/api/a'), await status('/api/a'), await status('/api/a')], [200, 200, 429]);
    const next = policy(4);
    writeFileSync(real, next);
    served.child.kill('SIGHUP');
    await eventually(async () => assert.equal(sample(await metrics(), 'tollgate_config_reloads_total{result="success"}'), 1));
    const text = await metrics();
    assert.equal(sample(text, `tollgate_config_info{hash="${createHash('sha256').update(next).digest('hex')}"}`), 1);
    assert.equal(sample(text, 'tollgate_config_valid'), 1);
    assert.deepEqual([await status('/api/a'), await status('/api/a'), await status('/api/a')], [200, 200, 429]);
    await eventually(() => assert.equal(served.events('config_reloaded').at(-1)?.trigger, 'sighup'));
    assert.equal(served.child.exitCode, null, 'SIGHUP must not end the process');
  });

  test('an invalid edit on SIGHUP is logged FILE:LINE:COL and kept out; the process stays ready', async () => {
    writeFileSync(real, policy(4).replace('window: 1m', 'window: soon'));
    served.child.kill('SIGHUP');
    await eventually(async () => assert.equal(sample(await metrics(), 'tollgate_config_reloads_total{result="failure"}'), 1));
    assert.equal(sample(await metrics(), 'tollgate_config_valid'), 0);
    assert.equal((await fetch(`${admin()}/readyz`)).status, 200);
    await eventually(() => assert.match(String(served.events('config_reload_failed')[0]?.msg), /policies\.yaml:6:\d+ /));
    assert.equal(served.events('config_reload_failed')[0].trigger, 'sighup');
    assert.equal(await status('/api/b'), 429, 'the old policy (limit 4, used up) still applies');
  });

  test('SIGTERM still drains and exits 0 after reloads', async () => {
    served.child.kill('SIGTERM');
    assert.equal(await served.exited, 0);
    assert.ok(served.events('stopped').length === 1, JSON.stringify(served.lines.slice(-3)));
  });
});
