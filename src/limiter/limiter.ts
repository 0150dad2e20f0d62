import { createHash } from 'node:crypto';
import type { ClientAddress, CompiledLimit, CompiledRoute, Identity, IncomingHeaders } from '../policy/types.js';
import type { LimitCheck, LimitOutcome, RateLimitStore, StoreDecision } from '../store/types.js';
import { StoreUnavailableError } from '../store/types.js';
import { Settlement, type SettlementEvents } from './settlement.js';

/**
 * What the proxy acts on. `refuse` carries why, so later guards (concurrency,
 * origin, body size) can refuse for reasons other than a rate.
 */
export type Verdict =
  | {
      readonly action: 'allow';
      readonly reason: 'within_limits' | 'no_applicable_limit' | 'store_error_allow';
      readonly report?: RateReport;
      /** What must be given back when the exchange ends (concurrency slots); absent = nothing. */
      readonly settlement?: Settlement;
    }
  | { readonly action: 'shadow'; readonly reason: 'rate' | 'blocked'; readonly report: RateReport; readonly settlement?: Settlement }
  | { readonly action: 'refuse'; readonly reason: 'rate' | 'blocked'; readonly report: RateReport }
  | { readonly action: 'refuse'; readonly reason: 'store_unavailable' };

/** The checks a decision covered and their outcomes, for headers, logs and metrics. */
export interface RateReport {
  readonly checks: readonly LimitCheck[];
  readonly outcomes: readonly LimitOutcome[];
  /** Index of the check the response headers describe. */
  readonly shown: number;
  /** The store failed and the local fallback decided. */
  readonly degraded: boolean;
}

export interface LimiterOptions {
  store: RateLimitStore;
  /** What to do when the store rejects with StoreUnavailableError. */
  onStoreError: 'allow' | 'deny';
  /** Slots taken and given back per route (tollgate_concurrent_slots), invalid cost headers. */
  events?: SettlementEvents;
}

/** Longest header value kept verbatim as a key; longer ones are hashed. */
const MAX_RAW_KEY_LENGTH = 128;

function headerValue(headers: IncomingHeaders, name: string): string | undefined {
  const value = headers[name];
  if (value === undefined) return undefined;
  const text = typeof value === 'string' ? value : value.join(',');
  return text.length === 0 ? undefined : text;
}

/**
 * Header values are often credentials (API keys): key them by a digest so they never
 * appear in store keys or logs.
 */
function digest(value: string): string {
  return createHash('sha256').update(value).digest('base64url').slice(0, 22);
}

/** The client key of a user id (long ids are digested). */
export function userKey(userId: string): string {
  return userId.length > MAX_RAW_KEY_LENGTH ? 'u#' + digest(userId) : 'u:' + userId;
}

/** The client key of a header value (always a digest: header values are often credentials). */
export function headerKey(value: string): string {
  return 'h#' + digest(value);
}

/** The client key a limit counts under, or undefined when the limit does not apply. */
export function clientKey(limit: CompiledLimit, client: ClientAddress, identity: Identity, headers: IncomingHeaders): string | undefined {
  const userId = identity.userId;
  if (limit.for === 'anonymous' ? userId !== undefined : limit.for === 'authenticated' && userId === undefined) {
    return undefined;
  }
  switch (limit.kind) {
    case 'ip':
      return client.key;
    case 'user':
      if (userId === undefined) return undefined;
      return userKey(userId);
    case 'header': {
      const value = headerValue(headers, limit.headerName as string);
      // A missing header counts under the client IP, so leaving it out is no escape.
      return value === undefined ? 'ip:' + client.key : headerKey(value);
    }
    case 'global':
      return '*';
  }
}

/** The limits of `route` that apply to this request, with their keys and tier-adjusted maxima. */
export function buildChecks(route: CompiledRoute, client: ClientAddress, identity: Identity, headers: IncomingHeaders): LimitCheck[] {
  const checks: LimitCheck[] = [];
  for (const limit of route.limits) {
    const key = clientKey(limit, client, identity, headers);
    if (key === undefined) continue;
    const tierMax = identity.tier !== undefined && limit.tiers !== undefined ? limit.tiers.get(identity.tier) : undefined;
    checks.push({ limit, key: limit.keyPrefix + key, max: tierMax ?? limit.limit });
  }
  return checks;
}

