/**
 * Origin allowlists: `https://app.example.com`, `https://*.example.com` (one or more
 * labels), `null`. Compared in the serialised form a browser sends (RFC 6454: scheme,
 * host, port; default ports dropped, host lower-cased), never by substring or prefix:
 * `https://app.example.com.evil.test` is not `https://app.example.com`.
 */

/** Ports a scheme implies; written out they are dropped (`https://a.example:443` is `https://a.example`). */
const DEFAULT_PORTS: Readonly<Record<string, string>> = { http: '80', https: '443', ws: '80', wss: '443' };

/** `scheme://authority` and nothing else (no path, query, fragment or userinfo). */
const ORIGIN_SHAPE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#@\s]+)$/;
/** `scheme://host...` followed by a path, query or fragment: the usual mistake. */
const WITH_PATH = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#@\s]+)[/?#]/;
const PORT = /^\d{1,5}$/;
const HOST_LABELS = /^[a-z0-9-]+(\.[a-z0-9-]+)*$/;
const WILDCARD_PLACEHOLDER = 'tollgate-wildcard-label';

interface OriginParts {
  readonly scheme: string;
  /** Lower-cased; IPv6 in brackets. */
  readonly host: string;
  /** '' for the scheme's default port. */
  readonly port: string;
}

function serialise(parts: OriginParts): string {
  return `${parts.scheme}://${parts.host}${parts.port === '' ? '' : `:${parts.port}`}`;
}

/** Splits `host[:port]` (`[v6]:port` too); undefined when malformed. */
function splitAuthority(scheme: string, authority: string): OriginParts | undefined {
  let host = authority;
  let port = '';
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0) return undefined;
    host = authority.slice(0, close + 1);
    const rest = authority.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) return undefined;
      port = rest.slice(1);
    }
  } else {
    const colon = authority.lastIndexOf(':');
    if (colon >= 0) {
      host = authority.slice(0, colon);
      port = authority.slice(colon + 1);
    }
  }
  if (host === '' || host === '[]') return undefined;
  if (port !== '') {
    if (!PORT.test(port) || Number(port) > 65535) return undefined;
    port = String(Number(port));
    if (DEFAULT_PORTS[scheme] === port) port = '';
  }
  return { scheme, host: host.toLowerCase(), port };
}

/**
 * A request's `Origin` in serialised form, or undefined when it is not one (`null`,
 * garbage, a path). Only ASCII: browsers send internationalised hosts as punycode.
 */
function parseRequestOrigin(text: string): OriginParts | undefined {
  const match = ORIGIN_SHAPE.exec(text);
  if (match === null) return undefined;
  // eslint-disable-next-line no-control-regex
  if (/[^\x21-\x7e]/.test(match[2])) return undefined;
  return splitAuthority(match[1].toLowerCase(), match[2]);
}

/** Why `text` cannot be an entry of `origins`, or undefined when it can. */
export function originPatternProblem(text: string): string | undefined {
  if (text === '*') return '"*" would let every site in; leave origins out instead (without it any origin passes)';
  if (text === 'null') return undefined;
  const withPath = WITH_PATH.exec(text);
  if (withPath !== null) return `an origin has no path, query or fragment: write ${JSON.stringify(withPath[1])}`;
  const match = ORIGIN_SHAPE.exec(text);
  if (match === null) return `must be an origin (scheme://host[:port], e.g. https://app.example.com) or null, got ${JSON.stringify(text)}`;
  const parts = configOrigin(text);
  if (parts === undefined) {
    if (text.includes('*') && !/^[^:]+:\/\/\*\.[^*]+$/.test(text)) return `a wildcard may only be a leading "*." label (e.g. https://*.example.com), got ${JSON.stringify(text)}`;
    return `is not a valid origin (scheme://host[:port]), got ${JSON.stringify(text)}`;
  }
  return undefined;
}

interface OriginPattern extends OriginParts {
  /** `*.example.com`: host holds the suffix `.example.com`. */
  readonly wildcard: boolean;
}

/** An `origins` entry parsed; international hosts become punycode as browsers send them. */
function configOrigin(text: string): OriginPattern | undefined {
  const match = ORIGIN_SHAPE.exec(text);
  if (match === null) return undefined;
  const scheme = match[1].toLowerCase();
  let authority = match[2];
  const wildcard = authority.startsWith('*.');
  if (wildcard) authority = WILDCARD_PLACEHOLDER + authority.slice(1);
  if (authority.includes('*')) return undefined;
  const parts = splitAuthority(scheme, authority);
  if (parts === undefined) return undefined;
  let host = parts.host;
  if (!host.startsWith('[')) {
    // WHATWG host parsing: IDNA to punycode, lower case; refuses forbidden code points.
    try {
      host = new URL(`http://${host}`).hostname;
    } catch {
      return undefined;
    }
    if (!HOST_LABELS.test(host)) return undefined;
  }
  if (wildcard) {
    if (!host.startsWith(`${WILDCARD_PLACEHOLDER}.`)) return undefined;
    host = host.slice(WILDCARD_PLACEHOLDER.length);
  }
  return { scheme, host, port: parts.port, wildcard };
}

/** Compiled `origins`: answers whether a request's `Origin` header is listed. */
export interface OriginSet {
  allows(origin: string): boolean;
}

/**
 * Compiles an `origins` list (entries already validated). An exact hit on the header as
 * sent costs one Set lookup; only other spellings (upper case, default port written
 * out) and wildcards are parsed.
 */
export function compileOrigins(entries: readonly string[]): OriginSet {
  const exact = new Set<string>();
  const wildcards: OriginPattern[] = [];
  for (const entry of entries) {
    if (entry === 'null') {
      exact.add('null');
      continue;
    }
    const pattern = configOrigin(entry);
    if (pattern === undefined) throw new Error(`origins: ${JSON.stringify(entry)} is not an origin`);
    if (pattern.wildcard) wildcards.push(pattern);
    else exact.add(serialise(pattern));
  }
  return Object.freeze({
    allows(origin: string): boolean {
      if (exact.has(origin)) return true;
      const parts = parseRequestOrigin(origin);
      if (parts === undefined) return false;
      if (exact.has(serialise(parts))) return true;
      if (wildcards.length === 0 || !HOST_LABELS.test(parts.host)) return false;
      for (const w of wildcards) {
        // `.example.com` must be a proper suffix: `example.com` itself is not `*.example.com`.
        if (w.scheme === parts.scheme && w.port === parts.port && parts.host.length > w.host.length && parts.host.endsWith(w.host)) return true;
      }
      return false;
    },
  });
}
