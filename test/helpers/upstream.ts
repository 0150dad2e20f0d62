import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';

/** What the echo upstream saw of one request. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
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

export interface EchoUpstream {
  url: string;
  port: number;
  /** Every request that reached the upstream, in order. */
  seen: SeenRequest[];
  /** Per-path overrides: delay (ms) before answering, a fixed status, extra response headers. */
  behaviour: Map<string, Behaviour>;
  /** Every WebSocket accepted, in order. */
  sockets: UpstreamSocket[];
  /** Resolves with the n-th (0-based) WebSocket once it is open; rejects after `deadlineMs`. */
  socket(n: number, deadlineMs?: number): Promise<UpstreamSocket>;
  close(): Promise<void>;
}

export interface Behaviour {
  delayMs?: number;
  status?: number;
  hang?: boolean;
  /** Added to (or replacing) the echo's response headers. */
  headers?: Record<string, string>;
}

/**
 * A real upstream on an ephemeral port: answers every request with a JSON echo of
 * what it received; `/ws*` paths accept WebSocket upgrades and echo messages.
 */
export async function startEchoUpstream(options: EchoUpstreamOptions = {}): Promise<EchoUpstream> {
  const seen: SeenRequest[] = [];
  const behaviour = new Map<string, Behaviour>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const entry = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      seen.push(entry);
      const path = (req.url ?? '').split('?', 1)[0];
      const b = behaviour.get(path);
      if (b?.hang) return;
      const answer = (): void => {
        const body = JSON.stringify({ method: entry.method, url: entry.url, headers: entry.headers, body: entry.body });
        res.writeHead(b?.status ?? 200, { 'content-type': 'application/json', 'x-upstream': 'echo', 'set-cookie': ['a=1', 'b=2'], ...b?.headers });
        res.end(body);
      };
      if (b?.delayMs) setTimeout(answer, b.delayMs);
      else answer();
    });
  });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: options.perMessageDeflate === true });
  const sockets: UpstreamSocket[] = [];
  const waiters = new Set<() => void>();
  server.on('upgrade', (req, socket, head) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: '' });
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
      for (const wake of [...waiters]) wake();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    seen,
    behaviour,
    sockets,
    socket: (n, deadlineMs = 3000) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (sockets[n] === undefined) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(sockets[n]);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`upstream: no WebSocket #${n} within ${deadlineMs} ms (have ${sockets.length})`));
        }, deadlineMs);
        waiters.add(check);
        check();
      }),
    close: async () => {
      for (const client of wss.clients) client.terminate();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
