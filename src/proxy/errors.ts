/**
 * Every error Tollgate answers with itself (never the upstream's), with its stable
 * code, status and RFC 9457 problem type (`responses.format: problem`). README's
 * "Responses" section documents each; a test checks that.
 *
 * Problem types: the 429's is the IANA-registered `quota-exceeded`
 * (draft-ietf-httpapi-ratelimit-headers); the others are Tollgate's own `tag:` URIs
 * (RFC 4151): identifiers to compare, not pages to fetch (RFC 9457 does not require a type
 * to resolve), so they stay the same whoever hosts Tollgate's documentation.
 */
const TYPE = 'tag:tollgate,2026:';

export const ERRORS = {
  RATE_LIMIT_EXCEEDED: {
    status: 429,
    message: 'Too many requests, please retry later',
    type: 'https://iana.org/assignments/http-problem-types#quota-exceeded',
    title: 'Request cannot be satisfied as assigned quota has been exceeded',
  },
  RATE_LIMITER_UNAVAILABLE: { status: 503, message: 'Rate limiter unavailable, please retry shortly', type: `${TYPE}rate-limiter-unavailable` },
  UPSTREAM_UNAVAILABLE: { status: 502, message: 'Upstream service unavailable', type: `${TYPE}upstream-unavailable` },
  UPSTREAM_TIMEOUT: { status: 504, message: 'Upstream service timed out', type: `${TYPE}upstream-timeout` },
  SHUTTING_DOWN: { status: 503, message: 'Server is shutting down, please retry', type: `${TYPE}shutting-down` },
  INTERNAL_ERROR: { status: 500, message: 'Internal error', type: `${TYPE}internal-error` },
  // Request guards (src/guards/) and path hygiene.
  METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed on this endpoint', type: `${TYPE}method-not-allowed` },
  ORIGIN_NOT_ALLOWED: { status: 403, message: 'Origin not allowed', type: `${TYPE}origin-not-allowed` },
  CORS_METHOD_NOT_ALLOWED: { status: 403, message: 'Method not allowed for cross-origin requests', type: `${TYPE}cors-method-not-allowed` },
  AUTH_REQUIRED: { status: 401, message: 'Authentication required', type: `${TYPE}auth-required` },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'Request body too large', type: `${TYPE}payload-too-large` },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Unsupported content type', type: `${TYPE}unsupported-media-type` },
  INVALID_BODY: { status: 400, message: 'Request body is invalid', type: `${TYPE}invalid-body` },
  CSRF_TOKEN_INVALID: { status: 403, message: 'CSRF token missing or invalid', type: `${TYPE}csrf-token-invalid` },
  INVALID_PATH: { status: 400, message: 'Invalid request path', type: `${TYPE}invalid-path` },
  INVALID_HOST: { status: 400, message: 'More than one Host header', type: `${TYPE}invalid-host` },
  // The admin API (src/admin/); it always answers in the envelope.
  ADMIN_UNAUTHORIZED: { status: 401, message: 'Missing or wrong admin token' },
  ADMIN_BAD_REQUEST: { status: 400, message: 'Bad admin request' },
  ADMIN_NOT_FOUND: { status: 404, message: 'No such admin endpoint' },
  ADMIN_METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed on this admin endpoint' },
} as const satisfies Record<string, { status: number; message: string; type?: string; title?: string }>;

export type ErrorCode = keyof typeof ERRORS;

/** The codes the proxy answers with (every one with a problem type); the admin API's are not among them. */
export type ProxyErrorCode = { [C in ErrorCode]: (typeof ERRORS)[C] extends { type: string } ? C : never }[ErrorCode];

/** The JSON envelope every Tollgate-made error response uses (`responses.format: envelope`, and the admin API). */
export function errorBody(code: ErrorCode, message: string, details: Record<string, unknown>): string {
  return JSON.stringify({ success: false, error: { code, message, details } });
}
