/**
 * Violation and access logs of a running Tollgate. The suppression rules themselves
 * (quiet periods, the per-second budget, the periodic flush) are unit-tested on a
 * hand-driven clock and flush timer in violations.test.ts; here every summary is read
 * after `close()`, which reports whatever is pending, so no test waits for the real 1 s flush.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test, type TestContext } from 'node:test';
import { SignJWT } from 'jose';
import { request } from '../helpers/http.js';
import { startWithEcho, type TestTollgate, type TollgateWithEcho } from '../helpers/tollgate.js';
import { WAIT_MS, withDeadline } from '../helpers/wait.js';

const JWT_SECRET = 'logs-test-secret-0123456789abcdefghijklmnop';

const POLICY = `
clientIp:
  trustedProxies: [127.0.0.1/32]
identity:
  jwt: { secret: "${JWT_SECRET}", algorithms: [HS256] }
routes:
  - id: login
    match: { path: /login }
    limits:
      - { by: ip, limit: 2, window: 1m, block: 5m }
  - id: search
    match: { path: /search }
    algorithm: fixed-window
    limits:
      - { by: ip, limit: 1, window: 1m }
  - id: upload
    match: { path: /upload }
    limits:
      - { by: user, limit: 1, window: 1m }
  - id: preview
    match: { path: /preview }
    mode: shadow
    limits:
      - { by: ip, limit: 1, window: 1m }
`;

/** The status of one request through `tg`. */
async function call(tg: TestTollgate, target: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<number> {
  return (await request(tg.url, target, init)).status;
}

/**
 * One GET on its own connection (`connection: close`), status from the status line.
 * Thousands of these are several times cheaper than an HTTP client on a busy 2-core machine.
 */
function rawGet(port: number, target: string, headers: Record<string, string>): Promise<number> {
  const exchange = new Promise<number>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let head = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      if (head.length < 16) head += chunk;
    });
    socket.on('error', reject);
    socket.on('close', () => {
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(head);
      if (status === null) reject(new Error(`no status line: ${JSON.stringify(head)}`));
      else resolve(Number(status[1]));
    });
    let request = `GET ${target} HTTP/1.1\r\nhost: tollgate.test\r\nconnection: close\r\n`;
    for (const [name, value] of Object.entries(headers)) request += `${name}: ${value}\r\n`;
    socket.write(request + '\r\n'); // no half-close: the server ends the connection after answering
  });
  return withDeadline(exchange, WAIT_MS, `the answer to GET ${target}`);
}

/** Runs `n` requests, `concurrency` at a time; returns how many got each status. */
async function flood(n: number, concurrency: number, one: (i: number) => Promise<number>): Promise<Map<number, number>> {
  const statuses = new Map<number, number>();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const status = await one(next++);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return statuses;
}

/** A Tollgate running POLICY in front of an echo upstream, stopped after the test. */
async function started(t: TestContext, policy = POLICY): Promise<TollgateWithEcho> {
  const tg = await startWithEcho(policy);
  t.after(() => tg.close());
  return tg;
}

const VIOLATION_EVENTS = new Set(['rate_limit_exceeded', 'rate_limit_blocked', 'rate_limit_block_started']);
const isViolation = (l: Record<string, unknown>): boolean => VIOLATION_EVENTS.has(l.event as string);
const rateLimitLines = (tg: TestTollgate) => tg.logs.lines.filter((l) => String(l.event).startsWith('rate_limit'));

