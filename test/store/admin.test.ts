/**
 * StoreAdmin on both stores: inspect reads what the next decision's headers build on,
 * block / unblock / reset do the same to MemoryStore and to Redis (compared field by
 * field), a manual block refuses shadow decisions without taking slots, the listing
 * pages in (until, key) order, and on Redis: the decide script keeps the index, every
 * key has a TTL, listing never SCANs, and a dropped subscription stops the block cache.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import type { AlgorithmName, RedisStoreConfig } from '../../src/config/types.js';
import { createLogger } from '../../src/observability/logger.js';
import type { CompiledRateLimit } from '../../src/policy/types.js';
import { MemoryStore } from '../../src/store/memory.js';
import { createRedisStore, type RedisStore } from '../../src/store/redis/index.js';
import type { BlockInfo, KeyState, LimitCheck, RateLimitStore, StoreAdmin } from '../../src/store/types.js';
import { concurrencyLimit, rateLimit } from '../helpers/limits.js';
import { requireRedisServer, sharedRedis, spawnRedis, stopSharedRedis, testPrefix, waitUntilShared, type RedisTarget } from '../helpers/redis.js';
import { eventually } from '../helpers/wait.js';

const T0 = 1_764_000_000_000;
const MINUTE = 60_000;
const ALGORITHMS: readonly AlgorithmName[] = ['fixed-window', 'sliding-window', 'sliding-log', 'token-bucket'];

type Store = RateLimitStore & StoreAdmin;

const opened: RedisStore[] = [];
after(async () => {
  await Promise.all(opened.map((s) => s.close()));
  await stopSharedRedis();
});

function redisConfig(target: RedisTarget, prefix: string): RedisStoreConfig {
  return { url: target.url, prefix, timeoutMs: 1_000, onError: 'deny', onErrorStatus: 503, slotLeaseMs: 30_000, clock: 'local', expectedReplicas: 1 };
}

async function openRedis(target: RedisTarget, prefix: string, blockCache = false): Promise<RedisStore> {
  const store = createRedisStore({ config: redisConfig(target, prefix), clock: () => T0, logger: createLogger('silent'), memoryFallback: { maxKeys: 10_000, maxBlocks: 10_000 }, blockCache });
  opened.push(store);
  await waitUntilShared((checks, now) => store.decide(checks, now));
  await store.ready(10_000);
  return store;
}

function memory(): MemoryStore {
  return new MemoryStore({ maxKeys: 10_000, maxBlocks: 10_000, clock: () => T0 });
}

function limitOf(algorithm: AlgorithmName, options: { limit?: number; blockMs?: number; blocks?: number[]; by?: string; index?: number } = {}): CompiledRateLimit {
  return rateLimit({ routeId: 'adm', by: options.by ?? `ip${options.index ?? 0}`, limit: options.limit ?? 5, windowMs: MINUTE, algorithm, blockMs: options.blockMs, blocks: options.blocks, index: options.index });
}

function checkOf(limit: CompiledRateLimit, client: string): LimitCheck {
  return { limit, key: limit.keyPrefix + client, max: limit.limit };
}

/** Both stores, or only memory when no Redis runs (the Redis half then skips). */
async function bothStores(name: string): Promise<[string, Store][]> {
  const target = await sharedRedis();
  const stores: [string, Store][] = [['memory', memory()]];
  if (target !== undefined) stores.push(['redis', await openRedis(target, testPrefix(name))]);
  return stores;
}

function comparable(state: KeyState): KeyState {
  return { ...state };
}

