import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { startTollgate, writePolicy, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

/** Sum of every sample of `name` whose labels include `labels`; NaN when there is none. */
function sampleSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = NaN;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]] as const));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) total = (Number.isNaN(total) ? 0 : total) + Number(m[3]);
  }
  return total;
}

async function metrics(tg: TestTollgate): Promise<string> {
  return (await fetch(`${tg.adminUrl}/metrics`)).text();
}

interface Answer {
  status: number;
  limit: string | null;
  remaining: string | null;
  policy: string | null;
  body: string;
}

async function get(url: string, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(url, { headers });
  return {
    status: res.status,
    limit: res.headers.get('x-ratelimit-limit'),
    remaining: res.headers.get('x-ratelimit-remaining'),
    policy: res.headers.get('ratelimit-policy'),
    body: await res.text(),
  };
}

async function statuses(url: string, n: number, headers: Record<string, string> = {}): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await get(url, headers)).status);
  return out;
}

/** Polls until `check` passes; bounded (the fs watcher and its debounce run on real time). */
async function eventually(check: () => Promise<void> | void, deadlineMs = 5000): Promise<void> {
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

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * A directory laid out like a mounted ConfigMap: `..<timestamp>/policies.yaml`,
 * `..data -> ..<timestamp>`, `policies.yaml -> ..data/policies.yaml`.
 */
class ConfigMapDir {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'tollgate-configmap-'));
  #generation = 0;
  #current = '';

  constructor(text: string) {
    this.#current = this.#writeGeneration(text);
    symlinkSync(this.#current, path.join(this.dir, '..data'));
    symlinkSync('..data/policies.yaml', path.join(this.dir, 'policies.yaml'));
  }

  get file(): string {
    return path.join(this.dir, 'policies.yaml');
  }

  /** What the kubelet does on a ConfigMap update: new dir, `..data_tmp` symlink renamed over `..data`, old dir removed. */
  update(text: string): void {
    const next = this.#writeGeneration(text);
    const tmp = path.join(this.dir, '..data_tmp');
    symlinkSync(next, tmp);
    renameSync(tmp, path.join(this.dir, '..data'));
    rmSync(path.join(this.dir, this.#current), { recursive: true });
    this.#current = next;
  }

  #writeGeneration(text: string): string {
    const name = `..2026_01_0${++this.#generation}_00_00_00.00000000${this.#generation}`;
    mkdirSync(path.join(this.dir, name));
    writeFileSync(path.join(this.dir, name, 'policies.yaml'), text);
    return name;
  }
}

const routes = (limit: number, extra = '') => `
clientIp:
  trustedProxies: [127.0.0.1/32]
routes:
  - id: api
    match: { path: /api/* }
    limits:
      - { by: ip, limit: ${limit}, window: 1m }
${extra}`;

describe('reload through a Kubernetes ConfigMap symlink swap (watch: true)', () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;
  let configMap: ConfigMapDir;
  before(async () => {
    upstream = await startEchoUpstream();
    configMap = new ConfigMapDir(routes(2));
    tg = await startTollgate('', { upstream: upstream.url, file: configMap.file, watch: true });
  });
  after(async () => {
    await tg.close();
    await upstream.close();
    rmSync(configMap.dir, { recursive: true });
  });

  test('the new limit applies without a restart, and the used quota carries over', async () => {
    assert.deepEqual(await statuses(`${tg.url}/api/a`, 3), [200, 200, 429]);
    const text = routes(5);
    configMap.update(text);
    await eventually(async () => assert.equal(sampleSum(await metrics(tg), 'tollgate_config_reloads_total', { result: 'success' }), 1));
    const after = await metrics(tg);
    assert.equal(sampleSum(after, 'tollgate_config_info', { hash: sha256(text) }), 1);
    assert.equal(sampleSum(after, 'tollgate_config_info'), 1, 'the old hash is gone');
    // 2 of 5 used before the swap: 3 left.
    assert.deepEqual(await statuses(`${tg.url}/api/a`, 4), [200, 200, 200, 429]);
    const reloaded = tg.logs.events('config_reloaded');
    assert.equal(reloaded.length, 1);
    assert.equal(reloaded[0].trigger, 'file_change');
    assert.equal(reloaded[0].hash, sha256(text));
  });

  test('an invalid ConfigMap is kept out; fixing it is picked up too', async () => {
    const before = tg.tollgate.policy;
    configMap.update(routes(5).replace('limit: 5', 'limit: lots'));
    await eventually(async () => assert.equal(sampleSum(await metrics(tg), 'tollgate_config_reloads_total', { result: 'failure' }), 1));
    assert.equal(sampleSum(await metrics(tg), 'tollgate_config_valid'), 0);
    assert.equal(tg.tollgate.policy, before);
    const fixed = routes(7);
    configMap.update(fixed);
    await eventually(async () => assert.equal(sampleSum(await metrics(tg), 'tollgate_config_reloads_total', { result: 'success' }), 2));
    assert.equal(sampleSum(await metrics(tg), 'tollgate_config_valid'), 1);
    assert.equal(tg.tollgate.policy.hash, sha256(fixed));
  });
});

