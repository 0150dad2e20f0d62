/**
 * Issue 3 at the process level: real `tollgate serve` processes sharing one Redis.
 * Requests are split across two replicas; the shared limit must hold exactly.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import type { RedisStoreConfig } from '../../src/config/types.js';
import { request, type Reply } from '../helpers/http.js';
import { sampleValue } from '../helpers/metrics.js';
import { serveCli, type ServingCli } from '../helpers/process.js';
import { redisStoreConfig, requireRedisServer, sharedRedis, spawnRedis, stopSharedRedis, testPrefix, type RedisTarget, type SpawnedRedis } from '../helpers/redis.js';
import { withStore, writePolicy } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { eventually } from '../helpers/wait.js';

/** The store's decision budget in the failure tests (`timeout:`). */
const TIMEOUT_MS = 100;

/**
 * The longest one request may take while Redis is dead or hung. A request waits for
 * Redis at most TIMEOUT_MS (then the breaker answers without Redis); one that waited
 * out the dead Redis would wait for the socket timeout (40 x timeout = 4 s,
 * connection.ts) or forever. 10 x the timeout sits between: room for an HTTP round
 * trip on a loaded 2-core box, far below what a missing deadline costs. (The store's
 * own deadline is measured precisely, without HTTP, in test/store/redis-failure.test.ts.)
 */
const WORST_REQUEST_MS = 10 * TIMEOUT_MS;

const ROUTES = `  - id: shared
    match: { path: /shared }
    limits:
      - { by: ip, limit: 50, window: 1m }
  - id: both
    match: { path: /both }
    limits:
      - { by: user, limit: 10, window: 1m }
      - { by: ip, limit: 50, window: 1m }`;

function redisPolicy(redis: RedisStoreConfig, routes = ROUTES): string {
  return withStore(
    `
clientIp:
  trustedProxies: [127.0.0.1/32]
identity:
  header: x-user-id
routes:
${routes}
`,
    { redis },
  );
}

function count(replies: Reply[], status: number): number {
  return replies.filter((r) => r.status === status).length;
}

describe('two replicas sharing one Redis', () => {
  let redis: RedisTarget | undefined;
  let upstream: EchoUpstream;
  const replicas: ServingCli[] = [];

  before(async () => {
    redis = await sharedRedis();
    if (redis === undefined) return;
    upstream = await startEchoUpstream();
    // Counts, not latency: redisStoreConfig's 1 s timeout, so a loaded box cannot turn a
    // slow answer into a 503 and an exact count into a wrong one.
    const file = writePolicy(redisPolicy(redisStoreConfig(redis, { prefix: testPrefix('replicas') })));
    replicas.push(await serveCli(['--config', file, '--upstream', upstream.url]));
    replicas.push(await serveCli(['--config', file, '--upstream', upstream.url]));
  });

  after(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await upstream?.close();
    await stopSharedRedis(); // the server sharedRedis() spawned, if it had to
  });

  it('200 parallel requests split across both on a limit of 50: exactly 50 pass', async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => request(replicas[i % 2].url, '/shared', { from: '127.0.0.1' })));
    assert.equal(count(replies, 200), 50);
    assert.equal(count(replies, 429), 150);
    // 50 in all from two replicas that would each let 50 through alone: the limit is
    // shared. (How the 50 split between them depends on which batch reached Redis first.)
    const perReplica = [0, 1].map((r) => replies.filter((x, i) => i % 2 === r && x.status === 200).length);
    t.diagnostic(`allowed per replica: ${perReplica.join(' + ')}`);
  });

  it('per-user and per-IP limits together: every user gets exactly 10, then the IP total of 50 holds', async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    const from = '127.0.0.1';
    const users = ['u1', 'u2', 'u3', 'u4'];
    // 4 users x 10 = 40 of the IP's 50: here the user limits bind.
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) => request(replicas[i % 2].url, '/both', { headers: { 'x-user-id': users[i % 4] }, from })),
    );
    for (const user of users) {
      const allowed = replies.filter((r, i) => users[i % 4] === user && r.status === 200).length;
      assert.equal(allowed, 10, `user ${user}`);
    }
    assert.equal(count(replies, 200), 40);
    // The 160 refusals by the user limits consumed nothing of the IP quota: 10 are left.
    // Two fresh users ask 12 times each: their user limits would let 20 through, the IP
    // limit binds at exactly 10 more.
    const fresh = await Promise.all(
      Array.from({ length: 24 }, (_, i) => request(replicas[i % 2].url, '/both', { headers: { 'x-user-id': i % 2 ? 'u5' : 'u6' }, from })),
    );
    assert.equal(count(fresh, 200), 10, 'the IP had exactly 10 left');
    assert.ok(fresh.some((r) => r.status === 429 && r.headers['x-ratelimit-violation-type'] === 'ip'), 'refused by the IP limit');
  });
});

