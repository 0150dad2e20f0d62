import type { AlgorithmName, LimitConfig, PolicyConfig, RouteConfig } from '../config/types.js';
import { compileGuards, mergeGuards } from '../guards/compile.js';
import { ALGORITHMS } from '../limiter/algorithms/index.js';
import { Calendar } from '../limiter/calendar.js';
import { compileSession } from '../sessions/compile.js';
import { createAllowList } from './allow.js';
import { createClientIpResolver } from './client-ip.js';
import { PolicyError } from './errors.js';
import { createIdentityResolver, type IdentityEvents } from './identity.js';
import { createRouter } from './router.js';
import { createUpstreamHeaders } from './upstream-headers.js';
import type { CompiledLimit, CompiledPolicy, CompiledRoute, LimitKind } from './types.js';

export interface CompileOptions {
  /** Upstream from a flag or the environment; wins over the file's `upstream`. */
  upstream?: string;
  /** Clock (unix ms) for `loadedAt` and token expiry. Default `Date.now`. */
  now?: () => number;
  identityEvents?: IdentityEvents;
}

export const DEFAULT_MESSAGE = 'Too many requests, please retry later';

/** Route ids go inside the Redis Cluster hash tag `{id}`; braces or colons would break it. */
const ROUTE_ID = /^[A-Za-z0-9._-]+$/;
const HEADER_PREFIX = 'header:';

/**
 * Turns a validated policy into immutable matchers and parsed numbers, once per load or
 * reload, so a request does no configuration work. Throws a PolicyError naming the problem
 * and where it is when the policy cannot work (no upstream, bad CIDR, unusable key, ...).
 */
export function compilePolicy(config: PolicyConfig, hash: string, options: CompileOptions = {}): CompiledPolicy {
  const now = options.now ?? Date.now;
  const upstream = within(['upstream'], () => parseUpstream(options.upstream ?? config.upstream));
  const seenIds = new Set<string>();
  const routes = config.routes.map((route, index) => {
    if (seenIds.has(route.id)) throw new PolicyError(['routes', index, 'id'], `routes: duplicate route id "${route.id}"`);
    seenIds.add(route.id);
    return within(['routes', index], () => compileRoute(route, config));
  });
  const identity = config.identity;
  const hasIdentity = identity !== undefined && (identity.jwt !== undefined || identity.header !== undefined);
  return Object.freeze({
    config,
    hash,
    loadedAt: now(),
    upstream,
    upstreamTimeoutMs: config.upstreamTimeoutMs,
    routes: Object.freeze(routes),
    // The router's messages name the route; it compiles all of them at once, hence no index.
    router: within(['routes'], () => createRouter(config.routes.map((route, index) => ({ route: routes[index], match: route.match })))),
    clientIp: within(['clientIp'], () => createClientIpResolver(config.clientIp)),
    identity: hasIdentity ? within(['identity'], () => createIdentityResolver(identity, options.identityEvents, { now })) : null,
    allow: within(['allow'], () => createAllowList(config.allow)),
    rejectEscapedSlashes: config.paths?.escapedSlashes === 'reject',
    responseFormat: config.responses?.format ?? 'envelope',
    upstreamHeaders: createUpstreamHeaders(identity),
  });
}

/**
 * `build()`, with a plain Error from it turned into a PolicyError at `path` (the section
 * it compiles); a PolicyError keeps its own, more precise path.
 */
function within<T>(path: readonly (string | number)[], build: () => T): T {
  try {
    return build();
  } catch (error) {
    if (error instanceof PolicyError || !(error instanceof Error)) throw error;
    throw new PolicyError(path, error.message, { cause: error });
  }
}

