import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { realClock } from './clock.js';
import { RawTunnel } from './raw-tunnel.js';
import { SessionRelay } from './relay.js';
import { SessionLog } from './log.js';
import type { CloseReason, CompiledSession, SessionClock, Tunnel, TunnelSockets, TunnelStats } from './types.js';

/** What the proxy knows about a tunnel when it opens: for its metrics and log lines. */
export interface TunnelContext {
  readonly routeId: string;
  /** The route's compiled `session:`; null = a raw tunnel. */
  readonly session: CompiledSession | null;
  readonly requestId: string;
  readonly userId: string | undefined;
  readonly clientIp: string;
  /** `log.access: true`: ordinary closes get a `websocket_closed` line too. */
  readonly logAccess: boolean;
}

export interface TunnelRegistryOptions {
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** Session time (idle, duration, closing deadlines); real by default. */
  readonly clock?: SessionClock;
  /** Unix ms for the log budget; Date.now by default. */
  readonly wallClock?: () => number;
  /** `websocket_closed` lines per second before they are dropped and counted (default 100). */
  readonly linesPerSecond?: number;
}

interface Drain {
  readonly startedAt: number;
  /** Tunnels drained: open at its start, or opened by a handshake that was already under way. */
  tunnels: number;
  destroyed: number;
  logged: boolean;
}

/**
 * The open WebSocket tunnels: opens each as a raw tunnel or a session relay, keeps the
 * `tollgate_websocket_*` metrics and the in-flight count, logs policy closes, and
 * drives the drain (every tunnel closes properly at its start; `destroyAll()` ends
 * what is left at the drain timeout, with one summary line for the whole drain).
 */
export class TunnelRegistry {
  readonly #open = new Set<Tunnel>();
  readonly #metrics: Metrics;
  readonly #logger: Logger;
  readonly #clock: SessionClock;
  readonly #log: SessionLog;
  #drain: Drain | null = null;
  readonly #idle: (() => void)[] = [];

  constructor(options: TunnelRegistryOptions) {
    this.#metrics = options.metrics;
    this.#logger = options.logger;
    this.#clock = options.clock ?? realClock;
    this.#log = new SessionLog(options.logger, { clock: options.wallClock ?? Date.now, linesPerSecond: options.linesPerSecond });
  }

  /** Open tunnels. */
  get size(): number {
    return this.#open.size;
  }

  /** Takes over an upgraded connection whose 101 went out; relays until it closes. */
  open(sockets: TunnelSockets, context: TunnelContext): Tunnel {
    const onClose = (reason: CloseReason, stats: TunnelStats): void => this.#closed(tunnel, context, reason, stats);
    const tunnel: Tunnel =
      context.session === null || !sockets.websocket
        ? new RawTunnel(sockets, this.#clock, onClose)
        : new SessionRelay(sockets, context.session, this.#clock, onClose);
    this.#open.add(tunnel);
    this.#metrics.websocketSessions.inc({ route: context.routeId });
    this.#metrics.hot.inflight++;
    tunnel.start();
    if (this.#drain !== null) {
      this.#drain.tunnels++;
      tunnel.drain();
    }
    return tunnel;
  }

  /** Starts the drain (once): every open tunnel closes properly. Resolves when none is left. */
  drain(): Promise<void> {
    if (this.#drain === null) {
      this.#drain = { startedAt: this.#clock.now(), tunnels: this.#open.size, destroyed: 0, logged: false };
      for (const tunnel of this.#open) tunnel.drain();
    }
    if (this.#open.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Ends every open tunnel now (drain timeout, immediate stop). */
  destroyAll(): void {
    const open = [...this.#open];
    if (this.#drain !== null && !this.#drain.logged) {
      this.#drain.destroyed = open.length;
      this.#drainSummary();
    }
    for (const tunnel of open) tunnel.destroy();
  }

  /** Stops the log budget's timer, reporting lines it dropped. */
  close(): void {
    this.#log.close();
  }

  #closed(tunnel: Tunnel, context: TunnelContext, reason: CloseReason, stats: TunnelStats): void {
    if (!this.#open.delete(tunnel)) return;
    const route = context.routeId;
    this.#metrics.websocketSessions.dec({ route });
    this.#metrics.hot.inflight--;
    this.#metrics.websocketClosed.inc({ route, reason });
    this.#metrics.websocketSessionDuration.observe({ route }, stats.durationMs / 1000);
    // A drain is one summary line, not one per socket.
    if (reason !== 'drain') this.#log.closed(context, reason, stats);
    if (this.#open.size > 0) return;
    if (this.#drain !== null && !this.#drain.logged) this.#drainSummary();
    for (const resolve of this.#idle.splice(0)) resolve();
  }

  /** One line for the whole drain; none when there was no tunnel to drain. */
  #drainSummary(): void {
    const drain = this.#drain as Drain;
    if (drain.tunnels === 0) return;
    drain.logged = true;
    this.#logger.info(
      {
        event: 'websocket_drain',
        tunnels: drain.tunnels,
        closed: drain.tunnels - drain.destroyed,
        destroyed: drain.destroyed,
        durationMs: Math.round(this.#clock.now() - drain.startedAt),
      },
      drain.destroyed === 0 ? 'websocket tunnels closed for shutdown' : 'websocket tunnels closed for shutdown; some destroyed at the drain timeout',
    );
  }
}
