import type { CloseReason } from './types.js';

/**
 * How long both closing handshakes may take once Tollgate (or a peer) started one,
 * and how long the sockets then have to close, before they are destroyed.
 */
export const CLOSE_HANDSHAKE_MS = 1000; // 1s

/** A close Tollgate starts itself: the reasons that are not a peer's doing. */
export type PolicyReason = Extract<CloseReason, 'max_duration' | 'idle' | 'message_rate' | 'message_size' | 'drain'>;

/**
 * The close frame each policy close sends the client (a public contract: clients
 * read these codes and reasons). The upstream gets 1001 with the same reason text.
 */
export const POLICY_CLOSES: Readonly<Record<PolicyReason, { readonly code: number; readonly reason: string }>> = Object.freeze({
  max_duration: { code: 1001, reason: 'session duration limit' },
  idle: { code: 1001, reason: 'idle timeout' },
  message_rate: { code: 1008, reason: 'message rate exceeded' },
  message_size: { code: 1009, reason: 'message too big' },
  drain: { code: 1001, reason: 'server shutting down' },
});

/** Code of the close frame the upstream gets for every policy close ("going away"). */
export const UPSTREAM_CLOSE_CODE = 1001;
