/**
 * The suite's one HTTP client, over real sockets, every wait bounded:
 * - `request(base, target, options)`: one exchange on its own connection (or `agent`);
 * - `statuses`: several in a row, their statuses;
 * - `envelope` / `echo`: Tollgate's error body, the echo upstream's body;
 * - `rawConnect(port)`: a raw TCP connection for what HTTP clients will not send;
 * - `openWebSocket(url)` / `roundTrip(ws, message)`: WebSocket handshakes and messages;
 * - `bearer(sub)`: a signed JWT for `Authorization`.
 */
import http from 'node:http';
import net from 'node:net';
import { SignJWT } from 'jose';
import WebSocket from 'ws';
import { DeadlineError, nextEvent, WAIT_MS, withDeadline } from './wait.js';

/** One complete HTTP exchange as the client saw it. */
export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface RequestOptions {
  method?: string;
  headers?: http.OutgoingHttpHeaders;
  body?: string | Buffer;
  /** Source address of the connection: any 127.x.y.z works on Linux loopback, so tests get distinct client IPs. */
  from?: string;
  /** Keep-alive agent to reuse connections (default: a fresh connection, closed after). */
  agent?: http.Agent;
  /** Abort and reject when the whole exchange takes longer (default WAIT_MS). */
  timeoutMs?: number;
  /** Aborting it destroys the request (a client that gives up); the call rejects. */
  signal?: AbortSignal;
}

/**
 * Sends one request with the target path exactly as given (unlike fetch, `//`, `.`
 * and `..` are not normalised by the client) and reads the whole reply. Rejects with
 * a DeadlineError naming the request after `timeoutMs`.
 */
export function request(base: string, target: string, options: RequestOptions = {}): Promise<Reply> {
  const url = new URL(base);
  const method = options.method ?? 'GET';
  const timeoutMs = options.timeoutMs ?? WAIT_MS;
  let req: http.ClientRequest | undefined;
  const exchange = new Promise<Reply>((resolve, reject) => {
    req = http.request(
      {
        host: url.hostname,
        port: url.port,
        method,
        path: target,
        headers: options.headers,
        agent: options.agent ?? false,
        localAddress: options.from,
        signal: options.signal,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
  return withDeadline(exchange, timeoutMs, `the reply to ${method} ${base}${target}`).catch((error: unknown) => {
    if (error instanceof DeadlineError) req?.destroy();
    throw error;
  });
}

/** Sends `count` identical requests one after the other; returns the statuses. */
export async function statuses(base: string, target: string, count: number, options: RequestOptions = {}): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push((await request(base, target, options)).status);
  return out;
}

/** The parsed body of a Tollgate error envelope. */
export interface Envelope {
  success: false;
  error: { code: string; message: string; details: Record<string, unknown> };
}

export function envelope(reply: Reply): Envelope {
  assertJson(reply);
  return JSON.parse(reply.body) as Envelope;
}

function assertJson(reply: Reply): void {
  if (!String(reply.headers['content-type']).startsWith('application/json')) {
    throw new Error(`expected a JSON reply, got ${String(reply.headers['content-type'])}: ${reply.body.slice(0, 200)}`);
  }
}

/** The echo upstream's JSON view of the request it received. */
export interface Echo {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export function echo(reply: Reply): Echo {
  assertJson(reply);
  return JSON.parse(reply.body) as Echo;
}

/** A raw TCP connection, collecting everything the server sends. */
export interface RawConnection {
  socket: net.Socket;
  /** All bytes received so far, as text. */
  received(): string;
  /** Resolves once the received text satisfies `test`; rejects if the socket closes first or after `timeoutMs`. */
  waitFor(test: (text: string) => boolean, timeoutMs?: number): Promise<string>;
  /** Resolves with everything received once the server has closed the connection; rejects after `timeoutMs`. */
  closed(timeoutMs?: number): Promise<string>;
}

/**
 * Connects to 127.0.0.1:`port` (from `from`, if given); rejects on error or after WAIT_MS.
 * `halfOpen`: the client's side stays open after the server ends its own (a client that
 * never closes), so `closed()` resolves only when the server closes the connection.
 */
export function rawConnect(port: number, from?: string, halfOpen = false): Promise<RawConnection> {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress: from, allowHalfOpen: halfOpen });
  let text = '';
  const waiters = new Set<() => void>();
  const wake = (): void => {
    for (const w of [...waiters]) w();
  };
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
    wake();
  });
  const closed = new Promise<string>((resolve) => socket.on('close', () => resolve(text)));
  socket.on('close', wake);
  const connection: RawConnection = {
    socket,
    received: () => text,
    closed: (timeoutMs = WAIT_MS) => withDeadline(closed, timeoutMs, `the server to close the connection to :${port}; received: ${JSON.stringify(text.slice(0, 300))}`),
    waitFor: (test, timeoutMs = WAIT_MS) => {
      let check: () => void = () => {};
      const found = new Promise<string>((resolve, reject) => {
        check = () => {
          if (test(text)) resolve(text);
          else if (socket.destroyed || socket.readableEnded) reject(new Error(`connection closed; received: ${JSON.stringify(text.slice(0, 300))}`));
        };
        waiters.add(check);
        check();
      });
      return withDeadline(found, timeoutMs, `data from :${port}; received so far: ${JSON.stringify(text.slice(0, 300))}`).finally(() => waiters.delete(check));
    },
  };
  return nextEvent(socket, 'connect', { what: `a connection to 127.0.0.1:${port}` }).then(
    () => {
      socket.on('error', () => {}); // a reset after connecting shows as 'close'
      return connection;
    },
    (error: unknown) => {
      socket.destroy();
      throw error;
    },
  );
}

