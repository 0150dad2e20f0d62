/**
 * Upstreams for Tollgate to forward to, each a real server on an ephemeral loopback port:
 * - `startUpstream(handler, { onUpgrade })`: any handler; `close()` also cuts open and upgraded sockets;
 * - `startServer(server)`: the same for a server built elsewhere (e.g. `createAdminServer`);
 * - `startEchoUpstream(options)`: answers every request with a JSON echo of it, and accepts
 *   WebSockets that echo messages (and records what each one received and how it closed);
 * - `startGatedUpstream()`: holds matching requests until the test releases them (in-flight behaviour).
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { eventually, WAIT_MS, withDeadline } from './wait.js';

export interface Upstream {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  readonly server: http.Server;
  /** Open connections (Tollgate's pooled keep-alive sockets among them). */
  connections(): Promise<number>;
  /** Upgraded connections still open (e.g. to cut them as if the upstream went away). */
  upgradedSockets(): ReadonlySet<Duplex>;
  /** Closes the listener and destroys every socket, upgraded ones included. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts `handler` on 127.0.0.1:0. `onUpgrade` receives upgrade requests (without it
 * Node answers them as plain requests through `handler`); the sockets it gets are
 * destroyed by `close()`.
 */
export function startUpstream(
  handler: http.RequestListener,
  options: { onUpgrade?: (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void } = {},
): Promise<Upstream> {
  return startServer(http.createServer(handler), options);
}

/** Listens with `server` on 127.0.0.1:0; `onUpgrade` and `close()` as for `startUpstream`. */
export async function startServer(
  server: http.Server,
  options: { onUpgrade?: (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void } = {},
): Promise<Upstream> {
  const upgraded = new Set<Duplex>();
  if (options.onUpgrade !== undefined) {
    const onUpgrade = options.onUpgrade;
    server.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
      upgraded.add(socket);
      socket.once('close', () => upgraded.delete(socket));
      onUpgrade(req, socket, head);
    });
  }
  await withDeadline(
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    }),
    WAIT_MS,
    'a server to listen on 127.0.0.1:0',
  );
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    connections: () => new Promise<number>((resolve, reject) => server.getConnections((error, n) => (error ? reject(error) : resolve(n)))),
    upgradedSockets: () => upgraded,
    close: () =>
      (closing ??= (async () => {
        for (const socket of upgraded) socket.destroy(); // upgraded: closeAllConnections does not see them
        server.closeAllConnections();
        await withDeadline(new Promise<void>((resolve) => server.close(() => resolve())), WAIT_MS, `the server on :${port} to close`);
      })()),
  };
}

/** What the echo upstream saw of one request. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** Per-path behaviour of the echo upstream: a delay (ms) before answering, a fixed status, extra response headers, or no answer at all. */
export interface EchoBehaviour {
  delayMs?: number;
  status?: number;
  headers?: Record<string, string>;
  hang?: boolean;
}

/** One WebSocket the upstream accepted, with what it received and how it closed. */
export interface UpstreamSocket {
  url: string;
  /** The server side; `ws.send()` makes the upstream send on its own. */
  ws: WebSocket;
  /** The raw connection under `ws`, for writing bytes that are not whole frames. */
  socket: Duplex;
  /** The negotiated extensions (`Sec-WebSocket-Extensions` of the 101), '' if none. */
  extensions: string;
  /** Data messages received, in order. */
  messages: Array<{ data: Buffer; isBinary: boolean }>;
  pings: number;
  /** Resolves with the close code and reason the upstream saw. */
  closed: Promise<{ code: number; reason: string }>;
}

export interface EchoUpstreamOptions {
  /** Accept permessage-deflate when a client offers it (default false). */
  perMessageDeflate?: boolean;
  /** Echo each message back (default true). */
  echo?: boolean;
}

export interface EchoUpstream extends Upstream {
  /** Every request that reached the upstream, in order (upgrades too). */
  readonly seen: SeenRequest[];
  /** Per-path overrides (path without the query), read at each request. */
  readonly behaviour: Map<string, EchoBehaviour>;
  /** Every WebSocket accepted, in order. */
  readonly sockets: UpstreamSocket[];
  /** Resolves with the n-th (0-based) WebSocket once it is open; rejects after `timeoutMs`. */
  socket(n: number, timeoutMs?: number): Promise<UpstreamSocket>;
}

/**
 * An upgrade handler that accepts WebSockets (echoing every message unless `echo: false`)
 * and records each one in `sockets`.
 */
