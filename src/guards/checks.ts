/**
 * The request-side guard checks, in the order the policy runs them (README "Guards"):
 * `methods`, `origins` (+ `requireOrigin`), `maxBodySize`, `contentTypes` on the request
 * head (`checkHead`); then `body` (`checkBody`, once the body is read); then `csrf` and
 * `auth` (`checkAccess`, once the identity is known). Each returns the first refusal, or
 * null. Refusals are constants built once; nothing here allocates on a passing request.
 */
import { timingSafeEqual } from 'node:crypto';
import { readCookie } from '../policy/identity.js';
import type { Identity, IncomingHeaders } from '../policy/types.js';
import { missingBody } from './body.js';
import { ORIGIN_REFUSAL } from './cors.js';
import type { CompiledGuards, GuardRefusal } from './types.js';

/** More than one Host line in the request head (`rawHeaders` keeps every line, as sent). */
export function hasDuplicateHost(rawHeaders: readonly string[]): boolean {
  let seen = false;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i];
    if (name.length !== 4 || name.toLowerCase() !== 'host') continue;
    if (seen) return true;
    seen = true;
  }
  return false;
}

/** Every request whose path `isInvalidPath` refuses (src/policy/path.ts). */
export const INVALID_PATH: GuardRefusal = Object.freeze({ guard: 'path', code: 'INVALID_PATH', status: 400 });
/** A request with more than one Host line (RFC 9112 3.2: a server must answer 400; undici would refuse to forward it). */
export const INVALID_HOST: GuardRefusal = Object.freeze({ guard: 'host', code: 'INVALID_HOST', status: 400 });
export const PAYLOAD_TOO_LARGE: GuardRefusal = Object.freeze({ guard: 'maxBodySize', code: 'PAYLOAD_TOO_LARGE', status: 413 });
const UNSUPPORTED_MEDIA_TYPE: GuardRefusal = Object.freeze({ guard: 'contentTypes', code: 'UNSUPPORTED_MEDIA_TYPE', status: 415 });
const CSRF_TOKEN_INVALID: GuardRefusal = Object.freeze({ guard: 'csrf', code: 'CSRF_TOKEN_INVALID', status: 403 });
const AUTH_REQUIRED: GuardRefusal = Object.freeze({ guard: 'auth', code: 'AUTH_REQUIRED', status: 401, headers: Object.freeze({ 'www-authenticate': 'Bearer' }) });
/** RFC 6750 3.1: a token was presented and refused. */
const AUTH_INVALID_TOKEN: GuardRefusal = Object.freeze({
  guard: 'auth',
  code: 'AUTH_REQUIRED',
  status: 401,
  headers: Object.freeze({ 'www-authenticate': 'Bearer error="invalid_token"' }),
});

/** Methods that change state: `csrf` applies to these. */
const UNSAFE_METHODS: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
/** Methods whose requests are expected to carry the body `body` checks. */
const BODY_METHODS: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH']);

/** A request body follows the head: a non-zero Content-Length, or chunked (`Content-Length: 0` is no body). */
export function requestHasBody(headers: IncomingHeaders): boolean {
  const length = headers['content-length'];
  if (length !== undefined) return length !== '0';
  return headers['transfer-encoding'] !== undefined;
}

/** The media type of a Content-Type value, lower-cased, without parameters (`; charset=...`). */
export function mediaTypeOf(value: string | string[] | undefined): string | undefined {
  if (typeof value !== 'string') return undefined;
  const semicolon = value.indexOf(';');
  const type = (semicolon < 0 ? value : value.slice(0, semicolon)).trim().toLowerCase();
  return type === '' ? undefined : type;
}

/** `methods`, `origins` (+ `requireOrigin`), `maxBodySize` by Content-Length, `contentTypes`. */
export function checkHead(guards: CompiledGuards, method: string, headers: IncomingHeaders): GuardRefusal | null {
  if (guards.methods !== null && !guards.methods.has(method)) return guards.methodRefusal;
  if (guards.origins !== null) {
    const origin = headers.origin;
    if (origin === undefined ? guards.requireOrigin : typeof origin !== 'string' || !guards.origins.allows(origin)) return ORIGIN_REFUSAL;
  }
  if (guards.maxBodySize > 0) {
    const length = headers['content-length'];
    if (length !== undefined && Number(length) > guards.maxBodySize) return PAYLOAD_TOO_LARGE;
  }
  if (guards.contentTypes !== null && requestHasBody(headers)) {
    const type = mediaTypeOf(headers['content-type']);
    if (type === undefined || !guards.contentTypes.has(type)) return UNSUPPORTED_MEDIA_TYPE;
  }
  return null;
}

/** Whether the `body` guard must read this request's body (a body is there, or one is expected). */
export function needsBody(guards: CompiledGuards, method: string, headers: IncomingHeaders): boolean {
  return guards.body !== null && (requestHasBody(headers) || BODY_METHODS.has(method));
}

/**
 * `body`: the body read in full (at most maxBodySize). An empty body of a POST, PUT or
 * PATCH is refused as missing.
 */
export function checkBody(guards: CompiledGuards, method: string, body: Buffer): GuardRefusal | null {
  if (guards.body === null) return null;
  const problems = body.length === 0 ? (BODY_METHODS.has(method) ? missingBody() : undefined) : guards.body(body);
  if (problems === undefined) return null;
  return { guard: 'body', code: 'INVALID_BODY', status: 400, details: { errors: problems } };
}

/** `csrf` (unsafe methods: the header equals the cookie), then `auth`. */
export function checkAccess(guards: CompiledGuards, method: string, headers: IncomingHeaders, identity: Identity): GuardRefusal | null {
  const csrf = guards.csrf;
  if (csrf !== null && UNSAFE_METHODS.has(method)) {
    const cookie = headers.cookie;
    const expected = cookie === undefined ? undefined : readCookie(typeof cookie === 'string' ? cookie : cookie.join('; '), csrf.cookie);
    const given = headers[csrf.header];
    if (expected === undefined || typeof given !== 'string' || given === '' || !constantTimeEqual(expected, given)) return CSRF_TOKEN_INVALID;
  }
  if (guards.authRequired && identity.userId === undefined) return identity.tokenError === true ? AUTH_INVALID_TOKEN : AUTH_REQUIRED;
  return null;
}

/**
 * Equality whose time does not depend on where two secrets differ. Unequal lengths do
 * the same comparison over `a` against itself and fail, without an early return.
 */
export function constantTimeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  const sameLength = x.length === y.length;
  const equal = timingSafeEqual(x, sameLength ? y : x);
  return sameLength && equal;
}
