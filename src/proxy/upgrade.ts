import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import type { TunnelSockets } from '../sessions/types.js';

/** How long a refused upgrade's socket stays after its answer went out (see closeAfterAnswer). */
const ANSWERED_GRACE_MS = 1_000;

/**
 * Closes an upgrade's client socket once the answer written to it (a refusal, a relayed
 * refusal, a 502/504) is out. No HTTP parser is left behind an upgrade socket, so ending our
 * side alone would let a client that keeps its side open hold the socket, and any
 * concurrency slot (given back on 'close'), for as long as it likes. Bytes it still sends
 * are discarded; the short grace lets it read the answer before the close.
 */
export function closeAfterAnswer(socket: Duplex): void {
  socket.resume();
  socket.once('finish', () => {
    const timer = setTimeout(() => socket.destroy(), ANSWERED_GRACE_MS);
    socket.once('close', () => clearTimeout(timer));
  });
}

/**
 * The upstream's response header lines (we write our own status line), then Tollgate's
 * own (rate limits, request id), which win over upstream headers of the same name, as
 * on plain HTTP.
 */
function headerLines(headers: IncomingMessage['rawHeaders'], own: Readonly<Record<string, string>>, skip?: ReadonlySet<string>): string {
  let out = '';
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i].toLowerCase();
    if (skip?.has(name) || own[name] !== undefined) continue;
    out += `${headers[i]}: ${headers[i + 1]}\r\n`;
  }
  for (const name in own) out += `${name}: ${own[name]}\r\n`;
  return out;
}

/**
 * Framing and connection headers of a relayed refusal: its body is piped already
 * de-chunked and the connection closes after it, which delimits the body.
 */
const RELAY_DROPPED: ReadonlySet<string> = new Set(['transfer-encoding', 'connection', 'keep-alive']);

export interface UpgradeOptions {
  readonly headers: Record<string, string | string[]>;
  /** Added to the upstream's answer (101 or refusal): rate-limit headers and X-Request-Id. */
  readonly responseHeaders: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
  /** Called once with the outcome: 'open' when the tunnel is up, else the failure. */
  readonly onResult: (result: 'open' | 'timeout' | 'unavailable' | 'rejected', status: number) => void;
  /** Called once the 101 went to the client: takes over both sockets (src/sessions relays and ends them). */
  readonly openTunnel: (sockets: TunnelSockets) => void;
}

/**
 * Proxies an HTTP/1.1 Upgrade (WebSocket) handshake to the upstream and, once it
 * answers 101, hands the two sockets to a tunnel. A non-101 answer is relayed as is.
 */
export class UpgradeForwarder {
  readonly #upstream: URL;
  readonly #agent: http.Agent;

  constructor(upstream: URL) {
    this.#upstream = upstream;
    // Upgraded sockets leave the agent; keep-alive would only pool failed handshakes.
    this.#agent = upstream.protocol === 'https:' ? new https.Agent({ keepAlive: false }) : new http.Agent({ keepAlive: false });
  }

  forward(req: IncomingMessage, socket: Duplex, head: Buffer, options: UpgradeOptions): void {
    const request = (this.#upstream.protocol === 'https:' ? https : http).request({
      protocol: this.#upstream.protocol,
      hostname: this.#upstream.hostname,
      port: this.#upstream.port,
      agent: this.#agent,
      method: req.method,
      path: req.url,
      headers: options.headers,
    });
    let settled = false;
    let outcome: 'open' | 'timeout' | 'unavailable' | 'rejected' | 'cancelled' | undefined;
    const settle = (result: 'open' | 'timeout' | 'unavailable' | 'rejected', status: number): boolean => {
      if (settled) return false;
      settled = true;
      outcome = result;
      clearTimeout(timer);
      options.onResult(result, status);
      return true;
    };
    const timer = setTimeout(() => {
      if (settle('timeout', 504)) request.destroy();
    }, options.timeoutMs);
    timer.unref();

    socket.on('error', () => {
      request.destroy();
    });
    // A client that leaves (cleanly or not) before the upstream answers cancels the
    // handshake: otherwise a late 101 would open a tunnel to nobody that never closes.
    // 'end' too: the server keeps upgraded sockets half-open, so a client's FIN alone
    // never closes it.
    const cancel = (): void => {
      if (settled) return;
      settled = true;
      outcome = 'cancelled';
      clearTimeout(timer);
      request.destroy();
      socket.destroy();
    };
    socket.once('end', cancel);
    socket.once('close', cancel);
    request.on('error', () => {
      if (settle('unavailable', 502)) return;
      // A failure mid-relay ends the client's socket too; after a timeout the 504 being
      // written ends it (the error is only our own destroy, a tick later).
      if (outcome === 'open' || outcome === 'rejected') socket.destroy();
    });
    request.on('response', (res) => {
      // The upstream refused the upgrade: relay its answer and close.
      if (!settle('rejected', res.statusCode ?? 502)) return res.resume();
      socket.write(`HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ''}\r\n${headerLines(res.rawHeaders, options.responseHeaders, RELAY_DROPPED)}connection: close\r\n\r\n`);
      closeAfterAnswer(socket);
      res.pipe(socket);
    });
    request.on('upgrade', (res, upstreamSocket, upstreamHead) => {
      if (!settle('open', 101)) {
        upstreamSocket.destroy();
        return;
      }
      upstreamSocket.setNoDelay(true);
      upstreamSocket.setTimeout(0);
      socket.write(`HTTP/1.1 101 ${res.statusMessage || 'Switching Protocols'}\r\n${headerLines(res.rawHeaders, options.responseHeaders)}\r\n`);
      // The heads are already frames: they go through the tunnel like the rest.
      options.openTunnel({
        client: socket,
        upstream: upstreamSocket,
        clientHead: head,
        upstreamHead,
        extensions: res.headers['sec-websocket-extensions'],
        websocket: res.headers.upgrade?.toLowerCase() === 'websocket',
      });
    });
    request.end();
  }

  close(): void {
    this.#agent.destroy();
  }
}
