/**
 * Policy files for the benchmark, written to a temp dir. The throughput policy is the
 * shipped example (`policies.yaml`: JWT or trusted header identity, per-user and per-IP
 * limits, four routes) with limits raised so nothing is refused: the bench measures
 * the cost of deciding, not of refusing.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** Far above what one run can send, so the limiter always allows (runs check 0 errors). */
const HIGH = 1_000_000_000;

/** The page origin the bench's requests come from (allowed by the guards configuration). */
export const BENCH_ORIGIN = 'https://app.example.com';

/**
 * The route the throughput and latency runs hit, with the header that identifies the user
 * and the Origin a browser would send (ignored by policies without guards), so every
 * configuration gets the same request.
 */
export const BENCH_REQUEST = {
  path: '/api/livekit/token',
  method: 'POST' as const,
  headers: { 'x-user-id': 'bench-user', origin: BENCH_ORIGIN },
};

export const JWT_SECRET = 'tollgate-bench-secret-0123456789-abcdefghijklmnop';

export interface RedisBenchStore {
  url: string;
  prefix: string;
  /** The store's deadline (default 50ms); a server under valgrind needs more. */
  timeout?: string;
}

function storeSection(redis: RedisBenchStore | undefined): string {
  if (redis === undefined) return 'store:\n  type: memory\n';
  return `store:
  type: redis
  redis:
    url: ${redis.url}
    prefix: "${redis.prefix}"
    timeout: ${redis.timeout ?? '50ms'}
    onError: local
    clock: redis
`;
}

/**
 * Guards on the benched route (`examplePolicy(undefined, { guards: true })`): strict
 * security headers, an origin allowlist and CORS, as a browser-facing token endpoint has.
 */
const BENCH_GUARDS = `
    guards:
      securityHeaders: strict
      origins: [${BENCH_ORIGIN}, "https://*.example.com"]
      cors:
        methods: [POST]
        headers: [authorization, content-type]
        exposeHeaders: [retry-after, ratelimit, ratelimit-policy]
        credentials: true
        maxAge: 10m`;

/**
 * What a configuration adds to the benched route (the `features` phase measures each
 * against the same policy without it):
 * - `guards`: strict security headers, an origin allowlist and CORS;
 * - `concurrent`: a concurrency limit per user (a slot taken and given back per request);
 * - `count`: the per-user limit counts failed responses only (every 200 gives its reservation back);
 * - `cost`: the per-user limit charges the upstream's `x-usage-tokens` (settled per request).
 */
export interface BenchFeatures {
  guards?: boolean;
  concurrent?: boolean;
  count?: boolean;
  cost?: boolean;
}

/** The response header the bench upstream reports a cost in (every response carries it). */
export const COST_HEADER = 'x-usage-tokens';

/** The example policy with high limits; memory store, or Redis when given; optionally features on the benched route. */
export function examplePolicy(redis?: RedisBenchStore, options: BenchFeatures = {}): string {
  const userExtras = `${options.count === true ? ', count: { status: [401, 403] }' : ''}${options.cost === true ? `, cost: { header: ${COST_HEADER}, default: 1 }` : ''}`;
  return `upstreamTimeout: 30s
clientIp:
  trustedProxies: [127.0.0.1/32, ::1/128]
  ipv6Prefix: 64
identity:
  jwt:
    secret: ${JWT_SECRET}
    algorithms: [HS256]
    userClaim: sub
    tierClaim: plan
  header: x-user-id
allow:
  ips: []
  users: []
defaults:
  algorithm: sliding-window
  mode: enforce
routes:
  - id: livekit-token
    match: { path: /api/livekit/token, methods: [POST] }
    message: Too many token requests; try again later.${options.guards === true ? BENCH_GUARDS : ''}
    limits:
      - { by: user, limit: ${HIGH}, window: 1m, block: 5m, tiers: { pro: ${HIGH} }${userExtras} }
      - { by: ip, limit: ${HIGH}, window: 1m, block: 5m }
      - { by: ip, limit: ${HIGH}, window: 1m, for: anonymous }${options.concurrent === true ? `
      - { by: user, concurrent: ${HIGH} }` : ''}
  - id: session-start
    match: { path: /api/session/start, methods: [POST] }
    limits:
      - { by: user, limit: ${HIGH}, window: 1h }
      - { by: ip, limit: ${HIGH}, window: 1h }
  - id: transcription
    match: { path: /api/transcription/* }
    algorithm: token-bucket
    limits:
      - { by: user, limit: ${HIGH}, window: 1m }
      - { by: ip, limit: ${HIGH}, window: 1m }
  - id: ws-live
    match: { path: /ws/live, websocket: true }
    limits:
      - { by: ip, limit: 20, window: 1m }
${storeSection(redis)}`;
}

/** The route the memory run hits: one per-IP limit, clients told apart by X-Forwarded-For from 127.0.0.1. */
export const PER_IP_PATH = '/api/session/start';

export function perIpPolicy(): string {
  return `clientIp:
  trustedProxies: [127.0.0.1/32]
routes:
  - id: session-start
    match: { path: /api/session/start }
    limits:
      - { by: ip, limit: ${HIGH}, window: 1m }
store:
  type: memory
  memory:
    maxKeys: 1000000
    maxBlocks: 100000
`;
}

/** Writes `text` as policies.yaml in a fresh temp dir and returns its path. */
export function writePolicyFile(name: string, text: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), `tollgate-bench-${name}-`));
  const file = path.join(dir, 'policies.yaml');
  writeFileSync(file, text);
  return file;
}
