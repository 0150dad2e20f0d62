import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  answerPreflight,
  checkAccess,
  checkBody,
  checkHead,
  hasDuplicateHost,
  INVALID_HOST,
  INVALID_PATH,
  isPreflight,
  needsBody,
  PAYLOAD_TOO_LARGE,
  readBody,
  type BodyRead,
  type GuardRefusal,
  type PreflightAnswer,
} from '../guards/index.js';
import type { RateReport, Verdict } from '../limiter/limiter.js';
import { buildChecks, NO_LIMIT, type Limiter } from '../limiter/limiter.js';
import type { Decision, Metrics } from '../observability/metrics.js';
import type { ViolationLog } from '../observability/violations.js';
import { isInvalidPath } from '../policy/path.js';
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
  /** A guard (or the path check) refused the request: nothing after it ran (decision guard_refused). */
  readonly refusal: GuardRefusal | null;
  /** A CORS preflight Tollgate answers itself (204, or 403 with `refusal` set); never forwarded. */
  readonly preflight: PreflightAnswer | null;
  /**
   * The body the `body` guard read (any `100 Continue` was sent for it); forwarded as is.
   * Null: the body (if any) is still unread and streams to the upstream.
   */
  readonly body: Buffer | null;
}

/** A body that ended before it was complete: the client left mid-body. */
const BODY_INCOMPLETE: GuardRefusal = Object.freeze({
  guard: 'body',
  code: 'INVALID_BODY',
  status: 400,
  details: Object.freeze({ errors: Object.freeze([Object.freeze({ path: '', message: 'the body ended before it was complete' })]) }),
});

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
 * Runs the policy for one request, in this order (README "How a request is handled"):
 * path check, route, CORS preflight, guards on the head, the body guard, identity, csrf
 * and auth guards, allowlist, limits. Synchronous unless a body must be read, a JWT
 * verified or the store is remote. A route without guards does none of the guard steps.
 */
export function evaluate(
  policy: CompiledPolicy,
  deps: DecideDeps,
  req: IncomingMessage,
  isUpgrade: boolean,
  /** Plain requests: their response (to invite a body the `body` guard reads); upgrades read no body. */
  res?: ServerResponse,
  /** `Expect: 100-continue`: a `100 Continue` is sent before a body is read. */
  expectsContinue = false,
): Evaluation | Promise<Evaluation> {
  const requestId = requestIdOf(req);
  const client = policy.clientIp.resolve(req.socket.remoteAddress, req.headers['x-forwarded-for']);
  const target = req.url ?? '/';
  if (isInvalidPath(target, policy.rejectEscapedSlashes)) return refuse(deps, requestId, undefined, client, ANONYMOUS, INVALID_PATH, null, null);
  if (hasDuplicateHost(req.rawHeaders)) return refuse(deps, requestId, undefined, client, ANONYMOUS, INVALID_HOST, null, null);
  const method = req.method ?? 'GET';
  const preflight = method === 'OPTIONS' && !isUpgrade && isPreflight(method, req.headers);
  const route = policy.router.match(method, target, isUpgrade, preflight);
  if (route === undefined) {
    return { requestId, route, client, identity: ANONYMOUS, verdict: NO_LIMIT, decision: 'bypassed', now: 0, refusal: null, preflight: null, body: null };
  }
  const guards = route.guards;
  if (guards !== null && guards.checksRequest) {
    if (preflight && guards.cors !== null) {
      const answer = answerPreflight(guards, req.headers);
      if (answer.status === 403) return refuse(deps, requestId, route, client, ANONYMOUS, answer.refusal, null, answer);
      // Answered by Tollgate: no quota, no upstream.
      return { requestId, route, client, identity: ANONYMOUS, verdict: NO_LIMIT, decision: 'bypassed', now: 0, refusal: null, preflight: answer, body: null };
    }
    const refusal = checkHead(guards, method, req.headers);
    if (refusal !== null) return refuse(deps, requestId, route, client, ANONYMOUS, refusal, null, null);
    if (res !== undefined && needsBody(guards, method, req.headers)) {
      if (expectsContinue) res.writeContinue();
      return readBody(req, guards.maxBodySize).then((read) => withBody(policy, deps, req, requestId, route, client, read));
    }
  }
  return identify(policy, deps, req, requestId, route, client, null);
}

