import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';

/** What the echo upstream saw of one request. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface EchoUpstream {
  url: string;
  port: number;
  /** Every request that reached the upstream, in order. */
  seen: SeenRequest[];
  /** Per-path overrides: delay (ms) before answering, a fixed status, extra response headers. */
  behaviour: Map<string, Behaviour>;
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
export async function startEchoUpstream(): Promise<EchoUpstream> {
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
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: '' });
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    seen,
    behaviour,
    close: async () => {
      for (const client of wss.clients) client.terminate();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