describe('an invalid edit keeps the old policy', () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;
  before(async () => {
    upstream = await startEchoUpstream();
    tg = await startTollgate(routes(3), { upstream: upstream.url });
  });
  after(async () => {
    await tg.close();
    await upstream.close();
  });

  test('logs FILE:LINE:COL, counts a failure, config_valid 0, /readyz stays 200; the fix restores 1', async () => {
    const original = readFileSync(tg.file, 'utf8');
    assert.equal((await get(`${tg.url}/api/a`)).limit, '3');
    // Line 8 is the limit; `limit: 0` is out of range, `window: 1 parsec` is not a duration.
    writeFileSync(tg.file, routes(0).replace('window: 1m', 'window: 1 parsec'));
    const result = tg.tollgate.reload();
    assert.equal(result.ok, false);
    const failed = tg.logs.events('config_reload_failed');
    assert.ok(failed.length >= 2, JSON.stringify(failed));
    for (const line of failed) {
      assert.equal(line.level, 'error');
      assert.match(String(line.msg), new RegExp(`^${tg.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:8:\\d+ `));
    }
    const text = await metrics(tg);
    assert.equal(sampleSum(text, 'tollgate_config_reloads_total', { result: 'failure' }), 1);
    assert.ok(Number.isNaN(sampleSum(text, 'tollgate_config_reloads_total', { result: 'success' })));
    assert.equal(sampleSum(text, 'tollgate_config_valid'), 0);
    assert.equal(sampleSum(text, 'tollgate_config_info', { hash: sha256(original) }), 1, 'the active hash is still the old one');
    assert.equal((await fetch(`${tg.adminUrl}/readyz`)).status, 200);
    // The old policy still answers: limit 3.
    const answer = await get(`${tg.url}/api/a`);
    assert.equal(answer.status, 200);
    assert.equal(answer.limit, '3');

    // An unreadable file is just another failure.
    rmSync(tg.file);
    assert.equal(tg.tollgate.reload().ok, false);
    assert.equal(sampleSum(await metrics(tg), 'tollgate_config_reloads_total', { result: 'failure' }), 2);

    // Restoring the very file that is active: valid again, nothing to swap.
    writeFileSync(tg.file, original);
    assert.deepEqual(tg.tollgate.reload(), { ok: true, changed: false, hash: sha256(original) });
    assert.equal(sampleSum(await metrics(tg), 'tollgate_config_valid'), 1);
    assert.equal((await fetch(`${tg.adminUrl}/readyz`)).status, 200);
  });

  test('a file that validates but cannot compile (no upstream anywhere) is a failure too', async () => {
    const withUpstream = `upstream: ${upstream.url}\n${routes(3)}`;
    const own = await startTollgate(withUpstream); // no --upstream flag: the file's upstream is the only one
    try {
      writeFileSync(own.file, routes(4));
      assert.equal(own.tollgate.reload().ok, false);
      const text = await metrics(own);
      assert.equal(sampleSum(text, 'tollgate_config_reloads_total', { result: 'failure' }), 1);
      assert.equal(sampleSum(text, 'tollgate_config_valid'), 0);
      assert.equal(own.tollgate.policy.hash, sha256(withUpstream));
      const [line] = own.logs.events('config_reload_failed');
      assert.match(String(line.msg), /^\S+policies\.yaml:\d+:\d+ .*upstream/);
      assert.equal((await get(`${own.url}/api/a`)).status, 200);
    } finally {
      await own.close();
    }
  });

  test('a compile error is logged at the line it concerns, not at 1:1', async () => {
    const activeHash = tg.tollgate.policy.hash;
    // Passes the schema; its RSA publicKey (value at 5:16) cannot verify the ES256 it lists.
    writeFileSync(tg.file, readFileSync(new URL('../fixtures/config/jwt_public_key_wrong_algorithm.yaml', import.meta.url)));
    const message = 'identity.jwt.publicKey (rsa 2048 bits) cannot verify ES256';
    assert.deepEqual(tg.tollgate.reload(), { ok: false, errors: [{ file: tg.file, line: 5, col: 16, message }] });
    assert.equal(tg.logs.events('config_reload_failed').at(-1)?.msg, `${tg.file}:5:16 ${message}`);
    assert.equal(tg.tollgate.policy.hash, activeHash);
  });
});