describe('StoreAdmin: inspect is what the next decision builds on', () => {
  for (const algorithm of ALGORITHMS) {
    it(`${algorithm}: remaining and reset equal the last response's; the next response shows one less; memory = Redis`, async () => {
      const results: Record<string, unknown[]> = {};
      for (const [name, store] of await bothStores(`inspect-${algorithm}`)) {
        const limit = limitOf(algorithm);
        const check = checkOf(limit, 'c1');
        const seen: unknown[] = [];
        let last;
        for (let i = 0; i < 3; i++) last = (await store.decide([check], T0 + 1_000 + i * 7_000)).outcomes[0];
        const now = T0 + 1_000 + 2 * 7_000;
        const [state] = await store.inspect([check], now);
        // The last decision was at `now` too: the key's last response.
        assert.equal(state.remaining, last!.remaining, `${name}: remaining as the last response showed it`);
        assert.equal(state.resetAt, last!.resetAt, `${name}: reset as the last response showed it`);
        assert.equal(state.count, last!.count, `${name}: count`);
        const next = (await store.decide([check], now)).outcomes[0];
        assert.equal(next.remaining, state.remaining - 1, `${name}: the next response shows one less`);
        assert.deepEqual([state.blockedUntil, state.manual, state.strikes, state.reason], [0, false, 0, '']);
        seen.push(comparable(state), next);
        seen.push(...(await store.inspect([check, checkOf(limit, 'nobody')], T0 + 40_000)).map(comparable));
        results[name] = seen;
      }
      if (results.redis !== undefined) assert.deepEqual(results.redis, results.memory);
    });
  }

  it('a concurrency check: slots held and free', async () => {
    for (const [name, store] of await bothStores('inspect-cc')) {
      const slots = concurrencyLimit({ routeId: 'adm', concurrent: 3, index: 5 });
      const check = { limit: slots, key: slots.keyPrefix + 'c', max: 3 };
      const held = await store.decide([check], T0);
      const [state] = await store.inspect([check], T0 + 1);
      assert.deepEqual([state.count, state.remaining, state.blockedUntil], [1, 2, 0], name);
      store.settle(held.hold!);
      if (name === 'redis') await (store as RedisStore).settled();
      assert.equal((await store.inspect([check], T0 + 2))[0].count, 0, name);
    }
  });
});

describe('StoreAdmin: block, unblock, reset', () => {
  it('a manual block refuses (manual: true), even for a shadow decision, which then takes no slot; memory = Redis', async () => {
    const results: Record<string, unknown[]> = {};
    for (const [name, store] of await bothStores('manual')) {
      const limit = limitOf('sliding-window', { blockMs: MINUTE });
      const slots = concurrencyLimit({ routeId: 'adm', concurrent: 5, index: 1 });
      const check = checkOf(limit, 'm1');
      const slot = { limit: slots, key: slots.keyPrefix + 'm1', max: 5 };
      await store.decide([check], T0);
      const [blocked] = await store.block([check], T0 + 10, 10 * MINUTE, 'leaked key');
      assert.deepEqual([blocked.blockedUntil, blocked.manual, blocked.reason, blocked.remaining, blocked.count], [T0 + 10 + 10 * MINUTE, true, 'leaked key', 0, 1], name);
      const refused = await store.decide([check, slot], T0 + 20, true);
      assert.equal(refused.allowed, false);
      assert.equal(refused.outcomes[0].manual, true, `${name}: the outcome says an operator's block refused`);
      assert.equal(refused.hold, undefined, `${name}: a shadow decision refused by a manual block holds no slot`);
      assert.equal((await store.inspect([slot], T0 + 21))[0].count, 0);
      const [listed] = (await store.listBlocks([limit], null, 10, T0 + 30)).blocks;
      assert.deepEqual([listed.key, listed.until, listed.manual, listed.reason, listed.strike], [check.key, T0 + 10 + 10 * MINUTE, true, 'leaked key', 0]);
      results[name] = [comparable(blocked), refused.outcomes[0]];
    }
    if (results.redis !== undefined) assert.deepEqual(results.redis, results.memory);
  });

  it('a manual block never shortens a running block (it turns it manual); strikes are kept', async () => {
    for (const [name, store] of await bothStores('longer')) {
      const limit = limitOf('fixed-window', { limit: 1, blocks: [10 * MINUTE, 60 * MINUTE], index: 2 });
      const check = checkOf(limit, 'x');
      await store.decide([check], T0);
      const tripped = (await store.decide([check], T0 + 1)).outcomes[0];
      assert.equal(tripped.blockedUntil, T0 + 1 + 10 * MINUTE);
      const [state] = await store.block([check], T0 + 2, MINUTE, 'short');
      assert.deepEqual([state.blockedUntil, state.manual, state.strikes], [T0 + 1 + 10 * MINUTE, true, 1], name);
      const [longer] = await store.block([check], T0 + 3, 20 * MINUTE, 'longer');
      assert.deepEqual([longer.blockedUntil, longer.reason], [T0 + 3 + 20 * MINUTE, 'longer'], name);
      const listed = (await store.listBlocks([limit], null, 10, T0 + 4)).blocks;
      assert.equal(listed.length, 1, `${name}: one block per key in the listing`);
    }
  });

  it('unblock lifts the block and forgets strikes, counts stay; reset forgets everything; memory = Redis', async () => {
    const results: Record<string, unknown[]> = {};
    for (const [name, store] of await bothStores('lift')) {
      const limit = limitOf('sliding-log', { limit: 2, blocks: [MINUTE, 10 * MINUTE], index: 3 });
      const check = checkOf(limit, 'y');
      const out: unknown[] = [];
      for (let i = 0; i < 3; i++) out.push((await store.decide([check], T0 + i)).outcomes[0]);
      assert.equal((out[2] as { blockStarted: boolean }).blockStarted, true);
      assert.deepEqual(await store.unblock([check], T0 + 10), [true]);
      const [afterUnblock] = await store.inspect([check], T0 + 11);
      assert.deepEqual([afterUnblock.blockedUntil, afterUnblock.strikes, afterUnblock.count], [0, 0, 2], `${name}: counts stay`);
      const again = (await store.decide([check], T0 + 12)).outcomes[0];
      assert.deepEqual([again.allowed, again.blockStarted, again.strike, again.blockedUntil], [false, true, 1, T0 + 12 + MINUTE], `${name}: over the limit: blocked again, strike 1`);
      assert.deepEqual(await store.unblock([check], T0 + 13), [true]);
      assert.deepEqual(await store.unblock([check], T0 + 14), [false], 'nothing to lift');
      assert.deepEqual(await store.reset([check], T0 + 15), [true]);
      const [afterReset] = await store.inspect([check], T0 + 16);
      assert.deepEqual([afterReset.count, afterReset.remaining, afterReset.blockedUntil, afterReset.strikes], [0, 2, 0, 0], name);
      assert.deepEqual(await store.reset([check], T0 + 17), [false], 'nothing held');
      assert.equal((await store.listBlocks([limit], null, 10, T0 + 18)).blocks.length, 0);
      out.push(comparable(afterUnblock), again, comparable(afterReset));
      results[name] = out;
    }
    if (results.redis !== undefined) assert.deepEqual(results.redis, results.memory);
  });
});

