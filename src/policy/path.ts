/**
 * One spelling per path, so that spelling a path differently cannot escape a limit.
 *
 * Steps: take the path of an origin-form or absolute-form target (query and fragment never
 * count); decode percent-escapes of unreserved characters (`%41` -> `A`) and upper-case the
 * hex of the others; read `\`, `%2F` and `%5C` as `/` (decoded once: `%252F` stays the text
 * `%2F`), because upstreams that decode them would otherwise see a path no route matched;
 * drop `;` path parameters of each segment (`/login;x=1` is `/login`, `..;x` is `..`), as
 * servlet containers do; collapse empty segments; then resolve `.` and `..` (never above the
 * root), so `/a/..;x/b` and `/a%2F..%2Fb` are `/b`; drop the trailing slash (root stays `/`);
 * lower-case ASCII letters unless `caseSensitive`. Non-ASCII characters (only route patterns
 * can contain them: Node refuses raw bytes above 0x7F in a request target) become UTF-8
 * percent-escapes. Never throws; a target `isInvalidPath` refuses gets some spelling (a
 * broken `%` reads as `%25`), but the proxy answers it with 400 before matching.
 */
export function canonicalPath(rawTarget: string, caseSensitive: boolean): string {
  const from = pathStart(rawTarget);
  if (from < 0) return '/';
  const to = pathEnd(rawTarget, from);
  if (from === to) return '/';
  // A target not starting with `/` (garbage, `*`) is read as a path below the root.
  if (rawTarget.charCodeAt(from) !== SLASH || needsWork(rawTarget, from, to, caseSensitive)) {
    return rebuild(rawTarget, from, to, caseSensitive);
  }
  return rawTarget.slice(from, to);
}

const SLASH = 0x2f;
const BACKSLASH = 0x5c;
const PERCENT = 0x25;
const DOT = 0x2e;
const QUESTION = 0x3f;
const SEMICOLON = 0x3b;
const HASH = 0x23;
const UPPER_A = 0x41;
const UPPER_Z = 0x5a;
const HEX_DIGITS = '0123456789ABCDEF';
const REPLACEMENT_ESCAPE = '%EF%BF%BD'; // U+FFFD, for lone surrogates

/** Index where the path begins; -1 when an absolute-form target has no path (means `/`). */
function pathStart(target: string): number {
  if (target.charCodeAt(0) === SLASH) return 0;
  const authority = absoluteFormAuthority(target);
  if (authority < 0) return 0;
  for (let i = authority; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c === SLASH) return i;
    if (c === QUESTION || c === HASH) return -1;
  }
  return -1;
}

/** For `scheme://...`, the index after `://`; otherwise -1. */
function absoluteFormAuthority(target: string): number {
  const first = target.charCodeAt(0) | 0x20;
  if (first < 0x61 || first > 0x7a) return -1;
  for (let i = 1; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c === 0x3a) return target.startsWith('//', i + 1) ? i + 3 : -1; // ':'
    const isSchemeChar =
      ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2b || c === 0x2d || c === DOT;
    if (!isSchemeChar) return -1;
  }
  return -1;
}

function pathEnd(target: string, from: number): number {
  for (let i = from; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c === QUESTION || c === HASH) return i;
  }
  return target.length;
}

/** Cheap scan: does anything in target[from, to) differ from its canonical form? */
function needsWork(target: string, from: number, to: number, caseSensitive: boolean): boolean {
  if (to - from > 1 && target.charCodeAt(to - 1) === SLASH) return true;
  let previous = 0;
  for (let i = from; i < to; i++) {
    const c = target.charCodeAt(i);
    if (c === PERCENT || c === BACKSLASH || c === SEMICOLON || c > 0x7e) return true;
    if (previous === SLASH && (c === SLASH || c === DOT)) return true;
    if (!caseSensitive && c >= UPPER_A && c <= UPPER_Z) return true;
    previous = c;
  }
  return false;
}

