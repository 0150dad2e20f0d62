import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Readable } from 'node:stream';
import { applySecurityHeaders, corsOrigin, limitBody, PAYLOAD_TOO_LARGE, wantsHsts } from '../guards/index.js';
import type { Settlement } from '../limiter/settlement.js';
import type { Logger } from '../observability/logger.js';
import type { ClientAddress, CompiledPolicy } from '../policy/types.js';
import { TunnelRegistry } from '../sessions/registry.js';
import type { SessionClock } from '../sessions/types.js';
import { evaluate, recordGuardRefusal, requestIdOf, UNMATCHED_ROUTE, type DecideDeps, type Evaluation } from './decide.js';
import { hasBody, settleHead, upgradeRequestHeaders, type ForwardContext, type ForwardFailure, type ForwardOptions, type HttpForwarder } from './forward.js';
import { rateLimitHeaders } from './rate-headers.js';
import { ERRORS } from './errors.js';
import {
  errorResponse,
  guardRefusedResponse,
  rateLimitedResponse,
  responseFormat,
  send,
  sendOnSocket,
  type Decoration,
  type OwnResponse,
  type ResponseFormat,
} from './responses.js';
import type { UpgradeForwarder } from './upgrade.js';

/** A policy with the forwarders built for its upstream; swapped whole on reload. */
export interface ActivePolicy {
  readonly policy: CompiledPolicy;
  readonly http: HttpForwarder;
  readonly ws: UpgradeForwarder;
}

export interface ProxyDeps extends DecideDeps {
  readonly logger: Logger;
  /** The policy a new request starts under; it keeps it until it finishes. */
  active(): ActivePolicy;
  readonly onErrorStatus: () => number;
  readonly draining: () => boolean;
  /** Time for WebSocket sessions (idle, duration); real by default. */
  readonly sessionClock?: SessionClock;
}

export interface ServerTimeouts {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
}

export interface ProxyServer {
  readonly server: http.Server;
  /** Open WebSocket tunnels, for draining. */
  readonly tunnels: TunnelRegistry;
}

