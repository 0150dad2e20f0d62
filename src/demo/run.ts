import { SignJWT } from 'jose';
import { Tollgate } from '../app.js';
import { parseCommand } from '../config/settings.js';
import { listenDemoUpstream } from './upstream.js';

/**
 * `npm run demo`: the demo upstream on 127.0.0.1:3000 and Tollgate with the shipped
 * policies.yaml on :8080 (admin :9090), in one process. Ports: DEMO_UPSTREAM_PORT,
 * TOLLGATE_LISTEN, TOLLGATE_ADMIN.
 */
async function main(): Promise<void> {
  const upstreamPort = Number(process.env.DEMO_UPSTREAM_PORT ?? 3000);
  const upstream = await listenDemoUpstream(upstreamPort);
  const command = parseCommand(['serve', '--upstream', `http://127.0.0.1:${upstream.port}`, ...process.argv.slice(2)], process.env);
  if (command.command !== 'serve') throw new Error('unexpected command');
  const tollgate = await Tollgate.start({ settings: command.settings });
  const base = `http://127.0.0.1:${tollgate.proxyAddress.port}`;
  // A token signed with the policy's secret, so the per-user limits can be tried at once.
  const secret = tollgate.policy.config.identity?.jwt?.secret;
  const token =
    secret === undefined
      ? undefined
      : await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(secret));
  const admin = `http://127.0.0.1:${tollgate.adminAddress.port}`;
  process.stdout.write(`
Tollgate demo: upstream http://127.0.0.1:${upstream.port}, proxy ${base}, admin ${admin}

Try:
  # mint voice tokens as an anonymous client (5 per minute per IP for anonymous callers):
  for i in $(seq 1 8); do curl -s -o /dev/null -w '%{http_code} ' -X POST ${base}/api/livekit/token; done; echo${
    token === undefined
      ? ''
      : `
  # as user alice (a JWT signed with the demo secret, valid 1h): 10 per minute, then blocked 5 minutes
  for i in $(seq 1 12); do curl -s -o /dev/null -w '%{http_code} ' -X POST -H 'authorization: Bearer ${token}' ${base}/api/livekit/token; done; echo`
  }
  # see the 429 with Retry-After and RateLimit headers:
  curl -si -X POST ${base}/api/livekit/token
  # start sessions as a user (trusted auth-layer header from 127.0.0.1):
  curl -si -X POST -H 'x-user-id: alice' ${base}/api/session/start
  # metrics, active policy, readiness:
  curl -s ${admin}/metrics | grep ^tollgate_requests_total
  curl -s ${admin}/config
  curl -s ${admin}/readyz
Edit policies.yaml and save: it reloads without a restart. Ctrl-C stops.
`);
  const stop = (): void => {
    void tollgate.shutdown(2000).then(() => {
      upstream.server.close();
      process.exit(0);
    });
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.on('SIGHUP', () => tollgate.reload('sighup'));
}

main().catch((error: unknown) => {
  process.stderr.write(`demo: ${(error as Error).message}\n`);
  process.exit(1);
});
