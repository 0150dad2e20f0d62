/**
 * SessionRelay over real sockets: a `ws` client, a small front (./front.ts) and the
 * echo upstream, with session time on a ManualClock (no sleeps: the tests move time).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { after, afterEach, before, describe, it } from 'node:test';
import { OPCODE_TEXT, frame } from '../../src/sessions/frames.js';
import { MESSAGE_BYTES_BOUND, SessionRelay } from '../../src/sessions/relay.js';
import type { CloseReason, CompiledSession, TunnelStats } from '../../src/sessions/types.js';
import { ManualClock } from '../helpers/session-clock.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { openClient, openRawClient, until, within, type TestClient } from '../helpers/ws.js';
import { startFront, type Front } from './front.js';

const NONE: CompiledSession = { maxDurationMs: null, idleTimeoutMs: null, maxMessageBytes: null, messages: null };

interface Closed {
  reason: CloseReason;
  stats: TunnelStats;
}

/** A front whose tunnels are SessionRelays with `session`, and what they reported. */
async function relayFront(upstream: string, session: Partial<CompiledSession>, clock: ManualClock) {
  const relays: SessionRelay[] = [];
  const closes: Closed[] = [];
  const front = await startFront(upstream, (sockets) => {
    const relay = new SessionRelay(sockets, { ...NONE, ...session }, clock, (reason, stats) => closes.push({ reason, stats }));
    relays.push(relay);
    relay.start();
  });
  return { front, relays, closes, closed: () => until(() => closes.length > 0, 'relay closed').then(() => closes[0]) };
}

