/**
 * RawTunnel over real sockets: bytes relayed as they come, and a drain whose close
 * frames land between frames, never inside one.
 */
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import { after, afterEach, before, describe, it } from 'node:test';
import * as wsModule from 'ws';
import { OPCODE_BINARY, OPCODE_CLOSE, closePayload, frame } from '../../src/sessions/frames.js';
import { RawTunnel } from '../../src/sessions/raw-tunnel.js';
import type { CloseReason } from '../../src/sessions/types.js';
import { ManualClock } from '../helpers/session-clock.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { openClient, openRawClient, until, within, type TestClient } from '../helpers/ws.js';
import { startFront, type Front } from './front.js';

interface Parsed {
  messages: Buffer[];
  close?: { code: number; reason: string };
  error?: string;
}

/** What a client would make of `bytes` (ws's own Receiver, as a client). */
function parseAsClient(bytes: Buffer): Parsed {
  const Receiver = (wsModule as unknown as { Receiver: new (o: object) => NodeJS.EventEmitter & { write(b: Buffer): void } }).Receiver;
  const parsed: Parsed = { messages: [] };
  const receiver = new Receiver({ isServer: false, skipUTF8Validation: true });
  receiver.on('message', (data: Buffer) => parsed.messages.push(data));
  receiver.on('conclude', (code: number, reason: Buffer) => (parsed.close = { code, reason: reason.toString() }));
  receiver.on('error', (error: Error) => (parsed.error = error.message));
  receiver.write(bytes);
  return parsed;
}

