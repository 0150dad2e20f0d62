import type { Duplex } from 'node:stream';

/** A route's `session:` limits, compiled once per load; `null` = that limit is not set. */
export interface CompiledSession {
  readonly maxDurationMs: number | null;
  readonly idleTimeoutMs: number | null;
  /** Largest client message, in payload bytes as sent on the wire (summed over its fragments). */
  readonly maxMessageBytes: number | null;
  /** Client->upstream data messages per sliding window, counted from the session's start. */
  readonly messages: { readonly limit: number; readonly windowMs: number } | null;
}

/**
 * Why a tunnel closed: the `reason` label of `tollgate_websocket_closed_total` and of
 * the `websocket_closed` log line (a public contract: do not rename).
 * - `client` / `upstream`: that side sent the first close frame (on a raw tunnel, or
 *   without any close frame: that side's connection ended first);
 * - `max_duration`, `idle`, `message_rate`, `message_size`: closed by a `session:` limit;
 * - `drain`: closed because Tollgate is shutting down;
 * - `error`: a socket error, or frames that break RFC 6455.
 */
export type CloseReason = 'client' | 'upstream' | 'max_duration' | 'idle' | 'message_rate' | 'message_size' | 'drain' | 'error';

/** What a tunnel counted, reported once when it closes. */
export interface TunnelStats {
  /** Milliseconds from open to both sockets closed. */
  readonly durationMs: number;
  /** Data messages relayed each way; null on a raw tunnel, which does not count messages. */
  readonly messagesFromClient: number | null;
  readonly messagesFromUpstream: number | null;
}

/** Called exactly once, after both sockets have closed. */
export type OnTunnelClose = (reason: CloseReason, stats: TunnelStats) => void;

/**
 * One open WebSocket tunnel, as the proxy and the registry drive it. It owns both
 * sockets from `start()` on and ends them itself.
 */
export interface Tunnel {
  /** Starts relaying. The 101 has already been written to the client. */
  start(): void;
  /**
   * Closes properly for a shutdown: at the next frame boundary each way, 1001
   * `server shutting down` to the client and to the upstream; the sockets end after both
   * closing handshakes (or at `destroy()`).
   */
  drain(): void;
  /** Ends both sockets now (drain timeout, immediate stop). */
  destroy(): void;
}

/** The two sockets of an upgraded connection, and what was already read past each head. */
export interface TunnelSockets {
  readonly client: Duplex;
  readonly upstream: Duplex;
  /** Bytes the client sent after its upgrade request (already frames). */
  readonly clientHead: Buffer;
  /** Bytes the upstream sent after its 101 (already frames). */
  readonly upstreamHead: Buffer;
  /** The upstream 101's `Sec-WebSocket-Extensions` (what both ends negotiated). */
  readonly extensions: string | undefined;
  /** The 101 said `Upgrade: websocket`; anything else is relayed raw and never framed. */
  readonly websocket: boolean;
}

/** Timer handle of a `SessionClock`; opaque to the caller. */
export type TimerHandle = unknown;

/**
 * Time for sessions: a monotonic clock and one-shot timers. Injected in tests; real
 * (performance.now, setTimeout) otherwise.
 */
export interface SessionClock {
  /** Milliseconds on a monotonic clock (any origin). */
  now(): number;
  /** Calls `fn` once, `ms` from now. */
  setTimer(fn: () => void, ms: number): TimerHandle;
  clearTimer(handle: TimerHandle): void;
}
