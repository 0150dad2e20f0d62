import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { Pool, errors as undiciErrors } from 'undici';
import type { Dispatcher } from 'undici';
import { decorateResponse, type CompiledGuards } from '../guards/index.js';
import type { Identity } from '../policy/types.js';
import type { UpstreamHeaders } from '../policy/upstream-headers.js';
import type { Settlement } from '../limiter/settlement.js';
import { rateLimitHeaders } from './rate-headers.js';

/**
 * Hop-by-hop headers (RFC 9110 7.6.1) plus those undici refuses to forward; never
 * passed on in either direction. Names listed in `Connection` are dropped too.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-request-id',
]);

/** Lengths of the hop-by-hop names: only a name of one of these lengths needs lower-casing to be checked. */
const HOP_BY_HOP_LENGTHS = new Set([...HOP_BY_HOP].map((name) => name.length));

/** Case-insensitive hop-by-hop test without lower-casing (allocating) every header name. */
function isHopByHop(name: string): boolean {
  return HOP_BY_HOP_LENGTHS.has(name.length) && HOP_BY_HOP.has(name.toLowerCase());
}

/** Per-request data the dispatch handler works on; `done` is shared, not a closure per request. */
export interface ForwardContext {
  readonly res: ServerResponse;
  /** Headers Tollgate adds to the response (rate-limit headers, request id). */
  readonly responseHeaders: Record<string, string> | null;
  readonly requestId: string;
  /** The admitted decision's settle step (its `head` learns the status); ended by the proxy. */
  readonly settlement: Settlement | undefined;
  /** When the decision was taken (clock ms): rate-limit headers rewritten after settling count from it. */
  readonly decidedAt: number;
  /** Upstream response headers never passed to the client (the route's cost headers); null = none. */
  readonly dropHeaders: ReadonlySet<string> | null;
  /**
   * Called once: the upstream status (0 when no response head arrived) and the error
   * kind, if any (with a status: the body failed after the head was sent on).
   */
  readonly done: (ctx: ForwardContext, status: number, failure: ForwardFailure | null, headersAt: number) => void;
  /** True once the server drains: the response then tells the client to close the connection. */
  readonly draining: () => boolean;
  /** Filled by the forwarder: when the upstream's response headers arrived (performance.now()). */
  headersAt: number;
  status: number;
  /**
   * The route's guards when they decorate responses (CORS, security headers), else null;
   * applied to the upstream's response head with `corsOrigin` and `https` (see guards/index.ts).
   */
  readonly guards: CompiledGuards | null;
  readonly corsOrigin: string | undefined;
  readonly https: boolean;
}

export type ForwardFailure = 'timeout' | 'unavailable' | 'client_closed';

export interface ForwardOptions {
  /** Request headers to send upstream in place of the X-Forwarded-* / X-Request-Id the client sent. */
  readonly forwardedFor: string;
  readonly forwardedProto: string;
  readonly forwardedHost: string | undefined;
  readonly timeoutMs: number;
  /** Header hygiene (src/policy/upstream-headers.ts): what the upstream must not get, what it gets instead. */
  readonly upstreamHeaders: UpstreamHeaders;
  readonly peerTrusted: boolean;
  /** The client IP Tollgate resolved (X-Real-IP). */
  readonly clientIp: string;
  /** The identity Tollgate believed (identity.forward headers); undefined on unmatched requests. */
  readonly identity: Identity | undefined;
  /** The body to send instead of the request stream: the one the `body` guard read, or a BodyLimit. Undefined: the request. */
  readonly body?: Buffer | Readable;
}

/** Copies the client's raw headers minus hop-by-hop and spoofable ones into undici's flat array form. */
function requestHeaders(req: IncomingMessage, options: ForwardOptions, requestId: string): string[] {
  const raw = req.rawHeaders;
  const connection = req.headers.connection;
  const dropped = connection !== undefined && connection !== 'keep-alive' && connection !== 'close' ? connectionTokens(connection) : null;
  const { upstreamHeaders, peerTrusted } = options;
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (isHopByHop(name) || upstreamHeaders.drops(name, peerTrusted) || (dropped !== null && dropped.has(name.toLowerCase()))) continue;
    out.push(name, raw[i + 1]);
  }
  out.push('x-forwarded-for', options.forwardedFor, 'x-forwarded-proto', options.forwardedProto, 'x-request-id', requestId);
  if (options.forwardedHost !== undefined) out.push('x-forwarded-host', options.forwardedHost);
  upstreamHeaders.append(out, options.clientIp, options.identity);
  return out;
}

