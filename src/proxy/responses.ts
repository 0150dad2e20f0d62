import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { decorateResponse, type CompiledGuards, type GuardRefusal } from '../guards/index.js';
import type { RateReport } from '../limiter/limiter.js';
import type { CompiledRoute } from '../policy/types.js';
import { ERRORS, errorBody, type ErrorCode } from './errors.js';
import { rateLimitHeaders, retryAfterSeconds } from './rate-headers.js';

/** A response Tollgate makes itself: status, headers and a JSON envelope body. */
export interface OwnResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The 429 for a refused request: Retry-After, X-RateLimit-*, RateLimit*, violation type, envelope. */
export function rateLimitedResponse(route: CompiledRoute, report: RateReport, requestId: string, now: number): OwnResponse {
  const shown = report.outcomes[report.shown];
  const limit = report.checks[report.shown].limit;
  const retryAfter = retryAfterSeconds(shown.retryAfterMs);
  const headers = rateLimitHeaders(report, now);
  headers['retry-after'] = String(retryAfter);
  headers['x-ratelimit-violation-type'] = limit.kind;
  return {
    status: 429,
    headers,
    body: errorBody('RATE_LIMIT_EXCEEDED', route.message, {
      violationType: limit.kind,
      limitType: limit.type,
      retryAfter,
      limit: shown.max,
      route: route.id,
      requestId,
    }),
  };
}

/** Any other Tollgate error (upstream down/timeout, limiter unavailable, shutting down). */
export function errorResponse(code: ErrorCode, requestId: string, status: number = ERRORS[code].status, headers: Record<string, string> = {}): OwnResponse {
  return { status, headers, body: errorBody(code, ERRORS[code].message, { requestId }) };
}

/**
 * A guard's refusal in the usual envelope: `details.requestId`, `details.route` (not for
 * INVALID_PATH, which is refused before any route is matched) and the guard's own details.
 */
export function guardRefusedResponse(refusal: GuardRefusal, requestId: string, routeId: string | undefined): OwnResponse {
  const details: Record<string, unknown> = { ...refusal.details, requestId };
  if (routeId !== undefined) details.route = routeId;
  return { status: refusal.status, headers: { ...refusal.headers }, body: errorBody(refusal.code, ERRORS[refusal.code].message, details) };
}

/** How a route's guards decorate one of Tollgate's own responses (CORS, security headers); see guards/index.ts. */
export interface Decoration {
  readonly guards: CompiledGuards;
  readonly origin: string | undefined;
  readonly https: boolean;
}

/** The response's headers plus those every Tollgate answer carries (JSON body, never cached). */
function ownHeaders(response: OwnResponse, requestId: string, decoration: Decoration | undefined): Record<string, string | number> {
  const headers: Record<string, string | number> = {
    ...response.headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(response.body),
    'cache-control': 'no-store',
    'x-request-id': requestId,
  };
  if (decoration !== undefined) decorateResponse(decoration.guards, headers, decoration.origin, decoration.https);
  return headers;
}

export function send(res: ServerResponse, response: OwnResponse, requestId: string, decoration?: Decoration): void {
  res.writeHead(response.status, ownHeaders(response, requestId, decoration));
  res.end(response.body);
}

/** Writes a complete HTTP/1.1 response on a raw socket (refused upgrade) and closes it. */
export function sendOnSocket(socket: Duplex, response: OwnResponse, requestId: string, decoration?: Decoration): void {
  // Any status: onErrorStatus is configurable.
  let head = `HTTP/1.1 ${response.status} ${STATUS_CODES[response.status] ?? 'Error'}\r\n`;
  const headers = ownHeaders(response, requestId, decoration);
  for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
  socket.end(head + 'connection: close\r\n\r\n' + response.body);
}