describe('RawTunnel', () => {
  let upstream: EchoUpstream;
  let front: Front;
  const tunnels: RawTunnel[] = [];
  const closes: CloseReason[] = [];
  const clients: TestClient[] = [];
  const clock = new ManualClock();

  before(async () => {
    upstream = await startEchoUpstream();
    front = await startFront(upstream.url, (sockets) => {
      const tunnel = new RawTunnel(sockets, clock, (reason) => closes.push(reason));
      tunnels.push(tunnel);
      tunnel.start();
    });
  });
  afterEach(() => {
    for (const client of clients.splice(0)) client.ws.terminate();
  });
  after(async () => {
    await front.close();
    await upstream.close();
  });

  async function open(): Promise<{ client: TestClient; tunnel: RawTunnel; closed: () => Promise<CloseReason> }> {
    const count = closes.length;
    const before = upstream.sockets.length;
    const client = await openClient(`${front.url}/ws/raw`);
    clients.push(client);
    await upstream.socket(before);
    return { client, tunnel: tunnels.at(-1) as RawTunnel, closed: () => until(() => closes.length > count, 'tunnel closed').then(() => closes[count]) };
  }

  it('relays messages both ways; the side that sent the first close frame is the reason', async () => {
    const { client, closed } = await open();
    client.ws.send('hello');
    assert.equal(String(await client.next()), 'hello');
    client.ws.close(1000, 'bye');
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1000, reason: 'bye' });
    // The upstream (a server) ends its connection first; the close came from the client.
    assert.equal(await closed(), 'client');
  });

  it('the upstream closing first: reason upstream', async () => {
    const before = upstream.sockets.length;
    const { client, closed } = await open();
    upstream.sockets[before].ws.close(4001, 'go');
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 4001, reason: 'go' });
    assert.equal(await closed(), 'upstream');
  });

  it('drain() between frames: 1001 "server shutting down" to both; they answer and the sockets end', async () => {
    const before = upstream.sockets.length;
    const { client, tunnel, closed } = await open();
    client.ws.send('before the drain');
    await client.next();
    tunnel.drain();
    assert.deepEqual(await within(client.closed, 3000, 'client close'), { code: 1001, reason: 'server shutting down' });
    assert.deepEqual(await within(upstream.sockets[before].closed, 3000, 'upstream close'), { code: 1001, reason: 'server shutting down' });
    assert.equal(await closed(), 'drain');
  });

  it('drain() in the middle of a large upstream->client frame: the close frame follows the frame, not inside it', async () => {
    const count = closes.length;
    const before = upstream.sockets.length;
    const raw = await openRawClient(front.port, '/ws/raw-big');
    const server = await upstream.socket(before);
    const payload = Buffer.alloc(200_000, 0x5a);
    const [header] = frame(payload, OPCODE_BINARY, false);
    // The header and the first part of the payload, straight onto the upstream's socket.
    server.socket.write(Buffer.concat([header, payload.subarray(0, 1000)]));
    await until(() => raw.received().length >= header.length + 1000, 'first part relayed');
    tunnels.at(-1)?.drain();
    server.socket.write(payload.subarray(1000));
    await until(() => parseAsClient(raw.received()).close !== undefined, 'close frame after the big frame');
    const parsed = parseAsClient(raw.received());
    assert.equal(parsed.error, undefined);
    assert.equal(parsed.messages.length, 1);
    assert.ok(parsed.messages[0].equals(payload), 'the big frame arrived whole');
    assert.deepEqual(parsed.close, { code: 1001, reason: 'server shutting down' });
    // The upstream got its 1001 and answered; the client answers too: both sockets end.
    assert.deepEqual(await within(server.closed, 3000, 'upstream close'), { code: 1001, reason: 'server shutting down' });
    raw.socket.write(Buffer.concat(frame(closePayload(1001, ''), OPCODE_CLOSE, true)));
    await within(raw.ended, 3000, 'client connection ended');
    await until(() => closes.length > count, 'tunnel closed');
    assert.equal(closes[count], 'drain');
  });

  it('drain() in the middle of a client->upstream frame: the upstream gets its close after that frame', async () => {
    const before = upstream.sockets.length;
    const raw = await openRawClient(front.port, '/ws/raw-up');
    const server = await upstream.socket(before);
    const payload = Buffer.alloc(100_000, 0x33);
    const framed = Buffer.concat(frame(Buffer.from(payload), OPCODE_BINARY, true));
    const upstreamSocket = server.socket as net.Socket;
    const readBefore = upstreamSocket.bytesRead;
    raw.socket.write(framed.subarray(0, 5000));
    await until(() => upstreamSocket.bytesRead >= readBefore + 5000, 'first part relayed');
    tunnels.at(-1)?.drain();
    raw.socket.write(framed.subarray(5000));
    assert.deepEqual(await within(server.closed, 3000, 'upstream close'), { code: 1001, reason: 'server shutting down' });
    assert.equal(server.messages.length, 1, 'the frame in flight reached the upstream whole');
    assert.ok(server.messages[0].data.equals(payload));
    raw.socket.destroy();
  });
});

describe('RawTunnel for a non-WebSocket upgrade', () => {
  it('relays bytes and leaves the stream alone on drain() (no frame to close it with)', async () => {
    // Two socket pairs stand in for the client and upstream connections.
    const pairs: net.Socket[] = [];
    const server = net.createServer((socket) => pairs.push(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const client = net.connect(port, '127.0.0.1');
    const upstream = net.connect(port, '127.0.0.1');
    await until(() => pairs.length === 2, 'connected');
    const [clientSide, upstreamSide] = pairs;
    const reasons: CloseReason[] = [];
    const tunnel = new RawTunnel(
      { client: clientSide, upstream: upstreamSide, clientHead: Buffer.alloc(0), upstreamHead: Buffer.from('early '), extensions: undefined, websocket: false },
      new ManualClock(),
      (reason) => reasons.push(reason),
    );
    tunnel.start();
    let atClient = '';
    client.on('data', (c: Buffer) => (atClient += c.toString()));
    upstream.write('\x81\x05hello'); // would be a frame header, if it were WebSocket
    await until(() => atClient === 'early \x81\x05hello', 'relayed');
    tunnel.drain();
    upstream.write(' more');
    await until(() => atClient === 'early \x81\x05hello more', 'still relayed, nothing added');
    tunnel.destroy();
    await until(() => reasons.length === 1, 'closed');
    assert.deepEqual(reasons, ['drain']);
    client.destroy();
    upstream.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
});
