/**
 * The admin API (incident response) under `/admin/` on the admin port: inspect a key,
 * list, set and lift blocks, reset a key, and see who is refused most. JSON in and out;
 * errors in the usual envelope. Off (404, like any unknown path of the port) unless a
 * token is set; every change is one `admin_action` log line and one
 * `tollgate_admin_actions_total{action}`.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { DURATION_EXAMPLES, parseDuration } from '../config/duration.js';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import type { CompiledLimit, CompiledPolicy, CompiledRoute } from '../policy/types.js';
import { ERRORS, errorBody, type ErrorCode } from '../proxy/errors.js';
import type { KeyState, LimitCheck, StoreAdmin } from '../store/types.js';
import type { AdminToken, AuthFailures } from './auth.js';
import { AdminInputError, clientKeyFor, displayKey, kindOfBy, limitsBy, parseBy, type KeyInput } from './keys.js';
import type { RefusalTop } from './top.js';

export interface AdminApiDeps {
  readonly store: StoreAdmin;
  /** The active policy: routes, limits and the IPv6 prefix keys are made with. */
  readonly policy: () => CompiledPolicy;
  readonly token: AdminToken;
  readonly failures: AuthFailures;
  readonly top: RefusalTop;
  /** The limiter's clock (ms): times in answers are on it. */
  readonly clock: () => number;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

export type AdminHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** An answer other than 200: its code (ERRORS), message and extra headers. */
class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

const MAX_BODY_BYTES = 64 * 1024; // 64kb
const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;
const DEFAULT_TOP_MINUTES = 5;
const MAX_BLOCK_MS = 366 * 24 * 60 * 60 * 1000; // 366d
const MAX_REASON_LENGTH = 500;

type Json = Record<string, unknown>;

interface Context {
  readonly url: URL;
  /** The JSON body (POST, DELETE); undefined for GET or an empty body. */
  readonly body: Json | undefined;
  readonly now: number;
  readonly peer: string;
  readonly requestId: string;
  readonly policy: CompiledPolicy;
}

type Handler = (deps: AdminApiDeps, ctx: Context) => Promise<Json>;

const ENDPOINTS: Readonly<Record<string, Readonly<Record<string, Handler>>>> = {
  '/admin/keys': { GET: inspectKey },
  '/admin/blocks': { GET: listBlocks, POST: blockKey, DELETE: unblockKey },
  '/admin/reset': { POST: resetKey },
  '/admin/top': { GET: topKeys },
};

/** The handler for every `/admin` path of the admin port. */
export function createAdminApi(deps: AdminApiDeps): AdminHandler {
  return (req, res) => {
    handle(deps, req, res).catch((error: unknown) => {
      deps.logger.error({ event: 'internal_error', err: error }, 'admin request failed inside tollgate');
      if (!res.headersSent) res.destroy();
    });
  };
}

function peerOf(req: IncomingMessage): string {
  const address = req.socket.remoteAddress ?? 'unknown';
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

function sendJson(res: ServerResponse, status: number, body: string, requestId: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-request-id': requestId,
  });
  res.end(body);
}

async function handle(deps: AdminApiDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (!deps.token.active) {
    // Off: the same answer as any path the admin port does not serve.
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
    res.end('not found\n');
    return;
  }
  const requestId = randomUUID();
  const peer = peerOf(req);
  try {
    authenticate(deps, req, peer);
    const url = new URL(req.url ?? '/', 'http://admin.invalid');
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, '') : url.pathname;
    const endpoint = ENDPOINTS[path];
    if (endpoint === undefined) throw new ApiError('ADMIN_NOT_FOUND', `no admin endpoint ${path} (see README: admin API)`);
    const handler = endpoint[req.method ?? 'GET'];
    if (handler === undefined) {
      throw new ApiError('ADMIN_METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${path}`, { allow: Object.keys(endpoint).join(', ') });
    }
    const body = req.method === 'GET' ? undefined : await readBody(req);
    const result = await handler(deps, { url, body, now: deps.clock(), peer, requestId, policy: deps.policy() });
    sendJson(res, 200, JSON.stringify(result), requestId);
  } catch (error) {
    const failure = asApiError(deps, error, requestId);
    sendJson(res, ERRORS[failure.code].status, errorBody(failure.code, failure.message, { ...failure.details, requestId }), requestId, failure.headers);
  }
}

