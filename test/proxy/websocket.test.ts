import assert from 'node:assert/strict';
import type { Duplex } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type WebSocket from 'ws';
import { echo, openWebSocket, rawConnect, request, roundTrip, type RawConnection } from '../helpers/http.js';
import { sampleValue } from '../helpers/metrics.js';
import { startInFrontOf, startWithEcho, type TollgateInFront, type TollgateWithEcho } from '../helpers/tollgate.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { eventually } from '../helpers/wait.js';

const POLICY = `
upstream: http://127.0.0.1:9
routes:
  - id: live-ws
    match: { path: /ws/live, websocket: true }
    message: Too many connections
    algorithm: fixed-window
    limits:
      - { by: ip, limit: 2, window: 1m }
`;

describe('WebSocket upgrades', () => {
  let tg: TollgateWithEcho;
  let wsUrl: string;
  const open: WebSocket[] = [];
  const connect = (url: string, from: string, headers: Record<string, string> = {}) => openWebSocket(url, { from, headers });

  before(async () => {
    tg = await startWithEcho(POLICY);
    wsUrl = tg.url.replace('http:', 'ws:');
  });
  after(async () => {
    for (const ws of open) ws.terminate();
    await tg.close();
  });

  it('proxies the handshake and messages both ways, with rate headers and the request id on the 101', async () => {
    const result = await connect(`${wsUrl}/ws/live?room=1`, '127.0.6.1', { 'x-request-id': 'ws-1' });
    assert.ok('ws' in result, 'upgraded');
    open.push(result.ws);
    assert.equal(result.response.headers['x-ratelimit-limit'], '2');
    assert.equal(result.response.headers['x-ratelimit-remaining'], '1');
    assert.equal(result.response.headers['ratelimit-policy'], '"live-ws.ip";q=2;w=60');
    assert.equal(result.response.headers['x-request-id'], 'ws-1');
    assert.equal(await roundTrip(result.ws, 'hello'), 'hello');
    assert.equal(await roundTrip(result.ws, 'x'.repeat(100_000)), 'x'.repeat(100_000));
    const seen = tg.upstream.seen.find((s) => s.url === '/ws/live?room=1');
    assert.equal(seen?.headers['x-request-id'], 'ws-1');
    assert.equal(seen?.headers['x-forwarded-for'], '127.0.6.1');
    assert.equal(seen?.headers.upgrade, 'websocket');
  });

  it('refuses the handshake over the limit with a 429 and the JSON envelope', async () => {
    const from = '127.0.6.2';
    for (let i = 0; i < 2; i++) {
      const ok = await connect(`${wsUrl}/ws/live`, from);
      assert.ok('ws' in ok);
      open.push(ok.ws);
    }
    const upgradesBefore = tg.upstream.seen.filter((s) => s.headers.upgrade !== undefined).length;
    const refused = await connect(`${wsUrl}/ws/live`, from, { 'x-request-id': 'ws-refused' });
    assert.ok('refused' in refused, 'not upgraded');
    assert.equal(refused.refused.statusCode, 429);
    assert.equal(refused.refused.headers['retry-after'], '60');
    assert.equal(refused.refused.headers['x-ratelimit-remaining'], '0');
    assert.equal(refused.refused.headers['x-ratelimit-violation-type'], 'ip');
    assert.equal(refused.refused.headers['ratelimit-policy'], '"live-ws.ip";q=2;w=60');
    assert.deepEqual(JSON.parse(refused.body), {
      success: false,
      error: {
        code: 'RATE_LIMIT_EXCEEDED',
        message: 'Too many connections',
        details: { violationType: 'ip', limitType: 'rate', retryAfter: 60, limit: 2, route: 'live-ws', requestId: 'ws-refused' },
      },
    });
    assert.equal(tg.upstream.seen.filter((s) => s.headers.upgrade !== undefined).length, upgradesBefore, 'never reached the upstream');
  });

  it('drops hop-by-hop request headers on the handshake as on plain HTTP, keeping Connection: upgrade', async () => {
    const connection = await rawConnect(tg.port, '127.0.6.6');
    connection.socket.write(
      'GET /ws/live?hop=1 HTTP/1.1\r\nHost: tollgate\r\nConnection: Upgrade, X-Secret-Hop\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nProxy-Authorization: Basic c2VjcmV0\r\n' +
        'Keep-Alive: timeout=5\r\nX-Secret-Hop: 1\r\nX-Kept: yes\r\n\r\n',
    );
    assert.match(await connection.waitFor((text) => text.includes('\r\n\r\n')), /^HTTP\/1\.1 101 /);
    connection.socket.destroy();
    const seen = tg.upstream.seen.find((s) => s.url === '/ws/live?hop=1');
    assert.ok(seen !== undefined);
    assert.equal(seen.headers['proxy-authorization'], undefined);
    assert.equal(seen.headers['keep-alive'], undefined);
    assert.equal(seen.headers['x-secret-hop'], undefined);
    assert.equal(seen.headers['x-kept'], 'yes');
    assert.equal(seen.headers.upgrade, 'websocket');
    assert.match(String(seen.headers.connection), /upgrade/i);
  });

  it('does not apply a websocket-only route to plain requests, nor limit unmatched upgrades', async () => {
    const from = '127.0.6.3';
    for (let i = 0; i < 3; i++) {
      const plain = await request(tg.url, '/ws/live', { from });
      assert.equal(plain.status, 200);
      assert.equal(plain.headers['x-ratelimit-limit'], undefined);
      assert.equal(echo(plain).url, '/ws/live');
    }
    for (let i = 0; i < 3; i++) {
      const other = await connect(`${wsUrl}/ws/other`, from);
      assert.ok('ws' in other);
      open.push(other.ws);
    }
  });
});

