/**
 * WebSocket session limits through a running Tollgate: the closes as a `ws` client and
 * the upstream see them, the metrics and log lines, and the drain on raw and session
 * tunnels. Durations are short and real (a few hundred ms); every wait has a deadline.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, describe, it } from 'node:test';
import * as wsModule from 'ws';
import { OPCODE_BINARY, OPCODE_CLOSE, closePayload, frame } from '../../src/sessions/frames.js';
import { startTollgate, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { openClient, openRawClient, until, within, type TestClient } from '../helpers/ws.js';

const POLICY = `
upstream: http://127.0.0.1:9
clientIp: { trustedProxies: [127.0.0.1/32] }
identity: { header: x-user-id }
routes:
  - id: ws-limits
    match: { path: /ws/limits, websocket: true }
    limits: []
    session:
      maxMessageSize: 1kb
      messages: { limit: 5, window: 1m }
  - id: ws-idle
    match: { path: /ws/idle, websocket: true }
    limits: []
    session: { idleTimeout: 400ms }
  - id: ws-duration
    match: { path: /ws/duration, websocket: true }
    limits: []
    session: { maxDuration: 300ms }
  - id: ws-raw
    match: { path: /ws/raw, websocket: true }
    limits: []
`;

/** Sum of the samples of `name` whose labels include `labels` (exposition text); NaN if none. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = NaN;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) have.set(l[1], l[2]);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) total = (Number.isNaN(total) ? 0 : total) + Number(m[3]);
  }
  return total;
}

/** What a client makes of `bytes` (ws's own Receiver, as a client). */
function parseAsClient(bytes: Buffer): { messages: Buffer[]; close?: { code: number; reason: string }; error?: string } {
  const Receiver = (wsModule as unknown as { Receiver: new (o: object) => NodeJS.EventEmitter & { write(b: Buffer): void } }).Receiver;
  const parsed: { messages: Buffer[]; close?: { code: number; reason: string }; error?: string } = { messages: [] };
  const receiver = new Receiver({ isServer: false, skipUTF8Validation: true });
  receiver.on('message', (data: Buffer) => parsed.messages.push(data));
  receiver.on('conclude', (code: number, reason: Buffer) => (parsed.close = { code, reason: reason.toString() }));
  receiver.on('error', (error: Error) => (parsed.error = error.message));
  receiver.write(bytes);
  return parsed;
}

