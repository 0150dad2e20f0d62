/**
 * Streaming paths of the forwarder: backpressure on a slow client, a client that
 * leaves before the upstream answers, an upstream that dies mid-body, a streamed
 * request body.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { sampleValue } from '../helpers/metrics.js';
import { startInFrontOf, type TollgateInFront } from '../helpers/tollgate.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { eventually, WAIT_MS, withDeadline } from '../helpers/wait.js';

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;
const UPLOAD = Buffer.alloc(8 * MiB, 'tollgate-');

/** Chunk `i` of a streamed body: the same filler, numbered so a reordered or lost chunk changes the hash. */
function chunk(i: number): Buffer {
  const b = Buffer.alloc(CHUNK, 'tollgate-');
  b.writeUInt32BE(i, 0);
  return b;
}

function sha256Of(chunks: number): string {
  const hash = createHash('sha256');
  for (let i = 0; i < chunks; i++) hash.update(chunk(i));
  return hash.digest('hex');
}

/** How far the upstream got with one `/big` response: bytes accepted by `res.write`, and whether it ended. */
interface Progress {
  sent: number;
  done: boolean;
}

/**
 * Resolves with the bytes sent once the upstream has made no progress for 150 ms (its
 * writes are waiting for 'drain'), or once it has sent everything.
 */
async function stalled(progress: Progress): Promise<number> {
  let last = -1;
  let quiet = 0;
  await eventually(
    () => {
      if (progress.done) return true;
      quiet = progress.sent === last ? quiet + 1 : 0;
      last = progress.sent;
      return quiet >= 3;
    },
    { intervalMs: 50, what: `the upstream to stall or finish (sent ${progress.sent} bytes)` },
  );
  return progress.sent;
}

/** GET `url` and do not read the body: only the socket buffers take it in. */
function getWithoutReading(url: string): Promise<http.IncomingMessage> {
  return withDeadline(
    new Promise<http.IncomingMessage>((resolve, reject) => http.get(url, { agent: false }, resolve).on('error', reject)),
    WAIT_MS,
    `the response headers of ${url}`,
  );
}

/** Reads the rest of `res`: its length and sha256. */
function readAll(res: http.IncomingMessage, timeoutMs = 4 * WAIT_MS): Promise<{ length: number; sha256: string }> {
  const hash = createHash('sha256');
  let length = 0;
  return withDeadline(
    new Promise((resolve, reject) => {
      res.on('data', (c: Buffer) => {
        hash.update(c);
        length += c.length;
      });
      res.on('end', () => resolve({ length, sha256: hash.digest('hex') }));
      res.on('error', reject);
    }),
    timeoutMs,
    'the whole body',
  );
}

