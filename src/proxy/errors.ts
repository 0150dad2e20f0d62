/**
 * Every error Tollgate answers with itself (never the upstream's), with its stable
 * code and status. README's "Responses" section documents each; a test checks that.
 */
export const ERRORS = {
  RATE_LIMIT_EXCEEDED: { status: 429, message: 'Too many requests, please retry later' },
  RATE_LIMITER_UNAVAILABLE: { status: 503, message: 'Rate limiter unavailable, please retry shortly' },
  UPSTREAM_UNAVAILABLE: { status: 502, message: 'Upstream service unavailable' },
  UPSTREAM_TIMEOUT: { status: 504, message: 'Upstream service timed out' },
  SHUTTING_DOWN: { status: 503, message: 'Server is shutting down, please retry' },
  INTERNAL_ERROR: { status: 500, message: 'Internal error' },
  // Request guards (src/guards/) and path hygiene.
  METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed on this endpoint' },
  ORIGIN_NOT_ALLOWED: { status: 403, message: 'Origin not allowed' },
  CORS_METHOD_NOT_ALLOWED: { status: 403, message: 'Method not allowed for cross-origin requests' },
  AUTH_REQUIRED: { status: 401, message: 'Authentication required' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'Request body too large' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Unsupported content type' },
  INVALID_BODY: { status: 400, message: 'Request body is invalid' },
  CSRF_TOKEN_INVALID: { status: 403, message: 'CSRF token missing or invalid' },
  INVALID_PATH: { status: 400, message: 'Invalid request path' },
  // The admin API (src/admin/).
  ADMIN_UNAUTHORIZED: { status: 401, message: 'Missing or wrong admin token' },
  ADMIN_BAD_REQUEST: { status: 400, message: 'Bad admin request' },
  ADMIN_NOT_FOUND: { status: 404, message: 'No such admin endpoint' },
  ADMIN_METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed on this admin endpoint' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

/** The JSON envelope every Tollgate-made error response uses. */
export function errorBody(code: ErrorCode, message: string, details: Record<string, unknown>): string {
  return JSON.stringify({ success: false, error: { code, message, details } });
}
