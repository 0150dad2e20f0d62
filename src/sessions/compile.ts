import type { SessionConfig } from '../config/types.js';
import type { CompiledSession } from './types.js';

/**
 * A route's `session:` section as the relay reads it: numbers in ms and bytes, `null`
 * for each limit not given. `null` as a whole when the route has no `session:`, which
 * keeps the raw byte tunnel (no per-frame work).
 */
export function compileSession(config: SessionConfig | undefined): CompiledSession | null {
  if (config === undefined) return null;
  return Object.freeze({
    maxDurationMs: config.maxDurationMs ?? null,
    idleTimeoutMs: config.idleTimeoutMs ?? null,
    maxMessageBytes: config.maxMessageBytes ?? null,
    messages: config.messages === undefined ? null : Object.freeze({ limit: config.messages.limit, windowMs: config.messages.windowMs }),
  });
}
