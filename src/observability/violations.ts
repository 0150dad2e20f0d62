import { LRUCache } from 'lru-cache';
import { LogBudget } from './log-budget.js';
import type { Logger } from './logger.js';

/** One refused (or shadow-refused) request, as logged. Never a token, secret or body. */
export interface Violation {
  route: string;
  limitBy: string;
  keyKind: 'ip' | 'user' | 'header' | 'global';
  userId: string | undefined;
  clientIp: string;
  limit: number;
  count: number;
  /** A block is running (or was just started) for this key. */
  blocked: boolean;
  blockStarted: boolean;
  /** The strike of the block this refusal started (0 = none started). */
  strike: number;
  /** Seconds. */
  retryAfter: number;
  requestId: string;
  shadow: boolean;
  /** The store key (not logged): suppression is per key. */
  key: string;
  /** Until when (ms) further refusals of this key are folded into a summary. */
  quietUntil: number;
}

interface KeyState {
  quietUntil: number;
  suppressed: number;
  route: string;
  limitBy: string;
}

/** Calls `flush` every `everyMs` until the returned function is called. */
export type FlushTimer = (flush: () => void, everyMs: number) => () => void;

/** How often quiet periods that ended and the overflow count are reported. */
const FLUSH_EVERY_MS = 1_000; // 1s

/** A real interval that does not keep the process alive. */
const intervalTimer: FlushTimer = (flush, everyMs) => {
  const timer = setInterval(flush, everyMs);
  timer.unref();
  return () => clearInterval(timer);
};

export interface ViolationLogOptions {
  clock: () => number;
  /** Lines per second across all keys before lines are dropped and counted. */
  linesPerSecond?: number;
  /** Distinct keys remembered for suppression. */
  maxKeys?: number;
  /** Drives the periodic flush; default a real (unref'd) interval. Tests pass a hand-driven one. */
  flushTimer?: FlushTimer;
}

/**
 * Logs refusals without flooding: the first refusal of each key per block (or per
 * window) is a line; the rest are counted and reported in one summary line when the
 * quiet period ends. A global budget bounds lines per second across distinct keys;
 * lines over it are dropped and reported by an overflow summary.
 */
export class ViolationLog {
  readonly #logger: Logger;
  readonly #clock: () => number;
  readonly #budget: LogBudget;
  readonly #keys: LRUCache<string, KeyState>;
  readonly #stopTimer: () => void;

  constructor(logger: Logger, options: ViolationLogOptions) {
    this.#logger = logger;
    this.#clock = options.clock;
    this.#budget = new LogBudget(options.linesPerSecond ?? 100);
    this.#keys = new LRUCache<string, KeyState>({
      max: options.maxKeys ?? 50_000,
      dispose: (state, key, reason) => {
        if (reason === 'evict' || reason === 'delete') this.#summarise(key, state);
      },
    });
    this.#stopTimer = (options.flushTimer ?? intervalTimer)(() => this.flush(), FLUSH_EVERY_MS);
  }

  record(v: Violation): void {
    const now = this.#clock();
    const state = this.#keys.get(v.key);
    if (state !== undefined && now < state.quietUntil) {
      state.suppressed++;
      return;
    }
    if (state !== undefined) this.#keys.delete(v.key); // emits its summary
    this.#keys.set(v.key, { quietUntil: Math.max(v.quietUntil, now + 1000), suppressed: 0, route: v.route, limitBy: v.limitBy });
    if (!this.#budget.take(now)) return;
    this.#logger.warn(
      {
        event: v.blockStarted ? 'rate_limit_block_started' : v.blocked ? 'rate_limit_blocked' : 'rate_limit_exceeded',
        route: v.route,
        limitBy: v.limitBy,
        keyKind: v.keyKind,
        userId: v.userId,
        clientIp: v.clientIp,
        limit: v.limit,
        count: v.count,
        blocked: v.blocked,
        ...(v.blockStarted ? { strike: v.strike } : {}),
        retryAfter: v.retryAfter,
        requestId: v.requestId,
        ...(v.shadow ? { shadow: true } : {}),
      },
      v.shadow ? 'rate limit exceeded (shadow mode: request allowed)' : 'rate limit exceeded',
    );
  }

  /** Emits summaries of quiet periods that ended and the overflow count. */
  flush(): void {
    const now = this.#clock();
    const ended: string[] = [];
    for (const [key, state] of this.#keys.entries()) {
      if (state.quietUntil <= now) ended.push(key);
    }
    for (const key of ended) this.#keys.delete(key);
    const dropped = this.#budget.takeDropped();
    if (dropped > 0) {
      this.#logger.warn({ event: 'rate_limit_log_overflow', dropped }, 'rate-limit log lines dropped over the per-second budget');
    }
  }

  /** Stops the timer and reports every pending suppressed count: a restart must not lose them. */
  close(): void {
    this.#stopTimer();
    this.#keys.clear(); // disposes each key with reason 'delete': its summary
    this.flush();
  }

  #summarise(_key: string, state: KeyState): void {
    if (state.suppressed === 0) return;
    if (!this.#budget.take(this.#clock())) return;
    this.#logger.warn(
      { event: 'rate_limit_suppressed', route: state.route, limitBy: state.limitBy, suppressed: state.suppressed },
      'further refusals of one key were not logged one by one',
    );
  }
}
