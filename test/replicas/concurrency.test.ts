/**
 * Concurrency slots shared through Redis: exact across two replicas, a freed slot usable
 * from the other replica at once, a SIGKILLed replica's slots freed when its leases
 * expire, keys with a TTL, and a Redis outage per onError.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { envelope, request, type Reply } from '../helpers/http.js';
import { serveCli, type ServingCli } from '../helpers/process.js';
import { redisStoreConfig, requireRedisServer, sharedRedis, spawnRedis, stopSharedRedis, testPrefix, type RedisTarget } from '../helpers/redis.js';
import { startInFrontOf, startTollgate, withStore, writePolicy, type TestTollgate } from '../helpers/tollgate.js';
import { startGatedUpstream, type GatedUpstream } from '../helpers/upstream.js';
import { eventually, withDeadline } from '../helpers/wait.js';

const ROUTES = `
routes:
  - id: jobs
    match: { path: /slow/jobs }
    limits:
      - { by: ip, concurrent: 5 }
`;

/** Sends `path` and keeps the reply (bounded); the gated upstream holds it until released. */
function send(base: string, path: string): Promise<Reply> {
  return request(base, path, { timeoutMs: 15_000 });
}

describe('concurrency slots on a shared Redis', () => {
  let redis: RedisTarget | undefined;
  let upstream: GatedUpstream;
  const replicas: TestTollgate[] = [];
  let prefix: string;
  let inspector: Redis;

  before(async () => {
    redis = await sharedRedis();
    if (redis === undefined) return;
    upstream = await startGatedUpstream();
    prefix = testPrefix('slots');
    inspector = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    const store = { redis: redisStoreConfig(redis, { prefix, timeoutMs: 1_000 }) };
    for (let i = 0; i < 2; i++) replicas.push(await startTollgate(ROUTES, { upstream: upstream.url, store }));
  });
  after(async () => {
    await Promise.all(replicas.map((r) => r.close()));
    await upstream?.close();
    inspector?.disconnect();
    await stopSharedRedis();
  });

  it('40 parallel slow requests through two replicas on concurrent: 5: exactly 5 reach the upstream at once', async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    const replies = Array.from({ length: 40 }, (_, i) => send(replicas[i % 2].url, '/slow/jobs'));
    await upstream.waitForHeld(5);
    // Every refusal has come back before any slot is released: 35 of them.
    const refused = await eventually(async () => {
      const settled = await Promise.all(replies.map((r) => Promise.race([r, new Promise<null>((resolve) => setImmediate(() => resolve(null)))])));
      const answered = settled.filter((r): r is Reply => r !== null);
      return answered.length === 35 ? answered : false;
    }, { what: '35 refusals', timeoutMs: 10_000 });
    assert.equal(upstream.held.length, 5, 'never more than 5 at the upstream');
    for (const reply of refused) {
      assert.equal(reply.status, 429);
      assert.equal(envelope(reply).error.details.limitType, 'concurrent');
    }
    const key = `${prefix}{jobs}:ip:cc:127.0.0.1`;
    assert.equal(await inspector.zcard(key), 5);
    assert.ok((await inspector.pttl(key)) > 0, 'the slots key has a TTL');
    upstream.release();
    const done = await Promise.all(replies);
    assert.equal(done.filter((r) => r.status === 200).length, 5);
    await eventually(async () => (await inspector.zcard(key)) === 0, { what: 'every lease released' });
  });

  it('a slot freed through one replica is usable through the other at once', async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    const held = Array.from({ length: 5 }, () => send(replicas[0].url, '/slow/jobs'));
    await upstream.waitForHeld(5);
    assert.equal((await send(replicas[1].url, '/slow/jobs')).status, 429);
    upstream.release();
    await Promise.all(held);
    // Releases go out in the turn after the exchange ends: B admits within a few ms.
    const started = performance.now();
    const next = send(replicas[1].url, '/slow/jobs');
    await upstream.waitForHeld(1);
    t.diagnostic(`admitted on the other replica ${Math.round(performance.now() - started)} ms after the releases`);
    upstream.release();
    assert.equal((await next).status, 200);
  });
});