describe('WebSocket session limits through Tollgate', () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;
  let wsUrl: string;
  const clients: TestClient[] = [];

  before(async () => {
    upstream = await startEchoUpstream();
    tg = await startTollgate(POLICY, { upstream: upstream.url });
    wsUrl = tg.url.replace('http:', 'ws:');
  });
  afterEach(() => {
    for (const client of clients.splice(0)) client.ws.terminate();
  });
  after(async () => {
    await tg.close();
    await upstream.close();
  });

  async function connect(path: string, headers: Record<string, string> = {}) {
    const before = upstream.sockets.length;
    const client = await openClient(`${wsUrl}${path}`, { headers });
    clients.push(client);
    return { client, server: await upstream.socket(before) };
  }

  it('maxMessageSize: 1009 "message too big"; the message never reaches the upstream, which gets 1001', async () => {
    const { client, server } = await connect('/ws/limits', { 'x-request-id': 'size-1', 'x-user-id': 'alice' });
    client.ws.send(Buffer.alloc(1024, 1));
    assert.equal((await client.next()).length, 1024);
    client.ws.send(Buffer.alloc(1025, 2));
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1009, reason: 'message too big' });
    assert.deepEqual(await within(server.closed, 3000, 'upstream close'), { code: 1001, reason: 'message too big' });
    assert.deepEqual(server.messages.map((m) => m.data.length), [1024]);

    await until(() => tg.logs.events('websocket_closed').some((l) => l.requestId === 'size-1'), 'log line');
    const line = tg.logs.events('websocket_closed').find((l) => l.requestId === 'size-1') as Record<string, unknown>;
    assert.deepEqual(
      [line.level, line.route, line.reason, line.userId, line.clientIp, line.messagesFromClient, line.messagesFromUpstream],
      ['warn', 'ws-limits', 'message_size', 'alice', '127.0.0.1', 1, 1],
    );
    assert.equal(typeof line.durationMs, 'number');
  });

  it('maxMessageSize over fragments: the fragments of one message count together', async () => {
    const { client, server } = await connect('/ws/limits');
    client.ws.send(Buffer.alloc(700, 1), { fin: false });
    client.ws.send(Buffer.alloc(700, 1), { fin: true });
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1009, reason: 'message too big' });
    assert.deepEqual(server.messages, []);
  });

  it('messages: the 6th message of 5 per minute closes with 1008 "message rate exceeded" and is not relayed', async () => {
    const { client, server } = await connect('/ws/limits');
    for (let i = 0; i < 5; i++) client.ws.send(`m${i}`);
    for (let i = 0; i < 5; i++) await client.next();
    const pong = new Promise((resolve) => client.ws.once('pong', resolve));
    client.ws.ping(); // not a message
    await within(pong, 3000, 'pong');
    client.ws.send('m5');
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1008, reason: 'message rate exceeded' });
    assert.deepEqual(await within(server.closed, 3000, 'upstream close'), { code: 1001, reason: 'message rate exceeded' });
    assert.deepEqual(server.messages.map((m) => String(m.data)), ['m0', 'm1', 'm2', 'm3', 'm4']);
  });

  it('maxDuration: 1001 "session duration limit" once it is over, to both sides', async () => {
    const started = Date.now();
    const { client, server } = await connect('/ws/duration');
    client.ws.send('x');
    await client.next();
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1001, reason: 'session duration limit' });
    assert.ok(Date.now() - started >= 290, `closed after ${Date.now() - started} ms`);
    assert.deepEqual(await within(server.closed, 3000, 'upstream close'), { code: 1001, reason: 'session duration limit' });
  });

  it('idleTimeout: keep-alive pings do not hold the session open', async () => {
    const { client, server } = await connect('/ws/idle');
    const pinger = setInterval(() => client.ws.ping(), 100);
    try {
      const started = Date.now();
      assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1001, reason: 'idle timeout' });
      assert.ok(Date.now() - started >= 390, `closed after ${Date.now() - started} ms`);
      assert.ok(server.pings >= 2, 'the pings were relayed');
      assert.deepEqual(await within(server.closed, 3000, 'upstream close'), { code: 1001, reason: 'idle timeout' });
    } finally {
      clearInterval(pinger);
    }
  });

  it('idleTimeout: data either way keeps it open; it closes after the last data', async () => {
    const { client, server } = await connect('/ws/idle');
    // 600+ ms of activity, alternating sides every 50 ms, against a 400 ms idle timeout
    // (gaps far below it, so a loaded box's stalls do not close the session early).
    const activeFrom = Date.now();
    for (let i = 0; i < 12; i++) {
      if (i % 2 === 0) client.ws.send(`c${i}`);
      else server.ws.send(`u${i}`);
      await client.next();
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(Date.now() - activeFrom > 400, 'the activity outlasted the idle timeout');
    assert.equal(client.ws.readyState, client.ws.OPEN, 'still open after the activity');
    const quietFrom = Date.now();
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1001, reason: 'idle timeout' });
    assert.ok(Date.now() - quietFrom >= 250, `closed ${Date.now() - quietFrom} ms after the last data`);
  });

  it('metrics: open tunnels by route (raw included), closes by reason, durations; in-flight back to 0', async () => {
    const raw = await connect('/ws/raw');
    const limited = await connect('/ws/limits');
    let text = await (await fetch(`${tg.adminUrl}/metrics`)).text();
    assert.equal(sample(text, 'tollgate_websocket_sessions', { route: 'ws-raw' }), 1);
    assert.equal(sample(text, 'tollgate_websocket_sessions', { route: 'ws-limits' }), 1);
    const rawBefore = sample(text, 'tollgate_websocket_closed_total', { route: 'ws-raw', reason: 'client' }) || 0;
    const sizeBefore = sample(text, 'tollgate_websocket_closed_total', { route: 'ws-limits', reason: 'message_size' }) || 0;
    raw.client.ws.close(1000);
    limited.client.ws.send(Buffer.alloc(2000));
    await within(Promise.all([raw.client.closed, limited.client.closed]), 3000, 'both closed');
    await until(() => tg.tollgate.metrics.hot.inflight === 0, 'nothing in flight');
    text = await (await fetch(`${tg.adminUrl}/metrics`)).text();
    assert.equal(sample(text, 'tollgate_websocket_sessions', { route: 'ws-raw' }), 0);
    assert.equal(sample(text, 'tollgate_websocket_sessions', { route: 'ws-limits' }), 0);
    assert.equal(sample(text, 'tollgate_websocket_closed_total', { route: 'ws-raw', reason: 'client' }), rawBefore + 1);
    assert.equal(sample(text, 'tollgate_websocket_closed_total', { route: 'ws-limits', reason: 'message_size' }), sizeBefore + 1);
    assert.ok(sample(text, 'tollgate_websocket_session_duration_seconds_count', { route: 'ws-raw' }) >= 1);
    assert.match(text, /^tollgate_inflight_requests 0$/m);
    assert.doesNotMatch(text, /tollgate_websocket_[a-z_]+\{[^}]*(user|ip|key)=/, 'no user, IP or key labels');
  });
});

