import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import { startTollgate, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

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

async function call(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<number> {
  const res = await fetch(url, init);
  await res.arrayBuffer();
  return res.status;
}

/**
 * One GET on its own connection (`connection: close`), status from the status line.
 * Thousands of these are several times cheaper than fetch on a busy 2-core machine.
 */
function rawGet(port: number, target: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
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

async function eventually(check: () => void, deadlineMs = 5000): Promise<void> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    try {
      return check();
    } catch (error) {
      if (Date.now() > end) throw error;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

const VIOLATION_EVENTS = new Set(['rate_limit_exceeded', 'rate_limit_blocked', 'rate_limit_block_started']);
const isViolation = (l: Record<string, unknown>): boolean => VIOLATION_EVENTS.has(l.event as string);
const rateLimitLines = (tg: TestTollgate) => tg.logs.lines.filter((l) => String(l.event).startsWith('rate_limit'));

describe('violation logs under a flood stay bounded', () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;
  before(async () => {
    upstream = await startEchoUpstream();
    tg = await startTollgate(POLICY, { upstream: upstream.url });
  });
  after(async () => {
    await tg.close();
    await upstream.close();
  });

  test('3000 requests of one blocked key: one line, then one summary with the suppressed count', async () => {
    const port = tg.tollgate.proxyAddress.port;
    const statuses = await flood(3000, 16, (i) => rawGet(port, '/login', { 'x-forwarded-for': '198.51.100.9', 'x-request-id': `flood-${i}` }));
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

    // The block ends: the next flush reports how many refusals were folded into that line.
    tg.clock.advance(5 * 60 * 1000 + 1);
    await eventually(() => assert.equal(tg.logs.events('rate_limit_suppressed').length, 1)); // periodic flush (1s)
    const summary = tg.logs.events('rate_limit_suppressed')[0];
    assert.deepEqual({ route: summary.route, limitBy: summary.limitBy, suppressed: summary.suppressed }, { route: 'login', limitBy: 'ip', suppressed: 2997 });
    assert.ok(!JSON.stringify(summary).includes('198.51.100.9'), 'the summary names no client');
  });

  test('2000 distinct keys: at most the per-second budget of lines, the rest counted in an overflow summary', async () => {
    tg.clock.advance(1000); // a fresh (fake) second of log budget
    const before = rateLimitLines(tg).length;
    // Each client makes 2 requests against limit 1: the second is refused. XFF is trusted from 127.0.0.1.
    const ip = (i: number) => `10.${(i >> 8) & 255}.${i & 255}.7`;
    const statuses = await flood(4000, 16, (i) => rawGet(tg.tollgate.proxyAddress.port, '/search', { 'x-forwarded-for': ip(i >> 1) }));
    assert.equal(statuses.get(429), 2000);
    await eventually(() => {
      const dropped = tg.logs.events('rate_limit_log_overflow').reduce((sum, l) => sum + (l.dropped as number), 0);
      assert.equal(dropped, 1900);
    });
    const lines = rateLimitLines(tg).slice(before);
    const perKey = lines.filter(isViolation);
    assert.equal(perKey.length, 100); // the default budget: 100 lines per (fake) second
    assert.ok(perKey.every((l) => l.event === 'rate_limit_exceeded' && l.route === 'search' && l.blocked === false && l.count === 1));
    // Nothing else: the overflow summaries (one per periodic flush at most) are the only other lines.
    const overflow = lines.filter((l) => l.event === 'rate_limit_log_overflow');
    assert.ok(overflow.length >= 1);
    assert.equal(lines.length, perKey.length + overflow.length);
  });

  test('without a block, the first refusal of each window is logged again', async () => {
    // 10.255.255.7 is new: one allowed, then refused three times in the same window.
    const headers = { 'x-forwarded-for': '10.255.255.7' };
    tg.clock.advance(1000); // a fresh second of log budget
    const start = tg.logs.lines.length;
    assert.deepEqual([await call(`${tg.url}/search`, { headers }), await call(`${tg.url}/search`, { headers }), await call(`${tg.url}/search`, { headers }), await call(`${tg.url}/search`, { headers })], [200, 429, 429, 429]);
    assert.equal(tg.logs.lines.slice(start).filter(isViolation).length, 1);
    tg.clock.advance(60 * 1000); // next fixed window
    assert.deepEqual([await call(`${tg.url}/search`, { headers }), await call(`${tg.url}/search`, { headers })], [200, 429]);
    const mine = tg.logs.lines.slice(start).filter((l) => isViolation(l) && l.clientIp === '10.255.255.7');
    assert.equal(mine.length, 2);
    const summary = tg.logs.lines.slice(start).filter((l) => l.event === 'rate_limit_suppressed' && l.route === 'search');
    assert.equal(summary.length, 1);
    assert.equal(summary[0].suppressed, 2);
  });
});

describe('violation log fields', () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;
  let token: string;
  before(async () => {
    upstream = await startEchoUpstream();
    tg = await startTollgate(POLICY, { upstream: upstream.url });
    token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('user-8842').setExpirationTime(4_102_444_800).sign(new TextEncoder().encode(JWT_SECRET));
  });
  after(async () => {
    await tg.close();
    await upstream.close();
  });

  test('a user limit logs the user id, never the token or the body', async () => {
    const body = JSON.stringify({ password: 'body-secret-77' });
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'x-forwarded-for': '192.0.2.44', 'x-request-id': 'req-upload-2' };
    assert.equal(await call(`${tg.url}/upload`, { method: 'POST', headers: { ...headers, 'x-request-id': 'req-upload-1' }, body }), 200);
    assert.equal(await call(`${tg.url}/upload`, { method: 'POST', headers, body }), 429);
    const [line] = tg.logs.events('rate_limit_exceeded');
    assert.ok(line !== undefined);
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
    assert.equal(await call(`${tg.url}/preview`, { headers }), 200);
    assert.equal(await call(`${tg.url}/preview`, { headers }), 200);
    const lines = tg.logs.lines.filter((l) => isViolation(l) && l.route === 'preview');
    assert.equal(lines.length, 1);
    assert.equal(lines[0].shadow, true);
    assert.equal(lines[0].clientIp, '192.0.2.45');
    assert.match(String(lines[0].msg), /shadow/);
  });
});

describe('access log', () => {
  let upstream: EchoUpstream;
  before(async () => {
    upstream = await startEchoUpstream();
  });
  after(async () => upstream.close());

  for (const access of [false, true]) {
    test(`log.access: ${access}`, async () => {
      const tg = await startTollgate(`${POLICY}\nlog:\n  access: ${access}\n`, { upstream: upstream.url });
      let closed = false;
      try {
        const headers = { 'x-forwarded-for': '192.0.2.60', authorization: 'Bearer not-a-real-token-5150' };
        assert.equal(await call(`${tg.url}/search?api_key=query-secret-31`, { headers }), 200);
        assert.equal(await call(`${tg.url}/search`, { headers }), 429);
        assert.equal(await call(`${tg.url}/elsewhere`, { headers }), 200);
        // The proxy logs when a response closes: closing every connection settles them all.
        await tg.close();
        closed = true;
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
      } finally {
        if (!closed) await tg.close();
      }
    });
  }
});

describe('suppression periods', () => {
  let upstream: EchoUpstream;
  before(async () => {
    upstream = await startEchoUpstream();
  });
  after(async () => upstream.close());

  test('suppressed counts still pending are reported when Tollgate stops', async () => {
    const tg = await startTollgate(POLICY, { upstream: upstream.url });
    const headers = { 'x-forwarded-for': '192.0.2.80' };
    try {
      const got: number[] = [];
      for (let i = 0; i < 6; i++) got.push(await call(`${tg.url}/login`, { headers }));
      assert.deepEqual(got, [200, 200, 429, 429, 429, 429]);
      assert.equal(tg.logs.events('rate_limit_suppressed').length, 0); // the block still runs
    } finally {
      await tg.close();
    }
    const summaries = tg.logs.events('rate_limit_suppressed');
    assert.equal(summaries.length, 1);
    assert.equal(summaries[0].suppressed, 3);
  });

  test(
    'a client steadily over a sliding-window limit gets one line per window, not one per retry-after',
    async () => {
      const tg = await startTollgate(
        'clientIp: { trustedProxies: [127.0.0.1/32] }\nroutes:\n  - id: feed\n    match: { path: /feed }\n    limits: [{ by: ip, limit: 10, window: 1m }]\n',
        { upstream: upstream.url },
      );
      try {
        let refused = 0;
        // One request per (fake) second for three windows: 3x over the limit the whole time.
        for (let i = 0; i < 180; i++) {
          if ((await call(`${tg.url}/feed`, { headers: { 'x-forwarded-for': '192.0.2.81' } })) === 429) refused++;
          tg.clock.advance(1000);
        }
        assert.ok(refused > 140, `${refused} refused`);
        const lines = tg.logs.lines.filter(isViolation);
        assert.ok(lines.length <= 4, `${lines.length} violation lines for one client over 3 windows`);
      } finally {
        await tg.close();
      }
    },
  );
});
