import type { Duplex } from 'node:stream';
import { FrameBoundaries } from './boundary.js';
import { CLOSE_HANDSHAKE_MS, POLICY_CLOSES, UPSTREAM_CLOSE_CODE } from './closes.js';
import { OPCODE_CLOSE, closePayload, frame } from './frames.js';
import type { CloseReason, OnTunnelClose, SessionClock, TimerHandle, Tunnel, TunnelSockets } from './types.js';

/** Directions, as indexes: client->upstream and upstream->client. */
const C2U = 0;
const U2C = 1;
type Direction = typeof C2U | typeof U2C;

/** The reason when a direction's source sent the first close frame (or, without one, ended first). */
const SOURCE: readonly CloseReason[] = ['client', 'upstream'];

/**
 * A route without `session:`: bytes are relayed as they come, as a pipe would, while a
 * `FrameBoundaries` per direction follows the frame headers. That costs a few
 * operations per frame and lets a drain put its close frames between frames:
 *
 * - drain(): in each direction, at the next frame boundary, the destination gets a
 *   close frame (1001 `server shutting down`) and nothing more from the source; the
 *   source's bytes are then only scanned for its own close frame. Once both sides have
 *   sent theirs (or ended), both sockets end. A direction whose source already sent a
 *   close frame needs none.
 * - Otherwise it behaves as the pipe it replaces: an end (FIN) is passed on, a socket
 *   that closes or fails takes the other down with it.
 * - The close reason is the side whose close frame went by first (the scanner sees the
 *   opcodes anyway), else the side whose connection ended first.
 *
 * A non-WebSocket upgrade (`websocket: false`) is relayed without scanning and is
 * left alone by drain() (there is no frame to close it with): it ends at destroy().
 */
export class RawTunnel implements Tunnel {
  readonly #sockets: readonly [Duplex, Duplex];
  readonly #heads: readonly [Buffer, Buffer];
  readonly #websocket: boolean;
  readonly #clock: SessionClock;
  readonly #onClose: OnTunnelClose;
  readonly #startedAt: number;
  readonly #scanners = [new FrameBoundaries(), new FrameBoundaries()] as const;
  /** Per direction: a close frame of ours waits for the next frame boundary. */
  readonly #pending = [false, false];
  /** Per direction: the destination got a close of ours; the source's bytes are no longer relayed. */
  readonly #stopped = [false, false];
  /** Per direction: the source sent its close frame, or ended. */
  readonly #sourceDone = [false, false];
  readonly #paused = [false, false];
  #draining = false;
  #ending = false;
  #reason: CloseReason | null = null;
  #timer: TimerHandle | undefined;
  #openSockets = 2;

  constructor(sockets: TunnelSockets, clock: SessionClock, onClose: OnTunnelClose) {
    // Direction d reads from #sockets[d] and writes to the other one.
    this.#sockets = [sockets.client, sockets.upstream];
    this.#heads = [sockets.clientHead, sockets.upstreamHead];
    this.#websocket = sockets.websocket;
    this.#clock = clock;
    this.#onClose = onClose;
    this.#startedAt = clock.now();
  }

