import type { ErrorCode } from '../proxy/errors.js';
import type { OriginSet } from './origins.js';

/**
 * A guard's key in the policy; the `guard` label of tollgate_guard_refusals_total.
 * `path` is the path hygiene check every request gets (INVALID_PATH), matched or not.
 */
export type GuardName = 'methods' | 'origins' | 'cors' | 'maxBodySize' | 'contentTypes' | 'body' | 'csrf' | 'auth' | 'path' | 'host';

/** Why a guard refused a request: what the proxy answers (the error envelope), counts and logs. */
export interface GuardRefusal {
  readonly guard: GuardName;
  readonly code: ErrorCode;
  readonly status: number;
  /** Extra response headers (`Allow`, `WWW-Authenticate`). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Extra `error.details` fields (`errors` of INVALID_BODY); never a submitted value. */
  readonly details?: Readonly<Record<string, unknown>>;
}

/** A JSON body check compiled once: undefined when valid, else up to 5 problems. */
export type BodyValidator = (body: Buffer) => BodyProblem[] | undefined;

/** One problem with a body: where (a JSON Pointer into the body, '' = the whole body) and what. */
export interface BodyProblem {
  readonly path: string;
  readonly message: string;
}

export interface CompiledCors {
  /** Upper-cased methods a preflight may ask for. */
  readonly methods: ReadonlySet<string>;
  /** Constant header values of a successful preflight answer (Allow-Origin excepted). */
  readonly preflightHeaders: Readonly<Record<string, string>>;
  /** `true` or null: Access-Control-Allow-Credentials on actual responses. */
  readonly allowCredentials: string | null;
  /** Access-Control-Expose-Headers on actual responses, or null. */
  readonly exposeHeaders: string | null;
}

export interface CompiledSecurityHeaders {
  /** [lower-cased name, value] added to every response of the route. */
  readonly always: ReadonlyArray<readonly [string, string]>;
  /** Strict-Transport-Security value when the client's connection was HTTPS, or null. */
  readonly hsts: string | null;
  /** Replace the upstream's values (map form with `override: true`). */
  readonly override: boolean;
}

/**
 * A route's effective guards, compiled once per load. A route without guards has
 * `guards: null` on its CompiledRoute, so it pays nothing.
 */
export interface CompiledGuards {
  /** Methods the route accepts (HEAD with GET), or null for any. */
  readonly methods: ReadonlySet<string> | null;
  /** The 405 for any other method (with `Allow`), built once. */
  readonly methodRefusal: GuardRefusal | null;
  readonly origins: OriginSet | null;
  readonly requireOrigin: boolean;
  readonly cors: CompiledCors | null;
  /** Bytes; 0 = no limit. */
  readonly maxBodySize: number;
  /** Lower-cased media types, or null for any. */
  readonly contentTypes: ReadonlySet<string> | null;
  /** Null: the body is streamed, never buffered. */
  readonly body: BodyValidator | null;
  readonly csrf: { readonly cookie: string; readonly header: string } | null;
  readonly authRequired: boolean;
  readonly securityHeaders: CompiledSecurityHeaders | null;
  /** Any check runs on the request (false: the route only decorates responses). */
  readonly checksRequest: boolean;
  /** Something decorates responses (CORS or security headers). */
  readonly decoratesResponse: boolean;
}
