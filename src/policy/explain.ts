/**
 * `tollgate explain`: what the policy makes of one request, step by step as the proxy
 * takes it (README "How a request is handled"), through the same compiled code: the
 * path check, the router (and why each earlier route did not match), the client IP
 * resolver, the identity resolver (a JWT verified with the file's keys, and why one is
 * refused), the route's compiled guards, the allowlist, and the limiter's checks with
 * their store keys. Nothing here touches a store; live counts come from the admin API
 * (src/cli/explain.ts).
 */
import type { StoreConfig } from '../config/types.js';
import { answerPreflight, checkAccess, checkHead, INVALID_PATH, isPreflight, type GuardName, type GuardRefusal } from '../guards/index.js';
import { buildChecks, clientKey } from '../limiter/limiter.js';
import { canonicalPath, isInvalidPath } from './path.js';
import { ANONYMOUS, type ClientAddress, type CompiledLimit, type CompiledPolicy, type CompiledRoute, type Identity, type IdentityExplanation, type IncomingHeaders } from './types.js';

/** The request to explain, as the proxy would receive it. */
export interface ExplainRequest {
  readonly method: string;
  /** The request target as sent (`/api/x?y=1`, or absolute form). */
  readonly target: string;
  /** The socket peer's address. */
  readonly peer: string;
  /** Lower-cased names, as node:http gives them. */
  readonly headers: IncomingHeaders;
  readonly websocket: boolean;
}

/** One guard of the route, in the order they run, and what it does with this request. */
export interface GuardStep {
  readonly guard: GuardName | 'securityHeaders';
  /**
   * `pass`, `refuse` (then `code`, `status`), `not reached` (an earlier step answered),
   * `not checked` (needs the body, which explain does not send), `response` (adds response
   * headers only).
   */
  readonly result: 'pass' | 'refuse' | 'not reached' | 'not checked' | 'response';
  readonly code?: string;
  readonly status?: number;
  readonly note?: string;
}

export interface LimitExplanation {
  /** The IETF policy name (RateLimit-Policy), e.g. `livekit-token.user`. */
  readonly policy: string;
  readonly by: string;
  readonly type: 'rate' | 'concurrent';
  /** The key in the store (Redis: with the prefix); null when the limit does not apply. */
  readonly storeKey: string | null;
  /** The client's part of it (`203.0.113.7`, `u:alice`, `h#<digest>`, `*`); null when the limit does not apply. */
  readonly clientKey: string | null;
  /** The tier whose limit is in force, or null (the base limit). */
  readonly tier: string | null;
  /** The limit in force: requests (or cost units) per window, or slots. */
  readonly limit: number;
  /** Seconds (a calendar window: its nominal length); null for a concurrency limit. */
  readonly window: number | null;
  /** Block durations in seconds (escalating: one per strike, the last repeating); null for none. */
  readonly block: readonly number[] | null;
  readonly algorithm: string | null;
  readonly for: string;
  /** Why the limit does not apply to this request; null when it does. */
  readonly skipped: string | null;
}

export interface Explanation {
  readonly canonicalPath: string;
  /** The matched route's id, or null (no route: forwarded untouched; or refused before routing). */
  readonly route: string | null;
  /** The routes tried before the match (all of them when none matched) and the test each failed. */
  readonly tried: readonly { readonly route: string; readonly failed: 'path' | 'method' | 'websocket' }[];
  readonly client: { readonly ip: string; readonly key: string; readonly peerTrusted: boolean };
  readonly identity: {
    readonly user: string | null;
    readonly tier: string | null;
    readonly anonymous: boolean;
    readonly tokenError: string | null;
    readonly source: 'jwt' | 'header' | null;
  };
  readonly guards: readonly GuardStep[];
  /** Allowlisted: guards still run, limits are skipped. */
  readonly allowlisted: boolean;
  /** The route's mode (`shadow`: over the limit is logged, not refused), or null without a route. */
  readonly mode: string | null;
  /** Every limit of the route, applied or not. */
  readonly limits: readonly LimitExplanation[];
}

/** The guard order of src/guards/checks.ts, request side. */
const REQUEST_GUARDS = ['methods', 'origins', 'maxBodySize', 'contentTypes', 'body', 'csrf', 'auth'] as const;

export async function explainRequest(policy: CompiledPolicy, request: ExplainRequest): Promise<Explanation> {
  const { method, target, headers } = request;
  const client = policy.clientIp.resolve(request.peer, headers['x-forwarded-for']);
  const resolved: IdentityExplanation =
    policy.identity === null
      ? { identity: ANONYMOUS, source: null, tokenError: null }
      : policy.identity.explain !== undefined
        ? await policy.identity.explain(headers, client.peerTrusted)
        : { identity: await policy.identity.resolve(headers, client.peerTrusted), source: null, tokenError: null };
  const { identity } = resolved;
  const base = {
    client: { ip: client.ip, key: client.key, peerTrusted: client.peerTrusted },
    identity: {
      user: identity.userId ?? null,
      tier: identity.tier ?? null,
      anonymous: identity.userId === undefined,
      tokenError: resolved.tokenError,
      source: resolved.source,
    },
  };
  if (isInvalidPath(target, policy.rejectEscapedSlashes)) {
    // Refused before routing, as the proxy does.
    return { canonicalPath: canonicalPath(target, false), route: null, tried: [], ...base, guards: [refused('path', INVALID_PATH)], allowlisted: false, mode: null, limits: [] };
  }
  const preflight = method === 'OPTIONS' && !request.websocket && isPreflight(method, headers);
  const routing = policy.router.explain(method, target, request.websocket, preflight);
  const route = routing.route;
  if (route === undefined) {
    return { canonicalPath: routing.canonicalPath, route: null, tried: routing.tried, ...base, guards: [], allowlisted: false, mode: null, limits: [] };
  }
  const steps = guardSteps(route, method, headers, identity, preflight);
  return {
    canonicalPath: routing.canonicalPath,
    route: route.id,
    tried: routing.tried,
    ...base,
    guards: steps,
    allowlisted: policy.allow.isAllowed(client, identity),
    mode: route.mode,
    limits: limitsOf(route, client, identity, headers, policy.config.store),
  };
}