function parseUpstream(text: string | undefined): URL {
  if (text === undefined || text.trim() === '') {
    throw new Error('no upstream: set `upstream` in the policy file or pass an upstream override (flag or environment)');
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`upstream is not a URL: ${text}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`upstream must be an http: or https: URL, got ${url.protocol}`);
  }
  return url;
}

function compileRoute(route: RouteConfig, config: PolicyConfig): CompiledRoute {
  if (!ROUTE_ID.test(route.id)) {
    throw new Error(`route id "${route.id}" may only contain letters, digits, ".", "_" and "-"`);
  }
  const routeAlgorithm = route.algorithm ?? config.defaults.algorithm;
  const limits = route.limits.map((limit, index) => compileLimit(route.id, limit, index, routeAlgorithm, sharesIdentity(route, index, routeAlgorithm)));
  const costHeaders = limits.flatMap((limit) => (limit.type === 'rate' && limit.costHeader !== null ? [limit.costHeader.name] : []));
  return Object.freeze({
    id: route.id,
    message: route.message ?? DEFAULT_MESSAGE,
    mode: route.mode ?? config.defaults.mode,
    upstreamTimeoutMs: route.upstreamTimeoutMs ?? config.upstreamTimeoutMs,
    limits: Object.freeze(limits),
    guards: within(['routes', config.routes.indexOf(route), 'guards'], () => compileGuards(mergeGuards(config.defaults.guards, route.guards))),
    dropResponseHeaders: costHeaders.length === 0 ? null : new Set(costHeaders),
    session: compileSession(route.session),
  });
}

/** The identity of a limit across reloads: by + window (+ time zone) + algorithm (within its route), or by + slots. */
function identityOf(limit: LimitConfig, routeAlgorithm: AlgorithmName): string {
  if (limit.concurrent !== undefined) return `${limit.by.toLowerCase()}|concurrent`;
  return `${limit.by.toLowerCase()}|${windowKey(limit)}|${limit.algorithm ?? routeAlgorithm}`;
}

/** The window as store keys name it: ms, or a calendar period (`1mo`, `1d@Europe/Berlin`). */
function windowKey(limit: LimitConfig & { concurrent?: undefined }): string {
  const period = limit.period;
  if (period === undefined) return String(limit.windowMs);
  return `${period.count}${period.unit}${period.timezone === undefined ? '' : `@${period.timezone}`}`;
}

const NO_STATUSES = null;

/** `count.status` as a lookup table by status code (100-599). */
function statusTable(statuses: readonly number[]): Uint8Array {
  const table = new Uint8Array(600);
  for (const status of statuses) table[status] = 1;
  return table;
}

/**
 * True when another limit of the route has the same identity (e.g. `by: ip, window: 1m`
 * once for anonymous and once for everyone). Such limits are told apart by their `for`,
 * so each keeps its own counter (the loader refuses two with the same `for` too).
 */
function sharesIdentity(route: RouteConfig, index: number, routeAlgorithm: AlgorithmName): boolean {
  const own = identityOf(route.limits[index], routeAlgorithm);
  return route.limits.some((other, i) => i !== index && identityOf(other, routeAlgorithm) === own);
}

/** Key segment of concurrency limits in place of `window:algorithm`. */
const CONCURRENT_KEY = 'cc';
/** The IETF quota unit of concurrency limits (draft-ietf-httpapi-ratelimit-headers `qu`). */
const CONCURRENT_QUOTA_UNIT = 'concurrent-requests';

/** `"name";q=N;qu="concurrent-requests"`: a concurrency limit's RateLimit-Policy item (no `w`). */
export function concurrentPolicyItem(policyName: string, max: number): string {
  return `"${policyName}";q=${max};qu="${CONCURRENT_QUOTA_UNIT}"`;
}

/**
 * One limit of a route. `shared`: another limit of the route has the same identity, so
 * this one is told apart by its `for` (key and policy name).
 */
export function compileLimit(routeId: string, limit: LimitConfig, index: number, routeAlgorithm: AlgorithmName, shared: boolean): CompiledLimit {
  const { kind, headerName } = limitKind(routeId, limit.by);
  const by = headerName === undefined ? limit.by : `${HEADER_PREFIX}${headerName}`;
  const distinct = shared && limit.for !== 'any' ? `~${limit.for}` : '';
  const forSuffix = shared && limit.for !== 'any' ? `.${limit.for}` : '';
  const common = {
    index,
    routeId,
    by,
    kind,
    ...(headerName === undefined ? {} : { headerName }),
    ...(limit.tiers === undefined ? {} : { tiers: new Map(Object.entries(limit.tiers)) }),
    for: limit.for,
  };
  if (limit.concurrent !== undefined) {
    const policyName = `${routeId}.${by}.concurrent${forSuffix}`;
    return Object.freeze({
      ...common,
      type: 'concurrent' as const,
      limit: limit.concurrent,
      keyPrefix: `{${routeId}}:${by}:${CONCURRENT_KEY}${distinct}:`,
      policyName,
      policyItem: concurrentPolicyItem(policyName, limit.concurrent),
    });
  }
  const algorithm = limit.algorithm ?? routeAlgorithm;
  // The algorithm's own code, the one the Redis store's scripts are keyed by.
  const code = ALGORITHMS[algorithm]?.code;
  if (code === undefined) throw new Error(`route "${routeId}": unknown algorithm "${algorithm}"`);
  const policyName = `${routeId}.${by}${forSuffix}`;
  const windowSeconds = Math.ceil(limit.windowMs / 1000);
  const cost = limit.cost;
  const costHeader = typeof cost === 'object' ? Object.freeze({ name: cost.header, reserve: cost.default, max: cost.max }) : null;
  const need = typeof cost === 'number' ? cost : 1;
  const blocks = limit.blocks !== undefined && limit.blocks.length > 1 ? Object.freeze([...limit.blocks]) : null;
  const calendar = limit.period === undefined ? null : new Calendar(limit.period);
  if (calendar !== null && algorithm !== 'fixed-window') throw new Error(`route "${routeId}": calendar windows need fixed-window`);
  return Object.freeze({
    ...common,
    type: 'rate' as const,
    limit: limit.limit,
    windowMs: limit.windowMs,
    blockMs: limit.blockMs ?? 0,
    blocks,
    // Default: twice the longest block.
    forgetAfterMs: blocks === null ? 0 : (limit.forgetAfterMs ?? 2 * Math.max(...blocks)),
    algorithm,
    keyPrefix: `{${routeId}}:${by}:${windowKey(limit)}:${code}${distinct}:`,
    policyName,
    windowSeconds,
    policyItem: `"${policyName}";q=${limit.limit};w=${windowSeconds}`,
    need,
    take: costHeader !== null ? costHeader.reserve : need,
    costHeader,
    countStatuses: limit.count === undefined ? NO_STATUSES : statusTable(limit.count.status),
    settles: costHeader !== null || limit.count !== undefined,
    calendar,
  });
}

function limitKind(routeId: string, by: string): { kind: LimitKind; headerName?: string } {
  if (by === 'ip' || by === 'user' || by === 'global') return { kind: by };
  if (by.startsWith(HEADER_PREFIX) && by.length > HEADER_PREFIX.length) {
    return { kind: 'header', headerName: by.slice(HEADER_PREFIX.length).toLowerCase() };
  }
  throw new Error(`route "${routeId}": limit by "${by}" must be ip, user, global or header:NAME`);
}
