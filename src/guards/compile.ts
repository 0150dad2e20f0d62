/**
 * A route's effective guards, compiled once per load: `defaults.guards` overlaid key by
 * key with the route's own (`guards: off` turns the defaults off), then origin sets,
 * method sets, constant header strings and body validators.
 */
import type { GuardsConfig } from '../config/types.js';
import { jsonValidator, schemaValidator } from './body.js';
import { compileCors } from './cors.js';
import { compileOrigins } from './origins.js';
import { compileSecurityHeaders } from './security-headers.js';
import type { CompiledGuards, GuardRefusal } from './types.js';

/** The guards in force on a route; undefined when it has none. */
export function mergeGuards(defaults: GuardsConfig | undefined, own: GuardsConfig | 'off' | undefined): GuardsConfig | undefined {
  if (own === 'off') return undefined;
  if (defaults === undefined) return own;
  if (own === undefined) return defaults;
  return { ...defaults, ...own };
}

/** Upper-cased set with HEAD joining GET (as `match.methods`: frameworks answer HEAD with the GET handler). */
function methodSet(methods: readonly string[]): Set<string> {
  const set = new Set(methods.map((method) => method.toUpperCase()));
  if (set.has('GET')) set.add('HEAD');
  return set;
}

/**
 * Compiles effective guards (validated by the loader). Null when nothing would run or be
 * added (no guards, or only `securityHeaders: off`), so such a route pays nothing.
 */
export function compileGuards(config: GuardsConfig | undefined): CompiledGuards | null {
  if (config === undefined) return null;
  const methods = config.methods === undefined ? null : methodSet(config.methods);
  const methodRefusal: GuardRefusal | null =
    methods === null ? null : Object.freeze({ guard: 'methods', code: 'METHOD_NOT_ALLOWED', status: 405, headers: Object.freeze({ allow: [...methods].join(', ') }) });
  const origins = config.origins === undefined ? null : compileOrigins(config.origins);
  const cors = config.cors === undefined ? null : compileCors(config.cors, config);
  if (cors !== null && origins === null) throw new Error('guards.cors needs origins');
  const maxBodySize = config.maxBodySize ?? 0;
  const contentTypes = config.contentTypes === undefined ? null : new Set(config.contentTypes.map((type) => type.toLowerCase()));
  let body = null;
  if (config.body !== undefined) {
    if (maxBodySize === 0) throw new Error('guards.body needs maxBodySize');
    body = config.body.schemaDocument !== undefined ? schemaValidator(config.body.schemaDocument) : jsonValidator();
  }
  const csrf = config.csrf === undefined ? null : Object.freeze({ cookie: config.csrf.cookie, header: config.csrf.header.toLowerCase() });
  const authRequired = config.auth === 'required';
  const securityHeaders = config.securityHeaders === undefined ? null : compileSecurityHeaders(config.securityHeaders);
  const checksRequest = methods !== null || origins !== null || cors !== null || maxBodySize > 0 || contentTypes !== null || body !== null || csrf !== null || authRequired;
  const decoratesResponse = cors !== null || securityHeaders !== null;
  if (!checksRequest && !decoratesResponse) return null;
  return Object.freeze({
    methods,
    methodRefusal,
    origins,
    requireOrigin: config.requireOrigin === true,
    cors,
    maxBodySize,
    contentTypes,
    body,
    csrf,
    authRequired,
    securityHeaders,
    checksRequest,
    decoratesResponse,
  });
}