/**
 * Which outcome the headers describe. Allowed: the most restrictive (lowest remaining;
 * ties: the later reset). Refused: the violated limit with the longest wait.
 */
export function shownOutcome(outcomes: readonly LimitOutcome[], allowed: boolean): number {
  let best = 0;
  for (let i = 1; i < outcomes.length; i++) {
    const a = outcomes[i];
    const b = outcomes[best];
    if (allowed) {
      if (a.remaining < b.remaining || (a.remaining === b.remaining && a.resetAt > b.resetAt)) best = i;
    } else if (!a.allowed && (b.allowed || a.retryAfterMs > b.retryAfterMs)) {
      best = i;
    }
  }
  return best;
}

function report(checks: readonly LimitCheck[], decision: StoreDecision): RateReport {
  return {
    checks,
    outcomes: decision.outcomes,
    shown: shownOutcome(decision.outcomes, decision.allowed),
    degraded: decision.degraded === true,
  };
}

function toVerdict(route: CompiledRoute, rateReport: RateReport, decision: StoreDecision, settlement: Settlement | undefined): Verdict {
  if (decision.allowed) {
    return settlement === undefined
      ? { action: 'allow', reason: 'within_limits', report: rateReport }
      : { action: 'allow', reason: 'within_limits', report: rateReport, settlement };
  }
  const shown = decision.outcomes[rateReport.shown];
  const reason = shown.blockedUntil !== 0 && !shown.blockStarted ? 'blocked' : 'rate';
  // An operator's block refuses even on a shadow route.
  if (route.mode !== 'shadow' || manuallyBlocked(decision.outcomes)) return { action: 'refuse', reason, report: rateReport };
  return settlement === undefined ? { action: 'shadow', reason, report: rateReport } : { action: 'shadow', reason, report: rateReport, settlement };
}

function manuallyBlocked(outcomes: readonly LimitOutcome[]): boolean {
  for (let i = 0; i < outcomes.length; i++) if (outcomes[i].manual === true) return true;
  return false;
}

/** The verdict for a request no limit applies to (also: no route, allowlisted). */
export const NO_LIMIT: Verdict = Object.freeze({ action: 'allow', reason: 'no_applicable_limit' });
const STORE_ALLOW: Verdict = Object.freeze({ action: 'allow', reason: 'store_error_allow' });
const STORE_DENY: Verdict = Object.freeze({ action: 'refuse', reason: 'store_unavailable' });

/** The one place that sees both policy and store. */
export class Limiter {
  readonly #store: RateLimitStore;
  readonly #onStoreError: 'allow' | 'deny';
  readonly #events: SettlementEvents;

  constructor(options: LimiterOptions) {
    this.#store = options.store;
    this.#onStoreError = options.onStoreError;
    this.#events = options.events ?? {};
  }

  get store(): RateLimitStore {
    return this.#store;
  }

  /** Decides one request. Synchronous with the memory store. */
  decide(route: CompiledRoute, checks: readonly LimitCheck[], now: number): Verdict | Promise<Verdict> {
    if (checks.length === 0) return NO_LIMIT;
    let decision: StoreDecision | Promise<StoreDecision>;
    const shadow = route.mode === 'shadow';
    try {
      decision = this.#store.decide(checks, now, shadow);
    } catch (error) {
      return this.#storeFailed(route, error);
    }
    if (decision instanceof Promise) {
      return decision.then(
        (d) => this.#verdict(route, checks, d),
        (error: unknown) => this.#storeFailed(route, error),
      );
    }
    return this.#verdict(route, checks, decision);
  }

  #verdict(route: CompiledRoute, checks: readonly LimitCheck[], decision: StoreDecision): Verdict {
    const rateReport = report(checks, decision);
    const settlement = decision.hold === undefined ? undefined : new Settlement(this.#store, decision.hold, route.id, this.#events, rateReport);
    return toVerdict(route, rateReport, decision, settlement);
  }

  #storeFailed(route: CompiledRoute, error: unknown): Verdict {
    if (!(error instanceof StoreUnavailableError)) throw error;
    // Shadow routes never refuse, not even for a missing store.
    return this.#onStoreError === 'allow' || route.mode === 'shadow' ? STORE_ALLOW : STORE_DENY;
  }
}
