import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { decorateResponse, type CompiledGuards, type GuardRefusal } from '../guards/index.js';
import type { RateReport } from '../limiter/limiter.js';
import type { CompiledRoute } from '../policy/types.js';
import { ERRORS, errorBody, type ErrorCode } from './errors.js';
import { rateLimitHeaders, retryAfterSeconds } from './rate-headers.js';
import { closeAfterAnswer } from './upgrade.js';

/**
 * A response Tollgate makes itself: status, headers, and what its body says, written
 * in either format by `render` (the one place that writes their bodies).
 */
export interface OwnResponse {
  status: number;
  headers: Record<string, string>;
  code: ErrorCode;
  /** The envelope's `error.message`; the problem's `detail`. */
  message: string;
  /** The envelope's `error.details` (`requestId` included). */
  details: Record<string, unknown>;
  /**
   * Problem members beyond type, title, status, detail, requestId and retryAfter
   * (`violated-policies`, `errors`); built only for a problem body (a flood of 429s in the
   * envelope format pays nothing for them).
   */
  extensions?: () => Record<string, unknown>;
}

/** `responses.format`: the body of Tollgate's own answers. */
export type ResponseFormat = 'envelope' | 'problem';

const CONTENT_TYPES: Readonly<Record<ResponseFormat, string>> = {
  envelope: 'application/json; charset=utf-8',
  problem: 'application/problem+json',
};

/** Media types are case-insensitive; a regex test allocates nothing. */
const MENTIONS_PROBLEM = /problem\+json/i;

/**
 * The format of one answer: the policy's, unless the client's Accept prefers
 * `application/problem+json` to `application/json` (q-values honoured; `*\/*` and no
 * Accept keep the policy's). Only an Accept that mentions `problem+json` is parsed: the
 * common request costs one search and allocates nothing.
 */
export function responseFormat(configured: ResponseFormat, accept: string | string[] | undefined): ResponseFormat {
  if (configured === 'problem' || typeof accept !== 'string' || !MENTIONS_PROBLEM.test(accept)) return configured;
  return prefersProblem(accept) ? 'problem' : configured;
}

/** Media ranges' specificity: the most specific range that matches a type gives its q (RFC 9110 12.5.1). */
function prefersProblem(accept: string): boolean {
  let problem = { q: 0, specificity: 0 };
  let json = { q: 0, specificity: 0 };
  for (const item of accept.split(',')) {
    const [range, ...params] = item.split(';');
    const type = range.trim().toLowerCase();
    let q = 1;
    for (const param of params) {
      const [name, value] = param.split('=');
      if (name.trim().toLowerCase() === 'q') {
        const parsed = Number(value?.trim());
        q = Number.isFinite(parsed) && parsed >= 0 && parsed <= 1 ? parsed : 0;
      }
    }
    const specificity = type === '*/*' ? 1 : type === 'application/*' ? 2 : 3;
    if ((type === 'application/problem+json' || specificity < 3) && specificity > problem.specificity) problem = { q, specificity };
    if ((type === 'application/json' || specificity < 3) && specificity > json.specificity) json = { q, specificity };
  }
  return problem.q > json.q;
}

/** The body of `response` in `format`. Problem details: RFC 9457, with Tollgate's `requestId` and, when it says when to retry, `retryAfter`. */
export function render(response: OwnResponse, format: ResponseFormat): string {
  if (format === 'envelope') return errorBody(response.code, response.message, response.details);
  const error: { type?: string; title?: string; message: string } = ERRORS[response.code];
  const retryAfter = response.headers['retry-after'];
  return JSON.stringify({
    type: error.type ?? 'about:blank',
    title: error.title ?? error.message,
    status: response.status,
    detail: response.message,
    ...response.extensions?.(),
    requestId: response.details.requestId,
    ...(retryAfter === undefined ? {} : { retryAfter: Number(retryAfter) }),
  });
}

/** The 429 for a refused request: Retry-After, X-RateLimit-*, RateLimit*, violation type; the policies that refused (problem details). */
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
    code: 'RATE_LIMIT_EXCEEDED',
    message: route.message,
    details: {
      violationType: limit.kind,
      limitType: limit.type,
      retryAfter,
      limit: shown.max,
      route: route.id,
      requestId,
    },
    extensions: () => ({ 'violated-policies': violatedPolicies(report) }),
  };
}

/** The IETF policy names of the limits that refused (not every limit applied). */
function violatedPolicies(report: RateReport): string[] {
  const names: string[] = [];
  for (let i = 0; i < report.outcomes.length; i++) if (!report.outcomes[i].allowed) names.push(report.checks[i].limit.policyName);
  return names;
}

/** Any other Tollgate error (upstream down/timeout, limiter unavailable, shutting down). */
export function errorResponse(code: ErrorCode, requestId: string, status: number = ERRORS[code].status, headers: Record<string, string> = {}): OwnResponse {
  return { status, headers, code, message: ERRORS[code].message, details: { requestId } };
}

/**
 * A guard's refusal: `details.requestId`, `details.route` (not for INVALID_PATH, which
 * is refused before any route is matched) and the guard's own details (`errors`, also
 * a problem member).
 */
export function guardRefusedResponse(refusal: GuardRefusal, requestId: string, routeId: string | undefined): OwnResponse {
  const details: Record<string, unknown> = { ...refusal.details, requestId };
  if (routeId !== undefined) details.route = routeId;
  return {
    status: refusal.status,
    headers: { ...refusal.headers },
    code: refusal.code,
    message: ERRORS[refusal.code].message,
    details,
    ...(refusal.details === undefined ? {} : { extensions: () => ({ ...refusal.details }) }),
  };
}

/** How a route's guards decorate one of Tollgate's own responses (CORS, security headers); see guards/index.ts. */
export interface Decoration {
  readonly guards: CompiledGuards;
  readonly origin: string | undefined;
  readonly https: boolean;
}

/** The response's headers plus those every Tollgate answer carries (JSON body, never cached). */
function ownHeaders(response: OwnResponse, body: string, format: ResponseFormat, requestId: string, decoration: Decoration | undefined): Record<string, string | number> {
  const headers: Record<string, string | number> = {
    ...response.headers,
    'content-type': CONTENT_TYPES[format],
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-request-id': requestId,
  };
  if (decoration !== undefined) decorateResponse(decoration.guards, headers, decoration.origin, decoration.https);
  return headers;
}

export function send(res: ServerResponse, response: OwnResponse, requestId: string, format: ResponseFormat, decoration?: Decoration): void {
  const body = render(response, format);
  res.writeHead(response.status, ownHeaders(response, body, format, requestId, decoration));
  res.end(body);
}

/** Writes a complete HTTP/1.1 response on a raw socket (refused upgrade) and closes it. */
export function sendOnSocket(socket: Duplex, response: OwnResponse, requestId: string, format: ResponseFormat, decoration?: Decoration): void {
  const body = render(response, format);
  // Any status: onErrorStatus is configurable.
  let head = `HTTP/1.1 ${response.status} ${STATUS_CODES[response.status] ?? 'Error'}\r\n`;
  const headers = ownHeaders(response, body, format, requestId, decoration);
  for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
  closeAfterAnswer(socket);
  socket.end(head + 'connection: close\r\n\r\n' + body);
}
