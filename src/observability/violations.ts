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

/** A guard's refusal (src/guards/), as logged. Never a token, cookie, CSRF value or body. */
export interface GuardRefusalLine {
  route: string;
  /** The guard's key (`origins`, `auth`, ...), or `path` for INVALID_PATH, `host` for INVALID_HOST. */
  guard: string;
  code: string;
  clientIp: string;
  requestId: string;
  /** Suppression is per route, guard and client key (not logged). */
  key: string;
}

/** Further refusals of one key within this are folded into a summary line. */
const GUARD_QUIET_MS = 60 * 1000; // 60s

interface KeyState {
  quietUntil: number;
  suppressed: number;
  /** The summary line logged when the quiet period ends (`suppressed` is added). */
  summary: { event: string; route: string; limitBy?: string; guard?: string };
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
 * window; a guard's: per minute) is a line; the rest are counted and reported in one
 * summary line when the quiet period ends. A global budget bounds lines per second
 * across distinct keys (rate-limit and guard lines share it); lines over it are dropped
 * and reported by an overflow summary.
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

  /** True when a line for `key` is due now (else it was counted for the key's summary). */
  #due(key: string, quietUntil: number, summary: KeyState['summary'], now: number): boolean {
    const state = this.#keys.get(key);
    if (state !== undefined && now < state.quietUntil) {
      state.suppressed++;
      return false;
    }
    if (state !== undefined) this.#keys.delete(key); // emits its summary
    this.#keys.set(key, { quietUntil: Math.max(quietUntil, now + 1000), suppressed: 0, summary });
    return this.#budget.take(now);
  }

  /** A request refused by a guard: one `guard_refused` line per route, guard and client per minute. */
  refusal(r: GuardRefusalLine): void {
    const now = this.#clock();
    if (!this.#due(r.key, now + GUARD_QUIET_MS, { event: 'guard_refused_suppressed', route: r.route, guard: r.guard }, now)) return;
    this.#logger.info(
      { event: 'guard_refused', route: r.route, guard: r.guard, code: r.code, clientIp: r.clientIp, requestId: r.requestId },
      'request refused by a guard',
    );
  }

  record(v: Violation): void {
    const now = this.#clock();
    if (!this.#due(v.key, v.quietUntil, { event: 'rate_limit_suppressed', route: v.route, limitBy: v.limitBy }, now)) return;
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
    this.#logger.warn({ ...state.summary, suppressed: state.suppressed }, 'further refusals of one key were not logged one by one');
  }
}
