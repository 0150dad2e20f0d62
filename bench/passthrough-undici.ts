/**
 * Baseline "same forwarding engine, no limiter": undici `Pool.stream` to one upstream,
 * hop-by-hop headers stripped both ways, nothing else. Tollgate / this = the cost of
 * rate limiting. Usage: `passthrough-undici.ts UPSTREAM_URL`; prints the listening line.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool, type Dispatcher } from 'undici';

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

const pool = new Pool(process.argv[2], { connections: 256, pipelining: 1, keepAliveTimeout: 30_000 /* 30s */ });

function requestHeaders(raw: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (!HOP_BY_HOP.has(raw[i].toLowerCase())) out.push(raw[i], raw[i + 1]);
  return out;
}

function factory({ statusCode, headers, opaque }: Dispatcher.StreamFactoryData<ServerResponse>): ServerResponse {
  const out: Record<string, string | string[]> = {};
  for (const name in headers) if (!HOP_BY_HOP.has(name) && headers[name] !== undefined) out[name] = headers[name];
  return opaque.writeHead(statusCode, out);
}

function onRequest(req: IncomingMessage, res: ServerResponse): void {
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  pool.stream(
    { path: req.url ?? '/', method: req.method as Dispatcher.HttpMethod, headers: requestHeaders(req.rawHeaders), body: hasBody ? req : null, opaque: res },
    factory,
    (error) => {
      if (error !== null && !res.headersSent) res.writeHead(502).end();
      else if (error !== null) res.destroy();
    },
  );
}

const server = http.createServer({ keepAliveTimeout: 60_000 /* 60s */ }, onRequest);
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ event: 'listening', port: (server.address() as AddressInfo).port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
