import http from 'node:http';
import net from 'node:net';
import { SignJWT } from 'jose';

/** One complete HTTP exchange as the client saw it. */
export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface RequestOptions {
  method?: string;
  headers?: http.OutgoingHttpHeaders;
  body?: string;
  /** Source address of the connection: any 127.x.y.z works on Linux loopback, so tests get distinct client IPs. */
  from?: string;
}

/**
 * Sends one request on a fresh connection with the target path exactly as given
 * (unlike fetch, `//`, `.` and `..` are not normalised by the client).
 */
export function request(base: string, target: string, options: RequestOptions = {}): Promise<Reply> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        method: options.method ?? 'GET',
        path: target,
        headers: options.headers,
        agent: false,
        localAddress: options.from,
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
}

/** Sends `count` identical requests one after the other; returns the statuses. */
export async function statuses(base: string, target: string, count: number, options: RequestOptions = {}): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push((await request(base, target, options)).status);
  return out;
}

/** `[status x n, ...]` shorthand for the expected result of `statuses`. */
export function times(status: number, n: number): number[] {
  return new Array<number>(n).fill(status);
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

/** A raw TCP connection to `port`, collecting everything the server sends. */
export interface RawConnection {
  socket: net.Socket;
  /** All bytes received so far, as text. */
  received(): string;
  /** Resolves once the received text satisfies `test` (rejects if the socket closes first). */
  waitFor(test: (text: string) => boolean): Promise<string>;
  /** Resolves when the server closes the connection, with everything received. */
  closed: Promise<string>;
}

export function rawConnect(port: number, from?: string): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: from });
    let text = '';
    const waiters = new Set<() => void>();
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      for (const w of [...waiters]) w();
    });
    const closed = new Promise<string>((resolveClosed) => {
      socket.on('close', () => {
        for (const w of [...waiters]) w();
        resolveClosed(text);
      });
    });
    socket.on('error', () => {});
    socket.once('connect', () =>
      resolve({
        socket,
        received: () => text,
        closed,
        waitFor: (test) =>
          new Promise((resolveWait, rejectWait) => {
            const check = (): void => {
              if (test(text)) {
                waiters.delete(check);
                resolveWait(text);
              } else if (socket.destroyed || socket.readableEnded) {
                waiters.delete(check);
                rejectWait(new Error(`connection closed; received: ${JSON.stringify(text.slice(0, 300))}`));
              }
            };
            waiters.add(check);
            check();
          }),
      }),
    );
    socket.once('error', reject);
  });
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
