/**
 * What the upstream may believe about a request's client and identity, whatever the
 * client sent (README "Path and header hygiene"):
 * - `X-Real-IP` is always Tollgate's resolved client IP (a client's, even a trusted
 *   proxy's, is replaced);
 * - the `identity.forward` names are removed from every client request and, on matched
 *   routes, set from the identity Tollgate believed (a verified JWT, or the identity header
 *   from a trusted proxy), so the app can trust them without verifying the token again;
 * - from an untrusted peer, `Forwarded` and the identity header are removed (the
 *   `X-Forwarded-*` headers are replaced by the forwarder already).
 * The forwarder calls `drops` for each client header and `append`/`assign` once.
 */
import type { IdentityConfig } from '../config/types.js';
import type { Identity } from './types.js';

export interface UpstreamHeaders {
  /** True when the client's header `name` (any case) must not reach the upstream. */
  drops(name: string, peerTrusted: boolean): boolean;
  /** Appends `name, value` pairs (undici's flat form): X-Real-IP, then the identity headers. */
  append(out: string[], clientIp: string, identity: Identity | undefined): void;
  /** The same into a header record (a WebSocket handshake). */
  assign(out: Record<string, string | string[]>, clientIp: string, identity: Identity | undefined): void;
}

const REAL_IP = 'x-real-ip';
const FORWARDED = 'forwarded';

export function createUpstreamHeaders(identity: IdentityConfig | undefined): UpstreamHeaders {
  const userHeader = identity?.forward?.user;
  const tierHeader = identity?.forward?.tier;
  const always = new Set([REAL_IP, ...(userHeader === undefined ? [] : [userHeader]), ...(tierHeader === undefined ? [] : [tierHeader])]);
  const untrusted = new Set([FORWARDED, ...(identity?.header === undefined ? [] : [identity.header])]);
  // Only a name of one of these lengths needs lower-casing to be checked.
  const lengths = new Set([...always, ...untrusted].map((name) => name.length));
  return Object.freeze({
    drops(name: string, peerTrusted: boolean): boolean {
      if (!lengths.has(name.length)) return false;
      const lower = name.toLowerCase();
      return always.has(lower) || (!peerTrusted && untrusted.has(lower));
    },
    append(out: string[], clientIp: string, who: Identity | undefined): void {
      out.push(REAL_IP, clientIp);
      if (who === undefined) return;
      if (userHeader !== undefined && who.userId !== undefined) out.push(userHeader, who.userId);
      if (tierHeader !== undefined && who.tier !== undefined) out.push(tierHeader, who.tier);
    },
    assign(out: Record<string, string | string[]>, clientIp: string, who: Identity | undefined): void {
      out[REAL_IP] = clientIp;
      if (who === undefined) return;
      if (userHeader !== undefined && who.userId !== undefined) out[userHeader] = who.userId;
      if (tierHeader !== undefined && who.tier !== undefined) out[tierHeader] = who.tier;
    },
  });
}
