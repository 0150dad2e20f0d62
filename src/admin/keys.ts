/**
 * Keys as operators know them, turned into exactly the store keys the limiter uses
 * (src/limiter/limiter.ts `clientKey`), and back into the form listings show:
 *
 * | by        | given as (`key`)                         | client key           | shown as               |
 * |-----------|------------------------------------------|----------------------|------------------------|
 * | ip        | an address (IPv6: any of its /64)        | `1.2.3.4`, `2001:db8:1:2::/64` | the same       |
 * | user      | the user id                              | `u:<id>` (`u#<digest>` if long) | the id (`u#...`) |
 * | header:X  | the raw header value                     | `h#<digest>`         | `h#<digest>`           |
 * | global    | (nothing)                                | `*`                  | `*`                    |
 *
 * `listedKey` takes the "shown as" form instead (e.g. a digest copied from a listing):
 * an operator can act on a blocked API key without ever holding it.
 */
import { headerKey, userKey } from '../limiter/limiter.js';
import { canonicalAddress, ipv6Network, isCanonicalIPv6 } from '../policy/ip-set.js';
import type { CompiledLimit, CompiledPolicy, CompiledRoute } from '../policy/types.js';

/** An input error, answered as 400 ADMIN_BAD_REQUEST with its message. */
export class AdminInputError extends Error {
  override readonly name = 'AdminInputError';
}

/** `by` as written in a policy, or `header` for every header limit. */
const BY = /^(ip|user|global|header|header:[!#$%&'*+.^_`|~0-9a-z-]+)$/;

/** Normalises a `by` parameter (header names are case-insensitive). */
export function parseBy(text: string): string {
  const by = text.trim().toLowerCase();
  if (!BY.test(by)) throw new AdminInputError(`by: expected ip, user, global, header or header:NAME, got "${text}"`);
  return by;
}

/** The limits of `route` a `by` selects (`header`: every header limit); all of them for undefined. */
export function limitsBy(route: CompiledRoute, by: string | undefined): CompiledLimit[] {
  if (by === undefined) return [...route.limits];
  return route.limits.filter((l) => l.by === by || (by === 'header' && l.kind === 'header'));
}

/** What an operator named: a key as users know it, or as a listing shows it. */
export type KeyInput = { readonly key: string; readonly listed: boolean } | undefined;

/** The longest key accepted (a header value or user id longer than this is no real one). */
const MAX_KEY_LENGTH = 8192;

/**
 * The client key `limit` counts `input` under, or undefined when the limit cannot take
 * it (an ip limit and a text that is no address, when no `by` narrowed the limits).
 * Throws AdminInputError for a key that is missing or malformed.
 */
export function clientKeyFor(limit: CompiledLimit, input: KeyInput, policy: CompiledPolicy, strict: boolean): string | undefined {
  if (limit.kind === 'global') return '*';
  if (input === undefined) throw new AdminInputError(`key: required for by ${limit.by}`);
  const { key, listed } = input;
  if (key.length === 0 || key.length > MAX_KEY_LENGTH) throw new AdminInputError(`key: expected 1 to ${MAX_KEY_LENGTH} characters`);
  switch (limit.kind) {
    case 'ip': {
      const ip = ipKey(key, policy.config.clientIp.ipv6Prefix);
      if (ip === undefined && strict) throw new AdminInputError(`key: "${key}" is not an IP address`);
      return ip;
    }
    case 'user':
      if (listed && key.startsWith('u#')) return key;
      return userKey(key);
    case 'header': {
      if (!listed) return headerKey(trimHeaderValue(key));
      if (/^h#[A-Za-z0-9_-]{22}$/.test(key)) return key;
      // Requests without the header count under their client IP.
      if (key.startsWith('ip:')) {
        const ip = ipKey(key.slice(3), policy.config.clientIp.ipv6Prefix);
        if (ip !== undefined) return 'ip:' + ip;
      }
      if (strict) throw new AdminInputError(`listedKey: "${key}" is not a header key as listed (h#<digest> or ip:<address>)`);
      return undefined;
    }
  }
}

/** The key of an address as ClientIpResolver keys it: IPv4 itself, IPv6 its network; `net/len` of that network too. */
function ipKey(text: string, prefixLength: number): string | undefined {
  const trimmed = text.trim();
  const slash = trimmed.indexOf('/');
  if (slash >= 0) {
    // A network as listings show it: only the configured prefix length names a key.
    if (trimmed.slice(slash + 1) !== String(prefixLength)) return undefined;
    const network = canonicalAddress(trimmed.slice(0, slash));
    return network !== undefined && isCanonicalIPv6(network) ? ipv6Network(network, prefixLength) : undefined;
  }
  const ip = canonicalAddress(trimmed);
  if (ip === undefined) return undefined;
  return isCanonicalIPv6(ip) ? ipv6Network(ip, prefixLength) : ip;
}

/** Node drops leading and trailing spaces and tabs of a header value: a value pasted with them is the same key. */
function trimHeaderValue(value: string): string {
  return value.replace(/^[ \t]+|[ \t]+$/g, '');
}

/** How a listing shows a client key of a limit of `kind` (the "shown as" column above). */
export function displayKey(kind: CompiledLimit['kind'], clientKey: string): string {
  if (kind === 'user' && clientKey.startsWith('u:')) return clientKey.slice(2);
  return clientKey;
}

/** The kind of limit a `by` names (`header:x` and `header`: header). */
export function kindOfBy(by: string): CompiledLimit['kind'] {
  if (by.startsWith('header')) return 'header';
  return by as CompiledLimit['kind'];
}
