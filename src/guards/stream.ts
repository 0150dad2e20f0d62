/**
 * Request bodies under `maxBodySize`, at the stream level:
 * - `readBody` buffers a whole body for the `body` guard, up to the limit;
 * - `BodyLimit` counts a streamed (chunked) body on its way upstream and fails the
 *   stream past the limit, so the upstream request is aborted and never ends cleanly:
 *   the upstream cannot mistake a truncated body for a complete one.
 * A body with Content-Length is refused by its header before anything is read (the HTTP
 * parser delivers exactly Content-Length bytes), so only chunked bodies need counting.
 */
import type { IncomingMessage } from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';

/** The outcome of buffering a request body. */
export type BodyRead =
  | { readonly kind: 'complete'; readonly body: Buffer }
  | { readonly kind: 'too_large' }
  /** The client went away (or the stream failed) before the body ended. */
  | { readonly kind: 'aborted' };

const TOO_LARGE: BodyRead = Object.freeze({ kind: 'too_large' });
const ABORTED: BodyRead = Object.freeze({ kind: 'aborted' });
const EMPTY: BodyRead = Object.freeze({ kind: 'complete', body: Buffer.alloc(0) });

/**
 * Reads `req`'s whole body, at most `limit` bytes. Past the limit it stops listening and
 * resolves `too_large` at once (the rest is never read: answer and close the connection).
 * The bytes are kept exactly as received, to be forwarded unchanged.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<BodyRead> {
  if (req.complete && req.readableLength === 0) return Promise.resolve(EMPTY);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (result: BodyRead): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onAbort);
      req.off('close', onClose);
      resolve(result);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        req.pause();
        finish(TOO_LARGE);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => finish({ kind: 'complete', body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size) });
    const onAbort = (): void => finish(ABORTED);
    // 'close' before 'end': the client left mid-body.
    const onClose = (): void => {
      if (!req.complete) finish(ABORTED);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onAbort);
    req.on('close', onClose);
  });
}

/** The error a BodyLimit fails with past its limit (the upstream request is aborted with it). */
export class BodyTooLargeError extends Error {
  override readonly name = 'BodyTooLargeError';
  constructor(readonly limit: number) {
    super(`request body exceeds ${limit} bytes`);
  }
}

/**
 * A pass-through that counts bytes and, past `limit`, calls `onExceeded` once and fails
 * with BodyTooLargeError instead of passing the chunk on. Pipe the request into it and
 * give it to the forwarder as the body: the forwarder then aborts the upstream request.
 * The source is unpiped (not destroyed), so the client's connection can still carry a 413.
 */
export class BodyLimit extends Transform {
  readonly #limit: number;
  readonly #onExceeded: (() => void) | undefined;
  #seen = 0;

  constructor(limit: number, onExceeded?: () => void) {
    super();
    this.#limit = limit;
    this.#onExceeded = onExceeded;
  }

  /** Bytes passed on so far. */
  get bytes(): number {
    return this.#seen;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#seen += chunk.length;
    if (this.#seen > this.#limit) {
      this.#onExceeded?.();
      callback(new BodyTooLargeError(this.#limit));
      return;
    }
    callback(null, chunk);
  }
}

/**
 * Streams `req` through a BodyLimit. Past the limit the request is unpiped and paused
 * (nothing more is read; the response should close the connection).
 */
export function limitBody(req: IncomingMessage, limit: number, onExceeded?: () => void): BodyLimit {
  const limiter = new BodyLimit(limit, () => {
    req.unpipe(limiter);
    req.pause();
    onExceeded?.();
  });
  // A client that fails mid-body fails the limiter too, so the upstream request is aborted.
  req.once('error', (error) => limiter.destroy(error));
  req.once('close', () => {
    if (!req.complete && !limiter.destroyed) limiter.destroy(new Error('client closed before the body ended'));
  });
  req.pipe(limiter);
  return limiter;
}