function peerAddress(req: IncomingMessage): string {
  const address = req.socket.remoteAddress ?? '';
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

function appendTo(existing: string | string[] | undefined, value: string, trusted: boolean): string {
  if (!trusted || existing === undefined || existing.length === 0) return value;
  return `${typeof existing === 'string' ? existing : existing.join(', ')}, ${value}`;
}

const STATUS_CLASSES = ['error', '1xx', '2xx', '3xx', '4xx', '5xx'];

/** `2xx`... label for a status, without building a string per request. */
function statusClass(status: number): string {
  return status >= 100 && status < 600 ? STATUS_CLASSES[Math.floor(status / 100)] : 'error';
}

/** The format of Tollgate's own answer to `req`: the policy's `responses.format`, or problem details when the client's Accept prefers them. */
function formatFor(policy: CompiledPolicy, req: IncomingMessage): ResponseFormat {
  return responseFormat(policy.responseFormat, req.headers.accept);
}

/** The response a refusing verdict (or guard) gets; undefined when the request goes on. */
function refusal(deps: ProxyDeps, ev: Evaluation): OwnResponse | undefined {
  if (ev.refusal !== null) return guardRefusedResponse(ev.refusal, ev.requestId, ev.route?.id);
  const verdict = ev.verdict;
  if (verdict.action !== 'refuse') return undefined;
  if (verdict.reason === 'store_unavailable') {
    return errorResponse('RATE_LIMITER_UNAVAILABLE', ev.requestId, deps.onErrorStatus(), { 'retry-after': '1' });
  }
  return rateLimitedResponse(ev.route!, verdict.report, ev.requestId, ev.now);
}

const kSettlement = Symbol('tollgate.settlement');
type Settled = { [kSettlement]?: Settlement | null };

/**
 * Ends `settlement` when `target` (a response, or an upgraded socket) closes: once,
 * whatever closed it. A target that closed already (the client left while the decision
 * was being made) ends it now. One shared listener, no closure per request.
 */
function endOnClose(target: (ServerResponse | Duplex) & Settled, settlement: Settlement | undefined): void {
  if (settlement === undefined) return;
  if (target.closed) {
    settlement.end();
    return;
  }
  target[kSettlement] = settlement;
  target.once('close', endSettlement);
}

function endSettlement(this: Settled): void {
  const settlement = this[kSettlement];
  this[kSettlement] = null;
  settlement?.end();
}

function settlementOf(ev: Evaluation): Settlement | undefined {
  const verdict = ev.verdict;
  return verdict.action === 'refuse' ? undefined : verdict.settlement;
}

/** Rate-limit headers for a request that goes on (none when no limit applied). */
function passHeaders(ev: Evaluation): Record<string, string> | null {
  const verdict = ev.verdict;
  if (verdict.action === 'refuse' || verdict.report === undefined) return null;
  return rateLimitHeaders(verdict.report, ev.now);
}

/**
 * How the route's guards decorate one of Tollgate's own responses (undefined: they do
 * not). `origin: null` leaves CORS headers out (a refused preflight).
 */
function decorationFor(req: IncomingMessage, ev: Evaluation, origin?: null): Decoration | undefined {
  const guards = ev.route?.guards;
  if (guards == null || !guards.decoratesResponse) return undefined;
  // Refused by methods (before the origin check) or by origins: the origin is not known to be allowed.
  const checked = ev.refusal === null || (ev.refusal.guard !== 'methods' && ev.refusal.guard !== 'origins');
  return {
    guards,
    origin: origin === null ? undefined : corsOrigin(guards, req.headers, checked),
    https: wantsHsts(guards, req.headers, ev.client.peerTrusted),
  };
}

/** Tollgate's answer to a CORS preflight: 204 with the CORS headers, or the refusal without them. */
function answerPreflight(req: IncomingMessage, res: ServerResponse, ev: Evaluation, format: ResponseFormat): void {
  const answer = ev.preflight!;
  if (answer.status === 403) {
    send(res, guardRefusedResponse(answer.refusal, ev.requestId, ev.route?.id), ev.requestId, format, decorationFor(req, ev, null));
    return;
  }
  const headers: Record<string, string> = { ...answer.headers, 'x-request-id': ev.requestId };
  const guards = ev.route!.guards!;
  if (guards.securityHeaders !== null) applySecurityHeaders(guards.securityHeaders, headers, wantsHsts(guards, req.headers, ev.client.peerTrusted));
  res.writeHead(204, headers);
  res.end();
}

type TrackedContext = ForwardContext & {
  routeId: string;
  startedAt: number;
  client: ClientAddress;
  bodyTooLarge: boolean;
  /** The policy's `responses.format`, for an own answer (413, 502, 504) after forwarding began. */
  responseFormat: ResponseFormat;
};

/** The decoration of an own response (502, 504, 413) on a forwarded request, from its context; built only then. */
function forwardedDecoration(ctx: ForwardContext): Decoration | undefined {
  return ctx.guards === null ? undefined : { guards: ctx.guards, origin: ctx.corsOrigin, https: ctx.https };
}

/** The format of an own answer on a forwarded request (only when one is sent). */
function ownFormat(ctx: TrackedContext): ResponseFormat {
  return responseFormat(ctx.responseFormat, ctx.res.req.headers.accept);
}

export function createProxyServer(deps: ProxyDeps, timeouts: ServerTimeouts): ProxyServer {
  const { metrics, logger } = deps;
  const tunnels = new TunnelRegistry({ metrics, logger, clock: deps.sessionClock });

  const onForwardDone = (ctx: ForwardContext, status: number, failure: ForwardFailure | null, headersAt: number): void => {
    const fwd = ctx as TrackedContext;
    if (failure !== null && fwd.bodyTooLarge) {
      // A streamed (chunked) body passed maxBodySize: the upstream request was aborted.
      recordGuardRefusal(deps, fwd.routeId, PAYLOAD_TOO_LARGE, fwd.client, ctx.requestId);
      if (status === 0) ctx.settlement?.head(PAYLOAD_TOO_LARGE.status);
      if (!ctx.res.headersSent && !ctx.res.destroyed) {
        send(ctx.res, guardRefusedResponse(PAYLOAD_TOO_LARGE, ctx.requestId, fwd.routeId), ctx.requestId, ownFormat(fwd), forwardedDecoration(ctx));
      }
      return;
    }
    if (failure === 'client_closed') return;
    if (failure !== null && status === 0) {
      const code = failure === 'timeout' ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE';
      // Tollgate's own 502/504 is the status of this exchange; the request was admitted,
      // so the answer carries its rate-limit headers as the upstream's would have.
      settleHead(ctx, ERRORS[code].status, null);
      logger.error({ event: 'upstream_error', route: fwd.routeId, code, requestId: ctx.requestId }, failure === 'timeout' ? 'upstream timed out' : 'upstream unavailable');
      metrics.hot.upstream(fwd.routeId, 'error', (performance.now() - fwd.startedAt) / 1000);
      if (!ctx.res.headersSent && !ctx.res.destroyed) {
        if (deps.draining()) ctx.res.shouldKeepAlive = false;
        send(ctx.res, errorResponse(code, ctx.requestId, undefined, ctx.responseHeaders ?? {}), ctx.requestId, ownFormat(fwd), forwardedDecoration(ctx));
      }
      return;
    }
    if (failure !== null) {
      logger.error({ event: 'upstream_error', route: fwd.routeId, code: 'UPSTREAM_UNAVAILABLE', status, requestId: ctx.requestId }, 'upstream response failed mid-body');
    }
    metrics.hot.upstream(fwd.routeId, statusClass(status), (headersAt - fwd.startedAt) / 1000);
  };

  function forward(active: ActivePolicy, req: IncomingMessage, res: ServerResponse, ev: Evaluation): void {
    const responseHeaders = passHeaders(ev) ?? {};
    responseHeaders['x-request-id'] = ev.requestId;
    const settlement = settlementOf(ev);
    endOnClose(res, settlement);
    const guards = ev.route?.guards ?? null;
    const decorates = guards !== null && guards.decoratesResponse;
    const ctx: TrackedContext = {
      res,
      responseHeaders,
      requestId: ev.requestId,
      settlement,
      decidedAt: ev.now,
      dropHeaders: ev.route?.dropResponseHeaders ?? null,
      done: onForwardDone,
      draining: deps.draining,
      headersAt: 0,
      status: 0,
      guards: decorates ? guards : null,
      // The request passed the guards: its Origin, if any, is allowed.
      corsOrigin: decorates ? corsOrigin(guards, req.headers, true) : undefined,
      https: decorates ? wantsHsts(guards, req.headers, ev.client.peerTrusted) : false,
      routeId: ev.route?.id ?? UNMATCHED_ROUTE,
      startedAt: performance.now(),
      client: ev.client,
      bodyTooLarge: false,
      responseFormat: active.policy.responseFormat,
    };
    let body: Buffer | Readable | undefined = ev.body ?? undefined;
    // A chunked body on a route with maxBodySize is counted on its way (Content-Length was checked already).
    if (body === undefined && guards !== null && guards.maxBodySize > 0 && req.headers['content-length'] === undefined && hasBody(req)) {
      body = limitBody(req, guards.maxBodySize, () => {
        ctx.bodyTooLarge = true;
        // The rest of the body is never read: the connection cannot be reused.
        if (!res.headersSent) res.shouldKeepAlive = false;
        else if (res.writableEnded) res.socket?.destroy();
      });
    }
    active.http.forward(req, ctx, forwardOptions(active, req, ev, body));
  }

  /**
   * X-Forwarded-* (appended to the client's only from a trusted proxy), the upstream
   * timeout, the header hygiene inputs and the body to send (when not the request itself).
   */
  function forwardOptions(active: ActivePolicy, req: IncomingMessage, ev: Evaluation, body?: Buffer | Readable): ForwardOptions {
    const trusted = ev.client.peerTrusted;
    return {
      forwardedFor: appendTo(req.headers['x-forwarded-for'], peerAddress(req), trusted),
      forwardedProto: appendTo(req.headers['x-forwarded-proto'], 'http', trusted),
      forwardedHost: req.headers.host === undefined ? undefined : appendTo(req.headers['x-forwarded-host'], req.headers.host, trusted),
      timeoutMs: ev.route?.upstreamTimeoutMs ?? active.policy.upstreamTimeoutMs,
      upstreamHeaders: active.policy.upstreamHeaders,
      peerTrusted: trusted,
      clientIp: ev.client.ip,
      identity: ev.route === undefined ? undefined : ev.identity,
      body,
    };
  }

  function act(active: ActivePolicy, req: IncomingMessage, res: ServerResponse, ev: Evaluation, expectsContinue: boolean): void {
    metrics.hot.request(ev.route?.id ?? UNMATCHED_ROUTE, ev.decision);
    // Draining: a kept-alive connection would hold the drain open until it idles out.
    if (deps.draining()) res.shouldKeepAlive = false;
    // A body the `body` guard read was invited already (100 Continue) and is consumed.
    const invited = expectsContinue && ev.body === null;
    if (ev.preflight !== null) {
      if (invited || (hasBody(req) && !req.complete)) res.shouldKeepAlive = false;
      answerPreflight(req, res, ev, formatFor(active.policy, req));
      return;
    }
    const refused = refusal(deps, ev);
    if (refused !== undefined) {
      // A body never invited (no 100 Continue) or still unread would have to be drained first:
      // close instead. Bodyless refusals keep the connection (a flood costs no new handshakes).
      if (invited || (hasBody(req) && !req.complete)) res.shouldKeepAlive = false;
      send(res, refused, ev.requestId, formatFor(active.policy, req), decorationFor(req, ev));
      return;
    }
    if (invited) res.writeContinue();
    forward(active, req, res, ev);
  }

  function fail(req: IncomingMessage, res: ServerResponse, error: unknown): void {
    logger.error({ event: 'internal_error', err: error, method: req.method }, 'request failed inside tollgate');
    if (!res.headersSent) send(res, errorResponse('INTERNAL_ERROR', 'unknown'), 'unknown', formatFor(deps.active().policy, req));
    else res.destroy();
  }

  /** One access-log line per request when the policy says `log.access: true` (path only: queries may hold secrets). */
  function accessLog(req: IncomingMessage, res: ServerResponse, startedAt: number, ev: Evaluation | undefined): void {
    logger.info(
      {
        event: 'access',
        method: req.method,
        path: (req.url ?? '/').split('?', 1)[0],
        status: res.statusCode,
        durationMs: Math.round((performance.now() - startedAt) * 1000) / 1000,
        route: ev?.route?.id ?? UNMATCHED_ROUTE,
        decision: ev?.decision,
        clientIp: ev?.client.ip,
        userId: ev?.identity.userId,
        requestId: ev?.requestId,
      },
      'request',
    );
  }

  // One listener shared by every response (no closure per request) unless access logging needs one.
  const hot = metrics.hot;
  const onResponseClose = (): void => {
    hot.inflight--;
  };

  function onRequest(req: IncomingMessage, res: ServerResponse, expectsContinue = false): void {
    const active = deps.active();
    hot.inflight++;
    let evaluated: Evaluation | undefined;
    if (active.policy.config.log.access) {
      const startedAt = performance.now();
      res.once('close', () => {
        hot.inflight--;
        accessLog(req, res, startedAt, evaluated);
      });
    } else {
      res.once('close', onResponseClose);
    }
    try {
      const ev = evaluate(active.policy, deps, req, false, res, expectsContinue);
      if (ev instanceof Promise) {
        ev.then(
          (e) => {
            evaluated = e;
            // Not covered by the catch below: a throw here would be an unhandled rejection.
            try {
              act(active, req, res, e, expectsContinue);
            } catch (error) {
              fail(req, res, error);
            }
          },
          (error: unknown) => fail(req, res, error),
        );
      } else {
        evaluated = ev;
        act(active, req, res, ev, expectsContinue);
      }
    } catch (error) {
      fail(req, res, error);
    }
  }

  function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const active = deps.active();
    if (deps.draining()) {
      const requestId = requestIdOf(req);
      sendOnSocket(socket, errorResponse('SHUTTING_DOWN', requestId), requestId, formatFor(active.policy, req));
      return;
    }
    const failUpgrade = (error: unknown): void => {
      logger.error({ event: 'internal_error', err: error }, 'upgrade failed inside tollgate');
      socket.destroy();
    };
    const go = (e: Evaluation): void => {
      try {
        relay(e);
      } catch (error) {
        failUpgrade(error);
      }
    };
    const relay = (e: Evaluation): void => {
      metrics.hot.request(e.route?.id ?? UNMATCHED_ROUTE, e.decision);
      const refused = refusal(deps, e);
      if (refused !== undefined) {
        sendOnSocket(socket, refused, e.requestId, formatFor(active.policy, req), decorationFor(req, e));
        return;
      }
      // From here the admitted upgrade holds its slots until its socket closes: a refusal
      // relayed from the upstream, a failed handshake, the tunnel's end.
      const settlement = settlementOf(e);
      endOnClose(socket, settlement);
      if (socket.destroyed) return;
      const options = forwardOptions(active, req, e);
      const routeId = e.route?.id ?? UNMATCHED_ROUTE;
      const startedAt = performance.now();
      const responseHeaders = passHeaders(e) ?? {};
      responseHeaders['x-request-id'] = e.requestId;
      active.ws.forward(req, socket, head, {
        headers: upgradeRequestHeaders(req, options, e.requestId),
        responseHeaders,
        timeoutMs: options.timeoutMs,
        onResult: (result, status) => {
          settlement?.head(status);
          metrics.hot.upstream(routeId, result === 'open' || result === 'rejected' ? statusClass(status) : 'error', (performance.now() - startedAt) / 1000);
          if (result === 'timeout' || result === 'unavailable') {
            const code = result === 'timeout' ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE';
            logger.error({ event: 'upstream_error', route: routeId, code, requestId: e.requestId, websocket: true }, 'upstream refused the websocket');
            sendOnSocket(socket, errorResponse(code, e.requestId, undefined, responseHeaders), e.requestId, formatFor(active.policy, req), decorationFor(req, e));
          }
        },
        // The registry counts the tunnel in flight until it closes.
        openTunnel: (sockets) =>
          tunnels.open(sockets, {
            routeId,
            session: e.route?.session ?? null,
            requestId: e.requestId,
            userId: e.identity.userId,
            clientIp: e.client.ip,
            logAccess: active.policy.config.log.access,
          }),
      });
    };
    let ev: Evaluation | Promise<Evaluation>;
    try {
      ev = evaluate(active.policy, deps, req, true);
    } catch (error) {
      failUpgrade(error);
      return;
    }
    if (ev instanceof Promise) ev.then(go, failUpgrade);
    else go(ev);
  }

  const server = http.createServer({
    headersTimeout: timeouts.headersTimeoutMs,
    requestTimeout: timeouts.requestTimeoutMs,
    keepAliveTimeout: timeouts.keepAliveTimeoutMs,
    // Node checks header/request timeouts only this often (default 30s): make slowloris answers prompt.
    connectionsCheckingInterval: Math.min(1000, timeouts.headersTimeoutMs),
  });
  server.on('request', (req, res) => onRequest(req, res));
  // Expect: 100-continue is decided by the limiter before any 100 is sent.
  server.on('checkContinue', (req, res) => onRequest(req, res, true));
  server.on('upgrade', onUpgrade);
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable) return socket.destroy();
    const status = error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : error.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
  });
  return { server, tunnels };
}