/** A WebSocket handshake's outcome: the open socket, or the HTTP response that refused it. */
export type Handshake = { ws: WebSocket; response: http.IncomingMessage } | { refused: http.IncomingMessage; body: string };

/**
 * Opens a WebSocket (`ws://...`), from `from` if given; resolves with the open socket or
 * with the refusing response and its body; rejects on a socket error or after `timeoutMs`.
 */
export function openWebSocket(url: string, options: { from?: string; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<Handshake> {
  const ws = new WebSocket(url, { localAddress: options.from, headers: options.headers });
  const handshake = new Promise<Handshake>((resolve, reject) => {
    ws.once('upgrade', (response) => ws.once('open', () => resolve({ ws, response })));
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ refused: res, body: Buffer.concat(chunks).toString('utf8') }));
    });
    ws.once('error', reject);
  });
  return withDeadline(handshake, options.timeoutMs ?? WAIT_MS, `the WebSocket handshake with ${url}`).catch((error: unknown) => {
    ws.terminate();
    throw error;
  });
}

/** Sends `message` and resolves with the next message received (bounded). */
export function roundTrip(ws: WebSocket, message: string, timeoutMs = WAIT_MS): Promise<string> {
  const answer = nextEvent(ws, 'message', { timeoutMs, what: 'a WebSocket message back' }).then(([data]) => String(data));
  ws.send(message);
  return answer;
}

/** The HS256 secret the proxy tests configure (>= 32 bytes, so no warning). */
export const JWT_SECRET = 'tollgate-test-secret-0123456789-abcdefghij';

/** Far beyond any test clock (unix seconds, 2100-01-01). */
const FAR_FUTURE = 4_102_444_800;

/**
 * `Authorization: Bearer` headers for a user: HS256 with JWT_SECRET unless told otherwise.
 * Tollgate checks `exp` on its injected clock, so pass `exp` relative to that clock.
 */
export async function bearer(
  sub: string,
  claims: Record<string, unknown> = {},
  options: { alg?: string; secret?: string; exp?: number } = {},
): Promise<{ authorization: string }> {
  const token = await new SignJWT(claims)
    .setProtectedHeader({ alg: options.alg ?? 'HS256' })
    .setSubject(sub)
    .setExpirationTime(options.exp ?? FAR_FUTURE)
    .sign(new TextEncoder().encode(options.secret ?? JWT_SECRET));
  return { authorization: `Bearer ${token}` };
}
