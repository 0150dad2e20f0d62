import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { RateReport, Verdict } from '../limiter/limiter.js';
import { buildChecks, NO_LIMIT, type Limiter } from '../limiter/limiter.js';
import type { Decision, Metrics } from '../observability/metrics.js';
import type { ViolationLog } from '../observability/violations.js';
import { ANONYMOUS, type ClientAddress, type CompiledPolicy, type CompiledRoute, type Identity } from '../policy/types.js';
import { retryAfterSeconds } from './rate-headers.js';

/** Everything the proxy needs to act on one request; built by `evaluate`. */
export interface Evaluation {
  readonly requestId: string;
  readonly route: CompiledRoute | undefined;
  readonly client: ClientAddress;
  readonly identity: Identity;
  readonly verdict: Verdict;
  /** The `decision` label of tollgate_requests_total. */
  readonly decision: Decision;
  /** When the decision was taken (clock ms), for header arithmetic. */
  readonly now: number;
}

export interface DecideDeps {
  readonly limiter: Limiter;
  readonly metrics: Metrics;
  readonly violations: ViolationLog;
  readonly clock: () => number;
  /** Counts refused requests per route and key for `GET /admin/top` (src/admin/top.ts); in memory, no I/O. */
  readonly top?: { refused(routeId: string, report: RateReport, now: number): void };
}

/** A key steadily over its concurrency limit logs one line per this long (its refusals ask again after 1 s). */
const CONCURRENT_QUIET_MS = 60 * 1000; // 1m

const REQUEST_ID = /^[A-Za-z0-9._:\-]{1,128}$/;
export const UNMATCHED_ROUTE = '_unmatched';

/** The client's X-Request-Id if it is sane, else a fresh one. */
export function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
}

/**
 * Runs the policy for one request: route, client address, identity, allowlist,
 * limits. Synchronous unless a JWT must be verified or the store is remote.
 */
export function evaluate(policy: CompiledPolicy, deps: DecideDeps, req: IncomingMessage, isUpgrade: boolean): Evaluation | Promise<Evaluation> {
  const requestId = requestIdOf(req);
  const client = policy.clientIp.resolve(req.socket.remoteAddress, req.headers['x-forwarded-for']);
  const route = policy.router.match(req.method ?? 'GET', req.url ?? '/', isUpgrade);
  if (route === undefined) {
    return { requestId, route, client, identity: ANONYMOUS, verdict: NO_LIMIT, decision: 'bypassed', now: 0 };
  }
  const started = performance.now();
  const identity = policy.identity === null ? ANONYMOUS : policy.identity.resolve(req.headers, client.peerTrusted);
  if (identity instanceof Promise) {
    return identity.then((id) => limit(policy, deps, req, requestId, route, client, id, started));
  }
  return limit(policy, deps, req, requestId, route, client, identity, started);
}

function limit(
  policy: CompiledPolicy,
  deps: DecideDeps,
  req: IncomingMessage,
  requestId: string,
  route: CompiledRoute,
  client: ClientAddress,
  identity: Identity,
  started: number,
): Evaluation | Promise<Evaluation> {
  if (policy.allow.isAllowed(client, identity)) {
    return { requestId, route, client, identity, verdict: NO_LIMIT, decision: 'bypassed', now: 0 };
  }
  const checks = buildChecks(route, client, identity, req.headers);
  const now = deps.clock();
  const verdict = deps.limiter.decide(route, checks, now);
  if (verdict instanceof Promise) {
    return verdict.then((v) => settle(deps, requestId, route, client, identity, v, now, started));
  }
  return settle(deps, requestId, route, client, identity, verdict, now, started);
}

function settle(
  deps: DecideDeps,
  requestId: string,
  route: CompiledRoute,
  client: ClientAddress,
  identity: Identity,
  verdict: Verdict,
  now: number,
  started: number,
): Evaluation {
  const { metrics } = deps;
  if (verdict.reason !== 'no_applicable_limit') {
    metrics.hot.decision(deps.limiter.store.kind, (performance.now() - started) / 1000);
  }
  let decision: Decision;
  switch (verdict.action) {
    case 'allow':
      decision = verdict.reason === 'within_limits' ? 'allowed' : verdict.reason === 'no_applicable_limit' ? 'bypassed' : 'store_error';
      if (verdict.report !== undefined) countNearLimit(metrics, route, verdict.report);
      break;
    case 'shadow':
      decision = 'shadow_limited';
      break;
    case 'refuse':
      decision = verdict.reason === 'store_unavailable' ? 'store_error' : verdict.reason === 'blocked' ? 'blocked' : 'limited';
      break;
  }
  const report = 'report' in verdict ? verdict.report : undefined;
  if (report !== undefined) {
    if (verdict.action !== 'allow') recordViolations(deps, requestId, route, client, identity, report, verdict.action === 'shadow', now);
    if (verdict.action === 'refuse') deps.top?.refused(route.id, report, now);
    // Decided by the local fallback because the shared store failed: counted as a store error.
    if (report.degraded) decision = 'store_error';
  }
  return { requestId, route, client, identity, verdict, decision, now };
}

/** The early warning: allowed with less than 20% of a limit's quota left. */
function countNearLimit(metrics: Metrics, route: CompiledRoute, report: RateReport): void {
  const { checks, outcomes } = report;
  for (let i = 0; i < outcomes.length; i++) {
    const o = outcomes[i];
    if (o.remaining < o.max * 0.2) metrics.hot.nearLimit(route.id, checks[i].limit.by);
  }
}

function recordViolations(
  deps: DecideDeps,
  requestId: string,
  route: CompiledRoute,
  client: ClientAddress,
  identity: Identity,
  report: RateReport,
  shadow: boolean,
  now: number,
): void {
  const { checks, outcomes } = report;
  for (let i = 0; i < outcomes.length; i++) {
    const o = outcomes[i];
    if (o.allowed) continue;
    const limit = checks[i].limit;
    const blockRunning = o.blockedUntil !== 0 && !o.blockStarted;
    if (!blockRunning) deps.metrics.hot.limitExceeded(route.id, limit.by);
    if (o.blockStarted) deps.metrics.hot.blockStarted(route.id, limit.by);
    deps.violations.record({
      route: route.id,
      limitBy: limit.by,
      keyKind: limit.kind,
      userId: identity.userId,
      clientIp: client.ip,
      limit: o.max,
      count: o.count,
      blocked: o.blockedUntil !== 0,
      blockStarted: o.blockStarted,
      retryAfter: retryAfterSeconds(o.retryAfterMs),
      requestId,
      shadow,
      key: checks[i].key,
      // Quiet for the block, or at least a window: a client steadily over its limit logs once per window
      // (a concurrency limit has no window: once per CONCURRENT_QUIET_MS).
      quietUntil: o.blockedUntil !== 0 ? o.blockedUntil : now + Math.max(o.retryAfterMs, limit.type === 'concurrent' ? CONCURRENT_QUIET_MS : limit.windowMs),
    });
  }
}
