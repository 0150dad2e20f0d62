import { isIPv4 } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { ClientIpConfig } from '../config/types.js';
import type { ClientAddress, ClientIpResolver } from './types.js';
import { canonicalAddress, createAddressSet, isCanonicalIPv6, ipv6Network } from './ip-set.js';

/** Non-IPv4 address text -> what we know of it; IPv6 parsing costs microseconds and peers repeat. */
const ADDRESS_CACHE_SIZE = 10_000;

/** A request whose socket has no address (closed, or a unix socket): one shared key. */
const UNKNOWN_CLIENT: ClientAddress = Object.freeze({ ip: 'unknown', key: 'unknown', peerTrusted: false });

interface KnownAddress {
  /** Canonical text (IPv4-mapped IPv6 as IPv4). */
  readonly ip: string;
  /** Rate-limit key: the IPv4 address, or the IPv6 network. */
  readonly key: string;
  /** In `trustedProxies`. */
  readonly trusted: boolean;
}

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
  const noneTrusted = trusted.size === 0;
  const otherAddresses = new LRUCache<string, KnownAddress>({ max: ADDRESS_CACHE_SIZE });

  /** Undefined when `text` is not an IP address. */
  function lookUp(text: string): KnownAddress | undefined {
    if (isIPv4(text)) return { ip: text, key: text, trusted: !noneTrusted && trusted.has(text) };
    let known = otherAddresses.get(text);
    if (known === undefined) {
      const ip = canonicalAddress(text);
      if (ip === undefined) return undefined; // garbage is not worth a cache slot
      const key = isCanonicalIPv6(ip) ? ipv6Network(ip, prefixLength) : ip;
      known = Object.freeze({ ip, key, trusted: !noneTrusted && trusted.has(ip) });
      otherAddresses.set(text, known);
    }
    return known;
  }

  /**
   * Walks hops from the right. Each hop was appended by the proxy to its right, so a hop is
   * only as believable as that proxy: stop at the first untrusted hop (the client), or at a
   * malformed one (then the last believable hop is the client). All trusted: the leftmost.
   */
  function walkForwardedFor(header: string, peer: KnownAddress): KnownAddress {
    let client = peer;
    let end = header.length;
    for (;;) {
      const comma = end > 0 ? header.lastIndexOf(',', end - 1) : -1;
      const hopText = hopAddress(header.slice(comma + 1, end));
      const hop = hopText === undefined ? undefined : lookUp(hopText);
      if (hop === undefined) return client;
      client = hop;
      if (!hop.trusted || comma < 0) return client;
      end = comma;
    }
  }

  return Object.freeze({
    resolve(peer: string | undefined, xForwardedFor: string | string[] | undefined): ClientAddress {
      const peerAddress = peer === undefined ? undefined : lookUp(peer);
      if (peerAddress === undefined) return UNKNOWN_CLIENT;
      if (!peerAddress.trusted) return { ip: peerAddress.ip, key: peerAddress.key, peerTrusted: false };
      const client =
        xForwardedFor === undefined
          ? peerAddress
          : walkForwardedFor(typeof xForwardedFor === 'string' ? xForwardedFor : xForwardedFor.join(','), peerAddress);
      return { ip: client.ip, key: client.key, peerTrusted: true };
    },
  });
}

/** The address text of one X-Forwarded-For element, tolerating `[v6]`, `[v6]:port` and `v4:port`. */
function hopAddress(element: string): string | undefined {
  let text = element.trim();
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return undefined;
    const rest = text.slice(close + 1);
    if (rest !== '' && !isPort(rest)) return undefined;
    text = text.slice(1, close);
    return text.includes(':') ? text : undefined;
  }
  const colon = text.indexOf(':');
  if (colon > 0 && colon === text.lastIndexOf(':')) {
    const host = text.slice(0, colon);
    return isIPv4(host) && isPort(text.slice(colon)) ? host : undefined;
  }
  return text;
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
