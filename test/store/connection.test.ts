/**
 * The Redis connection (src/store/redis/connection.ts): the reconnect backoff, log-safe
 * target descriptions, and the fail-fast client options — read from the clients it
 * builds, then shown to hold on real sockets (an unreachable port, a hung server).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import type { Cluster, Redis } from 'ioredis';
import type { RedisStoreConfig } from '../../src/config/types.js';
import { createRedisClient, describeTarget, reconnectDelay, type RedisClient } from '../../src/store/redis/connection.js';
import { freePort } from '../helpers/ports.js';
import { redisStoreConfig, requireRedisServer, spawnRedis } from '../helpers/redis.js';
import { nextEvent, settledAtOnce, withDeadline } from '../helpers/wait.js';

const clients: RedisClient[] = [];
after(() => {
  for (const client of clients) client.disconnect();
});

/** A client as the store builds it (connecting in the background), disconnected after the file. */
function client(config: RedisStoreConfig): RedisClient {
  const built = createRedisClient(config);
  built.on('error', () => {}); // unreachable targets: the store logs these, here they are expected
  clients.push(built);
  return built;
}

const config = (overrides: Partial<RedisStoreConfig> = {}) => redisStoreConfig({ url: 'redis://127.0.0.1:1' }, { timeoutMs: 50, ...overrides });

describe('reconnectDelay', () => {
  it('doubles from 100 ms per attempt up to a 2 s cap, plus under 100 ms of jitter', () => {
    const bases = [100, 200, 400, 800, 1_600, 2_000, 2_000, 2_000];
    for (const [attempt, base] of bases.entries()) {
      for (let i = 0; i < 50; i++) {
        const delay = reconnectDelay(attempt + 1);
        assert.ok(delay >= base && delay < base + 100, `attempt ${attempt + 1}: ${delay} ms`);
        assert.ok(Number.isInteger(delay));
      }
    }
  });

  it('never gives up: every attempt gets a delay, however many there were', () => {
    for (const attempt of [10, 100, 10_000, Number.MAX_SAFE_INTEGER]) {
      const delay = reconnectDelay(attempt);
      assert.ok(typeof delay === 'number' && delay >= 2_000 && delay < 2_100, `attempt ${attempt}: ${delay}`);
    }
  });

  it('spreads replicas out: the jitter takes many values', () => {
    const delays = new Set(Array.from({ length: 200 }, () => reconnectDelay(3)));
    assert.ok(delays.size > 20, `${delays.size} distinct delays in 200`);
  });
});