function rebuild(target: string, from: number, to: number, caseSensitive: boolean): string {
  const segments: string[] = [];
  let segment = '';
  // After a `;` up to the next separator: a path parameter, dropped.
  let inParameters = false;
  for (let i = from; i < to; i++) {
    const c = target.charCodeAt(i);
    if (c === SLASH || c === BACKSLASH) {
      pushSegment(segments, segment);
      segment = '';
      inParameters = false;
    } else if (c === PERCENT) {
      const high = hexValue(target.charCodeAt(i + 1));
      const low = high < 0 || i + 2 >= to ? -1 : hexValue(target.charCodeAt(i + 2));
      if (low < 0) {
        if (!inParameters) segment += '%25'; // a lone `%` is spelled as the escape it stands for
        continue;
      }
      const byte = high * 16 + low;
      i += 2;
      if (byte === SLASH || byte === BACKSLASH) {
        pushSegment(segments, segment);
        segment = '';
        inParameters = false;
      } else if (!inParameters) {
        segment += isUnreserved(byte)
          ? String.fromCharCode(caseSensitive ? byte : lowerAscii(byte))
          : '%' + HEX_DIGITS[high] + HEX_DIGITS[low];
      }
    } else if (c > 0x7e) {
      const codePoint = target.codePointAt(i)!;
      if (codePoint > 0xffff) i++;
      if (!inParameters) segment += codePoint >= 0xd800 && codePoint <= 0xdfff ? REPLACEMENT_ESCAPE : utf8Escapes(codePoint);
    } else if (c === SEMICOLON) {
      inParameters = true;
    } else if (!inParameters) {
      segment += String.fromCharCode(caseSensitive ? c : lowerAscii(c));
    }
  }
  pushSegment(segments, segment);
  return '/' + segments.join('/');
}

function pushSegment(segments: string[], segment: string): void {
  if (segment === '' || segment === '.') return;
  if (segment === '..') segments.pop();
  else segments.push(segment);
}

/** RFC 3986 unreserved: ALPHA / DIGIT / `-` / `.` / `_` / `~`. */
function isUnreserved(byte: number): boolean {
  return (
    (byte >= 0x41 && byte <= 0x5a) ||
    (byte >= 0x61 && byte <= 0x7a) ||
    (byte >= 0x30 && byte <= 0x39) ||
    byte === 0x2d ||
    byte === DOT ||
    byte === 0x5f ||
    byte === 0x7e
  );
}

function lowerAscii(c: number): number {
  return c >= UPPER_A && c <= UPPER_Z ? c + 0x20 : c;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

function utf8Escapes(codePoint: number): string {
  let escapes = '';
  for (const byte of Buffer.from(String.fromCodePoint(codePoint), 'utf8')) {
    escapes += '%' + HEX_DIGITS[byte >> 4] + HEX_DIGITS[byte & 0x0f];
  }
  return escapes;
}

/**
 * A request target whose path must be refused (400 INVALID_PATH) before any matching: an
 * invalid percent-escape (`%zz`, a lone `%`), an escaped NUL (`%00`), or, with
 * `rejectEscapedSlashes` (`paths.escapedSlashes: reject`), any `%2F` or `%5C`. Only the
 * path counts, not the query. A target without `%` costs one indexOf.
 */
export function isInvalidPath(rawTarget: string, rejectEscapedSlashes: boolean): boolean {
  let i = rawTarget.indexOf('%');
  if (i < 0) return false;
  const from = pathStart(rawTarget);
  if (from < 0) return false;
  const to = pathEnd(rawTarget, from);
  if (i < from) i = rawTarget.indexOf('%', from);
  while (i >= 0 && i < to) {
    const high = hexValue(rawTarget.charCodeAt(i + 1));
    const low = high < 0 || i + 2 >= to ? -1 : hexValue(rawTarget.charCodeAt(i + 2));
    if (low < 0) return true;
    const byte = high * 16 + low;
    if (byte === 0) return true;
    if (rejectEscapedSlashes && (byte === SLASH || byte === BACKSLASH)) return true;
    i = rawTarget.indexOf('%', i + 3);
  }
  return false;
}