describe('Redis failures at the process level', () => {
  let upstream: EchoUpstream;
  before(async () => {
    upstream = await startEchoUpstream();
  });
  after(async () => {
    await upstream.close();
  });

  async function withRedis(
    t: TestContext,
    onError: RedisStoreConfig['onError'],
    body: (redis: SpawnedRedis, tollgate: ServingCli) => Promise<void>,
    options: { downAtStart?: boolean } = {},
  ): Promise<void> {
    if (!requireRedisServer(t)) return;
    const redis = await spawnRedis();
    t.after(() => redis.stop());
    if (options.downAtStart) await redis.kill();
    const store = redisStoreConfig(redis, { prefix: testPrefix(`fail-${onError}`), timeoutMs: TIMEOUT_MS, onError, expectedReplicas: 2 });
    const routes = `  - id: r
    match: { path: /r }
    limits:
      - { by: ip, limit: 10, window: 1m }
  - id: quiet
    mode: shadow
    match: { path: /shadow }
    limits:
      - { by: ip, limit: 10, window: 1m }`;
    const tollgate = await serveCli(['--config', writePolicy(redisPolicy(store, routes)), '--upstream', upstream.url]);
    t.after(() => tollgate.stop());
    await body(redis, tollgate);
  }

  async function timed(url: string, path: string): Promise<{ reply: Reply; ms: number; at: number }> {
    const at = performance.now();
    const reply = await request(url, path);
    return { reply, ms: performance.now() - at, at };
  }

  it('onError deny: Redis killed -> 503 RATE_LIMITER_UNAVAILABLE with Retry-After 1, fast; readyz stays 200; recovery without restart', async (t) => {
    await withRedis(t, 'deny', async (redis, tollgate) => {
      assert.equal((await request(tollgate.url, '/r')).status, 200);
      await redis.kill();
      const replies = await Promise.all(Array.from({ length: 20 }, () => timed(tollgate.url, '/r')));
      for (const { reply, ms } of replies) {
        assert.equal(reply.status, 503);
        assert.equal(reply.headers['retry-after'], '1');
        const body = JSON.parse(reply.body) as { error: { code: string } };
        assert.equal(body.error.code, 'RATE_LIMITER_UNAVAILABLE');
        assert.ok(ms < WORST_REQUEST_MS, `answered in ${ms.toFixed(1)} ms: it waited out the dead Redis`);
      }
      // Shadow routes pass even when the limiter is down.
      assert.equal((await request(tollgate.url, '/shadow')).status, 200);
      assert.equal((await request(tollgate.adminUrl, '/readyz')).status, 200);
      // Requests are counted as their responses close: all 20 shortly after the replies.
      await eventually(
        async () => {
          const metrics = (await request(tollgate.adminUrl, '/metrics')).body;
          assert.ok((sampleValue(metrics, 'tollgate_requests_total', { route: 'r', decision: 'store_error' }) ?? 0) >= 20);
          assert.ok((sampleValue(metrics, 'tollgate_store_errors_total', { store: 'redis' }) ?? 0) >= 1);
        },
        { what: 'the refusals counted as store_error' },
      );

      await redis.restart();
      // Reconnection is automatic (capped backoff, breaker probe): poll until enforced again.
      await eventually(async () => (await request(tollgate.url, '/r')).status === 200, { what: 'shared limiting to resume', timeoutMs: 10_000, intervalMs: 100 });
      const after = [];
      for (let i = 0; i < 12; i++) after.push((await request(tollgate.url, '/r')).status);
      assert.ok(after.includes(429), 'the limit bites again after recovery');
    });
  });

  it('onError allow: Redis hung (SIGSTOP) -> requests pass within the timeout budget', async (t) => {
    await withRedis(t, 'allow', async (redis, tollgate) => {
      assert.equal((await request(tollgate.url, '/r')).status, 200);
      redis.pause();
      t.after(() => redis.resume());
      const replies = [];
      for (let i = 0; i < 15; i++) replies.push(await timed(tollgate.url, '/r'));
      for (const { reply } of replies) assert.equal(reply.status, 200);
      const slowest = Math.max(...replies.map((r) => r.ms));
      assert.ok(slowest < WORST_REQUEST_MS, `slowest ${slowest.toFixed(1)} ms: a request waited out the hung Redis`);
      // The first 3 time out (TIMEOUT_MS each) and open the breaker; after that only a
      // probe per cool-down (1 s) waits for Redis. A request that waited for Redis took
      // at least TIMEOUT_MS (the deadline never fires early); one the breaker answered
      // took an HTTP round trip.
      const later = replies.slice(3);
      const waited = later.filter((r) => r.ms >= TIMEOUT_MS).length;
      const coolDowns = 1 + Math.floor((later.at(-1)!.at + later.at(-1)!.ms - later[0].at) / 1_000);
      assert.ok(waited <= coolDowns, `${waited} of ${later.length} requests after the breaker opened waited for Redis (${coolDowns} cool-down(s))`);
    });
  });

  it('onError local: Redis unreachable at start -> starts, the in-memory fallback enforces limit / expectedReplicas; headers show it', async (t) => {
    await withRedis(
      t,
      'local',
      async (_redis, tollgate) => {
        assert.equal((await request(tollgate.adminUrl, '/readyz')).status, 200);
        const statuses: number[] = [];
        let limitHeader: string | string[] | undefined;
        for (let i = 0; i < 8; i++) {
          const reply = await request(tollgate.url, '/r');
          statuses.push(reply.status);
          limitHeader ??= reply.headers['x-ratelimit-limit'];
        }
        // No replica was ever seen, so limit 10 / expectedReplicas 2 = 5.
        assert.equal(limitHeader, '5');
        assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
        const metrics = (await request(tollgate.adminUrl, '/metrics')).body;
        assert.equal(sampleValue(metrics, 'tollgate_store_degraded'), 1);
        assert.equal(sampleValue(metrics, 'tollgate_requests_total', { route: 'r', decision: 'store_error' }), 8);
      },
      { downAtStart: true },
    );
  });
});