describe('counters across a reload', () => {
  let upstream: EchoUpstream;
  before(async () => {
    upstream = await startEchoUpstream();
  });
  after(async () => upstream.close());

  const policy = (o: { limit: number; block: string; window: string; algorithm?: string; message?: string; more?: string }) => `
clientIp:
  trustedProxies: [127.0.0.1/32]
routes:
  - id: api
    match: { path: /api/* }
    ${o.message ? `message: ${o.message}` : ''}
    limits:
      - { by: ip, limit: ${o.limit}, window: 1m }
  - id: login
    match: { path: /login }
    limits:
      - { by: ip, limit: 2, window: 1m, block: ${o.block} }
  - id: search
    match: { path: /search }
    ${o.algorithm ? `algorithm: ${o.algorithm}` : ''}
    limits:
      - { by: ip, limit: 2, window: ${o.window} }
${o.more ?? ''}`;

  test('a lowered limit bites at once, blocks run on, a new window or algorithm starts fresh', async () => {
    const tg = await startTollgate(policy({ limit: 10, block: '5m', window: '1m' }), { upstream: upstream.url });
    try {
      const client = { 'x-forwarded-for': '198.51.100.50' };
      assert.deepEqual(await statuses(`${tg.url}/api/a`, 6, client), [200, 200, 200, 200, 200, 200]);
      assert.deepEqual(await statuses(`${tg.url}/login`, 3, client), [200, 200, 429]); // block started
      assert.deepEqual(await statuses(`${tg.url}/search`, 3, client), [200, 200, 429]);

      writeFileSync(
        tg.file,
        policy({
          limit: 5, // lowered below the 6 already used
          block: '10m', // a longer block does not restart the running one
          window: '2m', // a different limit: fresh counts
          message: 'Slow down please', // unrelated edits
          more: '  - id: added\n    match: { path: /added }\n    limits: [{ by: ip, limit: 1, window: 1m }]\n',
        }),
      );
      const result = tg.tollgate.reload();
      assert.equal(result.ok, true, JSON.stringify(result));

      const api = await get(`${tg.url}/api/a`, client);
      assert.equal(api.status, 429, 'the lowered limit applies to the counts already made');
      assert.equal(api.limit, '5');
      assert.equal(JSON.parse(api.body).error.message, 'Slow down please');

      const login = await fetch(`${tg.url}/login`, { headers: client });
      await login.arrayBuffer();
      assert.equal(login.status, 429, 'the block survived the reload');
      assert.equal(login.headers.get('retry-after'), '300', 'the running block keeps its end');

      assert.deepEqual(await statuses(`${tg.url}/search`, 3, client), [200, 200, 429], 'window 2m is a new limit');

      // Another client is unaffected by all of this.
      assert.equal((await get(`${tg.url}/api/a`, { 'x-forwarded-for': '198.51.100.51' })).status, 200);

      // The block ends when it was going to end, not 10 minutes after the reload.
      tg.clock.advance(5 * 60 * 1000 + 1);
      assert.equal((await get(`${tg.url}/login`, client)).status, 200);

      // Changing the algorithm is a new limit too.
      writeFileSync(tg.file, policy({ limit: 5, block: '10m', window: '2m', algorithm: 'fixed-window' }));
      assert.equal(tg.tollgate.reload().ok, true);
      assert.deepEqual(await statuses(`${tg.url}/search`, 3, client), [200, 200, 429]);
    } finally {
      await tg.close();
    }
  });
});