describe('SessionRelay', () => {
  let upstream: EchoUpstream;
  let front: Front | undefined;
  const clients: TestClient[] = [];

  before(async () => {
    upstream = await startEchoUpstream();
  });
  afterEach(async () => {
    for (const client of clients.splice(0)) client.ws.terminate();
    await front?.close();
    front = undefined;
  });
  after(() => upstream.close());

  async function open(session: Partial<CompiledSession>, clock = new ManualClock()) {
    const relayed = await relayFront(upstream.url, session, clock);
    front = relayed.front;
    const before = upstream.sockets.length;
    const client = await openClient(`${relayed.front.url}/ws/test`);
    clients.push(client);
    const server = await upstream.socket(before);
    return { ...relayed, client, server, clock };
  }

  it('relays text, binary, fragmented messages and pings both ways; a client close is relayed and answered', async () => {
    const { client, server, closed } = await open({});
    client.ws.send('hello');
    assert.equal(String(await client.next()), 'hello');
    const binary = randomBytes(70_000);
    client.ws.send(binary);
    assert.deepEqual(await client.next(), binary);
    client.ws.send('frag-', { fin: false });
    client.ws.send('ment', { fin: true });
    assert.equal(String(await client.next()), 'frag-ment');
    assert.deepEqual(server.messages.map((m) => [String(m.data).slice(0, 9), m.isBinary]), [['hello', false], [binary.toString().slice(0, 9), true], ['frag-ment', false]]);
    const pong = new Promise<Buffer>((resolve) => client.ws.once('pong', resolve));
    client.ws.ping('are you there');
    assert.equal(String(await within(pong, 3000, 'pong')), 'are you there');
    assert.equal(server.pings, 1);
    client.ws.close(1000, 'bye');
    assert.deepEqual(await within(server.closed, 3000, 'upstream close'), { code: 1000, reason: 'bye' });
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1000, reason: 'bye' });
    const report = await closed();
    assert.equal(report.reason, 'client');
    assert.equal(report.stats.messagesFromClient, 3);
    assert.equal(report.stats.messagesFromUpstream, 3);
  });

  it('an upstream close is relayed to the client: reason upstream', async () => {
    const { client, server, closed } = await open({});
    server.ws.close(4000, 'done here');
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 4000, reason: 'done here' });
    assert.equal((await closed()).reason, 'upstream');
  });

  it('maxDuration: 1001 "session duration limit" to the client and to the upstream', async () => {
    const { client, server, clock, closed } = await open({ maxDurationMs: 10_000 });
    clock.advance(9_999);
    client.ws.send('still here');
    assert.equal(String(await client.next()), 'still here');
    clock.advance(1);
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1001, reason: 'session duration limit' });
    assert.deepEqual(await within(server.closed, 3000, 'upstream close'), { code: 1001, reason: 'session duration limit' });
    assert.equal((await closed()).reason, 'max_duration');
  });

  it('idleTimeout: pings do not reset it', async () => {
    const { client, clock, closed } = await open({ idleTimeoutMs: 1000 });
    for (let i = 0; i < 3; i++) {
      clock.advance(300);
      const pong = new Promise((resolve) => client.ws.once('pong', resolve));
      client.ws.ping();
      await within(pong, 3000, 'pong');
    }
    clock.advance(100);
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1001, reason: 'idle timeout' });
    assert.equal((await closed()).reason, 'idle');
  });

  it('idleTimeout: a data message either way resets it', async () => {
    const { client, server, clock, closes } = await open({ idleTimeoutMs: 1000 });
    clock.advance(600);
    client.ws.send('from the client'); // t=600, echoed at once
    await client.next();
    clock.advance(600); // t=1200: the timer armed for t=1000 finds activity at t=600
    assert.equal(closes.length, 0);
    server.ws.send('from the upstream'); // t=1200
    await client.next();
    clock.advance(999); // t=2199
    assert.equal(closes.length, 0);
    assert.equal(client.ws.readyState, client.ws.OPEN);
    clock.advance(1);
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1001, reason: 'idle timeout' });
  });

  it('messages: the message over the limit closes with 1008 and never reaches the upstream', async () => {
    const { client, server, clock, closed } = await open({ messages: { limit: 3, windowMs: 1000 } });
    for (let i = 0; i < 3; i++) client.ws.send(`m${i}`);
    for (let i = 0; i < 3; i++) await client.next();
    clock.advance(2000); // two windows later nothing is left of them
    for (let i = 3; i < 6; i++) client.ws.send(`m${i}`);
    for (let i = 3; i < 6; i++) await client.next();
    client.ws.send('one too many');
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1008, reason: 'message rate exceeded' });
    assert.deepEqual(await within(server.closed, 3000, 'upstream close'), { code: 1001, reason: 'message rate exceeded' });
    assert.deepEqual(server.messages.map((m) => String(m.data)), ['m0', 'm1', 'm2', 'm3', 'm4', 'm5']);
    const report = await closed();
    assert.equal(report.reason, 'message_rate');
    assert.equal(report.stats.messagesFromClient, 6);
  });

  it('maxMessageSize: a larger message closes with 1009 and is not relayed; one at the limit is', async () => {
    const { client, server, closed } = await open({ maxMessageBytes: 1024 });
    client.ws.send(Buffer.alloc(1024, 1));
    assert.equal((await client.next()).length, 1024);
    client.ws.send(Buffer.alloc(1025, 2));
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1009, reason: 'message too big' });
    assert.deepEqual(await within(server.closed, 3000, 'upstream close'), { code: 1001, reason: 'message too big' });
    assert.deepEqual(server.messages.map((m) => m.data.length), [1024]);
    assert.equal((await closed()).reason, 'message_size');
  });

  it('maxMessageSize counts the fragments of one message together, before relaying any of them', async () => {
    const { client, server, closed } = await open({ maxMessageBytes: 1000 });
    client.ws.send(Buffer.alloc(600, 1), { fin: false });
    client.ws.send(Buffer.alloc(400, 1), { fin: true });
    assert.equal((await client.next()).length, 1000);
    client.ws.send(Buffer.alloc(600, 2), { fin: false });
    client.ws.send(Buffer.alloc(600, 2), { fin: true });
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1009, reason: 'message too big' });
    assert.deepEqual(server.messages.map((m) => m.data.length), [1000], 'no fragment of the larger message reached the upstream');
    assert.equal((await closed()).reason, 'message_size');
  });

  it('without maxMessageSize a message is still bounded (MESSAGE_BYTES_BOUND): a frame declaring 8 GiB closes with 1009 at its header', async () => {
    const relayed = await relayFront(upstream.url, { idleTimeoutMs: 60_000 }, new ManualClock());
    front = relayed.front;
    const raw = await openRawClient(Number(new URL(relayed.front.url).port), '/ws/unbounded');
    // FIN + binary, masked, 64-bit length 2^33, mask key; no payload follows.
    const header = Buffer.alloc(14);
    header[0] = 0x82;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(2n ** 33n, 2);
    raw.socket.write(header);
    await within(raw.ended, 3000, 'the relay to end the connection');
    const close = raw.received();
    assert.equal(close[0], 0x88, 'a close frame came back');
    assert.equal(close.readUInt16BE(2), 1009);
    assert.equal((await relayed.closed()).reason, 'message_size');
    assert.ok(MESSAGE_BYTES_BOUND < 2 ** 33);
  });

  it('drain(): 1001 "server shutting down" both ways; the sockets end after both handshakes', async () => {
    const { client, server, relays, closed } = await open({ idleTimeoutMs: 60_000 });
    relays[0].drain();
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1001, reason: 'server shutting down' });
    assert.deepEqual(await within(server.closed, 3000, 'upstream close'), { code: 1001, reason: 'server shutting down' });
    assert.equal((await closed()).reason, 'drain');
  });

  it('frames that break RFC 6455 from the client: 1002 to it, 1001 to the upstream, reason error', async () => {
    const relayed = await relayFront(upstream.url, {}, new ManualClock());
    front = relayed.front;
    const before = upstream.sockets.length;
    const raw = await openRawClient(relayed.front.port, '/ws/raw');
    const server = await upstream.socket(before);
    raw.socket.write(Buffer.concat(frame(Buffer.from('unmasked'), OPCODE_TEXT, false))); // a client must mask
    assert.deepEqual(await within(server.closed, 3000, 'upstream close'), { code: 1001, reason: 'protocol error' });
    await until(() => raw.received().length >= 4, 'close frame to the client');
    assert.equal(raw.received().readUInt16BE(2), 1002);
    raw.socket.end();
    assert.equal((await relayed.closed()).reason, 'error');
  });
});