describe('StoreAdmin: listing', () => {
  it('pages in (until, key) order, ties by key, to the end; only the limits asked for; memory = Redis', async () => {
    const pages: Record<string, string[][]> = {};
    for (const [name, store] of await bothStores('list')) {
      const a = limitOf('fixed-window', { limit: 1, blockMs: 5 * MINUTE, index: 4 });
      const b = limitOf('token-bucket', { limit: 1, blockMs: 3 * MINUTE, index: 5 });
      const other = rateLimit({ routeId: 'elsewhere', limit: 1, windowMs: MINUTE, algorithm: 'fixed-window', blockMs: MINUTE });
      for (const client of ['k3', 'k1', 'k2']) await store.block([checkOf(a, client)], T0, 5 * MINUTE, '');
      // Automatic blocks, started by decisions.
      for (const client of ['k9', 'k8']) {
        await store.decide([checkOf(b, client)], T0);
        await store.decide([checkOf(b, client)], T0);
      }
      await store.block([checkOf(other, 'k1')], T0, MINUTE, '');
      const seen: string[][] = [];
      let after: string | null = null;
      for (;;) {
        const page = await store.listBlocks([a, b], after, 2, T0 + 1);
        seen.push(page.blocks.map((x: BlockInfo) => `${x.key.slice(x.limit.keyPrefix.length)}@${x.until - T0}${x.manual ? 'm' : ''}${x.strike}`));
        if (page.next === null) break;
        after = page.next;
      }
      assert.deepEqual(seen.flat(), ['k8@180000' + '1', 'k9@1800001', 'k1@300000m0', 'k2@300000m0', 'k3@300000m0'], name);
      pages[name] = seen;
    }
    if (pages.redis !== undefined) assert.deepEqual(pages.redis.flat(), pages.memory.flat());
  });
});

