/**
 * CORS for routes with `cors` (which needs `origins`): Tollgate answers preflights itself
 * and puts its own CORS headers on every response to an allowed origin, its own 429s and
 * errors included, so a page can read a refusal and its Retry-After.
 */
import type { CorsConfig, GuardsConfig } from '../config/types.js';
import type { IncomingHeaders } from '../policy/types.js';
import type { CompiledCors, CompiledGuards, GuardRefusal } from './types.js';

/** Methods a preflight may ask for when neither `cors.methods` nor `methods` lists any. */
const DEFAULT_CORS_METHODS = ['GET', 'HEAD', 'POST'];

/** The CORS response headers Tollgate owns on a `cors` route: the upstream's are dropped. */
const CORS_RESPONSE_HEADERS = [
  'access-control-allow-origin',
  'access-control-allow-credentials',
  'access-control-expose-headers',
  'access-control-allow-methods',
  'access-control-allow-headers',
  'access-control-max-age',
  'access-control-allow-private-network',
];

export const ORIGIN_REFUSAL: GuardRefusal = Object.freeze({ guard: 'origins', code: 'ORIGIN_NOT_ALLOWED', status: 403 });
const CORS_METHOD_REFUSAL: GuardRefusal = Object.freeze({ guard: 'cors', code: 'CORS_METHOD_NOT_ALLOWED', status: 403 });

export function compileCors(cors: CorsConfig, guards: GuardsConfig): CompiledCors {
  const methods = cors.methods.length > 0 ? cors.methods : guards.methods ?? DEFAULT_CORS_METHODS;
  const preflightHeaders: Record<string, string> = { 'access-control-allow-methods': methods.join(', ') };
  if (cors.headers.length > 0) preflightHeaders['access-control-allow-headers'] = cors.headers.join(', ');
  if (cors.credentials) preflightHeaders['access-control-allow-credentials'] = 'true';
  if (cors.maxAgeMs !== undefined) preflightHeaders['access-control-max-age'] = String(Math.ceil(cors.maxAgeMs / 1000));
  preflightHeaders.vary = 'Origin';
  return Object.freeze({
    methods: new Set(methods),
    preflightHeaders: Object.freeze(preflightHeaders),
    allowCredentials: cors.credentials ? 'true' : null,
    exposeHeaders: cors.exposeHeaders.length > 0 ? cors.exposeHeaders.join(', ') : null,
  });
}

/** OPTIONS with Origin and Access-Control-Request-Method: a CORS preflight (Fetch standard). */
export function isPreflight(method: string, headers: IncomingHeaders): boolean {
  return method === 'OPTIONS' && headers.origin !== undefined && headers['access-control-request-method'] !== undefined;
}

/** Tollgate's answer to a preflight: the 204's headers, or a refusal (sent without CORS headers). */
export type PreflightAnswer = { readonly status: 204; readonly headers: Record<string, string> } | { readonly status: 403; readonly refusal: GuardRefusal };

/**
 * Answers a preflight to a route with `cors` (call only when `isPreflight` and
 * `guards.cors` is set). An allowed origin asking for a listed method gets 204 with the
 * configured lists (unlisted request headers too: the browser compares and decides).
 */
export function answerPreflight(guards: CompiledGuards, headers: IncomingHeaders): PreflightAnswer {
  const cors = guards.cors!;
  const origin = headers.origin as string;
  if (guards.origins === null || !guards.origins.allows(origin)) return { status: 403, refusal: ORIGIN_REFUSAL };
  const requested = headers['access-control-request-method'];
  if (typeof requested !== 'string' || !cors.methods.has(requested.trim())) return { status: 403, refusal: CORS_METHOD_REFUSAL };
  return { status: 204, headers: { 'access-control-allow-origin': origin, ...cors.preflightHeaders } };
}

/** A mutable header map with lower-cased names (an upstream's, or one of Tollgate's own responses). */
export type MutableHeaders = Record<string, string | string[] | number | undefined>;

/**
 * The CORS headers of an actual response on a `cors` route: the upstream's CORS headers
 * removed, Tollgate's set when `origin` (the request's, already allowed) is given, and
 * `Origin` appended to `Vary` in any case (the answer depends on it).
 */
export function applyCors(cors: CompiledCors, headers: MutableHeaders, origin: string | undefined): void {
  for (const name of CORS_RESPONSE_HEADERS) if (headers[name] !== undefined) delete headers[name];
  if (origin !== undefined) {
    headers['access-control-allow-origin'] = origin;
    if (cors.allowCredentials !== null) headers['access-control-allow-credentials'] = cors.allowCredentials;
    if (cors.exposeHeaders !== null) headers['access-control-expose-headers'] = cors.exposeHeaders;
  }
  headers.vary = appendVary(headers.vary, 'Origin');
}

/** `Vary` with `token` added unless it is there already (case-insensitive) or `*`. */
export function appendVary(existing: string | string[] | number | undefined, token: string): string {
  if (existing === undefined) return token;
  const text = Array.isArray(existing) ? existing.join(', ') : String(existing);
  if (text.trim() === '') return token;
  const lower = token.toLowerCase();
  for (const part of text.split(',')) {
    const item = part.trim().toLowerCase();
    if (item === lower || item === '*') return text;
  }
  return `${text}, ${token}`;
}
