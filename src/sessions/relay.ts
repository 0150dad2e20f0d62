import type { Duplex } from 'node:stream';
import { slidingWindow, type SlidingWindowState } from '../limiter/algorithms/sliding-window.js';
import { CLOSE_HANDSHAKE_MS, POLICY_CLOSES, UPSTREAM_CLOSE_CODE, type PolicyReason } from './closes.js';
import {
  OPCODE_BINARY,
  OPCODE_CLOSE,
  OPCODE_PING,
  OPCODE_PONG,
  OPCODE_TEXT,
  TOO_BIG_ERRORS,
  closePayload,
  createReceiver,
  frame,
  negotiatedDeflate,
  type FrameReceiver,
} from './frames.js';
import type { CloseReason, CompiledSession, OnTunnelClose, SessionClock, TimerHandle, Tunnel, TunnelSockets } from './types.js';

/** Sides, as indexes. A message read from one side is written to the other (`1 - side`). */
const CLIENT = 0;
const UPSTREAM = 1;
type Side = typeof CLIENT | typeof UPSTREAM;

/** The reason when a side closed (or ended) first. */
const SIDE: readonly CloseReason[] = ['client', 'upstream'];

/**
 * A relay holds a message until it is whole: without `maxMessageSize` (and for what the
 * upstream sends) messages are still bounded, at ws's own default `maxPayload`, so one
 * endless message cannot exhaust memory.
 */
export const MESSAGE_BYTES_BOUND = 100 * 1024 * 1024;
/** Frames that break RFC 6455: what each side is told. */
const CLIENT_PROTOCOL_ERROR = { client: 1002, upstream: UPSTREAM_CLOSE_CODE, reason: 'protocol error' };
const UPSTREAM_PROTOCOL_ERROR = { client: 1014, upstream: 1002, reason: 'upstream protocol error' };

/**
 * A route with `session:`: both directions go through ws's frame parser, message by
 * message, so the session's limits can be enforced:
 *
 * - `maxMessageSize`: the client Receiver's maxPayload, checked at each frame header
 *   against the payload length summed over the message's fragments, before any of it
 *   is relayed (a message is relayed only once whole) -> 1009 `message too big`;
 * - `messages`: a sliding window (the limiter's algorithm) over client data messages,
 *   its time counted from the session's start -> 1008 `message rate exceeded`;
 * - `idleTimeout` (data messages either way; ping/pong are not activity) and
 *   `maxDuration` -> 1001: one timer per session, armed at the earlier deadline and
 *   re-armed lazily when it fires early (activity only records a time, read once per
 *   socket chunk, never per frame).
 *
 * A policy close sends the client its code and reason and the upstream 1001 with the
 * same reason, relays nothing more, and ends both sockets after both closing
 * handshakes or after CLOSE_HANDSHAKE_MS. The message that broke a limit is not relayed.
 *
 * permessage-deflate, when the upstream's 101 accepted it, stays end to end: messages
 * pass still compressed (RSV1 kept), sizes are compressed (wire) sizes. Messages are
 * re-framed as one frame each (an intermediary may change fragmentation, RFC 6455
 * 5.4), masked towards the upstream; pings and pongs are relayed unchanged. A peer's
 * close frame is relayed as is, and its answer relayed back.
 */
export class SessionRelay implements Tunnel {
  readonly #sockets: readonly [Duplex, Duplex];
  readonly #heads: readonly [Buffer, Buffer];
  readonly #receivers: readonly [FrameReceiver, FrameReceiver];
  readonly #session: CompiledSession;
  readonly #clock: SessionClock;
  readonly #onClose: OnTunnelClose;
  readonly #startedAt: number;
  /** Clock reading of the chunk being parsed. */
  #now: number;
  /** When the last data message went by, either way. */
  #lastData: number;
  #rate: SlidingWindowState | undefined;
  /** The session timer (idle/duration) while open; then the closing deadline. */
  #timer: TimerHandle | undefined;
  #closing = false;
  #ending = false;
  /** Per side: a close frame went to it (relayed or ours), or it was sent an end. */
  readonly #sentClose = [false, false];
  /** Per side: it sent its close frame or ended; nothing more will be read from it. */
  readonly #gotClose = [false, false];
  /** Per side: its frames broke the protocol; its bytes are dropped from then on. */
  readonly #deaf = [false, false];
  /** Per side: the next message it emits arrived compressed. */
  readonly #compressedNext = [false, false];
  readonly #paused = [false, false];
  readonly #messages = [0, 0];
  #reason: CloseReason | null = null;
  #openSockets = 2;

