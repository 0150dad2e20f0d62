/**
 * The validated policy file, after `${VAR}` expansion and with every duration
 * converted to milliseconds. This is the shape `loadPolicyFile` returns and
 * `compilePolicy` consumes; the YAML spelling (e.g. `window: 1m`, `block: 5m`,
 * `upstreamTimeout: 30s`, `timeout: 50ms`) is documented in README.md.
 */

export type AlgorithmName = 'sliding-window' | 'sliding-log' | 'fixed-window' | 'token-bucket';
export type Mode = 'enforce' | 'shadow';
/** `ip | user | global | header:NAME` (NAME lower-cased by the loader). */
export type LimitBy = 'ip' | 'user' | 'global' | `header:${string}`;
export type LimitFor = 'anonymous' | 'authenticated' | 'any';

export interface PolicyConfig {
  /** Upstream base URL (http: or https:); may be absent when given by flag/env. */
  upstream?: string;
  upstreamTimeoutMs: number; // default 30_000 (30s)
  clientIp: ClientIpConfig;
  identity?: IdentityConfig;
  allow: AllowConfig;
  defaults: DefaultsConfig;
  routes: RouteConfig[];
  store: StoreConfig;
  log: LogConfig;
  paths: PathsConfig;
  responses: ResponsesConfig;
}

export interface ResponsesConfig {
  /**
   * The body of Tollgate's own error responses: `envelope` (default, `{success: false,
   * error: {code, message, details}}`) or `problem` (RFC 9457 `application/problem+json`).
   */
  format: 'envelope' | 'problem';
}

export interface PathsConfig {
  /**
   * `decode` (default): `%2F` and `%5C` in a path count as separators when matching;
   * `reject`: a path holding either is refused with 400 INVALID_PATH.
   */
  escapedSlashes: 'decode' | 'reject';
}

export interface ClientIpConfig {
  /** CIDRs (or bare IPs) whose X-Forwarded-For / identity header is believed. Default []. */
  trustedProxies: string[];
  /** IPv6 clients are keyed by this prefix length. Default 64. */
  ipv6Prefix: number;
}

export interface IdentityConfig {
  jwt?: JwtConfig;
  /** Lower-cased header name holding a user id set by a trusted auth layer. */
  header?: string;
  /** Headers (lower-cased) that carry the identity Tollgate believed to the upstream. */
  forward?: IdentityForwardConfig;
}

export interface IdentityForwardConfig {
  /** Header for the user id, e.g. `x-tollgate-user`. */
  user?: string;
  /** Header for the tier, e.g. `x-tollgate-tier`. */
  tier?: string;
}

export interface JwtConfig {
  /** Exactly one of secret / publicKey / jwksUrl. */
  secret?: string;
  publicKey?: string;
  jwksUrl?: string;
  algorithms: string[];
  userClaim: string; // default 'sub'
  tierClaim?: string;
  /** Read the token from this cookie as well as from `Authorization: Bearer`. */
  cookie?: string;
  issuer?: string;
  audience?: string | string[];
  /** A token without `exp` is refused (anonymous). Default true (also when absent). */
  requireExp?: boolean;
}

export interface AllowConfig {
  ips: string[]; // CIDRs or bare IPs; default []
  users: string[]; // default []
}

export interface DefaultsConfig {
  algorithm: AlgorithmName; // default 'sliding-window'
  mode: Mode; // default 'enforce'
  /** Guards of every route, merged key by key under each route's own. */
  guards?: GuardsConfig;
}

export interface RouteConfig {
  id: string;
  match: RouteMatchConfig;
  message?: string;
  mode?: Mode;
  algorithm?: AlgorithmName;
  upstreamTimeoutMs?: number;
  /** The route's own guards as written; `'off'` turns `defaults.guards` off here. */
  guards?: GuardsConfig | 'off';
  limits: LimitConfig[]; // may be empty when the route has guards
  /** WebSocket session limits; only on routes with `match.websocket: true`. */
  session?: SessionConfig;
}

/**
 * Limits on an open WebSocket session (`session:` on a route). Each is optional; at
 * least one is given. Absent = not limited.
 */
export interface SessionConfig {
  /** `maxDuration`: the session is closed (1001) this long after it opened. */
  maxDurationMs?: number;
  /** `idleTimeout`: closed (1001) after this long without a data message in either direction. */
  idleTimeoutMs?: number;
  /** `maxMessageSize`: a larger client message (payload bytes on the wire) closes it (1009). */
  maxMessageBytes?: number;
  /** `messages`: client->upstream data messages per sliding window; over it closes (1008). */
  messages?: { limit: number; windowMs: number };
}

/**
 * Request guards of a route (README "Guards"). Every key is optional; the effective
 * guards of a route are `defaults.guards` overlaid key by key with the route's own.
 */
export interface GuardsConfig {
  /** Upper-cased methods; others get 405 (GET covers HEAD). */
  methods?: string[];
  /** `required`: no verified identity -> 401. Default `optional`. */
  auth?: 'required' | 'optional';
  /** Allowed `Origin`s, as written (`https://app.example.com`, `https://*.example.com`, `null`). */
  origins?: string[];
  /** A request without `Origin` is refused too. Default false. */
  requireOrigin?: boolean;
  cors?: CorsConfig;
  /** Bytes. */
  maxBodySize?: number;
  /** Lower-cased media types without parameters. */
  contentTypes?: string[];
  body?: BodyGuardConfig;
  csrf?: CsrfConfig;
  securityHeaders?: SecurityHeadersConfig;
}

