import type { AlgorithmName, LimitFor, Mode, PolicyConfig } from '../config/types.js';
import type { CompiledGuards } from '../guards/types.js';
import type { UpstreamHeaders } from './upstream-headers.js';
import type { Calendar } from '../limiter/calendar.js';
import type { CompiledSession } from '../sessions/types.js';

/** What kind of client key a limit counts by; also `X-RateLimit-Violation-Type`. */
export type LimitKind = 'ip' | 'user' | 'header' | 'global';

/** A limit compiled once: parsed numbers, precomputed key prefix and header names. */
export type CompiledLimit = CompiledRateLimit | CompiledConcurrencyLimit;

interface CompiledLimitBase {
  /** Position within its route's `limits` list. */
  readonly index: number;
  readonly routeId: string;
  /** The `by:` value exactly as written (after lower-casing a header name). */
  readonly by: string;
  readonly kind: LimitKind;
  /** Lower-cased header name for `kind === 'header'`. */
  readonly headerName?: string;
  /** Requests per window (rate), or slots held at once (concurrent), without a tier. */
  readonly limit: number;
  /** Tier name -> limit; absent when the limit has no tiers. */
  readonly tiers?: ReadonlyMap<string, number>;
  readonly for: LimitFor;
  /**
   * Identity of the limit across reloads and replicas: route id + by + window + algorithm
   * (concurrency limits: route id + by). Store keys are `keyPrefix + clientKey`. Changing
   * `limit`, `concurrent`, `tiers`, `block` or `for` keeps the prefix, so counts survive
   * such edits.
   */
  readonly keyPrefix: string;
  /** IETF policy name, `<route>.<by>` (e.g. `livekit-token.ip`; `<route>.<by>.concurrent`). */
  readonly policyName: string;
  /** This limit's `RateLimit-Policy` item at its base limit (built once). */
  readonly policyItem: string;
}

/** Requests (or cost units) per window. */
export interface CompiledRateLimit extends CompiledLimitBase {
  readonly type: 'rate';
  /** The window; a calendar window's nominal length (its periods' lengths vary: see `calendar`). */
  readonly windowMs: number;
  /** The (first) block after a violation; 0 = none. */
  readonly blockMs: number;
  /** Escalating blocks (two or more durations): the n-th strike's block is entry min(n, length); null = `blockMs` alone. */
  readonly blocks: readonly number[] | null;
  /** Strikes are forgotten this long after the previous block ended (escalating blocks only; else 0). */
  readonly forgetAfterMs: number;
  readonly algorithm: AlgorithmName;
  /** Window in whole seconds, rounded up (the IETF `w` parameter); a calendar window's is per period. */
  readonly windowSeconds: number;
  /** Units left that admit a request: the static cost, else 1. */
  readonly need: number;
  /** Units an admitted request takes at once: the static cost, the header cost's reservation, or 1. */
  readonly take: number;
  /** The upstream reports the cost in this response header. */
  readonly costHeader: CompiledCostHeader | null;
  /** Only responses with these statuses count (`countStatuses[status] === 1`); the others give back. */
  readonly countStatuses: Uint8Array | null;
  /** Admitted requests leave work for the end of their exchange (count or cost header). */
  readonly settles: boolean;
  /** Calendar periods (weeks, months, local days); null = windows aligned to the epoch. */
  readonly calendar: Calendar | null;
}

export interface CompiledCostHeader {
  /** Lower-cased header name. */
  readonly name: string;
  /** Reserved at admission; charged when the header is missing or malformed, and for Tollgate's own 502/504. */
  readonly reserve: number;
  /** A larger reported cost is charged as this. */
  readonly max: number;
}

/** Requests (or WebSocket sessions) of one key in flight at once. */
export interface CompiledConcurrencyLimit extends CompiledLimitBase {
  readonly type: 'concurrent';
}

export interface CompiledRoute {
  readonly id: string;
  readonly message: string;
  readonly mode: Mode;
  readonly upstreamTimeoutMs: number;
  readonly limits: readonly CompiledLimit[];
  /** The route's effective guards (defaults merged), or null: a route without guards pays nothing. */
  readonly guards: CompiledGuards | null;
  /** Upstream response headers the client never sees: the cost headers of the route's limits (null = none). */
  readonly dropResponseHeaders: ReadonlySet<string> | null;
  /** WebSocket session limits; null = none (the tunnel stays a raw byte relay). */
  readonly session: CompiledSession | null;
}