describe('WebSocket sessions with permessage-deflate through Tollgate', () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;
  const clients: TestClient[] = [];

  before(async () => {
    upstream = await startEchoUpstream({ perMessageDeflate: true });
    tg = await startTollgate(POLICY, { upstream: upstream.url });
  });
  after(async () => {
    for (const client of clients) client.ws.terminate();
    await tg.close();
    await upstream.close();
  });

  it('both ends negotiate it; messages arrive intact; maxMessageSize counts compressed bytes', async () => {
    const before = upstream.sockets.length;
    const client = await openClient(`${tg.url.replace('http:', 'ws:')}/ws/limits`, { perMessageDeflate: { threshold: 0 } });
    clients.push(client);
    const server = await upstream.socket(before);
    assert.match(client.ws.extensions, /permessage-deflate/);
    assert.match(server.extensions, /permessage-deflate/);
    const text = 'tollgate '.repeat(2000); // 18 KB, far over 1kb, small once compressed
    client.ws.send(text);
    assert.equal(String(await client.next()), text);
    assert.equal(String(server.messages[0].data), text);
    client.ws.send(randomBytes(4096)); // does not compress
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1009, reason: 'message too big' });
    assert.equal(server.messages.length, 1);
  });
});

describe('draining WebSocket tunnels through Tollgate', () => {
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

  it('raw and session tunnels get 1001 "server shutting down" at the start; a raw one mid-frame gets it after the frame', async () => {
    const wsUrl = tg.url.replace('http:', 'ws:');
    const sessionClient = await openClient(`${wsUrl}/ws/idle`);
    const sessionServer = await upstream.socket(0);
    const rawClient = await openClient(`${wsUrl}/ws/raw`);
    const rawServer = await upstream.socket(1);
    // A third, raw, tunnel in the middle of a large upstream->client frame.
    const bytes = await openRawClient(Number(new URL(tg.url).port), '/ws/raw');
    const bigServer = await upstream.socket(2);
    const payload = Buffer.alloc(300_000, 0x61);
    const [header] = frame(payload, OPCODE_BINARY, false);
    bigServer.socket.write(Buffer.concat([header, payload.subarray(0, 2000)]));
    await until(() => bytes.received().length >= header.length + 2000, 'first part relayed');

    const drained = tg.tollgate.shutdown(30_000);
    // The rest of the frame, before the upstream's socket answers the close it is about to get
    // (written under ws, which would otherwise queue its close answer after the frame itself).
    bigServer.socket.write(payload.subarray(2000));
    assert.deepEqual(await within(sessionClient.closed, 3000, 'session client'), { code: 1001, reason: 'server shutting down' });
    assert.deepEqual(await within(rawClient.closed, 3000, 'raw client'), { code: 1001, reason: 'server shutting down' });
    assert.deepEqual(await within(sessionServer.closed, 3000, 'session upstream'), { code: 1001, reason: 'server shutting down' });
    assert.deepEqual(await within(rawServer.closed, 3000, 'raw upstream'), { code: 1001, reason: 'server shutting down' });

    await until(() => parseAsClient(bytes.received()).close !== undefined, 'close after the big frame');
    const parsed = parseAsClient(bytes.received());
    assert.equal(parsed.error, undefined);
    assert.equal(parsed.messages.length, 1);
    assert.ok(parsed.messages[0].equals(payload));
    assert.deepEqual(parsed.close, { code: 1001, reason: 'server shutting down' });
    bytes.socket.write(Buffer.concat(frame(closePayload(1001, ''), OPCODE_CLOSE, true)));

    await within(drained, 5000, 'drain');
    assert.deepEqual(tg.logs.events('drain_timeout'), [], 'the drain did not wait for its timeout');
    const summary = tg.logs.events('websocket_drain');
    assert.deepEqual(summary.map((l) => [l.tunnels, l.closed, l.destroyed]), [[3, 3, 0]]);
    assert.deepEqual(tg.logs.events('websocket_closed'), [], 'no line per socket');
  });
});