/** An upstream that holds `/slow*` requests until `release()`; answers with its own name. */
async function startGatedUpstream(name: string) {
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    if (req.url?.startsWith('/slow')) held.push(res);
    else res.end(name);
  });
  server.keepAliveTimeout = 60 * 1000; // 60s: idle pooled sockets close only when Tollgate closes them
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    held,
    release(): void {
      for (const res of held.splice(0)) res.end(`${name} slow`);
    },
    /** Open connections (Tollgate's pooled keep-alive sockets among them). */
    connections: () => new Promise<number>((resolve, reject) => server.getConnections((error, n) => (error ? reject(error) : resolve(n)))),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('a request in flight during a reload', () => {
  test('finishes under the policy (and upstream) it started with; the next one gets the new policy', async (t) => {
    const oldUpstream = await startGatedUpstream('old');
    const newUpstream = await startGatedUpstream('new');
    t.after(async () => {
      await oldUpstream.close();
      await newUpstream.close();
    });
    const policy = (upstream: string, limit: number, by: string) => `
upstream: ${upstream}
routes:
  - id: slow
    match: { path: /slow/* }
    limits:
      - { by: ${by}, limit: ${limit}, window: 1m }
`;
    const tg = await startTollgate(policy(oldUpstream.url, 10, 'ip'));
    try {
      const inFlight = get(`${tg.url}/slow/1`);
      await eventually(() => assert.equal(oldUpstream.held.length, 1));

      writeFileSync(tg.file, policy(newUpstream.url, 20, 'global'));
      assert.equal(tg.tollgate.reload().ok, true);

      // The next request starts under the new policy: new limit, new upstream.
      const next = get(`${tg.url}/slow/2`);
      await eventually(() => assert.equal(newUpstream.held.length, 1));
      assert.equal(oldUpstream.held.length, 1);

      oldUpstream.release();
      const first = await inFlight;
      assert.equal(first.status, 200);
      assert.equal(first.body, 'old slow');
      assert.equal(first.limit, '10');
      assert.equal(first.remaining, '9');
      assert.equal(first.policy, '"slow.ip";q=10;w=60');

      newUpstream.release();
      const second = await next;
      assert.equal(second.status, 200);
      assert.equal(second.body, 'new slow');
      assert.equal(second.limit, '20');
      assert.equal(second.policy, '"slow.global";q=20;w=60');
    } finally {
      await tg.close();
    }
  });
});