describe('SessionRelay closing deadline', () => {
  let silent: http.Server;
  const held: Duplex[] = [];
  let front: Front;

  before(async () => {
    // Accepts the upgrade and then reads nothing and answers nothing.
    silent = http.createServer();
    silent.on('upgrade', (_req, socket: Duplex) => {
      held.push(socket);
      socket.on('error', () => {});
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n');
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  });
  after(async () => {
    for (const socket of held) socket.destroy();
    await front?.close();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });

  it('an upstream that never answers the close is cut after CLOSE_HANDSHAKE_MS', async () => {
    const clock = new ManualClock();
    const relayed = await relayFront(`http://127.0.0.1:${(silent.address() as AddressInfo).port}`, { maxDurationMs: 5000 }, clock);
    front = relayed.front;
    const raw = await openRawClient(relayed.front.port, '/ws/x');
    clock.advance(5000);
    await until(() => raw.received().length > 0, 'close frame to the client');
    assert.equal(relayed.closes.length, 0, 'waiting for the upstream to answer');
    clock.advance(1000);
    await within(raw.ended, 3000, 'client connection ended');
    assert.equal((await relayed.closed()).reason, 'max_duration');
  });
});

describe('SessionRelay with permessage-deflate negotiated by both ends', () => {
  let upstream: EchoUpstream;
  let front: Front;
  const clients: TestClient[] = [];
  let relayed: Awaited<ReturnType<typeof relayFront>>;

  before(async () => {
    upstream = await startEchoUpstream({ perMessageDeflate: true });
    relayed = await relayFront(upstream.url, { maxMessageBytes: 500 }, new ManualClock());
    front = relayed.front;
  });
  after(async () => {
    for (const client of clients) client.ws.terminate();
    await front.close();
    await upstream.close();
  });

  it('messages pass still compressed and arrive intact; sizes are counted as sent on the wire', async () => {
    const before = upstream.sockets.length;
    // threshold 0: the client compresses every message; the upstream only those >= 1 KiB.
    const client = await openClient(`${front.url}/ws/deflate`, { perMessageDeflate: { threshold: 0 } });
    clients.push(client);
    const server = await upstream.socket(before);
    assert.match(client.ws.extensions, /permessage-deflate/);
    assert.match(server.extensions, /permessage-deflate/);

    const big = 'a'.repeat(10_000); // far over 500 bytes, a few dozen once compressed
    client.ws.send(big);
    assert.equal(String(await client.next()), big);
    client.ws.send('hi'); // compressed one way, echoed uncompressed
    assert.equal(String(await client.next()), 'hi');
    const fragmented = 'abc'.repeat(1000);
    client.ws.send(fragmented.slice(0, 1500), { fin: false });
    client.ws.send(fragmented.slice(1500), { fin: true });
    assert.equal(String(await client.next()), fragmented);
    assert.deepEqual(server.messages.map((m) => m.data.length), [10_000, 2, 3000]);

    client.ws.send(randomBytes(2000)); // does not compress: ~2000 bytes on the wire
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1009, reason: 'message too big' });
    assert.equal(server.messages.length, 3, 'the large message never reached the upstream');
    await until(() => relayed.closes.length > 0, 'relay closed');
    assert.equal(relayed.closes[0].reason, 'message_size');
  });
});
