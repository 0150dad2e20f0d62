import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';

/**
 * A tiny stand-in for a realtime voice app, for the demo and the quickstart:
 * token minting, session start, transcription and a live WebSocket (echo).
 */
export function createDemoUpstream(): http.Server {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0];
    const json = (status: number, body: unknown): void => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    let size = 0;
    req.on('data', (chunk: Buffer) => (size += chunk.length));
    req.on('end', () => {
      if (path === '/api/livekit/token' && req.method === 'POST') {
        return json(200, { token: `demo-${randomUUID()}`, expiresIn: 600 });
      }
      if (path === '/api/session/start') return json(200, { sessionId: randomUUID(), startedAt: new Date().toISOString() });
      if (path === '/api/transcription') return json(200, { text: 'hello from the demo transcriber', bytes: size });
      if (path === '/healthz') return json(200, { ok: true });
      json(200, { ok: true, path, method: req.method, user: req.headers['x-user-id'] ?? null, forwardedFor: req.headers['x-forwarded-for'] ?? null });
    });
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    if ((req.url ?? '').split('?', 1)[0] !== '/ws/live') {
      socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send(JSON.stringify({ event: 'connected' }));
      ws.on('message', (data) => ws.send(data));
    });
  });
  return server;
}

export function listenDemoUpstream(port: number, host = '127.0.0.1'): Promise<{ server: http.Server; port: number }> {
  const server = createDemoUpstream();
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve({ server, port: (server.address() as AddressInfo).port }));
  });
}
