import type { RouteMatchConfig } from '../config/types.js';
import { canonicalPath } from './path.js';
import type { CompiledRoute, RouteExplanation, RouteMatcher } from './types.js';

interface CompiledMatcher {
  readonly route: CompiledRoute;
  /** Undefined = any method. */
  readonly methods: ReadonlySet<string> | undefined;
  /** The route answers CORS preflights (`guards.cors`): they match whatever `methods` says. */
  readonly answersPreflights: boolean;
  /** Undefined = upgrades and plain requests alike. */
  readonly websocket: boolean | undefined;
  readonly caseSensitive: boolean;
  /** Tests the canonical path (lower-cased unless `caseSensitive`). */
  readonly matchesPath: (path: string) => boolean;
}

const PREFIX_SUFFIX = '/*';

/**
 * First route whose method, upgrade flag and canonical path match, in file order. The
 * target is canonicalised at most once per case mode per request, not once per route.
 */
export function createRouter(routes: ReadonlyArray<{ route: CompiledRoute; match: RouteMatchConfig }>): RouteMatcher {
  const matchers = routes.map(({ route, match }) => compileMatcher(route, match));
  return Object.freeze({
    match(method: string, rawTarget: string, isUpgrade: boolean, preflight = false): CompiledRoute | undefined {
      let foldedPath: string | undefined;
      let exactPath: string | undefined;
      for (const matcher of matchers) {
        if (matcher.methods !== undefined && !matcher.methods.has(method) && !(preflight && matcher.answersPreflights)) continue;
        if (matcher.websocket !== undefined && matcher.websocket !== isUpgrade) continue;
        const path = matcher.caseSensitive
          ? (exactPath ??= canonicalPath(rawTarget, true))
          : (foldedPath ??= canonicalPath(rawTarget, false));
        if (matcher.matchesPath(path)) return matcher.route;
      }
      return undefined;
    },
    explain(method: string, rawTarget: string, isUpgrade: boolean, preflight = false): RouteExplanation {
      // The same tests as `match`, all of them per route, to say why each earlier route did not match.
      const tried: { route: string; failed: 'path' | 'method' | 'websocket' }[] = [];
      for (const matcher of matchers) {
        const path = canonicalPath(rawTarget, matcher.caseSensitive);
        const failed = !matcher.matchesPath(path)
          ? 'path'
          : matcher.methods !== undefined && !matcher.methods.has(method) && !(preflight && matcher.answersPreflights)
            ? 'method'
            : matcher.websocket !== undefined && matcher.websocket !== isUpgrade
              ? 'websocket'
              : undefined;
        if (failed === undefined) return { route: matcher.route, canonicalPath: path, tried };
        tried.push({ route: matcher.route.id, failed });
      }
      return { route: undefined, canonicalPath: canonicalPath(rawTarget, false), tried };
    },
  });
}

function compileMatcher(route: CompiledRoute, match: RouteMatchConfig): CompiledMatcher {
  const caseSensitive = match.caseSensitive === true;
  return Object.freeze({
    route,
    methods: match.methods === undefined ? undefined : compileMethods(match.methods),
    answersPreflights: route.guards?.cors != null,
    websocket: match.websocket,
    caseSensitive,
    matchesPath: compilePathTest(route.id, match, caseSensitive),
  });
}

/**
 * Upper-cased method set. HEAD joins GET: common frameworks (Express, Fastify, Koa)
 * answer HEAD with the GET handler, so a GET-only limit must not be escapable by HEAD.
 */
function compileMethods(methods: readonly string[]): ReadonlySet<string> {
  const set = new Set(methods.map((method) => method.toUpperCase()));
  if (set.has('GET')) set.add('HEAD');
  return set;
}

function compilePathTest(routeId: string, match: RouteMatchConfig, caseSensitive: boolean): (path: string) => boolean {
  if (match.regex !== undefined) {
    let regex: RegExp;
    try {
      // The path is already lower-cased when case-insensitive; `i` lets the pattern say `Foo`.
      regex = new RegExp(match.regex, caseSensitive ? '' : 'i');
    } catch (error) {
      throw new Error(`route "${routeId}": invalid regex ${JSON.stringify(match.regex)}: ${(error as Error).message}`);
    }
    return (path) => regex.test(path);
  }
  const pattern = match.path;
  if (pattern === undefined) throw new Error(`route "${routeId}": match needs a path or a regex`);
  if (/[?#]/.test(pattern)) throw new Error(`route "${routeId}": path ${JSON.stringify(pattern)} must not contain "?" or "#"`);
  if (!pattern.endsWith(PREFIX_SUFFIX)) {
    const exact = canonicalPath(pattern, caseSensitive);
    return (path) => path === exact;
  }
  // `/a/*` covers `/a` and everything below it, never `/ab`.
  const base = canonicalPath(pattern.slice(0, -PREFIX_SUFFIX.length), caseSensitive);
  if (base === '/') return () => true;
  return (path) =>
    path === base || (path.length > base.length && path.charCodeAt(base.length) === 0x2f && path.startsWith(base));
}