  start(): void {
    for (const d of [C2U, U2C] as const) {
      const source = this.#sockets[d];
      if (this.#heads[d].length > 0) this.#relay(d, this.#heads[d]);
      source.on('data', (chunk: Buffer) => this.#relay(d, chunk));
      source.on('end', () => this.#onEnd(d));
      source.on('error', () => this.#onError());
      source.on('close', () => this.#onSocketClose(d));
    }
  }

  drain(): void {
    if (this.#draining || this.#openSockets < 2) return;
    this.#draining = true;
    this.#reason ??= 'drain';
    if (!this.#websocket) return;
    for (const d of [C2U, U2C] as const) {
      if (this.#scanners[d].closeSeen || this.#sourceDone[d]) {
        // The destination already has the source's close (or its end): nothing to add.
        this.#sourceDone[d] = true;
        this.#stopped[d] = true;
      } else if (this.#scanners[d].atBoundary) {
        this.#inject(d);
      } else {
        this.#pending[d] = true;
      }
    }
    this.#maybeEnd();
  }

  destroy(): void {
    this.#reason ??= 'drain';
    for (const socket of this.#sockets) socket.destroy();
  }

  #relay(d: Direction, chunk: Buffer): void {
    if (!this.#websocket) {
      this.#write(d, chunk);
      return;
    }
    const scanner = this.#scanners[d];
    if (!this.#pending[d] && !this.#stopped[d]) {
      scanner.scan(chunk);
      if (this.#reason === null && scanner.closeSeen) this.#reason = SOURCE[d];
      this.#write(d, chunk);
      return;
    }
    let rest = chunk;
    if (this.#pending[d]) {
      const boundary = scanner.scan(chunk, 0, true);
      if (boundary > 0) this.#write(d, boundary === chunk.length ? chunk : chunk.subarray(0, boundary));
      if (!scanner.atBoundary) return; // the frame goes on in the next chunk
      this.#inject(d);
      if (boundary === chunk.length) return;
      rest = chunk.subarray(boundary);
    }
    // Stopped: dropped, but read for the source's own close frame.
    scanner.scan(rest);
    if (scanner.closeSeen && !this.#sourceDone[d]) {
      this.#sourceDone[d] = true;
      this.#maybeEnd();
    }
  }

  /** Our close frame to direction d's destination (masked towards the upstream). */
  #inject(d: Direction): void {
    this.#pending[d] = false;
    this.#stopped[d] = true;
    const { code, reason } = POLICY_CLOSES.drain;
    const toUpstream = d === C2U;
    const frames = frame(closePayload(toUpstream ? UPSTREAM_CLOSE_CODE : code, reason), OPCODE_CLOSE, toUpstream);
    const destination = this.#sockets[1 - d];
    for (const part of frames) destination.write(part);
  }

  #write(d: Direction, chunk: Buffer): void {
    const destination = this.#sockets[1 - d];
    if (destination.write(chunk) || this.#paused[d]) return;
    // Backpressure, as pipe() does it: the source waits until the destination drains.
    const source = this.#sockets[d];
    this.#paused[d] = true;
    source.pause();
    destination.once('drain', () => {
      this.#paused[d] = false;
      source.resume();
    });
  }

  #onEnd(d: Direction): void {
    this.#reason ??= SOURCE[d];
    this.#sourceDone[d] = true;
    // Both closing handshakes are done, or cannot finish: with the source gone, a frame
    // of its that was cut off will never reach its boundary.
    if (this.#draining && !this.#ending) {
      this.#pending[d] = false;
      this.#maybeEnd();
    }
    // Passed on, as pipe() does (the server keeps upgraded client sockets half-open).
    this.#sockets[1 - d].end();
  }

  #onError(): void {
    this.#reason ??= 'error';
    for (const socket of this.#sockets) socket.destroy();
  }

  #onSocketClose(d: Direction): void {
    this.#reason ??= SOURCE[d];
    this.#openSockets--;
    if (this.#openSockets === 1) {
      // Let the other flush what it has, but not for long.
      this.#endBoth();
      return;
    }
    if (this.#timer !== undefined) this.#clock.clearTimer(this.#timer);
    this.#onClose(this.#reason, { durationMs: this.#clock.now() - this.#startedAt, messagesFromClient: null, messagesFromUpstream: null });
  }

  /** After a drain: both sides sent their close (or ended) and no close of ours is still waiting. */
  #maybeEnd(): void {
    if (this.#sourceDone[C2U] && this.#sourceDone[U2C] && !this.#pending[C2U] && !this.#pending[U2C]) this.#endBoth();
  }

  #endBoth(): void {
    if (this.#ending) return;
    this.#ending = true;
    for (const socket of this.#sockets) socket.end();
    this.#timer = this.#clock.setTimer(() => this.destroy(), CLOSE_HANDSHAKE_MS);
  }
}