/** Throws 429 for a locked-out peer, 401 (or 429, if this failure locks it out) for a missing or wrong token. */
function authenticate(deps: AdminApiDeps, req: IncomingMessage, peer: string): void {
  const now = deps.clock();
  const locked = deps.failures.lockedFor(peer, now);
  if (locked > 0) throw lockedOut(locked);
  if (deps.token.verify(req.headers.authorization)) return;
  const lock = deps.failures.fail(peer, now);
  if (lock > 0) {
    deps.logger.warn({ event: 'admin_auth_locked', callerIp: peer, retryAfter: Math.ceil(lock / 1000) }, 'admin API: too many failed authentications from one peer; it is refused for a minute');
    throw lockedOut(lock);
  }
  deps.logger.debug({ event: 'admin_auth_failed', callerIp: peer }, 'admin API: missing or wrong token');
  throw new ApiError('ADMIN_UNAUTHORIZED', 'missing or wrong admin token: send Authorization: Bearer <token>', { 'www-authenticate': 'Bearer realm="tollgate-admin"' });
}

function lockedOut(ms: number): ApiError {
  const retryAfter = Math.max(1, Math.ceil(ms / 1000));
  return new ApiError('RATE_LIMIT_EXCEEDED', 'too many failed admin authentications from this address: retry later', { 'retry-after': String(retryAfter) }, { retryAfter });
}

function asApiError(deps: AdminApiDeps, error: unknown, requestId: string): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof AdminInputError) return new ApiError('ADMIN_BAD_REQUEST', error.message);
  if (error instanceof StoreCallError) {
    deps.logger.warn({ event: 'admin_store_error', err: (error.cause as Error)?.message, requestId }, 'admin request: the store failed');
    return new ApiError('RATE_LIMITER_UNAVAILABLE', 'the store did not answer: retry shortly', { 'retry-after': '1' });
  }
  deps.logger.error({ event: 'internal_error', err: error, requestId }, 'admin request failed inside tollgate');
  return new ApiError('INTERNAL_ERROR', ERRORS.INTERNAL_ERROR.message);
}

/** A store operation failed (Redis down, timed out): 503, not a bug. */
class StoreCallError extends Error {}

async function stored<T>(operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    throw new StoreCallError('store failed', { cause: error });
  }
}

function readBody(req: IncomingMessage): Promise<Json | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        if (!failed) reject(new AdminInputError(`body: larger than ${MAX_BODY_BYTES} bytes`));
        failed = true;
        return;
      }
      chunks.push(chunk);
    });
    req.on('error', (error) => {
      if (!failed) reject(error);
      failed = true;
    });
    req.on('end', () => {
      if (failed) return;
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text === '') return resolve(undefined);
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch {
        return reject(new AdminInputError('body: not valid JSON'));
      }
      if (value === null || typeof value !== 'object' || Array.isArray(value)) return reject(new AdminInputError('body: expected a JSON object'));
      resolve(value as Json);
    });
  });
}

// ---- parameters ----

/** A string parameter: from the JSON body when there is one, else from the query string. */
function param(ctx: Context, name: string): string | undefined {
  if (ctx.body !== undefined) {
    const value = ctx.body[name];
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string') throw new AdminInputError(`${name}: expected a string`);
    return value;
  }
  const value = ctx.url.searchParams.get(name);
  return value === null ? undefined : value;
}