export interface CorsConfig {
  /** Upper-cased methods a preflight may ask for. */
  methods: string[];
  /** Lower-cased request headers a preflight may ask for. Default []. */
  headers: string[];
  /** Lower-cased response headers the page may read. Default []. */
  exposeHeaders: string[];
  credentials: boolean; // default false
  maxAgeMs?: number;
}

export interface BodyGuardConfig {
  /** `json: true`: the body must be JSON (implied by `schema`). */
  json: boolean;
  /** The schema file as written (relative to the policy file). */
  schema?: string;
  /** The parsed schema document, read by the loader from `schema`. */
  schemaDocument?: unknown;
}

export interface CsrfConfig {
  /** Cookie name holding the token. */
  cookie: string;
  /** Lower-cased request header that must repeat it. */
  header: string;
}

/** `strict`, `off`, or exactly these headers (names as written), optionally replacing the upstream's. */
export type SecurityHeadersConfig = 'strict' | 'off' | { headers: Record<string, string>; override: boolean };

export interface RouteMatchConfig {
  /** Exact path, or a prefix ending in `/*`. Exactly one of path / regex. */
  path?: string;
  regex?: string;
  /** Upper-cased method names; absent = any method. */
  methods?: string[];
  /** true = only WebSocket upgrade requests match; false = only non-upgrades; absent = both. */
  websocket?: boolean;
  caseSensitive: boolean; // default false (also accepted at route level)
}

/** What a limit of a route counts: a rate (requests per window) or held slots. */
export type LimitConfig = RateLimitConfig | ConcurrencyLimitConfig;

interface LimitCommon {
  by: LimitBy;
  /** Tier name -> limit (requests per window, or slots). */
  tiers?: Record<string, number>;
  for: LimitFor; // default 'any'
}

/** `{ by, limit, window }`: requests (or cost units) per window. */
export interface RateLimitConfig extends LimitCommon {
  limit: number; // positive integer
  /** The window; for a calendar period (`1w`, `1mo`) its nominal length (7 days, 31 days per unit). */
  windowMs: number;
  /**
   * Set when the window follows the calendar: weeks (Monday 00:00) and months (the 1st,
   * 00:00), or days, weeks and months in `timezone` (local midnight, DST included).
   * Only with fixed-window.
   */
  period?: CalendarPeriodConfig;
  /** One block duration, or the first of `blocks`. */
  blockMs?: number;
  /** Escalating blocks: the n-th block of a key within `forgetAfterMs` of its previous one lasts the n-th entry (the last repeats). */
  blocks?: number[];
  /** Strikes are forgotten once this long has passed since the previous block ended; default twice the longest block. */
  forgetAfterMs?: number;
  /** Only responses with these statuses count (the others give their reservation back). */
  count?: CountConfig;
  /** Units a request costs: a fixed weight, or the upstream's own figure from a response header. */
  cost?: number | CostHeaderConfig;
  algorithm?: AlgorithmName;
  concurrent?: undefined;
}

/** `window: 1mo` and friends, or a window of whole days with `timezone`. */
export interface CalendarPeriodConfig {
  unit: 'd' | 'w' | 'mo';
  count: number;
  /** IANA time zone (`Europe/Berlin`); absent = UTC. */
  timezone?: string;
}

export interface CountConfig {
  /** Statuses 100-599 and classes (`5xx` as 500..599). */
  status: number[];
}

export interface CostHeaderConfig {
  /** Lower-cased response header the upstream reports the cost in. */
  header: string;
  /** Reserved at admission and charged when the header is missing or malformed; default 1, may be 0. */
  default: number;
  /** A reported cost above this is charged as this (default 2^53 - 1). */
  max: number;
}

/**
 * `{ by, concurrent: N }`: at most N requests (or WebSocket sessions) of one key in
 * flight at once. Takes the place of limit/window; has no window, block or algorithm.
 */
export interface ConcurrencyLimitConfig extends LimitCommon {
  concurrent: number; // positive integer
  limit?: undefined;
  windowMs?: undefined;
  period?: undefined;
  blockMs?: undefined;
  blocks?: undefined;
  forgetAfterMs?: undefined;
  count?: undefined;
  cost?: undefined;
  algorithm?: undefined;
}

export interface RedisNodeConfig {
  host: string;
  port: number;
  username?: string;
  password?: string;
  tls?: boolean;
}

export interface RedisStoreConfig {
  url?: string;
  sentinels?: RedisNodeConfig[];
  name?: string; // sentinel master name
  cluster?: RedisNodeConfig[];
  username?: string;
  password?: string;
  tls?: boolean;
  prefix: string; // default 'tollgate:'
  timeoutMs: number; // default 50
  onError: 'allow' | 'deny' | 'local'; // default 'local'
  onErrorStatus: number; // default 503
  clock: 'redis' | 'local'; // default 'redis'
  expectedReplicas: number; // default 1
  /** Lifetime of a concurrency slot's lease unless its replica renews it (every third of it). */
  slotLeaseMs: number; // default 30_000 (30s)
}

export interface StoreConfig {
  type: 'memory' | 'redis'; // default 'memory'
  memory: { maxKeys: number; maxBlocks: number }; // defaults 1_000_000 / 100_000
  redis?: RedisStoreConfig;
}

export interface LogConfig {
  access: boolean; // default false
}

/** One problem found in a policy file, located for `FILE:LINE:COL message`. */
export interface ConfigIssue {
  file: string;
  line: number; // 1-based
  col: number; // 1-based
  message: string;
}
