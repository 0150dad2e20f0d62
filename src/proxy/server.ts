import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Settlement } from '../limiter/settlement.js';
import type { Logger } from '../observability/logger.js';
import type { CompiledPolicy } from '../policy/types.js';
import { TunnelRegistry } from '../sessions/registry.js';
import type { SessionClock } from '../sessions/types.js';
import { evaluate, UNMATCHED_ROUTE, type DecideDeps, type Evaluation } from './decide.js';
import { hasBody, upgradeRequestHeaders, type ForwardContext, type ForwardFailure, type ForwardOptions, type HttpForwarder } from './forward.js';
import { rateLimitHeaders } from './rate-headers.js';
import { ERRORS } from './errors.js';
import { errorResponse, rateLimitedResponse, send, sendOnSocket, type OwnResponse } from './responses.js';
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

/** The response a refusing verdict gets; undefined when the request goes on. */
function refusal(deps: ProxyDeps, ev: Evaluation): OwnResponse | undefined {
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

export function createProxyServer(deps: ProxyDeps, timeouts: ServerTimeouts): ProxyServer {
  const { metrics, logger } = deps;
  const tunnels = new TunnelRegistry({ metrics, logger, clock: deps.sessionClock });

  const onForwardDone = (ctx: ForwardContext, status: number, failure: ForwardFailure | null, headersAt: number): void => {
    const fwd = ctx as ForwardContext & { routeId: string; startedAt: number };
    if (failure === 'client_closed') return;
    if (failure !== null && status === 0) {
      const code = failure === 'timeout' ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE';
      // Tollgate's own 502/504 is the status of this exchange.
      ctx.settlement?.head(ERRORS[code].status);
      logger.error({ event: 'upstream_error', route: fwd.routeId, code, requestId: ctx.requestId }, failure === 'timeout' ? 'upstream timed out' : 'upstream unavailable');
      metrics.hot.upstream(fwd.routeId, 'error', (performance.now() - fwd.startedAt) / 1000);
      if (!ctx.res.headersSent && !ctx.res.destroyed) {
        if (deps.draining()) ctx.res.shouldKeepAlive = false;
        send(ctx.res, errorResponse(code, ctx.requestId), ctx.requestId);
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
    const ctx = {
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
      routeId: ev.route?.id ?? UNMATCHED_ROUTE,
      startedAt: performance.now(),
    };
    active.http.forward(req, ctx, forwardOptions(active, req, ev));
  }

  /** X-Forwarded-* (appended to the client's only from a trusted proxy) and the upstream timeout. */
  function forwardOptions(active: ActivePolicy, req: IncomingMessage, ev: Evaluation): ForwardOptions {
    const trusted = ev.client.peerTrusted;
    return {
      forwardedFor: appendTo(req.headers['x-forwarded-for'], peerAddress(req), trusted),
      forwardedProto: appendTo(req.headers['x-forwarded-proto'], 'http', trusted),
      forwardedHost: req.headers.host === undefined ? undefined : appendTo(req.headers['x-forwarded-host'], req.headers.host, trusted),
      timeoutMs: ev.route?.upstreamTimeoutMs ?? active.policy.upstreamTimeoutMs,
    };
  }

  function act(active: ActivePolicy, req: IncomingMessage, res: ServerResponse, ev: Evaluation, expectsContinue: boolean): void {
    metrics.hot.request(ev.route?.id ?? UNMATCHED_ROUTE, ev.decision);
    // Draining: a kept-alive connection would hold the drain open until it idles out.
    if (deps.draining()) res.shouldKeepAlive = false;
    const refused = refusal(deps, ev);
    if (refused !== undefined) {
      // A body never invited (no 100 Continue) or still unread would have to be drained first:
      // close instead. Bodyless refusals keep the connection (a flood costs no new handshakes).
      if (expectsContinue || (hasBody(req) && !req.complete)) res.shouldKeepAlive = false;
      send(res, refused, ev.requestId);
      return;
    }
    if (expectsContinue) res.writeContinue();
    forward(active, req, res, ev);
  }

  function fail(req: IncomingMessage, res: ServerResponse, error: unknown): void {
    logger.error({ event: 'internal_error', err: error, method: req.method }, 'request failed inside tollgate');
    if (!res.headersSent) send(res, errorResponse('INTERNAL_ERROR', 'unknown'), 'unknown');
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
      const ev = evaluate(active.policy, deps, req, false);
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
    if (deps.draining()) {
      sendOnSocket(socket, errorResponse('SHUTTING_DOWN', 'draining'), 'draining');
      return;
    }
    const active = deps.active();
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
        sendOnSocket(socket, refused, e.requestId);
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
            sendOnSocket(socket, errorResponse(code, e.requestId), e.requestId);
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
