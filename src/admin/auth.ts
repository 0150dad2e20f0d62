/**
 * Who may use the admin API: a bearer token from a file (a mounted Secret, re-read when
 * it changes) or the environment, compared in constant time; and a limit on failures
 * per socket peer. The token is never logged, never echoed, never kept in clear beyond
 * the one string read.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';
import type { Logger } from '../observability/logger.js';

/** Where the token comes from (process settings); absent = the admin API is off. */
export type AdminTokenSource = { readonly file: string } | { readonly token: string };

/** How often a token file is read again: a rotated Secret applies within this (and the kubelet's sync). */
const POLL_MS = 1_000; // 1s

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** `Authorization: Bearer <token>` -> the token, else undefined. */
function bearer(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return match === null ? undefined : match[1];
}

export interface AdminTokenOptions {
  logger: Logger;
  /** How often a token file is re-read (default 1 s). */
  pollMs?: number;
}

/**
 * The admin token. With a file, the file is read at start and then every second; a
 * change of content (a rotated Kubernetes Secret swaps a symlink; any editor rewrite)
 * applies at the next read. Whitespace around the token is not part of it. A file that
 * is missing, unreadable or empty means no token: the API answers 404, as when none is
 * configured (fail closed, and it turns on once the file appears).
 */
export class AdminToken {
  readonly #source: AdminTokenSource | undefined;
  readonly #logger: Logger;
  #digest: Buffer | undefined;
  /** The last file state logged: 'ok', or the reason it gives no token. */
  #state = '';
  #timer: NodeJS.Timeout | undefined;
  #reading = false;

  constructor(source: AdminTokenSource | undefined, options: AdminTokenOptions) {
    this.#source = source;
    this.#logger = options.logger;
    if (source === undefined) return;
    if ('token' in source) {
      const token = source.token.trim();
      this.#digest = token === '' ? undefined : digest(token);
      return;
    }
    let text: string | undefined;
    try {
      text = readFileSync(source.file, 'utf8');
    } catch (error) {
      this.#apply(undefined, (error as NodeJS.ErrnoException).code ?? 'unreadable');
    }
    if (text !== undefined) this.#apply(text, '');
    this.#timer = setInterval(() => void this.#poll(source.file), options.pollMs ?? POLL_MS);
    this.#timer.unref();
  }

  /** A token is set now: the API is on. */
  get active(): boolean {
    return this.#digest !== undefined;
  }

  /** The request's `Authorization` header carries the token (constant time in the token). */
  verify(authorization: string | undefined): boolean {
    const expected = this.#digest;
    const presented = bearer(authorization);
    if (expected === undefined || presented === undefined) return false;
    // Equal-length digests: the comparison takes the same time wherever they differ,
    // and nothing depends on the token's length.
    return timingSafeEqual(digest(presented), expected);
  }

  async #poll(file: string): Promise<void> {
    if (this.#reading) return;
    this.#reading = true;
    try {
      this.#apply(await readFile(file, 'utf8'), '');
    } catch (error) {
      this.#apply(undefined, (error as NodeJS.ErrnoException).code ?? 'unreadable');
    } finally {
      this.#reading = false;
    }
  }

  #apply(text: string | undefined, failure: string): void {
    const token = text?.trim();
    const next = token === undefined || token === '' ? undefined : digest(token);
    const state = next !== undefined ? 'ok' : token === '' ? 'empty' : failure;
    const changed = (next === undefined) !== (this.#digest === undefined) || (next !== undefined && this.#digest !== undefined && !next.equals(this.#digest));
    this.#digest = next;
    const file = (this.#source as { file: string }).file;
    if (state === 'ok' && (changed || this.#state !== 'ok')) {
      this.#logger.info({ event: 'admin_token_loaded', file }, this.#state === '' ? 'admin API on: token read from file' : 'admin token file changed: new token applies');
    } else if (state !== 'ok' && state !== this.#state) {
      this.#logger.warn({ event: 'admin_token_unavailable', file, reason: state }, 'admin token file gives no token: admin API off (404) until it does');
    }
    this.#state = state;
  }

  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
  }
}

export interface AuthFailuresOptions {
  /** Failures allowed per peer within `windowMs`; one more locks the peer out (default 10). */
  max?: number;
  /** Default 1 minute. */
  windowMs?: number;
  /** A locked peer is refused until this long after its last failure (default 1 minute). */
  lockMs?: number;
  /** Peers remembered (default 10,000). */
  maxPeers?: number;
}

interface PeerFailures {
  /** Times of the failures within the window, oldest first. */
  times: number[];
  /** Locked out until (ms), 0 = not locked. */
  lockedUntil: number;
}

/**
 * Failed authentications per socket peer: more than `max` within `windowMs` and every
 * admin request of that peer (with the right token too) is refused with 429 until
 * `lockMs` after its last failure. Failures while locked out extend the lock. The peer
 * is the TCP peer: X-Forwarded-For is never read on the admin port. Bounded (LRU).
 */
export class AuthFailures {
  readonly #max: number;
  readonly #windowMs: number;
  readonly #lockMs: number;
  readonly #peers: LRUCache<string, PeerFailures>;

  constructor(options: AuthFailuresOptions = {}) {
    this.#max = options.max ?? 10;
    this.#windowMs = options.windowMs ?? 60_000;
    this.#lockMs = options.lockMs ?? 60_000;
    this.#peers = new LRUCache<string, PeerFailures>({ max: options.maxPeers ?? 10_000 });
  }

  /** ms the peer is still locked out for at `now` (0 = not locked). */
  lockedFor(peer: string, now: number): number {
    const state = this.#peers.get(peer);
    return state !== undefined && state.lockedUntil > now ? state.lockedUntil - now : 0;
  }

  /** Records a failure at `now`; answers the ms the peer is now locked out for (0 = not locked). */
  fail(peer: string, now: number): number {
    let state = this.#peers.get(peer);
    if (state === undefined) this.#peers.set(peer, (state = { times: [], lockedUntil: 0 }));
    const times = state.times;
    times.push(now);
    while (times.length > 0 && times[0] <= now - this.#windowMs) times.shift();
    // Only the last max + 1 matter.
    if (times.length > this.#max + 1) times.splice(0, times.length - this.#max - 1);
    if (state.lockedUntil > now || times.length > this.#max) state.lockedUntil = now + this.#lockMs;
    return state.lockedUntil > now ? state.lockedUntil - now : 0;
  }
}