describe('a request still being evaluated during a reload', () => {
  test('reaches the upstream it started with, though the reload replaced it; close() releases the old pool', async (t) => {
    const oldUpstream = await startGatedUpstream('old');
    const newUpstream = await startGatedUpstream('new');
    // A JWKS endpoint that answers only when told: the request's evaluation waits on it.
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] });
    const jwksHeld: http.ServerResponse[] = [];
    const jwksServer = http.createServer((_req, res) => jwksHeld.push(res));
    await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
    t.after(async () => {
      jwksServer.closeAllConnections();
      await new Promise<void>((r) => jwksServer.close(() => r()));
      await oldUpstream.close();
      await newUpstream.close();
    });
    const policy = (upstream: string, limit: number) => `
upstream: ${upstream}
identity:
  jwt:
    jwksUrl: http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json
    algorithms: [ES256]
routes:
  - id: api
    match: { path: /api/* }
    limits:
      - { by: user, limit: ${limit}, window: 1m, for: authenticated }
`;
    const token = await new SignJWT({ sub: 'alice' }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setExpirationTime(4_102_444_800).sign(privateKey);
    const tg = await startTollgate(policy(oldUpstream.url, 10));
    let closed = false;
    try {
      // Warm the pool to the old upstream (no token: no JWKS wait).
      assert.equal((await get(`${tg.url}/api/warm`)).body, 'old');
      const pending = get(`${tg.url}/api/a`, { authorization: `Bearer ${token}` });
      await eventually(() => assert.equal(jwksHeld.length, 1));

      writeFileSync(tg.file, policy(newUpstream.url, 20));
      assert.equal(tg.tollgate.reload().ok, true);
      for (const res of jwksHeld.splice(0)) res.end(jwks);

      const answer = await pending;
      assert.equal(answer.status, 200, answer.body); // was 502 UPSTREAM_UNAVAILABLE: the old pool was closed
      assert.equal(answer.body, 'old');
      assert.equal(answer.limit, '10');
      assert.equal((await get(`${tg.url}/api/b`)).body, 'new');

      // The replaced pool is still open (its grace has not run out), and closing Tollgate closes it.
      assert.ok((await oldUpstream.connections()) > 0);
      await tg.close();
      closed = true;
      await eventually(async () => assert.equal(await oldUpstream.connections(), 0));
    } finally {
      if (!closed) await tg.close();
    }
  });
});

describe('GET /config', () => {
  const JWT_SECRET = 'jwt-secret-from-env-0123456789abcdefghijkl';
  const REDIS_PASSWORD = 'redis-pass-9d8c7b';
  const URL_PASSWORD = 'url-pass-1a2b3c';
  const policy = (limit: number) => `
upstream: http://127.0.0.1:1
identity:
  jwt: { secret: "\${JWT_SECRET}", algorithms: [HS256] }
routes:
  - id: api
    match: { path: /api/* }
    limits:
      - { by: ip, limit: ${limit}, window: 1m }
store:
  type: memory
  redis:
    url: redis://tollgate:${URL_PASSWORD}@redis.internal:6379/0
    password: ${REDIS_PASSWORD}
`;

  test('returns the active policy, its hash and load time, secrets redacted; follows reloads', async () => {
    const text = policy(4);
    const tg = await startTollgate('', { file: writePolicy(text), env: { JWT_SECRET } });
    try {
      const res = await fetch(`${tg.adminUrl}/config`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
      assert.equal(res.headers.get('cache-control'), 'no-store');
      const raw = await res.text();
      for (const secret of [JWT_SECRET, REDIS_PASSWORD, URL_PASSWORD]) assert.ok(!raw.includes(secret), `/config shows ${secret}`);
      const body = JSON.parse(raw) as { hash: string; loadedAt: string; policy: any };
      assert.equal(body.hash, sha256(text));
      assert.equal(Date.parse(body.loadedAt), tg.clock.nowMs); // the injected clock
      assert.equal(body.policy.identity.jwt.secret, '[redacted]');
      assert.deepEqual(body.policy.identity.jwt.algorithms, ['HS256']);
      assert.equal(body.policy.store.redis.password, '[redacted]');
      assert.equal(body.policy.store.redis.url, 'redis://tollgate:[redacted]@redis.internal:6379/0');
      assert.deepEqual(body.policy.routes[0].limits[0], { by: 'ip', limit: 4, windowMs: 60_000, for: 'any' });

      const next = policy(9);
      writeFileSync(tg.file, next);
      tg.clock.advance(90_000);
      assert.equal(tg.tollgate.reload().ok, true);
      const after = (await (await fetch(`${tg.adminUrl}/config`)).json()) as typeof body;
      assert.equal(after.hash, sha256(next));
      assert.equal(after.policy.routes[0].limits[0].limit, 9);
      assert.equal(Date.parse(after.loadedAt), tg.clock.nowMs);

      // A failed reload leaves /config on the active policy.
      writeFileSync(tg.file, 'routes: [');
      assert.equal(tg.tollgate.reload().ok, false);
      assert.equal(((await (await fetch(`${tg.adminUrl}/config`)).json()) as typeof body).hash, sha256(next));
    } finally {
      await tg.close();
    }
  });
});
