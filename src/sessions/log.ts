import { LogBudget } from '../observability/log-budget.js';
import type { Logger } from '../observability/logger.js';
import type { TunnelContext } from './registry.js';
import type { CloseReason, TunnelStats } from './types.js';

/** Closes Tollgate decides; each is one `websocket_closed` line. */
const POLICY: ReadonlySet<CloseReason> = new Set(['max_duration', 'idle', 'message_rate', 'message_size']);
/** Closes that refuse what the client did, logged as warnings (as refusals are). */
const REFUSALS: ReadonlySet<CloseReason> = new Set(['message_rate', 'message_size']);

const MESSAGES: Readonly<Record<CloseReason, string>> = {
  client: 'websocket closed by the client',
  upstream: 'websocket closed by the upstream',
  max_duration: 'websocket closed: session duration limit',
  idle: 'websocket closed: idle timeout',
  message_rate: 'websocket closed: message rate exceeded',
  message_size: 'websocket closed: message too big',
  drain: 'websocket closed: server shutting down',
  error: 'websocket closed on an error',
};

/**
 * `websocket_closed` lines: one per policy close, and per ordinary close only with
 * `log.access: true`. Bounded by a per-second budget like rate-limit lines; what goes
 * over it is reported once a second as `websocket_log_overflow` with `dropped`.
 */
export class SessionLog {
  readonly #logger: Logger;
  readonly #clock: () => number;
  readonly #budget: LogBudget;
  readonly #timer: NodeJS.Timeout;

  constructor(logger: Logger, options: { clock: () => number; linesPerSecond?: number }) {
    this.#logger = logger;
    this.#clock = options.clock;
    this.#budget = new LogBudget(options.linesPerSecond ?? 100);
    this.#timer = setInterval(() => this.flush(), 1000);
    this.#timer.unref();
  }

  closed(context: TunnelContext, reason: CloseReason, stats: TunnelStats): void {
    if (!POLICY.has(reason) && !context.logAccess) return;
    if (!this.#budget.take(this.#clock())) return;
    const line = {
      event: 'websocket_closed',
      route: context.routeId,
      reason,
      userId: context.userId,
      clientIp: context.clientIp,
      durationMs: Math.round(stats.durationMs),
      messagesFromClient: stats.messagesFromClient ?? undefined,
      messagesFromUpstream: stats.messagesFromUpstream ?? undefined,
      requestId: context.requestId,
    };
    if (REFUSALS.has(reason)) this.#logger.warn(line, MESSAGES[reason]);
    else this.#logger.info(line, MESSAGES[reason]);
  }

  /** Reports the lines dropped over the budget since the last flush. */
  flush(): void {
    const dropped = this.#budget.takeDropped();
    if (dropped > 0) this.#logger.warn({ event: 'websocket_log_overflow', dropped }, 'websocket_closed lines dropped over the per-second budget');
  }

  close(): void {
    clearInterval(this.#timer);
    this.flush();
  }
}
