/**
 * Issue 3 at the process level: real `tollgate serve` processes sharing one Redis.
 * Requests are split across two replicas; the shared limit must hold exactly.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { serveCli, type ServingCli } from '../helpers/process.js';
import { requireRedisServer, sharedRedis, spawnRedis, testPrefix, type RedisTarget, type SpawnedRedis } from '../helpers/redis.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { writePolicy } from '../helpers/tollgate.js';
import { request, type Reply } from '../helpers/http.js';

function redisPolicy(prefix: string, extra = '', routes?: string): string {
  return `
clientIp:
  trustedProxies: [127.0.0.1/32]
identity:
  header: x-user-id
routes:
${
  routes ??
  `  - id: shared
    match: { path: /shared }
    limits:
      - { by: ip, limit: 50, window: 1m }
  - id: both
    match: { path: /both }
    limits:
      - { by: user, limit: 10, window: 1m }
      - { by: ip, limit: 50, window: 1m }`
}
store:
  type: redis
  redis:
    url: \${REDIS_URL}
    prefix: "${prefix}"
    timeout: 100ms
${extra}`;
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
    const file = writePolicy(redisPolicy(testPrefix('replicas')));
    const env = { REDIS_URL: redis.url };
    replicas.push(await serveCli(['--config', file, '--upstream', upstream.url], env));
    replicas.push(await serveCli(['--config', file, '--upstream', upstream.url], env));
  });

  after(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await upstream?.close();
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

  it('per-user and per-IP limits together: every user gets exactly 10, the IP total holds', async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    const users = ['u1', 'u2', 'u3', 'u4'];
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) => request(replicas[i % 2].url, '/both', { headers: { 'x-user-id': users[i % 4] }, from: '127.0.0.1' })),
    );
    for (const user of users) {
      const allowed = replies.filter((r, i) => users[i % 4] === user && r.status === 200).length;
      assert.equal(allowed, 10, `user ${user}`);
    }
    assert.equal(count(replies, 200), 40);
    // Refusals by the user limit consumed nothing of the IP quota: 10 more pass for a fresh user.
    const fresh = await Promise.all(Array.from({ length: 12 }, (_, i) => request(replicas[i % 2].url, '/both', { headers: { 'x-user-id': 'u5' } })));
    assert.equal(count(fresh, 200), 10);
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
    t: { skip(msg: string): void },
    onError: string,
    body: (redis: SpawnedRedis, tollgate: ServingCli) => Promise<void>,
    options: { downAtStart?: boolean } = {},
  ): Promise<void> {
    if (!requireRedisServer(t as never)) return;
    const redis = await spawnRedis();
    if (options.downAtStart) await redis.kill();
    const file = writePolicy(redisPolicy(testPrefix(`fail-${onError}`), `    onError: ${onError}\n    onErrorStatus: 503\n    clock: redis\n    expectedReplicas: 2\n`, `  - id: r
    match: { path: /r }
    limits:
      - { by: ip, limit: 10, window: 1m }
  - id: quiet
    mode: shadow
    match: { path: /shadow }
    limits:
      - { by: ip, limit: 10, window: 1m }`));
    const tollgate = await serveCli(['--config', file, '--upstream', upstream.url], { REDIS_URL: redis.url });
    try {
      await body(redis, tollgate);
    } finally {
      await tollgate.stop();
      await redis.stop();
    }
  }

  async function timed(url: string, path: string): Promise<{ reply: Reply; ms: number }> {
    const start = performance.now();
    const reply = await request(url, path);
    return { reply, ms: performance.now() - start };
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
        assert.ok(ms < 1000, `answered in ${ms.toFixed(1)} ms`);
      }
      // Shadow routes pass even when the limiter is down.
      assert.equal((await request(tollgate.url, '/shadow')).status, 200);
      assert.equal((await request(tollgate.adminUrl, '/readyz')).status, 200);
      const metrics = (await request(tollgate.adminUrl, '/metrics')).body;
      assert.match(metrics, /tollgate_requests_total\{route="r",decision="store_error"\} [1-9]/);
      assert.match(metrics, /tollgate_store_errors_total\{store="redis"\} [1-9]/);

      await redis.restart();
      // Reconnection is automatic (capped backoff, breaker probe): poll until enforced again.
      const deadline = Date.now() + 10_000;
      let status = 0;
      while (Date.now() < deadline) {
        status = (await request(tollgate.url, '/r')).status;
        if (status === 200) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(status, 200, 'shared limiting resumed');
      const after = [];
      for (let i = 0; i < 12; i++) after.push((await request(tollgate.url, '/r')).status);
      assert.ok(after.includes(429), 'the limit bites again after recovery');
    });
  });

  it('onError allow: Redis hung (SIGSTOP) -> requests pass within the timeout budget', async (t) => {
    await withRedis(t, 'allow', async (redis, tollgate) => {
      assert.equal((await request(tollgate.url, '/r')).status, 200);
      redis.pause();
      try {
        const replies = [];
        for (let i = 0; i < 15; i++) replies.push(await timed(tollgate.url, '/r'));
        for (const { reply } of replies) assert.equal(reply.status, 200);
        // Timeout is 100 ms; the breaker then answers without waiting. Generous bound for a loaded CI box.
        const slowest = Math.max(...replies.map((r) => r.ms));
        assert.ok(slowest < 600, `slowest ${slowest.toFixed(1)} ms`);
        const fast = replies.slice(5).filter((r) => r.ms < 50).length;
        assert.ok(fast >= 8, `breaker keeps later requests fast (${fast}/10 under 50 ms)`);
      } finally {
        redis.resume();
      }
    });
  });

  it('onError local: Redis unreachable at start -> starts, the in-memory fallback enforces limit / expectedReplicas; headers show it', async (t) => {
    await withRedis(t, 'local', async (_redis, tollgate) => {
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
      assert.match(metrics, /tollgate_store_degraded 1/);
      assert.match(metrics, /tollgate_requests_total\{route="r",decision="store_error"\} 8/);
    }, { downAtStart: true });
  });
});
