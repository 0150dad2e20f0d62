/**
 * The benchmark's upstream: a bare `node:http` server answering every request with
 * the same ~100-byte JSON body (and an `x-usage-tokens` cost) over keep-alive, so the
 * proxies are what is measured.
 * Prints one JSON line `{"event":"listening","port":N}` and runs until SIGTERM.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const BODY = Buffer.from(JSON.stringify({ ok: true, service: 'bench-upstream', message: 'hello from the upstream', items: [1, 2, 3, 4, 5] }));
// Every answer reports a cost, as an app with a metered endpoint does: routes with a
// cost header limit settle to it, the others pass it on (the same bytes for every configuration).
const HEADERS = { 'content-type': 'application/json', 'content-length': String(BODY.length), 'x-usage-tokens': '3' };

const server = http.createServer({ keepAliveTimeout: 60_000 /* 60s */ }, (req, res) => {
  // Drain any request body before answering so the socket stays reusable.
  if (req.readableEnded) {
    res.writeHead(200, HEADERS).end(BODY);
    return;
  }
  req.resume();
  req.once('end', () => res.writeHead(200, HEADERS).end(BODY));
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ event: 'listening', port: (server.address() as AddressInfo).port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
