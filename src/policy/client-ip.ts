import { isIPv4 } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { ClientIpConfig } from '../config/types.js';
import type { ClientAddress, ClientIpResolver } from './types.js';
import { canonicalAddress, createAddressSet, isCanonicalIPv6, ipv6Network } from './ip-set.js';

/** Canonical IPv6 address -> its network key; parsing IPv6 costs microseconds, peers repeat. */
const IPV6_KEY_CACHE_SIZE = 10_000;

/** A request whose socket has no address (closed, or a unix socket): one shared key. */
const UNKNOWN_CLIENT: ClientAddress = Object.freeze({ ip: 'unknown', key: 'unknown', peerTrusted: false });

/**
 * Who the client is: the socket peer, or, when the peer is a trusted proxy, the rightmost
 * X-Forwarded-For hop that no trusted proxy accounts for. Spoofed hops to the left of the
 * first untrusted one are never read.
 */
export function createClientIpResolver(config: ClientIpConfig): ClientIpResolver {
  const prefixLength = config.ipv6Prefix;
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > 128) {
    throw new Error(`clientIp.ipv6Prefix must be an integer from 0 to 128, got ${prefixLength}`);
  }
  const trusted = createAddressSet(config.trustedProxies, 'clientIp.trustedProxies');
  const ipv6Keys = new LRUCache<string, string>({ max: IPV6_KEY_CACHE_SIZE });

  function clientAddress(ip: string, peerTrusted: boolean): ClientAddress {
    if (!isCanonicalIPv6(ip)) return { ip, key: ip, peerTrusted };
    let key = ipv6Keys.get(ip);
    if (key === undefined) {
      key = ipv6Network(ip, prefixLength);
      ipv6Keys.set(ip, key);
    }
    return { ip, key, peerTrusted };
  }

  return Object.freeze({
    resolve(peer: string | undefined, xForwardedFor: string | string[] | undefined): ClientAddress {
      const peerIp = peer === undefined ? undefined : canonicalAddress(peer);
      if (peerIp === undefined) return UNKNOWN_CLIENT;
      if (trusted.size === 0 || !trusted.has(peerIp)) return clientAddress(peerIp, false);
      if (xForwardedFor === undefined) return clientAddress(peerIp, true);
      const header = typeof xForwardedFor === 'string' ? xForwardedFor : xForwardedFor.join(',');
      return clientAddress(walkForwardedFor(header, peerIp, trusted.has), true);
    },
  });
}

/**
 * Walks hops from the right. Each hop was appended by the proxy to its right, so a hop is
 * only as believable as that proxy: stop at the first untrusted hop (the client), or at a
 * malformed one (then the last believable hop is the client). All trusted: the leftmost.
 */
function walkForwardedFor(header: string, peerIp: string, isTrusted: (ip: string) => boolean): string {
  let client = peerIp;
  let end = header.length;
  for (;;) {
    const comma = end > 0 ? header.lastIndexOf(',', end - 1) : -1;
    const hop = parseHop(header.slice(comma + 1, end));
    if (hop === undefined) return client;
    client = hop;
    if (!isTrusted(hop) || comma < 0) return client;
    end = comma;
  }
}

/** One X-Forwarded-For element: an address, tolerating `[v6]`, `[v6]:port` and `v4:port`. */
function parseHop(element: string): string | undefined {
  let text = element.trim();
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return undefined;
    const rest = text.slice(close + 1);
    if (rest !== '' && !isPort(rest)) return undefined;
    text = text.slice(1, close);
    return text.includes(':') ? canonicalAddress(text) : undefined;
  }
  const colon = text.indexOf(':');
  if (colon > 0 && colon === text.lastIndexOf(':')) {
    const host = text.slice(0, colon);
    return isIPv4(host) && isPort(text.slice(colon)) ? host : undefined;
  }
  return canonicalAddress(text);
}

/** `:1`..`:65535` */
function isPort(text: string): boolean {
  if (text.length < 2 || text.length > 6 || text.charCodeAt(0) !== 0x3a) return false;
  let value = 0;
  for (let i = 1; i < text.length; i++) {
    const digit = text.charCodeAt(i) - 0x30;
    if (digit < 0 || digit > 9) return false;
    value = value * 10 + digit;
  }
  return value > 0 && value <= 65535;
}