describe('StoreAdmin on Redis', () => {
  it('every key the admin script and the index write has a TTL', async (t) => {
    const target = await sharedRedis();
    if (target === undefined) return t.skip('no Redis');
    const prefix = testPrefix('admin-ttl');
    const store = await openRedis(target, prefix);
    for (const algorithm of ALGORITHMS) {
      const limit = limitOf(algorithm, { limit: 1, blocks: [MINUTE, 2 * MINUTE], index: 6 });
      await store.decide([checkOf(limit, 'auto')], T0);
      await store.decide([checkOf(limit, 'auto')], T0);
      await store.block([checkOf(limit, 'manual')], T0, MINUTE, 'why');
      await store.unblock([checkOf(limit, 'auto')], T0);
    }
    const client = new Redis(target.url);
    try {
      const keys: string[] = [];
      let cursor = '0';
      do {
        const [next, batch] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
        cursor = next;
        keys.push(...batch);
      } while (cursor !== '0');
      assert.ok(keys.some((k) => k.endsWith(':admin:blocks')), 'the index exists');
      assert.ok(keys.some((k) => k.endsWith(':m')), 'reason keys exist');
      for (const key of keys) assert.ok((await client.pttl(key)) > 0, `${key} has a TTL`);
    } finally {
      client.disconnect();
    }
  });

  it('the decide script indexes the blocks it starts and drops ended ones; listing never SCANs', async (t) => {
    if (!requireRedisServer(t)) return;
    const server = await spawnRedis();
    t.after(() => server.stop());
    const prefix = testPrefix('admin-index');
    const store = await openRedis(server, prefix);
    const limit = limitOf('fixed-window', { limit: 1, blockMs: MINUTE, index: 7 });
    for (let i = 0; i < 20; i++) {
      await store.decide([checkOf(limit, `c${i}`)], T0);
      await store.decide([checkOf(limit, `c${i}`)], T0);
    }
    const client = new Redis(server.url);
    t.after(() => client.disconnect());
    const index = `${prefix}{adm}:admin:blocks`;
    assert.equal(await client.zcard(index), 20);
    // A block started after the others ended trims them from the index.
    await store.decide([checkOf(limit, 'late')], T0 + 2 * MINUTE);
    await store.decide([checkOf(limit, 'late')], T0 + 2 * MINUTE);
    assert.equal(await client.zcard(index), 1);
    await client.config('RESETSTAT');
    const page = await store.listBlocks([limit], null, 100, T0 + 2 * MINUTE);
    assert.deepEqual(page.blocks.map((b) => b.key), [limit.keyPrefix + 'late']);
    const stats = await client.info('commandstats');
    assert.doesNotMatch(stats, /cmdstat_(scan|keys):/, 'listing blocks never scans the keyspace');
  });

  it('the block cache caches nothing while the invalidation subscription is down, and works again once it is back', async (t) => {
    if (!requireRedisServer(t)) return;
    const server = await spawnRedis();
    t.after(() => server.stop());
    const store = await openRedis(server, testPrefix('admin-sub'), true);
    const limit = limitOf('fixed-window', { limit: 1, blockMs: 10 * MINUTE, index: 8 });
    const check = checkOf(limit, 'z');
    await store.decide([check], T0);
    await store.decide([check], T0);
    const cached = store.roundTrips;
    await store.decide([check], T0 + 1);
    assert.equal(store.roundTrips, cached, 'cached while subscribed');
    const client = new Redis(server.url);
    t.after(() => client.disconnect());
    await client.call('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await eventually(
      async () => {
        const before = store.roundTrips;
        await store.decide([check], T0 + 2);
        return store.roundTrips > before;
      },
      { what: 'the cache to stop answering', timeoutMs: 5_000 },
    );
    await eventually(
      async () => {
        await store.decide([check], T0 + 3);
        const before = store.roundTrips;
        await store.decide([check], T0 + 3);
        return store.roundTrips === before;
      },
      { what: 'the cache to answer again after resubscribing', timeoutMs: 10_000, intervalMs: 50 },
    );
  });
});
