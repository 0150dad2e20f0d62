import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
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

/** The response's headers plus those every Tollgate answer carries (JSON body, never cached). */
function ownHeaders(response: OwnResponse, requestId: string): Record<string, string | number> {
  return {
    ...response.headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(response.body),
    'cache-control': 'no-store',
    'x-request-id': requestId,
  };
}

export function send(res: ServerResponse, response: OwnResponse, requestId: string): void {
  res.writeHead(response.status, ownHeaders(response, requestId));
  res.end(response.body);
}

/** Writes a complete HTTP/1.1 response on a raw socket (refused upgrade) and closes it. */
export function sendOnSocket(socket: Duplex, response: OwnResponse, requestId: string): void {
  // Any status: onErrorStatus is configurable.
  let head = `HTTP/1.1 ${response.status} ${STATUS_CODES[response.status] ?? 'Error'}\r\n`;
  const headers = ownHeaders(response, requestId);
  for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
  socket.end(head + 'connection: close\r\n\r\n' + response.body);
}