describe('forwarder streaming', () => {
  let upstream: Upstream;
  let tg: TollgateInFront<Upstream>;
  const progress = new Map<string, Progress>();
  const arrived = new Set<string>();
  const upstreamClosed = new Set<string>();

  before(async () => {
    upstream = await startUpstream((req, res) => {
      const url = new URL(req.url ?? '/', 'http://upstream');
      arrived.add(url.pathname);
      res.on('close', () => {
        if (!res.writableFinished) upstreamClosed.add(url.pathname);
      });
      if (url.pathname === '/big') {
        // `chunks` chunks, each written only when the last write was taken (a well-behaved producer).
        const chunks = Number(url.searchParams.get('chunks'));
        const state: Progress = { sent: 0, done: false };
        progress.set(String(url.searchParams.get('id')), state);
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': chunks * CHUNK });
        let i = 0;
        const pump = (): void => {
          while (i < chunks) {
            const ok = res.write(chunk(i++));
            state.sent += CHUNK;
            if (!ok) {
              res.once('drain', pump);
              return;
            }
          }
          res.end();
          state.done = true;
        };
        pump();
      } else if (url.pathname === '/hang') {
        // never answers: the client will leave
      } else if (url.pathname === '/die-mid-body') {
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 1_000_000 });
        res.write('partial');
        setTimeout(() => res.socket?.destroy(), 20);
      } else if (url.pathname === '/upload') {
        const hash = createHash('sha256');
        req.on('data', (c: Buffer) => hash.update(c));
        req.on('end', () => res.end(hash.digest('hex')));
      } else {
        res.end('ok');
      }
    });
    tg = await startInFrontOf(upstream, 'routes:\n  - id: all\n    match: { path: /* }\n    limits: [{ by: ip, limit: 1000, window: 1m }]\n');
  });
  after(() => tg.close());

  it('a client that reads nothing pauses the upstream: Tollgate does not take the body in', async (t) => {
    // A proxy that buffers the body lets the upstream send all of it, whatever its size.
    // With backpressure the upstream's writes wait once the socket buffers of the two
    // hops and Tollgate's stream buffers are full: 8-11 MB on this box (the kernel
    // grows buffers while data flows), far below half of the 64 MiB body.
    const chunks = (64 * MiB) / CHUNK;
    const res = await getWithoutReading(`${tg.url}/big?chunks=${chunks}&id=unread`);
    t.after(() => res.destroy());
    assert.equal(res.statusCode, 200);
    const state = progress.get('unread') as Progress;
    const sent = await stalled(state);
    t.diagnostic(`the upstream stalled after ${sent} of ${chunks * CHUNK} bytes`);
    assert.equal(state.done, false, `the upstream sent all ${chunks * CHUNK} bytes to a client that read nothing: Tollgate buffered the body`);
    assert.ok(sent <= (chunks * CHUNK) / 2, `the upstream sent ${sent} of ${chunks * CHUNK} bytes to a client that read nothing`);
  });

  it('a paused reader then gets a large body intact and in order (the upstream resumes)', async () => {
    const chunks = (8 * MiB) / CHUNK;
    const res = await getWithoutReading(`${tg.url}/big?chunks=${chunks}&id=paused`);
    await stalled(progress.get('paused') as Progress); // all buffers full (or, on a box with large ones, all sent)
    const body = await readAll(res);
    assert.equal(progress.get('paused')?.done, true);
    assert.deepEqual(body, { length: chunks * CHUNK, sha256: sha256Of(chunks) });
  });

  it('a client that leaves before the answer cancels the upstream request', async () => {
    const req = http.get(`${tg.url}/hang`);
    req.on('error', () => {});
    await eventually(() => arrived.has('/hang'), { what: 'the upstream to receive /hang' });
    req.destroy();
    await eventually(() => upstreamClosed.has('/hang'), { what: 'the upstream to see the request cancelled' });
    await eventually(async () => assert.equal(sampleValue(await tg.scrape(), 'tollgate_inflight_requests'), 0), { what: 'nothing in flight' });
  });

  it('an upstream that dies mid-body cuts the client connection instead of hanging it, and is logged', async () => {
    let status: number | undefined;
    const outcome = await withDeadline(
      new Promise<string>((resolve) => {
        http
          .get(`${tg.url}/die-mid-body`, (res) => {
            status = res.statusCode;
            res.on('data', () => {});
            res.on('end', () => resolve('ended'));
            res.on('error', () => resolve('error'));
            res.on('aborted', () => resolve('aborted'));
          })
          .on('error', () => resolve('error'));
      }),
      WAIT_MS,
      'the client connection to end or be cut',
    );
    assert.equal(status, 200);
    assert.notEqual(outcome, 'ended');
    const [logged, ...more] = await eventually(() => tg.logs.events('upstream_error').length > 0 && tg.logs.events('upstream_error'), {
      what: 'an upstream_error log line',
    });
    assert.deepEqual(more, [], JSON.stringify(tg.logs.lines));
    assert.equal(logged.status, 200);
    assert.equal(logged.route, 'all');
  });

  it('a streamed (chunked) request body reaches the upstream intact', async () => {
    const expected = createHash('sha256').update(UPLOAD).digest('hex');
    const answer = await withDeadline(
      new Promise<string>((resolve, reject) => {
        const req = http.request(`${tg.url}/upload`, { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve(text));
        });
        req.on('error', reject);
        for (let i = 0; i < UPLOAD.length; i += 256 * 1024) req.write(UPLOAD.subarray(i, i + 256 * 1024));
        req.end();
      }),
      4 * WAIT_MS,
      'the upload to be answered',
    );
    assert.equal(answer, expected);
  });
});