function refused(guard: GuardStep['guard'], refusal: GuardRefusal, note?: string): GuardStep {
  return { guard, result: 'refuse', code: refusal.code, status: refusal.status, ...(note === undefined ? {} : { note }) };
}

/** The route's guards in order, each with what the real checks (checkHead, checkAccess, answerPreflight) make of the request. */
function guardSteps(route: CompiledRoute, method: string, headers: IncomingHeaders, identity: Identity, preflight: boolean): GuardStep[] {
  const guards = route.guards;
  if (guards === null) return [];
  const configured = new Set<string>();
  if (guards.methods !== null) configured.add('methods');
  if (guards.origins !== null) configured.add('origins');
  if (guards.maxBodySize > 0) configured.add('maxBodySize');
  if (guards.contentTypes !== null) configured.add('contentTypes');
  if (guards.body !== null) configured.add('body');
  if (guards.csrf !== null) configured.add('csrf');
  if (guards.authRequired) configured.add('auth');
  const steps: GuardStep[] = [];
  const after = (kind: 'response' | 'not reached'): void => {
    if (guards.cors !== null && !preflight) steps.push({ guard: 'cors', result: kind === 'response' ? 'response' : 'not reached', note: 'CORS headers for an allowed origin' });
    if (guards.securityHeaders !== null) steps.push({ guard: 'securityHeaders', result: 'response', note: 'added to the response' });
  };
  if (preflight && guards.cors !== null) {
    const answer = answerPreflight(guards, headers);
    if (answer.status === 403) steps.push(refused('cors', answer.refusal, `preflight refused by Tollgate (guard ${answer.refusal.guard})`));
    else steps.push({ guard: 'cors', result: 'pass', note: 'preflight answered by Tollgate (204): never forwarded, no limit applies' });
    for (const guard of REQUEST_GUARDS) if (configured.has(guard)) steps.push({ guard, result: 'not reached' });
    after('not reached');
    return steps;
  }
  // One refusal at most, as the proxy answers the first: head checks, then (the body unread) csrf and auth.
  const refusal = checkHead(guards, method, headers) ?? checkAccess(guards, method, headers, identity);
  let answered = false;
  for (const guard of REQUEST_GUARDS) {
    if (!configured.has(guard)) continue;
    if (answered) steps.push({ guard, result: 'not reached' });
    else if (refusal?.guard === guard) {
      steps.push(refused(guard, refusal));
      answered = true;
    } else if (guard === 'body') steps.push({ guard, result: 'not checked', note: 'the body is checked as it arrives; explain sends none' });
    else steps.push({ guard, result: 'pass' });
  }
  if (guards.requireOrigin) {
    const origins = steps.findIndex((step) => step.guard === 'origins');
    steps[origins] = { ...steps[origins], note: 'requireOrigin: a request without Origin is refused too' };
  }
  after('response');
  return steps;
}

function limitsOf(route: CompiledRoute, client: ClientAddress, identity: Identity, headers: IncomingHeaders, store: StoreConfig): LimitExplanation[] {
  // The limiter's own checks: the keys and maxima it would decide with.
  const checks = new Map(buildChecks(route, client, identity, headers).map((check) => [check.limit, check]));
  const prefix = store.type === 'redis' ? (store.redis?.prefix ?? '') : '';
  return route.limits.map((limit) => {
    const check = checks.get(limit);
    const rate = limit.type === 'rate' ? limit : undefined;
    const tier = check !== undefined && identity.tier !== undefined && limit.tiers?.has(identity.tier) === true ? identity.tier : null;
    return {
      policy: limit.policyName,
      by: limit.by,
      type: limit.type,
      storeKey: check === undefined ? null : prefix + check.key,
      clientKey: check === undefined ? null : check.key.slice(limit.keyPrefix.length),
      tier,
      limit: check?.max ?? limit.limit,
      window: rate === undefined ? null : rate.windowSeconds,
      block: rate === undefined || rate.blockMs === 0 ? null : (rate.blocks ?? [rate.blockMs]).map((ms) => ms / 1000),
      algorithm: rate?.algorithm ?? null,
      for: limit.for,
      skipped: check === undefined ? whySkipped(limit, client, identity, headers) : null,
    };
  });
}

function whySkipped(limit: CompiledLimit, client: ClientAddress, identity: Identity, headers: IncomingHeaders): string {
  if (limit.for === 'anonymous' && identity.userId !== undefined) return 'for anonymous requests only; this one has a user';
  if (limit.for === 'authenticated' && identity.userId === undefined) return 'for authenticated requests only; this one is anonymous';
  if (limit.kind === 'user' && identity.userId === undefined) return 'by user: the request is anonymous';
  // clientKey is the limiter's rule; any other case would be a new one.
  return clientKey(limit, client, identity, headers) === undefined ? 'does not apply to this request' : 'applies';
}