/** The `body` guard on the body just read, then the rest. */
function withBody(
  policy: CompiledPolicy,
  deps: DecideDeps,
  req: IncomingMessage,
  requestId: string,
  route: CompiledRoute,
  client: ClientAddress,
  read: BodyRead,
): Evaluation | Promise<Evaluation> {
  if (read.kind === 'too_large') return refuse(deps, requestId, route, client, ANONYMOUS, PAYLOAD_TOO_LARGE, null, null);
  if (read.kind === 'aborted') return refuse(deps, requestId, route, client, ANONYMOUS, BODY_INCOMPLETE, null, null);
  const refusal = checkBody(route.guards!, req.method ?? 'GET', read.body);
  if (refusal !== null) return refuse(deps, requestId, route, client, ANONYMOUS, refusal, read.body, null);
  return identify(policy, deps, req, requestId, route, client, read.body);
}

function identify(
  policy: CompiledPolicy,
  deps: DecideDeps,
  req: IncomingMessage,
  requestId: string,
  route: CompiledRoute,
  client: ClientAddress,
  body: Buffer | null,
): Evaluation | Promise<Evaluation> {
  const started = performance.now();
  const identity = policy.identity === null ? ANONYMOUS : policy.identity.resolve(req.headers, client.peerTrusted);
  if (identity instanceof Promise) {
    return identity.then((id) => limit(policy, deps, req, requestId, route, client, id, started, body));
  }
  return limit(policy, deps, req, requestId, route, client, identity, started, body);
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
  body: Buffer | null,
): Evaluation | Promise<Evaluation> {
  const guards = route.guards;
  // Guards enforce for allowlisted clients and on shadow routes too: only limits are skipped.
  if (guards !== null && guards.checksRequest) {
    const refusal = checkAccess(guards, req.method ?? 'GET', req.headers, identity);
    if (refusal !== null) return refuse(deps, requestId, route, client, identity, refusal, body, null);
  }
  // A route without limits (guards or sessions only) has nothing to ask the store.
  if (route.limits.length === 0 || policy.allow.isAllowed(client, identity)) {
    return { requestId, route, client, identity, verdict: NO_LIMIT, decision: 'bypassed', now: 0, refusal: null, preflight: null, body };
  }
  const checks = buildChecks(route, client, identity, req.headers);
  const now = deps.clock();
  const verdict = deps.limiter.decide(route, checks, now);
  if (verdict instanceof Promise) {
    return verdict.then((v) => settle(deps, requestId, route, client, identity, v, now, started, body));
  }
  return settle(deps, requestId, route, client, identity, verdict, now, started, body);
}

/** A guard's refusal: counted (tollgate_guard_refusals_total), logged (bounded), no quota touched. */
function refuse(
  deps: DecideDeps,
  requestId: string,
  route: CompiledRoute | undefined,
  client: ClientAddress,
  identity: Identity,
  refusal: GuardRefusal,
  body: Buffer | null,
  preflight: PreflightAnswer | null,
): Evaluation {
  const routeId = route?.id ?? UNMATCHED_ROUTE;
  recordGuardRefusal(deps, routeId, refusal, client, requestId);
  return { requestId, route, client, identity, verdict: NO_LIMIT, decision: 'guard_refused', now: 0, refusal, preflight, body };
}

/** Metric and (suppressed per route, guard and client) log line of a guard refusal. */
export function recordGuardRefusal(deps: Pick<DecideDeps, 'metrics' | 'violations'>, routeId: string, refusal: GuardRefusal, client: ClientAddress, requestId: string): void {
  deps.metrics.hot.guardRefused(routeId, refusal.guard);
  deps.violations.refusal({
    route: routeId,
    guard: refusal.guard,
    code: refusal.code,
    clientIp: client.ip,
    requestId,
    key: `guard|${routeId}|${refusal.guard}|${client.key}`,
  });
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
  body: Buffer | null,
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
  return { requestId, route, client, identity, verdict, decision, now, refusal: null, preflight: null, body };
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
    if (o.blockStarted) deps.metrics.hot.blockStarted(route.id, limit.by, limit.type === 'rate' && limit.blocks !== null ? Math.min(o.strike, limit.blocks.length) : 1);
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
      strike: o.strike,
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