describe('violation logs under a flood stay bounded', () => {
  test('3000 requests of one blocked key: one line, and the 2997 refusals folded into it in one summary', async (t) => {
    const tg = await started(t);
    const statuses = await flood(3000, 16, (i) => rawGet(tg.port, '/login', { 'x-forwarded-for': '198.51.100.9', 'x-request-id': `flood-${i}` }));
    assert.equal(statuses.get(200), 2);
    assert.equal(statuses.get(429), 2998);
    const lines = rateLimitLines(tg);
    assert.equal(lines.length, 1, JSON.stringify(lines.slice(0, 3)));
    const [line] = lines;
    assert.equal(line.event, 'rate_limit_block_started');
    assert.equal(line.level, 'warn');
    assert.equal(line.route, 'login');
    assert.equal(line.limitBy, 'ip');
    assert.equal(line.keyKind, 'ip');
    assert.equal(line.clientIp, '198.51.100.9');
    assert.equal(line.limit, 2);
    assert.equal(line.count, 2);
    assert.equal(line.blocked, true);
    assert.equal(line.retryAfter, 300);
    assert.match(String(line.requestId), /^flood-\d+$/);
    assert.equal('shadow' in line, false);

    // The block ends; stopping reports how many refusals were folded into that line.
    tg.clock.advance(5 * 60 * 1000 + 1);
    await tg.close();
    const summaries = tg.logs.events('rate_limit_suppressed');
    assert.equal(summaries.length, 1, JSON.stringify(summaries));
    const [summary] = summaries;
    assert.deepEqual({ route: summary.route, limitBy: summary.limitBy, suppressed: summary.suppressed }, { route: 'login', limitBy: 'ip', suppressed: 2997 });
    assert.ok(!JSON.stringify(summary).includes('198.51.100.9'), 'the summary names no client');
  });

  test('2000 distinct keys: at most the per-second budget of lines, the rest counted in an overflow summary', async (t) => {
    const tg = await started(t);
    // Each client makes 2 requests against limit 1: the second is refused. XFF is trusted from 127.0.0.1.
    const ip = (i: number) => `10.${(i >> 8) & 255}.${i & 255}.7`;
    const statuses = await flood(4000, 16, (i) => rawGet(tg.port, '/search', { 'x-forwarded-for': ip(i >> 1) }));
    assert.equal(statuses.get(429), 2000);
    const perKey = rateLimitLines(tg).filter(isViolation);
    assert.equal(perKey.length, 100); // the default budget: 100 lines per (fake) second, which never moves here
    assert.ok(perKey.every((l) => l.event === 'rate_limit_exceeded' && l.route === 'search' && l.blocked === false && l.count === 1));
    await tg.close(); // reports what the periodic flush has not reported yet
    const lines = rateLimitLines(tg);
    const overflow = lines.filter((l) => l.event === 'rate_limit_log_overflow');
    assert.equal(
      overflow.reduce((sum, l) => sum + (l.dropped as number), 0),
      1900,
    );
    // Nothing else: the overflow summaries (one per flush at most) are the only other lines.
    assert.equal(lines.length, perKey.length + overflow.length);
  });

  test('without a block, the first refusal of each window is logged again', async (t) => {
    const tg = await started(t);
    const headers = { 'x-forwarded-for': '10.255.255.7' };
    // One allowed, then refused three times in the same window.
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push(await call(tg, '/search', { headers }));
    assert.deepEqual(statuses, [200, 429, 429, 429]);
    assert.equal(tg.logs.lines.filter(isViolation).length, 1);
    tg.clock.advance(60 * 1000); // next fixed window
    assert.deepEqual([await call(tg, '/search', { headers }), await call(tg, '/search', { headers })], [200, 429]);
    const mine = tg.logs.lines.filter((l) => isViolation(l) && l.clientIp === '10.255.255.7');
    assert.equal(mine.length, 2);
    // The second window's first refusal reported the first window's two folded ones.
    const summary = tg.logs.lines.filter((l) => l.event === 'rate_limit_suppressed' && l.route === 'search');
    assert.equal(summary.length, 1);
    assert.equal(summary[0].suppressed, 2);
  });
});

describe('violation log fields', () => {
  let tg: TollgateWithEcho;
  let token: string;
  before(async () => {
    tg = await startWithEcho(POLICY);
    token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('user-8842').setExpirationTime(4_102_444_800).sign(new TextEncoder().encode(JWT_SECRET));
  });
  after(() => tg.close());

  test('a user limit logs the user id, never the token or the body', async () => {
    const body = JSON.stringify({ password: 'body-secret-77' });
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-forwarded-for': '192.0.2.44', 'x-request-id': 'req-upload-2' };
    assert.equal(await call(tg, '/upload', { method: 'POST', headers: { ...headers, 'x-request-id': 'req-upload-1' }, body }), 200);
    assert.equal(await call(tg, '/upload', { method: 'POST', headers, body }), 429);
    const lines = tg.logs.events('rate_limit_exceeded').filter((l) => l.route === 'upload');
    assert.equal(lines.length, 1);
    const [line] = lines;
    const { time, msg, ...fields } = line;
    assert.equal(typeof time, 'string');
    assert.equal(msg, 'rate limit exceeded');
    assert.deepEqual(fields, {
      level: 'warn',
      service: 'tollgate',
      event: 'rate_limit_exceeded',
      route: 'upload',
      limitBy: 'user',
      keyKind: 'user',
      userId: 'user-8842',
      clientIp: '192.0.2.44',
      limit: 1,
      count: 1,
      blocked: false,
      retryAfter: 120, // sliding window, limit 1: the one request weighs on the next window until its end
      requestId: 'req-upload-2',
    });
    const all = JSON.stringify(tg.logs.lines);
    assert.ok(!all.includes(token), 'a log line contains the JWT');
    assert.ok(!all.includes(token.split('.')[2]), 'a log line contains the JWT signature');
    assert.ok(!all.includes(JWT_SECRET), 'a log line contains the JWT secret');
    assert.ok(!all.includes('body-secret-77'), 'a log line contains the request body');
  });

  test('shadow mode lets the request through and says so with shadow: true', async () => {
    const headers = { 'x-forwarded-for': '192.0.2.45' };
    assert.equal(await call(tg, '/preview', { headers }), 200);
    assert.equal(await call(tg, '/preview', { headers }), 200);
    const lines = tg.logs.lines.filter((l) => isViolation(l) && l.route === 'preview');
    assert.equal(lines.length, 1);
    assert.equal(lines[0].shadow, true);
    assert.equal(lines[0].clientIp, '192.0.2.45');
    assert.match(String(lines[0].msg), /shadow/);
  });
});