/**
 * The request headers of an Upgrade handshake: the client's minus hop-by-hop ones, as
 * for plain HTTP, except the handshake's own `Connection: upgrade` and `Upgrade`.
 */
export function upgradeRequestHeaders(req: IncomingMessage, options: ForwardOptions, requestId: string): Record<string, string | string[]> {
  const connection = req.headers.connection;
  const dropped = connection !== undefined ? connectionTokens(connection) : null;
  const { upstreamHeaders, peerTrusted } = options;
  const out: Record<string, string | string[]> = {};
  for (const name in req.headers) {
    const value = req.headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || upstreamHeaders.drops(name, peerTrusted) || (dropped !== null && dropped.has(name))) continue;
    out[name] = value;
  }
  out.connection = 'upgrade';
  if (req.headers.upgrade !== undefined) out.upgrade = req.headers.upgrade;
  out['x-forwarded-for'] = options.forwardedFor;
  out['x-forwarded-proto'] = options.forwardedProto;
  out['x-request-id'] = requestId;
  if (options.forwardedHost !== undefined) out['x-forwarded-host'] = options.forwardedHost;
  upstreamHeaders.assign(out, options.clientIp, options.identity);
  return out;
}

function connectionTokens(value: string): Set<string> {
  return new Set(value.split(',').map((t) => t.trim().toLowerCase()));
}

/**
 * The response head in `writeHead`'s flat form: the upstream's headers minus hop-by-hop
 * ones (multi-valued ones such as set-cookie repeated), then Tollgate's own. One flat
 * array instead of setHeader per name: no per-header validation and merge.
 */
function responseHead(headers: IncomingHttpHeaders, own: Record<string, string> | null, drop: ReadonlySet<string> | null): string[] {
  const connection = headers.connection;
  const dropped = typeof connection === 'string' && connection !== 'keep-alive' && connection !== 'close' ? connectionTokens(connection) : null;
  const out: string[] = [];
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || name === 'connection' || name === 'keep-alive' || name === 'transfer-encoding' || name === 'proxy-connection' || name === 'trailer' || name === 'upgrade') continue;
    if (dropped !== null && dropped.has(name)) continue;
    if (drop !== null && drop.has(name)) continue;
    if (own !== null && own[name] !== undefined) continue; // ours win (x-request-id, rate-limit headers)
    if (typeof value === 'string') out.push(name, value);
    else for (const item of value) out.push(name, item);
  }
  if (own !== null) for (const name in own) out.push(name, own[name]);
  return out;
}

/** The request carries a body (declared length > 0 or chunked). */
export function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  if (length !== undefined) return length !== '0';
  return req.headers['transfer-encoding'] !== undefined;
}

const kHandler = Symbol('tollgate.forwardHandler');
type TrackedResponse = ServerResponse & { [kHandler]?: ForwardHandler | null };

/** Shared `close` listener of every forwarded response: no closure per request. */
function onClientClose(this: TrackedResponse): void {
  const handler = this[kHandler];
  this[kHandler] = null;
  if (handler && !handler.finished && !this.writableFinished) handler.abort();
}

/** Shared `drain` listener: resumes the upstream once the client caught up. */
function onClientDrain(this: TrackedResponse): void {
  this[kHandler]?.controller?.resume();
}

function classify(error: Error): ForwardFailure {
  if (error instanceof undiciErrors.HeadersTimeoutError) return 'timeout';
  // Our abort (the client went away) surfaces as RequestAbortedError or an AbortError.
  if (error instanceof undiciErrors.RequestAbortedError || error.name === 'AbortError') return 'client_closed';
  return 'unavailable';
}

/**
 * Streams one upstream response into the client's response (undici dispatch API).
 * A class rather than per-request closures or an AbortSignal: those kept recent
 * requests reachable across young-generation GCs, which cost ~40% of the CPU per
 * request and most of the p99 (docs/performance.md). References are cleared on completion.
 */
