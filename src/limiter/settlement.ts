import type { IncomingHttpHeaders } from 'node:http';
import type { RateReport } from './limiter.js';
import { shownOutcome } from './limiter.js';
import { reportedCost } from './cost.js';
import type { CompiledLimit } from '../policy/types.js';
import type { LimitOutcome, RateLimitStore, StoreHold } from '../store/types.js';

/** What settlements tell the proxy's metrics. */
export interface SettlementEvents {
  /** Slots taken (+n when a settlement is created) and given back (-n at its end), per route. */
  slots?(routeId: string, delta: number): void;
  /** An upstream's cost header was malformed or repeated (its reservation is charged). */
  invalidCost?(routeId: string): void;
}

/**
 * The work an admitted decision leaves for the end of its exchange: give back the
 * concurrency slots it holds, give back the reservations of requests whose status does
 * not count (`count: { status }`), and settle reserved costs to what the upstream reported
 * (`cost: { header }`). The proxy calls `head()` when the exchange's status is known and
 * `end()` exactly once when the exchange ends, whatever ends it (response sent, client
 * gone, upstream error or timeout, tunnel closed, drain, reload); further calls do
 * nothing. A client that leaves before the status keeps its reservations (conservative).
 */
export class Settlement {
  readonly #store: RateLimitStore;
  readonly #hold: StoreHold;
  readonly #routeId: string;
  readonly #slots: number;
  readonly #events: SettlementEvents;
  readonly #report: RateReport | undefined;
  /** Units to add per check (negative: give back), known once the status is. */
  #deltas: number[] | null = null;
  #headDone = false;
  #ended = false;

  constructor(store: RateLimitStore, hold: StoreHold, routeId: string, events: SettlementEvents, report: RateReport | undefined) {
    this.#store = store;
    this.#hold = hold;
    this.#routeId = routeId;
    let slots = 0;
    for (let i = 0; i < hold.slots.length; i++) if (hold.slots[i]) slots++;
    this.#slots = slots;
    this.#events = events;
    this.#report = report;
    if (slots > 0) events.slots?.(routeId, slots);
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Units settled per check so far (null: none), for tests. */
  get deltas(): readonly number[] | null {
    return this.#deltas;
  }

  /**
   * The status of the exchange is known: the upstream's response head (its headers given,
   * to read a cost from), or Tollgate's own 502/504 (no headers: reservations are charged
   * as they are). Works out what each counted check finally costs. Returns the outcomes as
   * they stand after it when that changed what the rate-limit headers show (so the proxy
   * can rewrite them), else undefined. At most once; ignored after `end`.
   */
  head(status: number, headers: IncomingHttpHeaders | null = null): RateReport | undefined {
    if (this.#headDone || this.#ended) return undefined;
    this.#headDone = true;
    const hold = this.#hold;
    if (!hold.counted) return undefined;
    const checks = hold.checks;
    let deltas: number[] | null = null;
    for (let i = 0; i < checks.length; i++) {
      const limit = checks[i].limit;
      if (limit.type === 'concurrent' || !limit.settles) continue;
      let delta = 0;
      const statuses = limit.countStatuses;
      if (statuses !== null) {
        // A status outside the list gives its reservation back.
        if (!(status >= 100 && status < 600 && statuses[status] === 1)) delta = -limit.take;
      } else if (limit.costHeader !== null && headers !== null) {
        const cost = reportedCost(headers[limit.costHeader.name], limit.costHeader);
        if (!cost.valid) this.#events.invalidCost?.(this.#routeId);
        delta = cost.units - limit.take;
      }
      if (delta === 0) continue;
      deltas ??= new Array<number>(checks.length).fill(0);
      deltas[i] = delta;
    }
    this.#deltas = deltas;
    if (deltas === null || this.#report === undefined) return undefined;
    return settledReport(this.#report, deltas);
  }

  /** The exchange ended: give back what the decision holds and settle its units. Exactly once; never throws. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    try {
      this.#store.settle(this.#hold, this.#deltas);
    } finally {
      if (this.#slots > 0) this.#events.slots?.(this.#routeId, -this.#slots);
    }
  }
}

/** The report with each check's settled units applied to what it shows (remaining never below 0 nor above the limit). */
function settledReport(report: RateReport, deltas: readonly number[]): RateReport {
  const outcomes: LimitOutcome[] = report.outcomes.map((o, i) => {
    const delta = deltas[i];
    if (delta === 0) return o;
    const remaining = Math.min(o.max, Math.max(0, o.remaining - delta));
    return { ...o, remaining, count: Math.max(0, o.count + delta), resetAt: settledResetAt(report.checks[i].limit, o, delta) };
  });
  return { checks: report.checks, outcomes, shown: shownOutcome(outcomes, true), degraded: report.degraded };
}

/**
 * When the quota is whole again after `delta` more tokens were charged (negative: given
 * back). A window's reset is its end, whatever was counted; a token bucket refills `max`
 * tokens per window, so each token moves its reset by windowMs / max, and a bucket given
 * back to full is whole at the decision (resetAt less the refill its remaining showed).
 */
function settledResetAt(limit: CompiledLimit, o: LimitOutcome, delta: number): number {
  if (limit.type !== 'rate' || limit.algorithm !== 'token-bucket' || o.max <= 0) return o.resetAt;
  const perToken = limit.windowMs / o.max;
  const full = o.resetAt - Math.ceil((o.max - o.remaining) * perToken);
  return Math.max(full, o.resetAt + Math.ceil(delta * perToken));
}
