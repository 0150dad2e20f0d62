/**
 * The admin API for tests: a client that sends the bearer token (from any loopback
 * address, so lock-outs per peer stay apart), a token file, and a bounded `eventually`.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request, type Reply } from './http.js';

export interface AdminReply extends Reply {
  /** The parsed JSON body (undefined if it is not JSON). */
  json: any;
}

export interface AdminCall {
  token?: string;
  body?: unknown;
  /** Raw body text (overrides `body`). */
  raw?: string;
  from?: string;
  headers?: Record<string, string>;
}

/** One admin API call: `method path` with `Authorization: Bearer token`. */
export async function admin(adminUrl: string, method: string, target: string, options: AdminCall = {}): Promise<AdminReply> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
  const body = options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    // node's client sends a DELETE body unframed unless told its length.
    headers['content-length'] = String(Buffer.byteLength(body));
  }
  const reply = await request(adminUrl, target, { method, headers, body, from: options.from });
  let json: unknown;
  try {
    json = JSON.parse(reply.body);
  } catch {
    json = undefined;
  }
  return { ...reply, json };
}

/** `?a=1&b=2` from an object (undefined values left out). */
export function query(params: Record<string, string | number | undefined>): string {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value !== undefined) search.set(name, String(value));
  return `?${search.toString()}`;
}

/** A token file in a fresh directory. */
export function tokenFile(token: string): string {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'tollgate-token-')), 'token');
  writeFileSync(file, token);
  return file;
}

/** Retries `check` until it passes (returns without throwing) or `deadlineMs` passes; then throws its last error. */
export async function eventually<T>(check: () => T | Promise<T>, deadlineMs = 2_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
