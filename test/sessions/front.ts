import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TunnelSockets } from '../../src/sessions/types.js';

export interface Front {
  /** ws://127.0.0.1:PORT */
  url: string;
  port: number;
  close(): Promise<void>;
}

/**
 * The smallest proxy in front of an upstream: repeats each upgrade to it, writes its
 * 101 to the client and hands both sockets to `open` (which the tests point at a
 * tunnel under test). No limits, no header filtering: only what the tunnels see.
 */
export async function startFront(upstreamUrl: string, open: (sockets: TunnelSockets) => void): Promise<Front> {
  const upstream = new URL(upstreamUrl);
  const sockets = new Set<Duplex>();
  const server = http.createServer((_req, res) => res.writeHead(404).end());
  server.on('upgrade', (req: http.IncomingMessage, client: Duplex, head: Buffer) => {
    sockets.add(client);
    client.on('error', () => {});
    const request = http.request({ host: upstream.hostname, port: upstream.port, path: req.url, method: 'GET', headers: req.headers });
    request.on('error', () => client.destroy());
    request.on('response', (res) => {
      res.resume();
      client.destroy();
    });
    request.on('upgrade', (res, upstreamSocket: Duplex, upstreamHead: Buffer) => {
      sockets.add(upstreamSocket);
      let lines = '';
      for (let i = 0; i < res.rawHeaders.length; i += 2) lines += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`;
      client.write(`HTTP/1.1 101 Switching Protocols\r\n${lines}\r\n`);
      open({
        client,
        upstream: upstreamSocket,
        clientHead: head,
        upstreamHead,
        extensions: res.headers['sec-websocket-extensions'],
        websocket: String(res.headers.upgrade).toLowerCase() === 'websocket',
      });
    });
    request.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `ws://127.0.0.1:${port}`,
    port,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