describe('a replica that dies holding slots', () => {
  let redis: RedisTarget | undefined;
  let upstream: GatedUpstream;
  let dying: ServingCli | undefined;
  let survivor: ServingCli | undefined;

  before(async () => {
    redis = await sharedRedis();
    if (redis === undefined) return;
    upstream = await startGatedUpstream();
  });
  after(async () => {
    await dying?.stop();
    await survivor?.stop();
    await upstream?.close();
    await stopSharedRedis();
  });

  it("its slots are free again once its leases expire (SIGKILL: nothing released)", async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    // A short lease so the test waits seconds, not 30 s; renewals every lease / 3.
    const LEASE_MS = 1_500;
    const file = writePolicy(withStore(ROUTES, { redis: redisStoreConfig(redis, { prefix: testPrefix('dying'), timeoutMs: 1_000, slotLeaseMs: LEASE_MS }) }));
    dying = await serveCli(['--config', file, '--upstream', upstream.url]);
    survivor = await serveCli(['--config', file, '--upstream', upstream.url]);
    const held = Array.from({ length: 5 }, () => send(dying!.url, '/slow/jobs').catch(() => undefined));
    await upstream.waitForHeld(5);
    assert.equal((await send(survivor.url, '/slow/jobs')).status, 429, 'all five slots are held');
    // Held across a few renewals: the leases outlive their first length while the replica lives.
    await new Promise((resolve) => setTimeout(resolve, 2 * LEASE_MS));
    assert.equal((await send(survivor.url, '/slow/jobs')).status, 429, 'renewed while the replica lives');
    const killedAt = performance.now();
    dying.signal('SIGKILL');
    await dying.waitForExit();
    // The dead replica's five requests leave the upstream as their sockets close; until
    // then a held count of 1 would not mean a new admission.
    await eventually(() => upstream.held.length === 0, { what: "the dead replica's requests to leave the upstream", timeoutMs: 5_000 });
    // Ask until one request is let through (the gated upstream then holds it); refusals come back at once.
    const admitted = await eventually(
      async () => {
        const reply = send(survivor!.url, '/slow/jobs');
        const first = await Promise.race([reply.then((r) => r.status), upstream.waitForHeld(1, 150).then(() => 'held' as const, () => 'not yet' as const)]);
        return first === 'held' ? { reply } : false; // wrapped: eventually would wait for a returned promise
      },
      { what: 'a slot after the leases expired', timeoutMs: 3 * LEASE_MS + 5_000, intervalMs: 50 },
    );
    const waited = performance.now() - killedAt;
    t.diagnostic(`slots free ${Math.round(waited)} ms after SIGKILL (lease ${LEASE_MS} ms)`);
    // A lease outlives its last renewal by at most its length; the slack is for a loaded box.
    assert.ok(waited <= LEASE_MS + 3_000, `freed in ${Math.round(waited)} ms`);
    upstream.release();
    assert.equal((await admitted.reply).status, 200);
    await Promise.all(held);
  });
});

describe('concurrency slots while Redis is down', () => {
  it('onError: local counts slots in the replica; onError: deny refuses with 503', async (t) => {
    if (!requireRedisServer(t)) return;
    const own = await spawnRedis();
    const upstream = await startGatedUpstream();
    try {
      const local = await startInFrontOf(upstream, ROUTES, { store: { redis: redisStoreConfig(own, { onError: 'local', timeoutMs: 200 }) } });
      const deny = await startTollgate(ROUTES, { upstream: upstream.url, store: { redis: redisStoreConfig(own, { onError: 'deny', timeoutMs: 200 }) } });
      try {
        await own.kill();
        const held = Array.from({ length: 5 }, () => send(local.url, '/slow/jobs'));
        await upstream.waitForHeld(5);
        const over = await send(local.url, '/slow/jobs');
        assert.equal(over.status, 429, 'the sixth is refused by the local count (limit / 1 replica)');
        assert.equal((await send(deny.url, '/slow/jobs')).status, 503);
        upstream.release();
        for (const reply of await Promise.all(held)) assert.equal(reply.status, 200);
        // Given back locally: five more fit.
        const again = Array.from({ length: 5 }, () => send(local.url, '/slow/jobs'));
        await upstream.waitForHeld(5);
        upstream.release();
        for (const reply of await Promise.all(again)) assert.equal(reply.status, 200);
      } finally {
        await deny.close();
        await local.close();
      }
    } finally {
      await upstream.close();
      await own.stop();
    }
  });
});
