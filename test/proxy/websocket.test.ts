import assert from 'node:assert/strict';
import http, { type IncomingMessage } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { startTollgate, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { echo, request } from './client.js';

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

type Handshake = { ws: WebSocket; response: IncomingMessage } | { refused: IncomingMessage; body: string };

/** Opens a WebSocket; resolves with the open socket, or with the refusing HTTP response and its body. */
function connect(url: string, from: string, headers: Record<string, string> = {}): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { localAddress: from, headers });
    ws.once('upgrade', (response) => ws.once('open', () => resolve({ ws, response })));
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ refused: res, body: Buffer.concat(chunks).toString('utf8') }));
    });
    ws.once('error', reject);
  });
}

function roundTrip(ws: WebSocket, message: string): Promise<string> {
  return new Promise((resolve, reject) => {
    ws.once('message', (data) => resolve(String(data)));
    ws.once('error', reject);
    ws.send(message);
  });
}

describe('WebSocket upgrades', () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;
  let wsUrl: string;
  const open: WebSocket[] = [];

  before(async () => {
    upstream = await startEchoUpstream();
    tg = await startTollgate(POLICY, { upstream: upstream.url });
    wsUrl = tg.url.replace('http:', 'ws:');
  });
  after(async () => {
    for (const ws of open) ws.terminate();
    await tg.close();
    await upstream.close();
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
    const seen = upstream.seen.find((s) => s.url === '/ws/live?room=1');
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
    const upgradesBefore = upstream.seen.filter((s) => s.headers.upgrade !== undefined).length;
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
    assert.equal(upstream.seen.filter((s) => s.headers.upgrade !== undefined).length, upgradesBefore, 'never reached the upstream');
  });

  it('drops hop-by-hop request headers on the handshake as on plain HTTP, keeping Connection: upgrade', async () => {
    const socket = net.connect({ host: '127.0.0.1', port: Number(new URL(tg.url).port), localAddress: '127.0.6.6' });
    socket.on('error', () => {});
    const answer = new Promise<string>((resolve) => socket.once('data', (chunk: Buffer) => resolve(chunk.toString('latin1'))));
    socket.write(
      'GET /ws/live?hop=1 HTTP/1.1\r\nHost: tollgate\r\nConnection: Upgrade, X-Secret-Hop\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nProxy-Authorization: Basic c2VjcmV0\r\n' +
        'Keep-Alive: timeout=5\r\nX-Secret-Hop: 1\r\nX-Kept: yes\r\n\r\n',
    );
    assert.match(await answer, /^HTTP\/1\.1 101 /);
    socket.destroy();
    const seen = upstream.seen.find((s) => s.url === '/ws/live?hop=1');
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
  let refusing: http.Server;
  let tg: TestTollgate;

  before(async () => {
    // No 'upgrade' listener: Node answers upgrade requests as plain requests, here with a chunked 403.
    refusing = http.createServer((_req, res) => {
      res.writeHead(403, { 'content-type': 'text/plain' });
      res.write('no websockets ');
      res.end('here');
    });
    await new Promise<void>((resolve) => refusing.listen(0, '127.0.0.1', resolve));
    tg = await startTollgate(POLICY, { upstream: `http://127.0.0.1:${(refusing.address() as AddressInfo).port}` });
  });
  after(async () => {
    await tg.close();
    refusing.closeAllConnections();
    await new Promise<void>((resolve) => refusing.close(() => resolve()));
  });

  it("relays the upstream's refusal intact, with the request id", async () => {
    const result = await connect(`${tg.url.replace('http:', 'ws:')}/ws/live`, '127.0.6.4', { 'x-request-id': 'ws-403' });
    assert.ok('refused' in result, 'not upgraded');
    assert.equal(result.refused.statusCode, 403);
    assert.equal(result.body, 'no websockets here');
    assert.equal(result.refused.headers['x-request-id'], 'ws-403');
    assert.equal(result.refused.headers['x-ratelimit-remaining'], '1');
  });
});

describe('WebSocket handshakes the client leaves', () => {
  let slow: http.Server;
  const upstreamClosed: boolean[] = [];
  const upstreamSockets: Duplex[] = [];
  let tg: TestTollgate;

  before(async () => {
    // Answers 101 only after 150 ms, when the client has already gone.
    slow = http.createServer();
    slow.on('upgrade', (_req, socket) => {
      const index = upstreamClosed.push(false) - 1;
      upstreamSockets.push(socket);
      // Upgraded server sockets stay half-open: Tollgate closing its side shows as 'end'.
      socket.on('end', () => (upstreamClosed[index] = true));
      socket.on('close', () => (upstreamClosed[index] = true));
      socket.on('error', () => {});
      setTimeout(() => {
        if (!socket.destroyed) socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
      }, 150);
    });
    await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
    tg = await startTollgate(`upstream: http://127.0.0.1:9\nupstreamTimeout: 5s\nroutes: []\n`, {
      upstream: `http://127.0.0.1:${(slow.address() as AddressInfo).port}`,
    });
  });
  after(async () => {
    await tg.close();
    for (const socket of upstreamSockets) socket.destroy(); // upgraded: not closed by closeAllConnections
    await new Promise<void>((resolve) => slow.close(() => resolve()));
  });

  it('a client that closes before the 101 cancels the upstream handshake: no tunnel to nobody, nothing in flight', async () => {
    const socket = net.connect({ host: '127.0.0.1', port: Number(new URL(tg.url).port) });
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write('GET /ws/any HTTP/1.1\r\nHost: tollgate\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    const deadline = Date.now() + 3_000;
    while (upstreamClosed.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    socket.end(); // a clean close, not an error
    while (upstreamClosed[0] !== true && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(upstreamClosed[0], true, 'the upstream side of the handshake is closed');
    await new Promise((r) => setTimeout(r, 250)); // past the late 101
    const metrics = await (await fetch(`${tg.adminUrl}/metrics`)).text();
    assert.match(metrics, /^tollgate_inflight_requests 0$/m);
  });
});

describe('WebSocket upgrades the upstream never answers', () => {
  let silent: http.Server;
  const held: Duplex[] = [];
  let tg: TestTollgate;

  before(async () => {
    silent = http.createServer();
    silent.on('upgrade', (_req, socket) => held.push(socket)); // holds the socket, never answers
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    tg = await startTollgate(`upstream: http://127.0.0.1:9\nupstreamTimeout: 200ms\nroutes: []\n`, {
      upstream: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`,
    });
  });
  after(async () => {
    await tg.close();
    for (const socket of held) socket.destroy();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });

  it('answers the handshake 504 UPSTREAM_TIMEOUT after upstreamTimeout', async () => {
    const result = await connect(`${tg.url.replace('http:', 'ws:')}/ws/any`, '127.0.6.5', { 'x-request-id': 'ws-504' });
    assert.ok('refused' in result);
    assert.equal(result.refused.statusCode, 504);
    assert.deepEqual(JSON.parse(result.body), {
      success: false,
      error: { code: 'UPSTREAM_TIMEOUT', message: 'Upstream service timed out', details: { requestId: 'ws-504' } },
    });
  });
});
