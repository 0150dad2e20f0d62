/**
 * Baseline for the other engine the issue asks about: `http-proxy` with a keep-alive
 * agent, no limiter. Usage: `passthrough-http-proxy.ts UPSTREAM_URL`; prints the listening line.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import httpProxy from 'http-proxy';

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const proxy = httpProxy.createProxyServer({ target: process.argv[2], agent, xfwd: true });
proxy.on('error', (_error, _req, res) => {
  if ('writeHead' in res && !res.headersSent) res.writeHead(502).end();
  else res.destroy();
});

const server = http.createServer({ keepAliveTimeout: 60_000 /* 60s */ }, (req, res) => proxy.web(req, res));
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ event: 'listening', port: (server.address() as AddressInfo).port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
