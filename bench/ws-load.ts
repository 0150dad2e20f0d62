/**
 * The WebSocket benchmark's load generator, a long-lived child (one start-up for the
 * whole bench). For each stdin line `URL DURATION_MS` it opens CONNECTIONS raw sockets,
 * each keeping WINDOW small messages in flight (a new one per echo), prints `start`
 * when it begins counting and then one JSON line {"messages":N,"seconds":S,"errors":E}.
 * Frames are built once (masked with a fixed key) and echoes are counted by bytes, so
 * the generator costs little of the CPU it shares with the ws upstream.
 *
 *   node --import tsx bench/ws-load.ts CONNECTIONS WINDOW PAYLOAD_BYTES
 */
import net from 'node:net';
import { createInterface } from 'node:readline';

const [connections, window, payloadBytes] = process.argv.slice(2).map(Number); // payload <= 125: one-byte length
const FILL_MS = 200; // windows fill before counting starts

/** One masked text frame from a client, `count` times over. */
function frames(count: number): Buffer {
  const mask = [0x12, 0x34, 0x56, 0x78];
  const one = Buffer.alloc(6 + payloadBytes);
  one[0] = 0x81;
  one[1] = 0x80 | payloadBytes;
  for (let i = 0; i < 4; i++) one[2 + i] = mask[i];
  for (let i = 0; i < payloadBytes; i++) one[6 + i] = 0x61 ^ mask[i % 4];
  return Buffer.concat(new Array<Buffer>(count).fill(one));
}

const echoBytes = 2 + payloadBytes; // unmasked, one-byte length
const frameBytes = 6 + payloadBytes;
const batch = frames(window);

interface Run {
  counting: boolean;
  received: number;
  errors: number;
}

function open(target: URL, run: Run): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: target.hostname, port: Number(target.port) });
    socket.setNoDelay(true);
    let head: Buffer | null = Buffer.alloc(0);
    let partial = 0;
    socket.on('error', (error) => {
      run.errors++;
      reject(error);
    });
    socket.on('data', (chunk: Buffer) => {
      if (head !== null) {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        if (!head.toString('latin1', 0, 12).startsWith('HTTP/1.1 101')) {
          run.errors++;
          reject(new Error(head.toString('latin1', 0, end)));
          return;
        }
        chunk = head.subarray(end + 4);
        head = null;
        resolve(socket);
        socket.write(batch);
      }
      partial += chunk.length;
      const whole = Math.floor(partial / echoBytes);
      if (whole === 0) return;
      partial -= whole * echoBytes;
      if (run.counting) run.received += whole;
      // One new message per echo keeps the window full.
      socket.write(whole <= window ? batch.subarray(0, whole * frameBytes) : frames(whole));
    });
    socket.write(
      `GET ${target.pathname} HTTP/1.1\r\nHost: ${target.host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
  });
}

async function runOnce(url: string, durationMs: number): Promise<void> {
  const run: Run = { counting: false, received: 0, errors: 0 };
  const target = new URL(url);
  const sockets = await Promise.all(Array.from({ length: connections }, () => open(target, run)));
  await new Promise((r) => setTimeout(r, FILL_MS));
  process.stdout.write('start\n');
  run.counting = true;
  const began = performance.now();
  await new Promise((r) => setTimeout(r, durationMs));
  run.counting = false;
  const seconds = (performance.now() - began) / 1000;
  process.stdout.write(JSON.stringify({ messages: run.received, seconds, errors: run.errors }) + '\n');
  for (const socket of sockets) socket.destroy();
}

let queue = Promise.resolve();
createInterface({ input: process.stdin }).on('line', (line) => {
  const [url, durationMs] = line.trim().split(' ');
  queue = queue.then(() => runOnce(url, Number(durationMs))).catch((error: unknown) => {
    process.stdout.write(JSON.stringify({ messages: 0, seconds: 0, errors: 1, message: String(error) }) + '\n');
  });
});
process.stdin.on('end', () => void queue.then(() => process.exit(0)));