/** The identity a request carries; userId and tier absent = anonymous. */
export interface Identity {
  readonly userId?: string;
  readonly tier?: string;
  /** A token (Bearer or cookie) came with the request. */
  readonly tokenPresented?: boolean;
  /**
   * The presented token was refused (invalid, expired, forged, too long, no usable user
   * claim): `auth: required` then answers `error="invalid_token"`. Not set when the
   * token could not be checked for a reason of ours (JWKS unreachable).
   */
  readonly tokenError?: boolean;
}

export const ANONYMOUS: Identity = Object.freeze({});

/** Where the client IP came from and what it is keyed by. */
export interface ClientAddress {
  /** The client IP as text (rightmost untrusted hop, or the peer). */
  readonly ip: string;
  /** The rate-limit key: the IP, or for IPv6 its network prefix (e.g. `2001:db8:1:2::/64`). */
  readonly key: string;
  /** True when the direct peer is a trusted proxy (its forwarded headers are believed). */
  readonly peerTrusted: boolean;
}

export interface ClientIpResolver {
  /**
   * @param peer the socket's remote address (may be IPv4-mapped IPv6, may be undefined on a closed socket)
   * @param xForwardedFor the raw X-Forwarded-For header value(s), believed only from trusted peers
   */
  resolve(peer: string | undefined, xForwardedFor: string | string[] | undefined): ClientAddress;
}

/** Header access as node:http gives it (lower-cased names). */
export type IncomingHeaders = Readonly<Record<string, string | string[] | undefined>>;

export interface IdentityResolver {
  /**
   * Who the request is. Never throws: a missing, invalid, expired or unverifiable token
   * means anonymous. Synchronous when no JWT has to be verified.
   */
  resolve(headers: IncomingHeaders, peerTrusted: boolean): Identity | Promise<Identity>;
  /**
   * The identity `resolve` gives, where it came from, and why a presented token was
   * refused (verified afresh, not from the cache). For `tollgate explain`.
   */
  explain?(headers: IncomingHeaders, peerTrusted: boolean): Promise<IdentityExplanation>;
  /** Stops background work (JWKS refresh). */
  close?(): void;
}

export interface IdentityExplanation {
  readonly identity: Identity;
  /** Who said who the user is: a verified JWT, the identity header from a trusted proxy, or nobody (anonymous). */
  readonly source: 'jwt' | 'header' | null;
  /** Why the presented token did not count (jose's reason), or null (none presented, or verified). */
  readonly tokenError: string | null;
}

export interface AllowList {
  isAllowed(client: ClientAddress, identity: Identity): boolean;
}

export interface RouteMatcher {
  /**
   * First route whose matcher accepts the request; undefined = pass untouched.
   * @param rawTarget the request target as received (`/a//b/../c?x=1`); canonicalised internally
   * @param preflight the request is a CORS preflight: a route with `guards.cors` matches it
   *   even when its `match.methods` lacks OPTIONS (Tollgate answers it)
   */
  match(method: string, rawTarget: string, isUpgrade: boolean, preflight?: boolean): CompiledRoute | undefined;
  /**
   * What `match` decides, and why: the routes tried before the match (all of them when
   * none matches), each with the first test it failed (path, then method, then websocket).
   * For `tollgate explain`; not on the request path.
   */
  explain(method: string, rawTarget: string, isUpgrade: boolean, preflight?: boolean): RouteExplanation;
}

export interface RouteExplanation {
  readonly route: CompiledRoute | undefined;
  /** The canonical path the matched route compared (case-folded unless it is case-sensitive; folded when none matched). */
  readonly canonicalPath: string;
  readonly tried: readonly { readonly route: string; readonly failed: 'path' | 'method' | 'websocket' }[];
}

/** Everything a request needs, built once per load/reload and never mutated. */
export interface CompiledPolicy {
  readonly config: PolicyConfig;
  /** sha256 (hex) of the policy file bytes. */
  readonly hash: string;
  readonly loadedAt: number;
  readonly upstream: URL;
  readonly upstreamTimeoutMs: number;
  readonly routes: readonly CompiledRoute[];
  readonly router: RouteMatcher;
  readonly clientIp: ClientIpResolver;
  readonly identity: IdentityResolver | null;
  readonly allow: AllowList;
  /** `paths.escapedSlashes: reject`: any `%2F`/`%5C` in a path is 400 INVALID_PATH. */
  readonly rejectEscapedSlashes: boolean;
  /** `responses.format`: the body of Tollgate's own error responses (a client's Accept may ask for `problem`). */
  readonly responseFormat: 'envelope' | 'problem';
  /** Client headers the upstream must not get, and the ones Tollgate sets instead. */
  readonly upstreamHeaders: UpstreamHeaders;
}