describe('access log', () => {
  for (const access of [false, true]) {
    test(`log.access: ${access}`, async (t) => {
      const tg = await started(t, `${POLICY}\nlog:\n  access: ${access}\n`);
      {
        const headers = { 'x-forwarded-for': '192.0.2.60', authorization: 'Bearer not-a-real-token-5150' };
        assert.equal(await call(tg, '/search?api_key=query-secret-31', { headers }), 200);
        assert.equal(await call(tg, '/search', { headers }), 429);
        assert.equal(await call(tg, '/elsewhere', { headers }), 200);
        // The proxy logs when a response closes: closing every connection settles them all.
        await tg.close();
        assert.equal(tg.logs.events('rate_limit_exceeded').length, 1, 'the refusal itself is logged either way');
        const lines = tg.logs.events('access');
        if (!access) {
          assert.equal(lines.length, 0);
          return;
        }
        assert.deepEqual(
          lines.map((l) => [l.method, l.path, l.status, l.route, l.decision, l.clientIp]),
          [
            ['GET', '/search', 200, 'search', 'allowed', '192.0.2.60'],
            ['GET', '/search', 429, 'search', 'limited', '192.0.2.60'],
            ['GET', '/elsewhere', 200, '_unmatched', 'bypassed', '192.0.2.60'],
          ],
        );
        assert.ok(lines.every((l) => l.level === 'info' && typeof l.durationMs === 'number' && typeof l.requestId === 'string'));
        const all = JSON.stringify(tg.logs.lines);
        assert.ok(!all.includes('query-secret-31'), 'the query string was logged');
        assert.ok(!all.includes('not-a-real-token-5150'), 'the Authorization header was logged');
      }
    });
  }
});

describe('suppression periods', () => {
  test('suppressed counts still pending are reported when Tollgate stops', async (t) => {
    const tg = await started(t);
    const headers = { 'x-forwarded-for': '192.0.2.80' };
    const got: number[] = [];
    for (let i = 0; i < 6; i++) got.push(await call(tg, '/login', { headers }));
    assert.deepEqual(got, [200, 200, 429, 429, 429, 429]);
    assert.equal(tg.logs.events('rate_limit_suppressed').length, 0); // the block still runs
    await tg.close();
    const summaries = tg.logs.events('rate_limit_suppressed');
    assert.equal(summaries.length, 1);
    assert.equal(summaries[0].suppressed, 3);
  });

  test('a client steadily over a sliding-window limit gets one line per window, not one per retry-after', async (t) => {
    const tg = await started(t, 'clientIp: { trustedProxies: [127.0.0.1/32] }\nroutes:\n  - id: feed\n    match: { path: /feed }\n    limits: [{ by: ip, limit: 10, window: 1m }]\n');
    const refusedAt: number[] = [];
    // One request per (fake) second for three windows, from the start of a window: 3x over the limit the whole time.
    for (let second = 0; second < 180; second++) {
      if ((await call(tg, '/feed', { headers: { 'x-forwarded-for': '192.0.2.81', 'x-request-id': `feed-${second}` } })) === 429) refusedAt.push(second);
      tg.clock.advance(1000);
    }
    // The first 10 pass; from then on the client stays over the limit.
    assert.equal(refusedAt[0], 10);
    assert.ok(refusedAt.length > 140, `${refusedAt.length} refused`);
    // A line opens a quiet period of one window (60 s): the refusals at 10 s, 70 s and 130 s
    // are logged, every other one is folded into a summary.
    const lines = tg.logs.lines.filter(isViolation);
    assert.deepEqual(
      lines.map((l) => l.requestId),
      ['feed-10', 'feed-70', 'feed-130'],
      `${lines.length} violation lines for one client over 3 windows`,
    );
    // Every refusal between two lines was folded into a summary, none lost.
    await tg.close();
    const suppressed = tg.logs.events('rate_limit_suppressed').reduce((sum, l) => sum + (l.suppressed as number), 0);
    assert.equal(suppressed + lines.length, refusedAt.length);
  });
});
