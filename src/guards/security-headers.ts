/**
 * `securityHeaders`: response headers against sniffing, framing, referrer leaks and
 * caching of token responses. `strict` adds a fixed set where the upstream did not set
 * them (the app's own values win); the map form sets exactly its headers, replacing the
 * upstream's only with `override: true`. HSTS only over HTTPS (browsers ignore it otherwise,
 * and a plain-HTTP deployment should not pretend).
 */
import type { IncomingHeaders } from '../policy/types.js';
import type { SecurityHeadersConfig } from '../config/types.js';
import type { MutableHeaders } from './cors.js';
import type { CompiledSecurityHeaders } from './types.js';

/** `securityHeaders: strict` (X-XSS-Protection is obsolete and not added). */
export const STRICT_HEADERS: ReadonlyArray<readonly [string, string]> = Object.freeze([
  ['x-content-type-options', 'nosniff'],
  ['x-frame-options', 'DENY'],
  ['referrer-policy', 'strict-origin-when-cross-origin'],
  ['content-security-policy', "default-src 'none'; frame-ancestors 'none'"],
  ['cache-control', 'no-store'],
] as const);
export const STRICT_HSTS = 'max-age=31536000; includeSubDomains';

/** Null for `off`. */
export function compileSecurityHeaders(config: SecurityHeadersConfig): CompiledSecurityHeaders | null {
  if (config === 'off') return null;
  if (config === 'strict') return Object.freeze({ always: STRICT_HEADERS, hsts: STRICT_HSTS, override: false });
  const always = Object.entries(config.headers).map(([name, value]) => Object.freeze([name.toLowerCase(), value] as const));
  return Object.freeze({ always: Object.freeze(always), hsts: null, override: config.override });
}

/** Adds the route's security headers to `headers` (lower-cased names), in place. */
export function applySecurityHeaders(compiled: CompiledSecurityHeaders, headers: MutableHeaders, https: boolean): void {
  const { always, override } = compiled;
  for (let i = 0; i < always.length; i++) {
    const [name, value] = always[i];
    if (override || headers[name] === undefined) headers[name] = value;
  }
  if (https && compiled.hsts !== null && headers['strict-transport-security'] === undefined) headers['strict-transport-security'] = compiled.hsts;
}

/**
 * The client's connection was HTTPS: `X-Forwarded-Proto: https` from a trusted proxy
 * (of a chained value, the leftmost: the hop nearest the client). Tollgate itself
 * listens on plain HTTP.
 */
export function clientUsedHttps(headers: IncomingHeaders, peerTrusted: boolean): boolean {
  if (!peerTrusted) return false;
  const value = headers['x-forwarded-proto'];
  if (value === undefined) return false;
  const text = typeof value === 'string' ? value : value[0];
  const comma = text.indexOf(',');
  return (comma < 0 ? text : text.slice(0, comma)).trim().toLowerCase() === 'https';
}