describe('WebSocket upgrades the upstream refuses', () => {
  let tg: TollgateInFront<Upstream>;

  before(async () => {
    // No 'upgrade' listener: Node answers upgrade requests as plain requests, here with a chunked 403.
    const refusing = await startUpstream((_req, res) => {
      res.writeHead(403, { 'content-type': 'text/plain' });
      res.write('no websockets ');
      res.end('here');
    });
    tg = await startInFrontOf(refusing, POLICY);
  });
  after(() => tg.close());

  it("relays the upstream's refusal intact, with the request id", async () => {
    const result = await openWebSocket(`${tg.url.replace('http:', 'ws:')}/ws/live`, { from: '127.0.6.4', headers: { 'x-request-id': 'ws-403' } });
    assert.ok('refused' in result, 'not upgraded');
    assert.equal(result.refused.statusCode, 403);
    assert.equal(result.body, 'no websockets here');
    assert.equal(result.refused.headers['x-request-id'], 'ws-403');
    assert.equal(result.refused.headers['x-ratelimit-remaining'], '1');
  });
});

describe('refused WebSocket upgrades whose client keeps its side open', () => {
  let tg: TollgateInFront<Upstream>;
  const SLOT_POLICY = `
upstream: http://127.0.0.1:9
routes:
  - id: slot-ws
    match: { path: /ws/slot, websocket: true }
    limits:
      - { by: ip, concurrent: 1 }
  - id: once-ws
    match: { path: /ws/once, websocket: true }
    limits:
      - { by: ip, limit: 1, window: 1m }
`;
  const upgrade = (path: string): string =>
    `GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

  before(async () => {
    const refusing = await startUpstream((_req, res) => {
      res.writeHead(403, { 'content-type': 'text/plain' });
      res.end('no websockets here');
    });
    tg = await startInFrontOf(refusing, SLOT_POLICY);
  });
  after(() => tg.close());

  it("are closed by Tollgate once answered: a relayed refusal gives its slot back, Tollgate's own 429 holds no socket", async (t) => {
    const port = Number(new URL(tg.url).port);
    const opened: RawConnection[] = [];
    t.after(() => {
      for (const conn of opened) conn.socket.destroy();
    });
    const connect = async (from: string): Promise<RawConnection> => {
      const conn = await rawConnect(port, from, true);
      opened.push(conn);
      return conn;
    };
    const slots = async (): Promise<number> => sampleValue(await tg.scrape(), 'tollgate_concurrent_slots', { route: 'slot-ws' }) ?? 0;
    // Each client reads its answer and never closes its side of the connection.
    const first = await connect('127.0.6.20');
    first.socket.write(upgrade('/ws/slot'));
    assert.match(await first.waitFor((text) => text.includes('no websockets here')), /^HTTP\/1.1 403 /);
    await eventually(async () => (await slots()) === 0, { what: 'the refused upgrade to give its slot back', timeoutMs: 5_000, intervalMs: 50 });
    const second = await connect('127.0.6.20');
    second.socket.write(upgrade('/ws/slot'));
    assert.match(await second.waitFor((text) => text.includes('no websockets here')), /^HTTP\/1.1 403 /, 'the upstream answers again, not a 429');

    const allowed = await connect('127.0.6.21');
    allowed.socket.write(upgrade('/ws/once'));
    await allowed.waitFor((text) => text.includes('no websockets here'));
    const limited = await connect('127.0.6.21');
    limited.socket.write(upgrade('/ws/once'));
    assert.match(await limited.waitFor((text) => text.includes('"RATE_LIMIT_EXCEEDED"')), /^HTTP\/1.1 429 /);
    // Tollgate's side of an answered socket goes: a byte the client sends then is answered
    // by a reset (while Tollgate held the socket, bytes were just buffered).
    for (const conn of [limited, second]) {
      await eventually(
        () => {
          if (!conn.socket.destroyed) conn.socket.write('x');
          return conn.socket.closed;
        },
        { what: 'Tollgate to close its side of an answered upgrade', timeoutMs: 5_000, intervalMs: 100 },
      );
    }
  });
});

describe('WebSocket handshakes the client leaves', () => {
  /** The upstream's 101 comes this late: after the client has gone. */
  const LATE_101_MS = 150;
  const upstreamClosed: boolean[] = [];
  let tg: TollgateInFront<Upstream>;

  before(async () => {
    const slow = await startUpstream(() => assert.fail('a plain request'), {
      onUpgrade: (_req, socket: Duplex) => {
        const index = upstreamClosed.push(false) - 1;
        // Upgraded server sockets stay half-open: Tollgate closing its side shows as 'end'.
        socket.on('end', () => (upstreamClosed[index] = true));
        socket.on('close', () => (upstreamClosed[index] = true));
        socket.on('error', () => {});
        setTimeout(() => {
          if (!socket.destroyed) socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
        }, LATE_101_MS);
      },
    });
    tg = await startInFrontOf(slow, 'upstreamTimeout: 5s\nroutes: []\n');
  });
  after(() => tg.close());

  it('a client that closes before the 101 cancels the upstream handshake: no tunnel to nobody, nothing in flight', async () => {
    const client = await rawConnect(tg.port);
    client.socket.write('GET /ws/any HTTP/1.1\r\nHost: tollgate\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    await eventually(() => upstreamClosed.length > 0, { what: 'the upgrade to reach the upstream' });
    client.socket.end(); // a clean close, not an error
    await eventually(() => upstreamClosed[0], { what: 'the upstream side of the handshake to be closed' });
    await new Promise((r) => setTimeout(r, LATE_101_MS + 100)); // past the late 101: it must not open a tunnel
    assert.equal(sampleValue(await tg.scrape(), 'tollgate_inflight_requests'), 0);
  });
});

describe('WebSocket upgrades the upstream never answers', () => {
  let tg: TollgateInFront<Upstream>;

  before(async () => {
    const silent = await startUpstream(() => assert.fail('a plain request'), { onUpgrade: () => {} }); // holds the socket, never answers
    tg = await startInFrontOf(silent, 'upstreamTimeout: 200ms\nroutes: []\n');
  });
  after(() => tg.close());

  it('answers the handshake 504 UPSTREAM_TIMEOUT after upstreamTimeout', async () => {
    const result = await openWebSocket(`${tg.url.replace('http:', 'ws:')}/ws/any`, { from: '127.0.6.5', headers: { 'x-request-id': 'ws-504' } });
    assert.ok('refused' in result);
    assert.equal(result.refused.statusCode, 504);
    assert.deepEqual(JSON.parse(result.body), {
      success: false,
      error: { code: 'UPSTREAM_TIMEOUT', message: 'Upstream service timed out', details: { requestId: 'ws-504' } },
    });
  });
});