function integerParam(ctx: Context, name: string, fallback: number, min: number, max: number): number {
  const raw = ctx.body !== undefined ? ctx.body[name] : ctx.url.searchParams.get(name);
  if (raw === undefined || raw === null || raw === '') return fallback;
  const value = typeof raw === 'number' ? raw : /^\d+$/.test(String(raw)) ? Number(raw) : NaN;
  if (!Number.isInteger(value) || value < min || value > max) throw new AdminInputError(`${name}: expected an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  return value;
}

function routeOf(policy: CompiledPolicy, id: string): CompiledRoute {
  const route = policy.routes.find((r) => r.id === id);
  if (route === undefined) throw new AdminInputError(`route: no route "${id}" in the active policy (routes: ${policy.routes.map((r) => r.id).join(', ') || 'none'})`);
  return route;
}

/** The route parameter: required; `*` (every route) only where `star`. */
function routesParam(ctx: Context, star: boolean): { name: string; routes: readonly CompiledRoute[] } {
  const id = param(ctx, 'route');
  if (id === undefined || id === '') throw new AdminInputError(`route: required${star ? ' (a route id, or "*" for every route)' : ''}`);
  if (id === '*') {
    if (!star) throw new AdminInputError('route: "*" is not accepted here; name one route');
    return { name: '*', routes: ctx.policy.routes };
  }
  return { name: id, routes: [routeOf(ctx.policy, id)] };
}

function keyParam(ctx: Context): KeyInput {
  const key = param(ctx, 'key');
  const listed = param(ctx, 'listedKey');
  if (key !== undefined && listed !== undefined) throw new AdminInputError('key and listedKey: give one of them');
  if (listed !== undefined) return { key: listed, listed: true };
  return key === undefined ? undefined : { key, listed: false };
}

/** One limit of a request's checks, with the client key it names. */
interface Target {
  readonly route: CompiledRoute;
  readonly limit: CompiledLimit;
  readonly clientKey: string;
  readonly check: LimitCheck;
}

/**
 * The checks a request names: for each route, its limits with that `by` (rate limits only
 * for changes) and the key each counts the input under. A named route without such a
 * limit is a 400; with `*`, routes without one are skipped (all without one: 400).
 */
function targets(ctx: Context, routes: readonly CompiledRoute[], by: string | undefined, input: KeyInput, rateOnly: boolean, tier?: string): Target[] {
  const found: Target[] = [];
  for (const route of routes) {
    let limits = limitsBy(route, by);
    if (rateOnly) limits = limits.filter((l) => l.type === 'rate');
    for (const limit of limits) {
      const clientKey = clientKeyFor(limit, input, ctx.policy, by !== undefined);
      if (clientKey === undefined) continue;
      const max = (tier !== undefined ? limit.tiers?.get(tier) : undefined) ?? limit.limit;
      found.push({ route, limit, clientKey, check: { limit, key: limit.keyPrefix + clientKey, max } });
    }
  }
  if (found.length === 0) {
    const where = routes.length === 1 ? `route "${routes[0].id}"` : 'any route';
    const what = rateOnly ? 'rate limit (concurrency limits have no blocks)' : 'limit';
    throw new AdminInputError(by !== undefined ? `by: ${where} has no ${what} by ${by}` : `key: fits no ${what} of ${where}`);
  }
  return found;
}

function byParam(ctx: Context, required: boolean): string | undefined {
  const text = param(ctx, 'by');
  if (text === undefined || text === '') {
    if (required) throw new AdminInputError('by: required (ip, user, global, header or header:NAME)');
    return undefined;
  }
  return parseBy(text);
}

/** Unix seconds, rounded up, as in X-RateLimit-Reset. */
function unixSeconds(ms: number): number {
  return Math.ceil(ms / 1000);
}

function shownKey(target: Target): string {
  return displayKey(target.limit.kind, target.clientKey);
}

// ---- endpoints ----

/** GET /admin/keys?route=R[&by=B]&key=K|listedKey=K[&tier=T] */
async function inspectKey(deps: AdminApiDeps, ctx: Context): Promise<Json> {
  const { routes } = routesParam(ctx, false);
  const by = byParam(ctx, false);
  const tier = param(ctx, 'tier');
  const found = targets(ctx, routes, by, keyParam(ctx), false, tier);
  const states = await stored(() => deps.store.inspect(found.map((t) => t.check), ctx.now));
  return { limits: found.map((t, i) => keyStateJson(t, states[i])) };
}

function keyStateJson(target: Target, state: KeyState): Json {
  const limit = target.limit;
  return {
    route: target.route.id,
    by: limit.by,
    for: limit.for,
    key: shownKey(target),
    type: limit.type,
    window: limit.type === 'rate' ? limit.windowSeconds : null,
    limit: target.check.max,
    count: state.count,
    remaining: state.remaining,
    reset: unixSeconds(state.resetAt),
    blockedUntil: state.blockedUntil === 0 ? null : unixSeconds(state.blockedUntil),
    strikes: state.strikes,
    manual: state.manual,
    reason: state.manual ? state.reason : null,
  };
}

function encodeCursor(routeId: string, position: string | null): string {
  return Buffer.from(JSON.stringify([routeId, position]), 'utf8').toString('base64url');
}

function decodeCursor(text: string): [string, string | null] {
  try {
    const value = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(value) && value.length === 2 && typeof value[0] === 'string' && (value[1] === null || typeof value[1] === 'string')) {
      return [value[0], value[1]];
    }
  } catch {
    // falls through
  }
  throw new AdminInputError('cursor: not a cursor from this API (pass nextCursor as it was answered)');
}

/** GET /admin/blocks[?route=R][&limit=N][&cursor=C] */
async function listBlocks(deps: AdminApiDeps, ctx: Context): Promise<Json> {
  const routeId = param(ctx, 'route');
  const routes = routeId === undefined || routeId === '' || routeId === '*' ? ctx.policy.routes : [routeOf(ctx.policy, routeId)];
  const pageSize = integerParam(ctx, 'limit', DEFAULT_PAGE, 1, MAX_PAGE);
  const cursorText = param(ctx, 'cursor');
  let start = 0;
  let after: string | null = null;
  if (cursorText !== undefined && cursorText !== '') {
    const [cursorRoute, position] = decodeCursor(cursorText);
    start = routes.findIndex((r) => r.id === cursorRoute);
    if (start < 0) throw new AdminInputError(`cursor: its route "${cursorRoute}" is not listed here (any more)`);
    after = position;
  }
  const blocks: Json[] = [];
  let next: string | null = null;
  for (let i = start; i < routes.length; i++) {
    const route = routes[i];
    const limits = route.limits.filter((l) => l.type === 'rate');
    const page = await stored(() => deps.store.listBlocks(limits, i === start ? after : null, pageSize - blocks.length, ctx.now));
    for (const block of page.blocks) {
      blocks.push({
        route: route.id,
        by: block.limit.by,
        for: block.limit.for,
        key: displayKey(block.limit.kind, block.key.slice(block.limit.keyPrefix.length)),
        until: unixSeconds(block.until),
        strike: block.strike,
        manual: block.manual,
        reason: block.manual ? block.reason : null,
      });
    }
    if (page.next !== null) {
      next = encodeCursor(route.id, page.next);
      break;
    }
    if (blocks.length >= pageSize) {
      next = i + 1 < routes.length ? encodeCursor(routes[i + 1].id, null) : null;
      break;
    }
  }
  return { blocks, nextCursor: next };
}

/** The change parameters every change shares: routes, by, key. */
function changeTargets(ctx: Context): { routeName: string; by: string; input: KeyInput; found: Target[] } {
  const { name, routes } = routesParam(ctx, true);
  const by = byParam(ctx, true) as string;
  const input = keyParam(ctx);
  return { routeName: name, by, input, found: targets(ctx, routes, by, input, true) };
}

function audit(deps: AdminApiDeps, ctx: Context, action: 'block' | 'unblock' | 'reset', change: ReturnType<typeof changeTargets>, extra: Json = {}): void {
  deps.metrics.adminActions.inc({ action });
  deps.logger.info(
    {
      event: 'admin_action',
      action,
      route: change.routeName,
      by: change.by,
      keyKind: kindOfBy(change.by),
      // The key as listings show it: a header value (an API key) only as its digest.
      key: shownKey(change.found[0]),
      ...extra,
      callerIp: ctx.peer,
      limits: change.found.length,
      requestId: ctx.requestId,
    },
    `admin ${action}`,
  );
}

/** POST /admin/blocks {route, by, key|listedKey, duration, reason} */
async function blockKey(deps: AdminApiDeps, ctx: Context): Promise<Json> {
  const change = changeTargets(ctx);
  const durationText = param(ctx, 'duration');
  if (durationText === undefined) throw new AdminInputError(`duration: required (a policy duration: ${DURATION_EXAMPLES})`);
  const ms = parseDuration(durationText.trim());
  if (ms === undefined || ms <= 0 || ms > MAX_BLOCK_MS) throw new AdminInputError(`duration: expected a positive policy duration up to 366d (${DURATION_EXAMPLES}), got "${durationText}"`);
  const reason = param(ctx, 'reason') ?? '';
  if (reason.length > MAX_REASON_LENGTH) throw new AdminInputError(`reason: at most ${MAX_REASON_LENGTH} characters`);
  const states = await stored(() => deps.store.block(change.found.map((t) => t.check), ctx.now, ms, reason));
  audit(deps, ctx, 'block', change, { duration: durationText.trim(), durationMs: ms, reason });
  return {
    blocks: change.found.map((t, i) => ({
      route: t.route.id,
      by: t.limit.by,
      for: t.limit.for,
      key: shownKey(t),
      until: unixSeconds(states[i].blockedUntil),
      strike: states[i].strikes,
      manual: states[i].manual,
      reason: states[i].manual ? states[i].reason : null,
    })),
  };
}

/** DELETE /admin/blocks {route|"*", by, key|listedKey} */
async function unblockKey(deps: AdminApiDeps, ctx: Context): Promise<Json> {
  const change = changeTargets(ctx);
  const lifted = await stored(() => deps.store.unblock(change.found.map((t) => t.check), ctx.now));
  audit(deps, ctx, 'unblock', change);
  return { unblocked: change.found.map((t, i) => ({ route: t.route.id, by: t.limit.by, for: t.limit.for, key: shownKey(t), wasBlocked: lifted[i] })) };
}

/** POST /admin/reset {route|"*", by, key|listedKey} */
async function resetKey(deps: AdminApiDeps, ctx: Context): Promise<Json> {
  const change = changeTargets(ctx);
  const held = await stored(() => deps.store.reset(change.found.map((t) => t.check), ctx.now));
  audit(deps, ctx, 'reset', change);
  return { reset: change.found.map((t, i) => ({ route: t.route.id, by: t.limit.by, for: t.limit.for, key: shownKey(t), held: held[i] })) };
}

/** GET /admin/top[?route=R][&minutes=M] */
async function topKeys(deps: AdminApiDeps, ctx: Context): Promise<Json> {
  const routeId = param(ctx, 'route');
  const route = routeId === undefined || routeId === '' || routeId === '*' ? undefined : routeOf(ctx.policy, routeId).id;
  const minutes = integerParam(ctx, 'minutes', DEFAULT_TOP_MINUTES, 1, deps.top.minutes);
  let shared: string[] = [];
  let partial = false;
  if (deps.store.sharedTop !== undefined) {
    try {
      shared = await deps.store.sharedTop(deps.top.window(minutes, ctx.now));
    } catch (error) {
      // Best effort: this replica's own counts still answer the question in part.
      partial = true;
      deps.logger.warn({ event: 'admin_store_error', err: (error as Error).message, requestId: ctx.requestId }, 'admin top: other replicas\' counts unavailable');
    }
  }
  const top = deps.top.top(minutes, ctx.now, route, shared).map((e) => ({ route: e.route, by: e.by, key: displayKey(kindOfBy(e.by), e.key), count: e.count }));
  return partial ? { top, partial } : { top };
}
