import { createPublicKey, type KeyObject } from 'node:crypto';
import { createRemoteJWKSet, customFetch, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { LRUCache } from 'lru-cache';
import type { IdentityConfig, JwtConfig } from '../config/types.js';
import { PolicyError } from './errors.js';
import { ANONYMOUS, type Identity, type IdentityExplanation, type IdentityResolver, type IncomingHeaders } from './types.js';

export type IdentityErrorKind = 'jwks_unreachable' | 'jwt_key_invalid';

/** Called at most once per outage per kind (again only after it recovered); for logs and metrics. */
export interface IdentityEvents {
  onError(kind: IdentityErrorKind): void;
}

export interface IdentityResolverOptions {
  /** Clock (unix ms) for `exp`/`nbf` and cache expiry; tests pin it. Default `Date.now`. */
  now?: () => number;
}

const TOKEN_CACHE_SIZE = 10_000; // tokens
const VERIFIED_TTL_MS = 60 * 1000; // 60s, or until `exp` if sooner
const REJECTED_TTL_MS = 5 * 1000; // 5s: a forged token costs crypto once per 5s at most
const MAX_TOKEN_LENGTH = 8 * 1024; // 8 KiB: longer is not a token we issue; never verified or cached
const MAX_USER_ID_LENGTH = 256;
const JWKS_TIMEOUT_MS = 2 * 1000; // 2s: requests wait for a JWKS fetch at most this long
const JWKS_RETRY_MS = 2 * 1000; // 2s: while unreachable, no request waits on a fetch more often than this

/** Where each setting a key problem names is, for errors at FILE:LINE:COL. */
const JWT_PATH = {
  jwt: ['identity', 'jwt'],
  algorithms: ['identity', 'jwt', 'algorithms'],
  secret: ['identity', 'jwt', 'secret'],
  publicKey: ['identity', 'jwt', 'publicKey'],
  jwksUrl: ['identity', 'jwt', 'jwksUrl'],
} as const;

/** The token is unusable (invalid, forged, expired, or lacks a user claim). */
const REJECTED = Symbol('rejected');
/** The token could not be checked for a reason of ours (key source down or unusable). */
const UNCHECKED = Symbol('unchecked');
type TokenResult = Identity | typeof REJECTED | typeof UNCHECKED;

/** Anonymous, after a presented token was refused / could not be checked. */
const ANONYMOUS_TOKEN_REJECTED: Identity = Object.freeze({ tokenPresented: true, tokenError: true });
const ANONYMOUS_TOKEN_UNCHECKED: Identity = Object.freeze({ tokenPresented: true });

/**
 * The identity that stands after a presented token failed (the header's, or anonymous),
 * marked with what happened to the token; who it is does not change.
 */
function afterToken(identity: Identity, result: typeof REJECTED | typeof UNCHECKED): Identity {
  if (identity === ANONYMOUS) return result === REJECTED ? ANONYMOUS_TOKEN_REJECTED : ANONYMOUS_TOKEN_UNCHECKED;
  return result === REJECTED ? { ...identity, tokenPresented: true, tokenError: true } : { ...identity, tokenPresented: true };
}

/** ttlMs 0 = do not cache (the failure was ours, not the token's). `reason`: why a token failed, for `explain`. */
interface Verdict {
  readonly result: TokenResult;
  readonly ttlMs: number;
  readonly reason?: string;
}
const UNVERIFIABLE_SOURCE: Verdict = Object.freeze({ result: UNCHECKED, ttlMs: 0, reason: 'not checked: the key source failed (JWKS unreachable, or no usable key in it)' });
const UNVERIFIABLE_KEY: Verdict = Object.freeze({ result: UNCHECKED, ttlMs: 0, reason: 'not checked: the configured key cannot verify this token' });

const NO_EVENTS: IdentityEvents = Object.freeze({ onError: () => {} });

/**
 * Who a request is: a verified JWT (Bearer header, or the configured cookie; never the
 * query string), else the identity header when a trusted proxy sent it, else anonymous.
 * Verification results are cached per token so a repeated token costs no crypto.
 */
export function createIdentityResolver(
  config: IdentityConfig,
  events: IdentityEvents = NO_EVENTS,
  options: IdentityResolverOptions = {},
): IdentityResolver {
  const now = options.now ?? Date.now;
  const headerName = config.header?.toLowerCase();
  const health = createHealth(events);
  const jwt = config.jwt;
  const verify = jwt === undefined ? undefined : createJwtVerifier(jwt, health, now);
  const cookieName = jwt?.cookie;
  // ttlResolution 0: read the clock on every lookup (no timer per lookup, and an injected clock is exact).
  const verdicts = new LRUCache<string, TokenResult>({ max: TOKEN_CACHE_SIZE, perf: { now }, ttlResolution: 0 });
  const inFlight = new Map<string, Promise<TokenResult>>();
  let closed = false;

  function fromHeader(headers: IncomingHeaders, peerTrusted: boolean): Identity {
    if (!peerTrusted || headerName === undefined) return ANONYMOUS;
    const value = headers[headerName];
    if (typeof value !== 'string') return ANONYMOUS;
    const userId = value.trim();
    return isUsableClaim(userId) ? Object.freeze({ userId }) : ANONYMOUS;
  }

  async function verifyOnce(verifyToken: (token: string) => Promise<Verdict>, token: string): Promise<TokenResult> {
    try {
      const verdict = await verifyToken(token);
      if (verdict.ttlMs > 0 && !closed) verdicts.set(token, verdict.result, { ttl: verdict.ttlMs });
      return verdict.result;
    } catch {
      return UNCHECKED; // verify catches everything; belt and braces for "never throws"
    } finally {
      inFlight.delete(token);
    }
  }

  return Object.freeze({
    async explain(headers: IncomingHeaders, peerTrusted: boolean): Promise<IdentityExplanation> {
      const token = verify === undefined ? undefined : readToken(headers, cookieName);
      const header = fromHeader(headers, peerTrusted);
      const fallback = (tokenError: string | null): IdentityExplanation => ({
        identity: tokenError === null ? header : afterToken(header, REJECTED),
        source: header.userId === undefined ? null : 'header',
        tokenError,
      });
      if (verify === undefined || token === undefined) return fallback(null);
      if (token.length > MAX_TOKEN_LENGTH) return fallback(`longer than ${MAX_TOKEN_LENGTH / 1024} KiB: not a token, never verified`);
      // Verified afresh (not from the cache), to say why a token fails.
      const verdict = await verify(token);
      if (typeof verdict.result !== 'symbol') return { identity: verdict.result, source: 'jwt', tokenError: null };
      const explanation = fallback(verdict.reason ?? 'refused');
      return verdict.result === REJECTED ? explanation : { ...explanation, identity: afterToken(header, UNCHECKED) };
    },
    resolve(headers: IncomingHeaders, peerTrusted: boolean): Identity | Promise<Identity> {
      const token = verify === undefined ? undefined : readToken(headers, cookieName);
      if (verify === undefined || token === undefined) return fromHeader(headers, peerTrusted);
      if (token.length > MAX_TOKEN_LENGTH) return afterToken(fromHeader(headers, peerTrusted), REJECTED);
      const cached = verdicts.get(token);
      if (cached !== undefined) return typeof cached === 'symbol' ? afterToken(fromHeader(headers, peerTrusted), cached) : cached;
      let pending = inFlight.get(token);
      if (pending === undefined) {
        pending = verifyOnce(verify, token);
        inFlight.set(token, pending);
      }
      return pending.then((result) => (typeof result === 'symbol' ? afterToken(fromHeader(headers, peerTrusted), result) : result));
    },
    close(): void {
      closed = true;
      verdicts.clear();
    },
  });
}

/** Debounces error events: one per kind until that kind recovers. */
interface Health {
  failed(kind: IdentityErrorKind): void;
  recovered(kind: IdentityErrorKind): void;
  isFailing(kind: IdentityErrorKind): boolean;
}

function createHealth(events: IdentityEvents): Health {
  const failing = new Set<IdentityErrorKind>();
  return {
    failed(kind) {
      if (failing.has(kind)) return;
      failing.add(kind);
      try {
        events.onError(kind);
      } catch {
        // A failing log or metric must not turn into a failed request.
      }
    },
    recovered(kind) {
      failing.delete(kind);
    },
    isFailing: (kind) => failing.has(kind),
  };
}

/** The token from `Authorization: Bearer`, else from the configured cookie. */
function readToken(headers: IncomingHeaders, cookieName: string | undefined): string | undefined {
  const authorization = headers.authorization;
  // The auth scheme is case-insensitive (RFC 9110 11.1).
  if (typeof authorization === 'string' && authorization.length > 7 && authorization.slice(0, 7).toLowerCase() === 'bearer ') {
    const token = authorization.slice(7).trim();
    if (token !== '') return token;
  }
  if (cookieName === undefined) return undefined;
  const cookie = headers.cookie;
  if (cookie === undefined) return undefined;
  return readCookie(typeof cookie === 'string' ? cookie : cookie.join('; '), cookieName);
}

/** The value of cookie `name` in a `Cookie` header (quotes removed), or undefined when absent or empty. */
export function readCookie(header: string, name: string): string | undefined {
  let start = 0;
  while (start < header.length) {
    let end = header.indexOf(';', start);
    if (end < 0) end = header.length;
    const equals = header.indexOf('=', start);
    if (equals > start && equals < end && header.slice(start, equals).trim() === name) {
      let value = header.slice(equals + 1, end).trim();
      if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
      return value === '' ? undefined : value;
    }
    start = end + 1;
  }
  return undefined;
}

function isUsableClaim(value: string): boolean {
  return value.length > 0 && value.length <= MAX_USER_ID_LENGTH;
}

type VerificationKey = Uint8Array | KeyObject | JWTVerifyGetKey;

function createJwtVerifier(jwt: JwtConfig, health: Health, now: () => number): (token: string) => Promise<Verdict> {
  const algorithms = validateAlgorithms(jwt.algorithms);
  const key = createVerificationKey(jwt, algorithms, health, now);
  const userClaim = jwt.userClaim || 'sub';
  const tierClaim = jwt.tierClaim;
  // A token that never expires is a leaked key forever: without `exp` it is refused unless told otherwise.
  const requiredClaims = jwt.requireExp === false ? [] : ['exp'];

  function verdictFor(payload: JWTPayload): Verdict {
    const ttlMs =
      typeof payload.exp === 'number' ? Math.min(VERIFIED_TTL_MS, payload.exp * 1000 - now()) : VERIFIED_TTL_MS;
    const claim = payload[userClaim];
    const userId =
      typeof claim === 'string' ? claim : typeof claim === 'number' && Number.isFinite(claim) ? String(claim) : '';
    if (!isUsableClaim(userId)) return { result: REJECTED, ttlMs, reason: `no usable "${userClaim}" claim (the user id)` };
    const tier = tierClaim === undefined ? undefined : payload[tierClaim];
    const identity = typeof tier === 'string' && isUsableClaim(tier) ? { userId, tier, tokenPresented: true } : { userId, tokenPresented: true };
    return { result: Object.freeze(identity), ttlMs };
  }

  return async (token) => {
    try {
      const { payload } = await jwtVerify(token, key, {
        algorithms,
        issuer: jwt.issuer,
        audience: jwt.audience,
        requiredClaims,
        currentDate: new Date(now()),
      });
      health.recovered('jwt_key_invalid');
      return verdictFor(payload);
    } catch (error) {
      if (error instanceof KeySourceFailure) return UNVERIFIABLE_SOURCE;
      if (isKeyProblem(error)) {
        health.failed('jwt_key_invalid');
        return UNVERIFIABLE_KEY;
      }
      // jose's message says which check failed ("exp" claim timestamp check failed, signature verification failed, ...).
      return { result: REJECTED, ttlMs: REJECTED_TTL_MS, reason: (error as Error).message };
    }
  };
}

/**
 * After jose picked the key: a TypeError/DOMException means the key does not fit the algorithm
 * (our configuration). Every JOSE error is the token's fault, JOSENotSupported included: a
 * client triggers it with a `crit` extension jose does not know. A key that cannot do a
 * configured algorithm never gets that far: a secret or publicKey is checked when compiled,
 * and JWKS failures arrive as KeySourceFailure.
 */
function isKeyProblem(error: unknown): boolean {
  return !(error instanceof errors.JOSEError);
}

/** The key source failed (JWKS unreachable or unusable); already reported; not the token's fault. */
class KeySourceFailure extends Error {
  override readonly name = 'KeySourceFailure';
}

const HMAC_ALGORITHMS = new Set(['HS256', 'HS384', 'HS512']);

/** Which public keys each asymmetric algorithm accepts (jose refuses RSA under 2048 bits). */
const PUBLIC_KEY_FITS: Readonly<Record<string, (key: KeyObject) => boolean>> = {
  RS256: isRsa2048,
  RS384: isRsa2048,
  RS512: isRsa2048,
  PS256: isRsa2048,
  PS384: isRsa2048,
  PS512: isRsa2048,
  ES256: (key) => isEcCurve(key, 'prime256v1'),
  ES384: (key) => isEcCurve(key, 'secp384r1'),
  ES512: (key) => isEcCurve(key, 'secp521r1'),
  EdDSA: (key) => key.asymmetricKeyType === 'ed25519',
  Ed25519: (key) => key.asymmetricKeyType === 'ed25519',
};

function isRsa2048(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048;
}

function isEcCurve(key: KeyObject, curve: string): boolean {
  return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === curve;
}

function validateAlgorithms(algorithms: readonly string[]): string[] {
  if (algorithms.length === 0) throw new PolicyError(JWT_PATH.algorithms, 'identity.jwt.algorithms must list at least one algorithm');
  for (const algorithm of algorithms) {
    if (!HMAC_ALGORITHMS.has(algorithm) && !(algorithm in PUBLIC_KEY_FITS)) {
      throw new PolicyError(
        JWT_PATH.algorithms,
        `identity.jwt.algorithms: "${algorithm}" is not supported (use ${[...HMAC_ALGORITHMS, ...Object.keys(PUBLIC_KEY_FITS)].join(', ')})`,
      );
    }
  }
  return [...algorithms];
}

/** Builds the key once; throws if the key source does not fit the configured algorithms. */
function createVerificationKey(
  jwt: JwtConfig,
  algorithms: readonly string[],
  health: Health,
  now: () => number,
): VerificationKey {
  const sources = [jwt.secret, jwt.publicKey, jwt.jwksUrl].filter((source) => source !== undefined);
  if (sources.length !== 1) throw new PolicyError(JWT_PATH.jwt, 'identity.jwt needs exactly one of secret, publicKey, jwksUrl');
  const asymmetric = algorithms.filter((algorithm) => !HMAC_ALGORITHMS.has(algorithm));

  if (jwt.secret !== undefined) {
    if (jwt.secret === '') throw new PolicyError(JWT_PATH.secret, 'identity.jwt.secret is empty');
    if (asymmetric.length > 0) {
      throw new PolicyError(JWT_PATH.algorithms, `identity.jwt.secret only verifies HS256/HS384/HS512, not ${asymmetric.join(', ')}`);
    }
    return new TextEncoder().encode(jwt.secret);
  }

  if (asymmetric.length !== algorithms.length) {
    throw new PolicyError(JWT_PATH.algorithms, 'identity.jwt: HS256/HS384/HS512 need a secret, not a publicKey or jwksUrl');
  }

  if (jwt.publicKey !== undefined) {
    if (jwt.publicKey.includes('PRIVATE KEY')) {
      throw new PolicyError(JWT_PATH.publicKey, 'identity.jwt.publicKey holds a private key; give the public key (PEM SPKI)');
    }
    let key: KeyObject;
    try {
      key = createPublicKey(jwt.publicKey);
    } catch (error) {
      throw new PolicyError(JWT_PATH.publicKey, `identity.jwt.publicKey is not a PEM public key: ${(error as Error).message}`);
    }
    for (const algorithm of algorithms) {
      if (!PUBLIC_KEY_FITS[algorithm](key)) {
        throw new PolicyError(JWT_PATH.publicKey, `identity.jwt.publicKey (${describeKey(key)}) cannot verify ${algorithm}`);
      }
    }
    // jose converts this KeyObject once per algorithm and caches the result.
    return key;
  }

  return createJwksKey(jwt.jwksUrl!, health, now);
}

function describeKey(key: KeyObject): string {
  const details = key.asymmetricKeyDetails;
  if (details?.modulusLength !== undefined) return `${key.asymmetricKeyType} ${details.modulusLength} bits`;
  if (details?.namedCurve !== undefined) return `${key.asymmetricKeyType} ${details.namedCurve}`;
  return String(key.asymmetricKeyType);
}

/**
 * Remote JWKS via jose, with our fetch in between to notice outages precisely: a network
 * error, timeout or non-200 answer reports `jwks_unreachable` once; a 200 clears it. While
 * unreachable, fetches are retried at most every JWKS_RETRY_MS and requests in between are
 * answered (anonymous) without waiting on the network.
 */
function createJwksKey(jwksUrl: string, health: Health, now: () => number): JWTVerifyGetKey {
  let url: URL;
  try {
    url = new URL(jwksUrl);
  } catch {
    throw new PolicyError(JWT_PATH.jwksUrl, `identity.jwt.jwksUrl is not a URL: ${jwksUrl}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new PolicyError(JWT_PATH.jwksUrl, `identity.jwt.jwksUrl must be http: or https:, got ${url.protocol}`);
  }
  let retryAt = 0;

  function unreachable(): void {
    retryAt = now() + JWKS_RETRY_MS;
    health.failed('jwks_unreachable');
  }

  const remote = createRemoteJWKSet(url, {
    timeoutDuration: JWKS_TIMEOUT_MS,
    [customFetch]: async (resource, init) => {
      if (health.isFailing('jwks_unreachable') && now() < retryAt) {
        throw new KeySourceFailure('JWKS unreachable; next attempt not due yet');
      }
      let response: Response;
      try {
        response = await fetch(resource, init);
      } catch (error) {
        unreachable();
        throw error;
      }
      if (response.status === 200) {
        health.recovered('jwks_unreachable');
      } else {
        unreachable();
        await response.body?.cancel();
      }
      return response;
    },
  });

  return async (header, token) => {
    try {
      return await remote(header, token);
    } catch (error) {
      // No key for this kid/alg: the token's problem (jose already refetched if due).
      if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSMultipleMatchingKeys) throw error;
      // Otherwise our key source failed: unreachable (reported by the fetch) or unusable keys.
      if (!health.isFailing('jwks_unreachable')) health.failed('jwt_key_invalid');
      throw new KeySourceFailure('JWKS key unavailable', { cause: error });
    }
  };
}
