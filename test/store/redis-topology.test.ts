/**
 * The store through Redis Cluster and Sentinel, against servers this test spawns:
 * - a 3-master cluster: concurrent decisions on several routes (hash-tagged, so spread
 *   over slots and masters) through auto-pipelining, each exact;
 * - a master behind one sentinel (quorum 1): decisions through the sentinel's master.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { TestContext } from 'node:test';
import type { RedisStoreConfig } from '../../src/config/types.js';
import { createLogger } from '../../src/observability/logger.js';
import type { CompiledLimit } from '../../src/policy/types.js';
import { createRedisStore } from '../../src/store/redis/index.js';
import type { RedisStore } from '../../src/store/redis/index.js';
import type { LimitCheck } from '../../src/store/types.js';
import { limitFixture, rawCommand, requireRedisServer, startCluster, startSentinel, testPrefix, waitUntilShared } from '../helpers/redis.js';

const DAY_MS = 86_400_000;

function open(t: TestContext, connection: Partial<RedisStoreConfig>): RedisStore {
  const store = createRedisStore({
    config: {
      prefix: testPrefix('topology'),
      timeoutMs: 1_000,
      onError: 'deny',
      onErrorStatus: 503,
      slotLeaseMs: 30_000,
      clock: 'redis',
      expectedReplicas: 1,
      ...connection,
    },
    clock: Date.now,
    logger: createLogger('silent'),
    memoryFallback: { maxKeys: 1_000, maxBlocks: 1_000 },
  });
  t.after(() => store.close());
  return store;
}

function check(limit: CompiledLimit, client: string): LimitCheck {
  return { limit, key: limit.keyPrefix + client, max: limit.limit };
}

describe('redis store: topologies', () => {
  it('cluster (3 masters): concurrent decisions on many routes, with one to three checks each, are exact', async (t) => {
    if (!requireRedisServer(t)) return;
    const cluster = await startCluster(3);
    t.after(() => cluster.stop());
    const store = open(t, { cluster: [...cluster.nodes] });
    await waitUntilShared((c, n) => store.decide(c, n));

    // Enough routes that their hash tags land on every master (checked below).
    const routes = Array.from({ length: 12 }, (_, i) => `route-${i}`);
    const limitsOf = (route: string): CompiledLimit[] => [
      limitFixture({ routeId: route, by: 'ip', limit: 5, windowMs: DAY_MS, algorithm: 'sliding-window', index: 0 }),
      limitFixture({ routeId: route, by: 'user', limit: 50, windowMs: DAY_MS, algorithm: 'sliding-log', index: 1 }),
      limitFixture({ routeId: route, by: 'global', limit: 500, windowMs: DAY_MS, blockMs: 60_000, algorithm: 'token-bucket', index: 2 }),
    ];
    // Each route gets 10 concurrent decisions with 1, 2 or 3 checks (different key counts per command).
    const decisions = await Promise.all(
      routes.flatMap((route, r) => {
        const limits = limitsOf(route).slice(0, 1 + (r % 3));
        return Array.from({ length: 10 }, () =>
          store.decide(
            limits.map((limit) => check(limit, limit.by === 'global' ? '*' : 'c')),
            Date.now(),
          ),
        );
      }),
    );
    for (const [r, route] of routes.entries()) {
      const mine = decisions.slice(10 * r, 10 * r + 10);
      assert.equal(mine.filter((d) => d.allowed).length, 5, route);
    }

    // The keys live on the masters their slots say (the script ran where its keys are).
    const owners = await Promise.all(cluster.nodes.map((n) => rawCommand(n.host, n.port, 'DBSIZE')));
    assert.equal(owners.filter((o) => Number(o.slice(1)) > 0).length, 3, 'every master holds some keys');
  });

  it('sentinel: decisions go to the master the sentinel names', async (t) => {
    if (!requireRedisServer(t)) return;
    const sentinel = await startSentinel();
    t.after(() => sentinel.stop());
    const store = open(t, { sentinels: [sentinel.sentinel], name: sentinel.name });
    await waitUntilShared((c, n) => store.decide(c, n), 15_000);
    const limit = limitFixture({ routeId: 'sentinel', limit: 3, windowMs: DAY_MS, algorithm: 'fixed-window' });
    const decisions = [];
    for (let i = 0; i < 5; i++) decisions.push(await store.decide([check(limit, 'c')], Date.now()));
    assert.deepEqual(
      decisions.map((d) => d.allowed),
      [true, true, true, false, false],
    );
    const size = await rawCommand(sentinel.master.host, sentinel.master.port, 'DBSIZE');
    assert.ok(Number(size.slice(1)) >= 2, `master DBSIZE ${size.trim()}`);
  });
});
