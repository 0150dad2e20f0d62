/** Loopback TCP ports for servers a test starts itself, and for "nothing listens here". */
import { createServer } from 'node:net';

/** A TCP port nothing listens on (and, with `busOffset`, port + offset too). */
export async function freePort(busOffset?: number): Promise<number> {
  for (;;) {
    const port = busOffset === undefined ? await ephemeralPort() : 20_000 + Math.floor(Math.random() * 30_000);
    if (busOffset === undefined) return port;
    if ((await portFree(port)) && (await portFree(port + busOffset))) return port;
  }
}

function ephemeralPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.on('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}
