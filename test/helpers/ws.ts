import net from 'node:net';
import WebSocket, { type ClientOptions } from 'ws';

/** A `ws` client with what it received and how it closed. */
export interface TestClient {
  ws: WebSocket;
  messages: Array<{ data: Buffer; isBinary: boolean }>;
  /** Resolves with the close code and reason the client saw (1006 when the connection just ended). */
  closed: Promise<{ code: number; reason: string }>;
  /** Resolves with the next message not yet read by next(); rejects after `deadlineMs`. */
  next(deadlineMs?: number): Promise<Buffer>;
}

/** Opens a WebSocket; rejects on a refused handshake or after `deadlineMs`. */
export function openClient(url: string, options: ClientOptions = {}, deadlineMs = 3000): Promise<TestClient> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, ...options });
    const messages: TestClient['messages'] = [];
    const waiters: Array<(data: Buffer) => void> = [];
    let read = 0;
    const closed = new Promise<{ code: number; reason: string }>((resolveClosed) =>
      ws.once('close', (code, reason) => resolveClosed({ code, reason: reason.toString('utf8') })),
    );
    ws.on('message', (data, isBinary) => {
      const buffer = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
      messages.push({ data: buffer, isBinary });
      const waiter = waiters.shift();
      if (waiter !== undefined) {
        read++;
        waiter(buffer);
      }
    });
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`WebSocket ${url} not open within ${deadlineMs} ms`));
    }, deadlineMs);
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      reject(new Error(`WebSocket ${url} refused: ${res.statusCode}`));
    });
    ws.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    ws.once('open', () => {
      clearTimeout(timer);
      resolve({
        ws,
        messages,
        closed,
        next: (ms = 3000) =>
          new Promise((resolveNext, rejectNext) => {
            if (read < messages.length) {
              resolveNext(messages[read++].data);
              return;
            }
            const waiter = (data: Buffer): void => {
              clearTimeout(t);
              resolveNext(data);
            };
            const t = setTimeout(() => {
              waiters.splice(waiters.indexOf(waiter), 1);
              rejectNext(new Error(`no message within ${ms} ms`));
            }, ms);
            waiters.push(waiter);
          }),
      });
    });
  });
}

/** Resolves with `promise`'s value, or rejects with `what` after `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/** Polls `check` until it is true; rejects with `what` after `deadlineMs`. */
export async function until(check: () => boolean, what: string, deadlineMs = 3000): Promise<void> {
  const end = Date.now() + deadlineMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * A WebSocket client on a bare TCP socket (the handshake by hand, no parser): for tests
 * that must see exactly which bytes arrive and when.
 */
export interface RawClient {
  socket: net.Socket;
  /** Bytes received after the 101 head. */
  received(): Buffer;
  /** The 101 head as text. */
  head: string;
  ended: Promise<void>;
}

export function openRawClient(port: number, path: string, deadlineMs = 3000): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let buffer = Buffer.alloc(0);
    let head: string | undefined;
    const ended = new Promise<void>((resolveEnded) => socket.once('close', () => resolveEnded()));
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`raw WebSocket ${path}: no 101 within ${deadlineMs} ms`));
    }, deadlineMs);
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (head !== undefined) return;
      const end = buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      head = buffer.subarray(0, end).toString('latin1');
      buffer = buffer.subarray(end + 4);
      clearTimeout(timer);
      if (!head.startsWith('HTTP/1.1 101')) {
        reject(new Error(`raw WebSocket ${path}: ${head.split('\r\n')[0]}`));
        return;
      }
      resolve({ socket, head, received: () => buffer, ended });
    });
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: tollgate\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
  });
}
