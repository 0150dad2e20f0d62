/**
 * Upstreams for Tollgate to forward to, each a real server on an ephemeral loopback port:
 * - `startUpstream(handler, { onUpgrade })`: any handler; `close()` also cuts open and upgraded sockets;
 * - `startServer(server)`: the same for a server built elsewhere (e.g. `createAdminServer`);
 * - `startEchoUpstream()`: answers every request with a JSON echo of it (and echoes WebSocket messages);
 * - `startGatedUpstream()`: holds matching requests until the test releases them (in-flight behaviour).
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { eventually, WAIT_MS, withDeadline } from './wait.js';

export interface Upstream {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  readonly server: http.Server;
  /** Open connections (Tollgate's pooled keep-alive sockets among them). */
  connections(): Promise<number>;
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

/** Per-path behaviour of the echo upstream: a delay (ms) before answering, a fixed status, or no answer at all. */
export interface EchoBehaviour {
  delayMs?: number;
  status?: number;
  hang?: boolean;
}

export interface EchoUpstream extends Upstream {
  /** Every request that reached the upstream, in order (upgrades too). */
  readonly seen: SeenRequest[];
  /** Per-path overrides (path without the query), read at each request. */
  readonly behaviour: Map<string, EchoBehaviour>;
}

/**
 * Answers every request with a JSON echo of what it received (`{ method, url, headers,
 * body }`, `x-upstream: echo`, two `set-cookie`s); any upgrade is accepted as a
 * WebSocket that echoes messages.
 */
/** An upgrade handler that accepts WebSockets echoing every message. */
function echoWebSockets(onUpgrade: (req: http.IncomingMessage) => void = () => {}) {
  const wss = new WebSocketServer({ noServer: true });
  return (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    onUpgrade(req);
    wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  };
}

export async function startEchoUpstream(): Promise<EchoUpstream> {
  const seen: SeenRequest[] = [];
  const behaviour = new Map<string, EchoBehaviour>();
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
          res.writeHead(b?.status ?? 200, { 'content-type': 'application/json', 'x-upstream': 'echo', 'set-cookie': ['a=1', 'b=2'] });
          res.end(JSON.stringify(entry));
        };
        if (b?.delayMs) setTimeout(answer, b.delayMs);
        else answer();
      });
    },
    { onUpgrade: echoWebSockets((req) => seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: '' })) },
  );
  return Object.assign(upstream, { seen, behaviour });
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
