import http from 'node:http';
import type { Metrics } from '../observability/metrics.js';
import type { AdminHandler } from './api.js';

export interface AdminDeps {
  readonly metrics: Metrics;
  /** Ready = policy loaded and the proxy listener up, and not draining. Never depends on Redis. */
  readonly ready: () => boolean;
  /** The active policy for `GET /config`, secrets redacted. */
  readonly config: () => unknown;
  /** The admin API (`/admin/*`, src/admin/api.ts): authenticated, off without a token. */
  readonly admin?: AdminHandler;
}

function reply(res: http.ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

/** Health, readiness, Prometheus metrics, the active policy and the admin API, on their own port. */
export function createAdminServer(deps: AdminDeps): http.Server {
  return http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path === '/admin' || path.startsWith('/admin/')) {
      if (deps.admin !== undefined) deps.admin(req, res);
      else reply(res, 404, 'text/plain; charset=utf-8', 'not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      reply(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
      return;
    }
    switch (path) {
      case '/healthz':
        reply(res, 200, 'text/plain; charset=utf-8', 'ok\n');
        return;
      case '/readyz': {
        const ready = deps.ready();
        reply(res, ready ? 200 : 503, 'text/plain; charset=utf-8', ready ? 'ready\n' : 'not ready\n');
        return;
      }
      case '/metrics':
        deps.metrics.registry.metrics().then(
          (text) => reply(res, 200, deps.metrics.registry.contentType, text),
          () => reply(res, 500, 'text/plain; charset=utf-8', 'metrics unavailable\n'),
        );
        return;
      case '/config':
        reply(res, 200, 'application/json; charset=utf-8', JSON.stringify(deps.config(), null, 2));
        return;
      default:
        reply(res, 404, 'text/plain; charset=utf-8', 'not found\n');
    }
  });
}
