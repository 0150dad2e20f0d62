/**
 * Request guards: what the proxy calls, in the order of a request's life. A route's
 * guards are compiled once (`CompiledRoute.guards`, null when it has none: such a route
 * calls nothing here).
 *
 * Request (may refuse; a refusal never reaches the upstream and consumes no quota):
 *   0. every request, before routing: `isInvalidPath` (src/policy/path.ts) -> INVALID_PATH,
 *      `hasDuplicateHost` -> INVALID_HOST
 *   1. a CORS preflight (`isPreflight`) to a route with `cors`: `answerPreflight`, never forwarded
 *   2. `checkHead`: methods, origins (+ requireOrigin), maxBodySize by Content-Length, contentTypes
 *   3. `needsBody` -> `readBody` (at most maxBodySize) -> `checkBody`: the `body` guard
 *   4. once the identity is resolved: `checkAccess`: csrf, then auth
 *   then the limits, then the forward: a chunked body on a route with `maxBodySize` and no
 *   `body` guard goes through `limitBody`, which aborts the upstream request past the limit.
 * Response head (the upstream's, or Tollgate's own: 429, 4xx, 5xx):
 *   `decorateResponse`: CORS headers for an allowed origin (the upstream's replaced,
 *   `Vary: Origin` appended) and security headers.
 * Upstream request headers (every request): src/policy/upstream-headers.ts.
 */
import type { IncomingHeaders } from '../policy/types.js';
import { applyCors, type MutableHeaders } from './cors.js';
import { applySecurityHeaders, clientUsedHttps } from './security-headers.js';
import type { CompiledGuards } from './types.js';

export { checkAccess, checkBody, checkHead, hasDuplicateHost, INVALID_HOST, INVALID_PATH, needsBody, requestHasBody, PAYLOAD_TOO_LARGE } from './checks.js';
export { answerPreflight, isPreflight, type MutableHeaders, type PreflightAnswer } from './cors.js';
export { compileGuards, mergeGuards } from './compile.js';
export { applySecurityHeaders } from './security-headers.js';
export { BodyLimit, BodyTooLargeError, limitBody, readBody, type BodyRead } from './stream.js';
export type { CompiledGuards, GuardName, GuardRefusal } from './types.js';

/**
 * The Origin a response's CORS headers name, or undefined for none: the request's
 * Origin when the route has `cors` and the origin is allowed. `checked`: the request
 * passed `checkHead`, so its Origin (if any) is known to be allowed.
 */
export function corsOrigin(guards: CompiledGuards, headers: IncomingHeaders, checked: boolean): string | undefined {
  if (guards.cors === null) return undefined;
  const origin = headers.origin;
  if (typeof origin !== 'string') return undefined;
  return checked || guards.origins!.allows(origin) ? origin : undefined;
}

/** Whether the route's security headers include HSTS for this request (client on HTTPS per a trusted proxy). */
export function wantsHsts(guards: CompiledGuards, headers: IncomingHeaders, peerTrusted: boolean): boolean {
  return guards.securityHeaders !== null && guards.securityHeaders.hsts !== null && clientUsedHttps(headers, peerTrusted);
}

/**
 * Adds the route's response headers to `headers` (lower-cased names; the upstream's
 * response head or one of Tollgate's own), in place.
 * @param origin from `corsOrigin`
 * @param https from `wantsHsts`
 */
export function decorateResponse(guards: CompiledGuards, headers: MutableHeaders, origin: string | undefined, https: boolean): void {
  if (guards.cors !== null) applyCors(guards.cors, headers, origin);
  if (guards.securityHeaders !== null) applySecurityHeaders(guards.securityHeaders, headers, https);
}