  constructor(sockets: TunnelSockets, session: CompiledSession, clock: SessionClock, onClose: OnTunnelClose) {
    this.#sockets = [sockets.client, sockets.upstream];
    this.#heads = [sockets.clientHead, sockets.upstreamHead];
    this.#session = session;
    this.#clock = clock;
    this.#onClose = onClose;
    this.#startedAt = clock.now();
    this.#now = this.#startedAt;
    this.#lastData = this.#startedAt;
    const compressed = negotiatedDeflate(sockets.extensions);
    this.#receivers = [
      createReceiver({ fromClient: true, maxPayload: session.maxMessageBytes ?? MESSAGE_BYTES_BOUND, compressed, onCompressed: () => (this.#compressedNext[CLIENT] = true) }),
      createReceiver({ fromClient: false, maxPayload: MESSAGE_BYTES_BOUND, compressed, onCompressed: () => (this.#compressedNext[UPSTREAM] = true) }),
    ];
  }

  start(): void {
    for (const side of [CLIENT, UPSTREAM] as const) {
      const receiver = this.#receivers[side];
      receiver.on('message', (data, isBinary) => this.#onMessage(side, data, isBinary));
      receiver.on('ping', (data) => this.#onControl(side, OPCODE_PING, data));
      receiver.on('pong', (data) => this.#onControl(side, OPCODE_PONG, data));
      receiver.on('conclude', (code, reason) => this.#onCloseFrame(side, code, reason));
      receiver.on('error', (error) => this.#onProtocolError(side, error.code));
      const socket = this.#sockets[side];
      socket.on('data', (chunk: Buffer) => this.#feed(side, chunk));
      socket.on('end', () => this.#onEnd(side));
      socket.on('error', () => this.#onSocketError());
      socket.on('close', () => this.#onSocketClose(side));
    }
    for (const side of [CLIENT, UPSTREAM] as const) if (this.#heads[side].length > 0) this.#feed(side, this.#heads[side]);
    this.#armSessionTimer();
  }

  drain(): void {
    this.#policyClose('drain');
  }

  destroy(): void {
    this.#reason ??= 'drain';
    for (const socket of this.#sockets) socket.destroy();
  }

  /** One chunk from a side into its parser; frames written to the other side go out together. */
  #feed(side: Side, chunk: Buffer): void {
    if (this.#gotClose[side] || this.#deaf[side]) return;
    this.#now = this.#clock.now();
    const out = this.#sockets[1 - side];
    out.cork();
    this.#receivers[side].write(chunk);
    out.uncork();
  }

  #onMessage(side: Side, data: Buffer, isBinary: boolean): void {
    const compressed = this.#compressedNext[side];
    this.#compressedNext[side] = false;
    const to = (1 - side) as Side;
    // Nothing more goes to a side that was sent a close.
    if (this.#sentClose[to]) return;
    if (side === CLIENT && this.#session.messages !== null) {
      const { limit, windowMs } = this.#session.messages;
      const t = Math.floor(this.#now - this.#startedAt);
      if (!slidingWindow.peek(this.#rate, limit, windowMs, t).allowed) {
        this.#policyClose('message_rate');
        return;
      }
      this.#rate = slidingWindow.consume(this.#rate, limit, windowMs, t);
    }
    this.#messages[side]++;
    this.#lastData = this.#now;
    this.#send(to, frame(data, isBinary ? OPCODE_BINARY : OPCODE_TEXT, to === UPSTREAM, compressed));
  }

  /** Ping and pong: relayed unchanged; neither activity nor a message. */
  #onControl(side: Side, opcode: number, data: Buffer): void {
    const to = (1 - side) as Side;
    if (!this.#sentClose[to]) this.#send(to, frame(data, opcode, to === UPSTREAM));
  }

  #onCloseFrame(side: Side, code: number, reason: Buffer): void {
    this.#gotClose[side] = true;
    if (this.#reason === null) {
      this.#reason = SIDE[side];
      this.#startClosing(CLOSE_HANDSHAKE_MS);
    }
    const to = (1 - side) as Side;
    // The peer's close (and later the answer to it) goes on as it came.
    if (!this.#sentClose[to]) this.#sendClose(to, code, reason);
    this.#maybeEnd();
  }

  #onProtocolError(side: Side, code: string | undefined): void {
    this.#deaf[side] = true;
    if (side === CLIENT && code !== undefined && TOO_BIG_ERRORS.has(code)) {
      this.#policyClose('message_size');
      return;
    }
    const close = side === CLIENT ? CLIENT_PROTOCOL_ERROR : UPSTREAM_PROTOCOL_ERROR;
    this.#closeBoth('error', close.client, close.upstream, close.reason, CLOSE_HANDSHAKE_MS);
  }

  #policyClose(reason: PolicyReason): void {
    const { code, reason: text } = POLICY_CLOSES[reason];
    // A drain is bounded by the drain timeout rather than by CLOSE_HANDSHAKE_MS.
    this.#closeBoth(reason, code, UPSTREAM_CLOSE_CODE, text, reason === 'drain' ? null : CLOSE_HANDSHAKE_MS);
  }

  /** Close frames of ours to each side that has not had one; then the two handshakes run. */
  #closeBoth(reason: CloseReason, clientCode: number, upstreamCode: number, text: string, timeoutMs: number | null): void {
    if (this.#ending || this.#openSockets < 2) return;
    this.#reason ??= reason;
    if (!this.#sentClose[CLIENT]) this.#sendClose(CLIENT, clientCode, text);
    if (!this.#sentClose[UPSTREAM]) this.#sendClose(UPSTREAM, upstreamCode, text);
    if (!this.#closing) this.#startClosing(timeoutMs);
    this.#maybeEnd();
  }

  #sendClose(side: Side, code: number, reason: Buffer | string): void {
    this.#sentClose[side] = true;
    this.#send(side, frame(closePayload(code, reason), OPCODE_CLOSE, side === UPSTREAM));
  }

  #send(side: Side, frames: Buffer[]): void {
    const socket = this.#sockets[side];
    socket.write(frames[0]);
    if (frames.length > 1) socket.write(frames[1]);
    const from = 1 - side;
    if (!socket.writableNeedDrain || this.#paused[from]) return;
    // Backpressure: the side whose messages fill this socket waits until it drains.
    const source = this.#sockets[from];
    this.#paused[from] = true;
    source.pause();
    socket.once('drain', () => {
      this.#paused[from] = false;
      source.resume();
    });
  }

  #armSessionTimer(): void {
    const { maxDurationMs, idleTimeoutMs } = this.#session;
    let due = maxDurationMs === null ? Infinity : this.#startedAt + maxDurationMs;
    if (idleTimeoutMs !== null) due = Math.min(due, this.#lastData + idleTimeoutMs);
    if (due === Infinity) return;
    this.#timer = this.#clock.setTimer(this.#onSessionTimer, Math.max(0, Math.ceil(due - this.#clock.now())));
  }

  readonly #onSessionTimer = (): void => {
    this.#timer = undefined;
    if (this.#closing) return;
    const now = this.#clock.now();
    const { maxDurationMs, idleTimeoutMs } = this.#session;
    if (maxDurationMs !== null && now - this.#startedAt >= maxDurationMs) this.#policyClose('max_duration');
    else if (idleTimeoutMs !== null && now - this.#lastData >= idleTimeoutMs) this.#policyClose('idle');
    else this.#armSessionTimer(); // there was activity since it was armed
  };

  /** The session timer gives way to the closing deadline (none: until destroy()). */
  #startClosing(timeoutMs: number | null): void {
    this.#closing = true;
    if (this.#timer !== undefined) this.#clock.clearTimer(this.#timer);
    this.#timer = timeoutMs === null ? undefined : this.#clock.setTimer(() => this.destroy(), timeoutMs);
  }

  /** Both closing handshakes are done: end both sockets. */
  #maybeEnd(): void {
    if (this.#gotClose[CLIENT] && this.#gotClose[UPSTREAM] && this.#sentClose[CLIENT] && this.#sentClose[UPSTREAM]) this.#endBoth();
  }

  #onEnd(side: Side): void {
    this.#gotClose[side] = true;
    this.#reason ??= SIDE[side];
    // Gone without a closing handshake (or in the middle of one that it will now never
    // answer): the other side gets an end too, as through a raw tunnel.
    if (!this.#sentClose[1 - side] || !this.#sentClose[side]) this.#endBoth();
    else this.#maybeEnd();
  }

  #onSocketError(): void {
    this.#reason ??= 'error';
    for (const socket of this.#sockets) socket.destroy();
  }

  #onSocketClose(side: Side): void {
    this.#reason ??= SIDE[side];
    this.#openSockets--;
    if (this.#openSockets === 1) {
      this.#endBoth();
      return;
    }
    if (this.#timer !== undefined) this.#clock.clearTimer(this.#timer);
    for (const receiver of this.#receivers) receiver.destroy();
    this.#onClose(this.#reason, { durationMs: this.#clock.now() - this.#startedAt, messagesFromClient: this.#messages[CLIENT], messagesFromUpstream: this.#messages[UPSTREAM] });
  }

  /** Ends both sockets (flushing what was written) and destroys them if they do not close in time. */
  #endBoth(): void {
    if (this.#ending) return;
    this.#ending = true;
    this.#closing = true;
    this.#sentClose[CLIENT] = this.#sentClose[UPSTREAM] = true;
    if (this.#timer !== undefined) this.#clock.clearTimer(this.#timer);
    for (const socket of this.#sockets) socket.end();
    this.#timer = this.#clock.setTimer(() => this.destroy(), CLOSE_HANDSHAKE_MS);
  }
}