function echoWebSockets(options: EchoUpstreamOptions & { onUpgrade?: (req: http.IncomingMessage) => void; sockets?: UpstreamSocket[] } = {}) {
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: options.perMessageDeflate === true });
  const sockets = options.sockets ?? [];
  return (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    options.onUpgrade?.(req);
    wss.handleUpgrade(req, socket, head, (ws) => {
      const entry: UpstreamSocket = {
        url: req.url ?? '',
        ws,
        socket,
        extensions: ws.extensions,
        messages: [],
        pings: 0,
        closed: new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString('utf8') }))),
      };
      ws.on('error', () => {});
      ws.on('ping', () => entry.pings++);
      ws.on('message', (data, isBinary) => {
        const buffer = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
        entry.messages.push({ data: buffer, isBinary });
        if (options.echo !== false) ws.send(buffer, { binary: isBinary });
      });
      sockets.push(entry);
    });
  };
}

/**
 * Answers every request with a JSON echo of what it received (`{ method, url, headers,
 * body }`, `x-upstream: echo`, two `set-cookie`s); any upgrade is accepted as a
 * WebSocket that echoes messages (see EchoUpstreamOptions).
 */
export async function startEchoUpstream(options: EchoUpstreamOptions = {}): Promise<EchoUpstream> {
  const seen: SeenRequest[] = [];
  const behaviour = new Map<string, EchoBehaviour>();
  const sockets: UpstreamSocket[] = [];
  const upstream = await startUpstream(
    (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const entry = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
        seen.push(entry);
        const b = behaviour.get((req.url ?? '').split('?', 1)[0]);
        if (b?.hang) return;
        const answer = (): void => {
          res.writeHead(b?.status ?? 200, { 'content-type': 'application/json', 'x-upstream': 'echo', 'set-cookie': ['a=1', 'b=2'], ...b?.headers });
          res.end(JSON.stringify(entry));
        };
        if (b?.delayMs) setTimeout(answer, b.delayMs);
        else answer();
      });
    },
    {
      onUpgrade: echoWebSockets({
        ...options,
        sockets,
        onUpgrade: (req) => seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: '' }),
      }),
    },
  );
  return Object.assign(upstream, {
    seen,
    behaviour,
    sockets,
    socket: (n: number, timeoutMs?: number) => eventually(() => sockets[n] ?? false, { timeoutMs, what: `the upstream's WebSocket #${n}` }),
  });
}

export interface GatedUpstream extends Upstream {
  /** Requests held so far and not yet released, in arrival order. */
  readonly held: readonly http.IncomingMessage[];
  /** Resolves once at least `count` requests are held; rejects after `timeoutMs`. */
  waitForHeld(count?: number, timeoutMs?: number): Promise<void>;
  /** Answers every held request 200 with `body` (default `<name> slow`). */
  release(body?: string): void;
}

/**
 * Holds the requests `hold` picks (default: paths starting with `/slow`) until
 * `release()`; answers every other request at once, 200 with `name` as the body.
 * For what happens while a request is in flight: reloads, drains, gauges, aborts.
 * With `webSockets`, upgrades are accepted as WebSockets that echo messages (and stay
 * open until the client or `close()` ends them).
 */
export async function startGatedUpstream(
  options: { name?: string; hold?: (req: http.IncomingMessage) => boolean; keepAliveTimeoutMs?: number; webSockets?: boolean } = {},
): Promise<GatedUpstream> {
  const { name = 'gated', hold = (req) => (req.url ?? '').startsWith('/slow') } = options;
  // Live, in lockstep: held[i] is answered through responses[i].
  const held: http.IncomingMessage[] = [];
  const responses: http.ServerResponse[] = [];
  const upstream = await startUpstream(
    (req, res) => {
      req.resume();
      if (!hold(req)) {
        res.end(name);
        return;
      }
      held.push(req);
      responses.push(res);
      res.once('close', () => {
        const at = responses.indexOf(res);
        if (at < 0) return; // released
        held.splice(at, 1); // the client (Tollgate) gave up on it
        responses.splice(at, 1);
      });
    },
    { onUpgrade: options.webSockets ? echoWebSockets() : undefined },
  );
  // Idle pooled sockets close only when Tollgate closes them (tests count connections).
  upstream.server.keepAliveTimeout = options.keepAliveTimeoutMs ?? 60 * 1000; // 60s
  return Object.assign(upstream, {
    held,
    waitForHeld: async (count = 1, timeoutMs?: number) => {
      await eventually(() => held.length >= count, { timeoutMs, what: `${count} request(s) held by the gated upstream` });
    },
    release: (body = `${name} slow`) => {
      held.splice(0);
      for (const res of responses.splice(0)) res.end(body);
    },
  });
}