describe('describeTarget', () => {
  it('names the server without credentials', () => {
    assert.equal(describeTarget(config({ url: 'redis://tollgate:s3cret@cache.internal:6380/2' })), 'redis://cache.internal:6380/2');
    assert.equal(describeTarget(config({ url: 'rediss://:only-a-password@cache:6379' })), 'rediss://cache:6379');
    assert.equal(describeTarget(config({ url: 'redis://cache' })), 'redis://cache');
    assert.equal(describeTarget({ ...config(), url: undefined }), 'redis://127.0.0.1:6379');
    assert.equal(
      describeTarget(config({ url: undefined, cluster: [{ host: 'n1', port: 7000, password: 'node-secret' }, { host: 'n2', port: 7001 }], password: 'top-secret' })),
      'cluster n1:7000,n2:7001',
    );
    assert.equal(
      describeTarget(config({ url: undefined, sentinels: [{ host: 's1', port: 26379, username: 'u', password: 'sentinel-secret' }], name: 'mymaster' })),
      'sentinel mymaster via s1:26379',
    );
  });

  it('never contains a username or password, whatever they are', () => {
    const secret = fc.stringMatching(/^[A-Za-z0-9._~-]{6,20}$/);
    fc.assert(
      fc.property(secret, secret, fc.constantFrom('redis', 'rediss'), (user, password, scheme) => {
        fc.pre(!'cache.internal:6379/0redis'.includes(user) && !'cache.internal:6379/0redis'.includes(password));
        const url = `${scheme}://${user}:${password}@cache.internal:6379/0`;
        const shown = [
          describeTarget(config({ url, username: user, password })),
          describeTarget(config({ url: undefined, cluster: [{ host: 'h', port: 1, username: user, password }], username: user, password })),
          describeTarget(config({ url: undefined, sentinels: [{ host: 'h', port: 1, username: user, password }], name: 'm', password })),
        ];
        for (const text of shown) {
          assert.ok(!text.includes(password) && !text.includes(user), `${text} shows a credential`);
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('createRedisClient: fail-fast options', () => {
  it('a standalone client queues nothing, retries nothing, resends nothing, and times out behind the budget', () => {
    const { options } = client(config({ timeoutMs: 50 })) as Redis;
    assert.equal(options.enableOfflineQueue, false, 'no offline queue: a command while disconnected fails at once');
    assert.equal(options.maxRetriesPerRequest, 0);
    assert.equal(options.autoResendUnfulfilledCommands, false, 'a resent script would count a request twice');
    assert.equal(options.commandTimeout, 2 * 50 + 100, 'a backstop behind the store deadline');
    assert.equal(options.connectTimeout, 1_000);
    assert.equal(options.socketTimeout, 2_000);
    assert.equal(options.retryStrategy, reconnectDelay);
    assert.equal(options.connectionName, 'tollgate');
    assert.equal(options.enableAutoPipelining, true);
    assert.deepEqual(options.autoPipeliningIgnoredCommands, ['evalsha', 'eval']);
  });

  it('timeouts scale with a larger budget', () => {
    const { options } = client(config({ timeoutMs: 500 })) as Redis;
    assert.equal(options.commandTimeout, 1_100);
    assert.equal(options.connectTimeout, 10_000);
    assert.equal(options.socketTimeout, 20_000);
  });

  it('reconnects on READONLY (a failed-over master turned replica), not on other errors', () => {
    const { options } = client(config()) as Redis;
    const reconnectOnError = options.reconnectOnError as (error: Error) => boolean | 1 | 2;
    assert.equal(reconnectOnError(new Error("READONLY You can't write against a read only replica.")), 1);
    assert.equal(reconnectOnError(new Error('NOSCRIPT No matching script')), false);
  });

  it('credentials and TLS: top-level ones for the server', () => {
    const { options } = client(config({ url: 'redis://127.0.0.1:1', username: 'tg', password: 'pw', tls: true })) as Redis;
    assert.equal(options.username, 'tg');
    assert.equal(options.password, 'pw');
    assert.deepEqual(options.tls, {});
  });

  it('sentinels: their own credentials and TLS, a fail-fast failover', () => {
    const { options } = client(
      config({ url: undefined, sentinels: [{ host: '127.0.0.1', port: 1, username: 'su', password: 'sp', tls: true }], name: 'mymaster', password: 'master-pw' }),
    ) as Redis;
    assert.deepEqual(options.sentinels, [{ host: '127.0.0.1', port: 1 }]);
    assert.equal(options.name, 'mymaster');
    assert.equal(options.password, 'master-pw');
    assert.equal(options.sentinelUsername, 'su');
    assert.equal(options.sentinelPassword, 'sp');
    assert.equal(options.enableTLSForSentinelMode, true);
    assert.equal(options.enableOfflineQueue, false);
    assert.equal(options.failoverDetector, true);
    assert.equal(options.sentinelCommandTimeout, 500);
    assert.equal(options.sentinelRetryStrategy, reconnectDelay);
  });

  it('cluster: no offline queue, short failover waits, the first node credentials for every node', () => {
    const built = client(config({ url: undefined, cluster: [{ host: '127.0.0.1', port: 1, password: 'node-pw' }, { host: '127.0.0.1', port: 2 }] })) as Cluster;
    const { options } = built;
    assert.equal(options.enableOfflineQueue, false);
    assert.equal(options.clusterRetryStrategy, reconnectDelay);
    assert.equal(options.retryDelayOnFailover, 50);
    assert.equal(options.retryDelayOnClusterDown, 50);
    assert.equal(options.maxRedirections, 4);
    assert.equal(options.scaleReads, 'master');
    assert.equal(options.redisOptions?.password, 'node-pw');
    assert.equal(options.redisOptions?.commandTimeout, 200);
    assert.equal(options.redisOptions?.autoResendUnfulfilledCommands, false);
    assert.equal('retryStrategy' in (options.redisOptions ?? {}), false, 'the cluster retries, not each node');
  });
});

describe('createRedisClient on real sockets', () => {
  it('builds without throwing for an unreachable server, and a command fails at once instead of queueing', async () => {
    const unreachable = client(config({ url: `redis://127.0.0.1:${await freePort()}` }));
    // No offline queue: the decide script's call (EVAL/EVALSHA, sent without auto-pipelining)
    // is refused at once, not after the command timeout (200 ms) or the connect timeout (1 s).
    const command = unreachable.eval('return 1', 0);
    assert.equal(await settledAtOnce(command), true, 'the command waited for something');
    await assert.rejects(command, /enableOfflineQueue/);
  });

  it('against a hung server a command ends at the command timeout', async (t) => {
    if (!requireRedisServer(t)) return;
    const server = await spawnRedis();
    t.after(() => server.stop());
    const hung = client(config({ url: server.url, timeoutMs: 50 }));
    if (hung.status !== 'ready') await nextEvent(hung, 'ready', { what: 'a Redis connection' });
    server.pause();
    t.after(() => server.resume());
    // The deadline is generous; the assertion is what ended the command: ioredis's timeout.
    await assert.rejects(withDeadline(hung.get('k'), 5_000, 'the command timeout (200 ms)'), /Command timed out/);
  });
});