class ForwardHandler implements Dispatcher.DispatchHandler {
  controller: Dispatcher.DispatchController | null = null;
  finished = false;
  ctx: ForwardContext | null;

  constructor(ctx: ForwardContext) {
    this.ctx = ctx;
  }

  abort(): void {
    this.controller?.abort(new undiciErrors.RequestAbortedError());
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.ctx?.res.destroyed) this.abort();
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    const ctx = this.ctx;
    if (ctx === null || statusCode < 200) return; // 1xx informational: the final answer follows
    ctx.headersAt = performance.now();
    ctx.status = statusCode;
    settleHead(ctx, statusCode, headers);
    const res = ctx.res;
    if (ctx.draining()) res.shouldKeepAlive = false;
    // The response-head stage of the route's guards: CORS (the upstream's replaced) and security headers.
    if (ctx.guards !== null) decorateResponse(ctx.guards, headers, ctx.corsOrigin, ctx.https);
    res.writeHead(statusCode, responseHead(headers, ctx.responseHeaders, ctx.dropHeaders));
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    const res = this.ctx?.res;
    if (res !== undefined && !res.write(chunk)) {
      controller.pause();
      res.once('drain', onClientDrain);
    }
  }

  onResponseEnd(): void {
    const ctx = this.#release();
    if (ctx === null) return;
    ctx.res.end();
    ctx.done(ctx, ctx.status, null, ctx.headersAt);
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    const ctx = this.#release();
    if (ctx === null) return;
    if (ctx.res.headersSent) {
      // Mid-body failure: the status line is gone; cut the connection so the client sees it.
      // The upstream's own failure (not our abort for a client that left) is reported.
      ctx.res.destroy();
      ctx.done(ctx, ctx.status, classify(error), ctx.headersAt);
      return;
    }
    ctx.done(ctx, 0, classify(error), ctx.headersAt);
  }

  #release(): ForwardContext | null {
    const ctx = this.ctx;
    this.finished = true;
    this.ctx = null;
    this.controller = null;
    if (ctx !== null) (ctx.res as TrackedResponse)[kHandler] = null;
    return ctx;
  }
}

/**
 * The exchange's status is known (the upstream's head, or Tollgate's own 502/504 with no
 * headers): settle it, and fold what that changed (a reported cost, a status that does not
 * count) into the rate-limit headers its answer carries.
 */
export function settleHead(ctx: ForwardContext, status: number, headers: IncomingHttpHeaders | null): void {
  const settled = ctx.settlement?.head(status, headers);
  if (settled !== undefined && ctx.responseHeaders !== null) Object.assign(ctx.responseHeaders, rateLimitHeaders(settled, ctx.decidedAt));
}

function originForm(target: string): string {
  try {
    const url = new URL(target);
    return url.pathname + url.search;
  } catch {
    return '/';
  }
}

/**
 * Forwards plain HTTP to one upstream origin over a keep-alive undici Pool
 * (measured ~1.7x http-proxy's throughput here; see docs/performance.md).
 */
export class HttpForwarder {
  readonly #pool: Pool;

  constructor(upstream: URL) {
    this.#pool = new Pool(upstream.origin, {
      connections: 256,
      pipelining: 1,
      keepAliveTimeout: 30_000, // 30s; upstream idle sockets
      headersTimeout: 0, // per request (upstreamTimeout)
      bodyTimeout: 0, // streams (transcription, SSE) may idle; the client side bounds them
    });
  }

  forward(req: IncomingMessage, ctx: ForwardContext, options: ForwardOptions): void {
    const handler = new ForwardHandler(ctx);
    const res = ctx.res as TrackedResponse;
    res[kHandler] = handler;
    res.once('close', onClientClose);
    const url = req.url ?? '/';
    this.#pool.dispatch(
      {
        // Absolute-form targets (`GET http://host/path`) are sent in origin-form.
        path: url.charCodeAt(0) === 47 /* / */ ? url : originForm(url),
        method: req.method as Dispatcher.HttpMethod,
        headers: requestHeaders(req, options, ctx.requestId),
        body: options.body !== undefined ? options.body : hasBody(req) ? req : null,
        headersTimeout: options.timeoutMs,
        bodyTimeout: 0,
      },
      handler,
    );
  }

  async close(): Promise<void> {
    await this.#pool.close();
  }
}
