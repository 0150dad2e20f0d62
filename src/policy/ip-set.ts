import { isIPv4, isIPv6 } from 'node:net';
import ipaddr from 'ipaddr.js';

/**
 * IP addresses in one spelling, and sets of CIDRs to test them against.
 * `node:net` validates (strictly: no `127.1`, no octal); `ipaddr.js` does the bit work.
 */

const IPV4_MAPPED_PREFIX = '::ffff:';

/**
 * The canonical text of an IP address: IPv4 as a dotted quad, IPv6 in RFC 5952 form
 * without a zone id, and IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as the IPv4 address.
 * Undefined when `text` is not an IP address.
 */
export function canonicalAddress(text: string): string | undefined {
  if (isIPv4(text)) return text;
  if (!isIPv6(text)) return undefined;
  // Dual-stack sockets report IPv4 peers this way; skip the full parse for them.
  if (text.startsWith(IPV4_MAPPED_PREFIX) && isIPv4(text.slice(IPV4_MAPPED_PREFIX.length))) {
    return text.slice(IPV4_MAPPED_PREFIX.length);
  }
  const address = ipaddr.IPv6.parse(text);
  if (address.isIPv4MappedAddress()) return address.toIPv4Address().toString();
  return new ipaddr.IPv6(address.parts).toRFC5952String();
}

/** True for canonical IPv6 text (canonical IPv4 never contains a colon). */
export function isCanonicalIPv6(canonical: string): boolean {
  return canonical.includes(':');
}

/** The network of a canonical IPv6 address as `network/prefix` (e.g. `2001:db8:1:2::/64`). */
export function ipv6Network(canonical: string, prefixLength: number): string {
  const parts = ipaddr.IPv6.parse(canonical).parts.slice();
  for (let i = 0; i < parts.length; i++) {
    const bitsKept = Math.min(16, Math.max(0, prefixLength - i * 16));
    parts[i] &= bitsKept === 0 ? 0 : (0xffff << (16 - bitsKept)) & 0xffff;
  }
  return `${new ipaddr.IPv6(parts).toRFC5952String()}/${prefixLength}`;
}

export interface AddressSet {
  readonly size: number;
  /** @param canonical an address as `canonicalAddress` returns it; anything else is not a member */
  has(canonical: string): boolean;
}

/**
 * Compiles CIDRs and bare addresses once. Throws naming `where` and the entry when one
 * is not an address or CIDR. IPv4-mapped IPv6 entries are stored as IPv4, like addresses.
 */
export function createAddressSet(entries: readonly string[], where: string): AddressSet {
  // IPv4 ranges as [network, mask] 32-bit integers: a lookup is a few integer compares.
  const v4: Array<[number, number]> = [];
  const v6: Array<[ipaddr.IPv6, number]> = [];
  for (const entry of entries) {
    const [address, prefixLength] = parseEntry(entry.trim(), where);
    if (address.kind() === 'ipv4') {
      v4.push(ipv4Range(address as ipaddr.IPv4, prefixLength));
    } else if ((address as ipaddr.IPv6).isIPv4MappedAddress() && prefixLength >= 96) {
      v4.push(ipv4Range((address as ipaddr.IPv6).toIPv4Address(), prefixLength - 96));
    } else {
      v6.push([address as ipaddr.IPv6, prefixLength]);
    }
  }
  const size = v4.length + v6.length;
  if (size === 0) return EMPTY_SET;
  return Object.freeze({
    size,
    has(canonical: string): boolean {
      if (isIPv4(canonical)) {
        const value = ipv4ToInt(canonical);
        for (const [network, mask] of v4) if (((value & mask) >>> 0) === network) return true;
        return false;
      }
      if (v6.length === 0 || !isIPv6(canonical)) return false;
      const address = ipaddr.IPv6.parse(canonical);
      for (const range of v6) if (address.match(range)) return true;
      return false;
    },
  });
}

function ipv4Range(address: ipaddr.IPv4, prefixLength: number): [number, number] {
  const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
  return [(ipv4ToInt(address.toString()) & mask) >>> 0, mask];
}

/** A dotted quad already validated by `isIPv4` as an unsigned 32-bit integer. */
function ipv4ToInt(dottedQuad: string): number {
  let value = 0;
  let octet = 0;
  for (let i = 0; i < dottedQuad.length; i++) {
    const c = dottedQuad.charCodeAt(i);
    if (c === 0x2e) {
      value = value * 256 + octet;
      octet = 0;
    } else {
      octet = octet * 10 + (c - 0x30);
    }
  }
  return value * 256 + octet;
}

const EMPTY_SET: AddressSet = Object.freeze({ size: 0, has: () => false });

function parseEntry(entry: string, where: string): [ipaddr.IPv4 | ipaddr.IPv6, number] {
  const slash = entry.indexOf('/');
  const addressText = slash < 0 ? entry : entry.slice(0, slash);
  // Validate with node:net first: ipaddr.js also accepts legacy forms like `10.1`.
  if (!isIPv4(addressText) && !isIPv6(addressText)) {
    throw new Error(`${where}: "${entry}" is not an IP address or CIDR`);
  }
  const address = ipaddr.parse(addressText);
  if (slash < 0) return [address, address.kind() === 'ipv4' ? 32 : 128];
  const prefixText = entry.slice(slash + 1);
  const prefixLength = Number(prefixText);
  const maxPrefix = address.kind() === 'ipv4' ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefixText) || prefixLength > maxPrefix) {
    throw new Error(`${where}: "${entry}" has an invalid prefix length (0-${maxPrefix})`);
  }
  return [address, prefixLength];
}
