/**
 * ReplicaHeartbeat (src/store/redis/heartbeat.ts): how many replicas are live, from one
 * sorted set in Redis. Counting, the live window, the set's expiry and leaving it run
 * against a real Redis (its TIME is the clock); failures and the one-beat-at-a-time
 * rule against a stand-in client.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { createLogger } from '../../src/observability/logger.js';
import type { RedisClient } from '../../src/store/redis/connection.js';
import { HEARTBEAT_COMMAND, ReplicaHeartbeat } from '../../src/store/redis/heartbeat.js';
import { HEARTBEAT_LUA } from '../../src/store/redis/scripts.js';
import { requireSharedRedis, stopSharedRedis, testPrefix } from '../helpers/redis.js';
import { LogCapture } from '../helpers/tollgate.js';
import { eventually, nextEvent, settledAtOnce } from '../helpers/wait.js';

const silent = createLogger('silent');

describe('replica heartbeat against Redis', () => {
  const clients: Redis[] = [];
  after(async () => {
    for (const client of clients) client.disconnect();
    await stopSharedRedis();
  });

  /** A connected client with the heartbeat script defined, as the store sets it up; undefined when the test skipped. */
  async function connect(t: TestContext): Promise<Redis | undefined> {
    const target = await requireSharedRedis(t);
    if (target === undefined) return undefined;
    const client = new Redis(target.url, { maxRetriesPerRequest: 1 });
    clients.push(client);
    client.defineCommand(HEARTBEAT_COMMAND, { numberOfKeys: 1, lua: HEARTBEAT_LUA });
    if (client.status !== 'ready') await nextEvent(client, 'ready', { what: 'a Redis connection' });
    return client;
  }

  const heartbeat = (client: RedisClient, key: string, replicaId: string, liveMs?: number) =>
    new ReplicaHeartbeat({ client, key, replicaId, logger: silent, liveMs });

  it('counts the replicas seen in the live window, each once', async (t) => {
    const client = await connect(t);
    if (client === undefined) return;
    const key = testPrefix('hb') + 'replicas';
    const [a, b, c] = ['a', 'b', 'c'].map((id) => heartbeat(client, key, id));
    assert.equal(a.live, undefined, 'no count before the first beat');
    await a.beat();
    assert.equal(a.live, 1);
    await b.beat();
    await c.beat();
    assert.equal(c.live, 3);
    await a.beat(); // seen again: still one member
    assert.equal(a.live, 3);
    assert.deepEqual((await client.zrange(key, '0', '-1')).sort(), ['a', 'b', 'c']);
  });

  it('a replica not seen for liveMs no longer counts, and the set expires on its own', async (t) => {
    const client = await connect(t);
    if (client === undefined) return;
    const key = testPrefix('hb-live') + 'replicas';
    const LIVE_MS = 200;
    const a = heartbeat(client, key, 'a', LIVE_MS);
    const b = heartbeat(client, key, 'b', LIVE_MS);
    // Together: two beats in a row could fall more than LIVE_MS apart on a loaded box.
    await Promise.all([a.beat(), b.beat()]);
    assert.equal(b.live, 2);
    // The window is Redis's TIME, so real time has to pass: b stops beating.
    await sleep(LIVE_MS + 50);
    await a.beat();
    assert.equal(a.live, 1);
    assert.deepEqual(await client.zrange(key, '0', '-1'), ['a']);
    // Two live windows of TTL: a fleet that died leaves nothing behind.
    const ttl = await client.pttl(key);
    assert.ok(ttl > 0 && ttl <= 2 * LIVE_MS, `pttl ${ttl}`);
  });

  it('stop() leaves the set at once: the others count one fewer at their next beat', async (t) => {
    const client = await connect(t);
    if (client === undefined) return;
    const key = testPrefix('hb-stop') + 'replicas';
    const a = heartbeat(client, key, 'a');
    const b = heartbeat(client, key, 'b');
    await a.beat();
    await b.beat();
    await b.stop();
    await a.beat();
    assert.equal(a.live, 1);
  });

  it('start() beats at once and then every intervalMs until stop()', async (t) => {
    const client = await connect(t);
    if (client === undefined) return;
    const key = testPrefix('hb-start') + 'replicas';
    const beating = new ReplicaHeartbeat({ client, key, replicaId: 'a', logger: silent, intervalMs: 20 });
    t.after(() => beating.stop());
    beating.start();
    beating.start(); // a second start() adds no second timer
    await eventually(() => beating.live === 1, { what: 'the first beat' });
    const first = Number(await client.zscore(key, 'a'));
    await eventually(async () => Number(await client.zscore(key, 'a')) > first, { what: 'a later beat' });
    await beating.stop();
    assert.equal(await client.zscore(key, 'a'), null);
  });
});

/** Enough of a client for ReplicaHeartbeat: a status, the heartbeat command and zrem, recording calls. */
function standIn(answer: () => Promise<number>) {
  const calls = { beats: 0, zrem: 0 };
  const client = {
    status: 'ready',
    [HEARTBEAT_COMMAND]: () => {
      calls.beats++;
      return answer();
    },
    zrem: async () => {
      calls.zrem++;
      return 1;
    },
  };
  return { client: client as unknown as RedisClient & { status: string }, calls };
}

describe('replica heartbeat failures', () => {
  it('a failed beat is logged at debug and keeps the last count', async () => {
    let fail = false;
    const { client } = standIn(async () => {
      if (fail) throw new Error('NOSCRIPT or a lost connection');
      return 3;
    });
    const logs = new LogCapture();
    const hb = new ReplicaHeartbeat({ client, key: 'k', replicaId: 'a', logger: createLogger('debug', logs) });
    await hb.beat();
    assert.equal(hb.live, 3);
    fail = true;
    await hb.beat();
    assert.equal(hb.live, 3);
    assert.equal(logs.count('replica heartbeat failed'), 1);
  });

  it('does not beat or leave while the client is not ready', async () => {
    const { client, calls } = standIn(async () => 1);
    client.status = 'reconnecting';
    const hb = new ReplicaHeartbeat({ client, key: 'k', replicaId: 'a', logger: silent });
    await hb.beat();
    await hb.stop();
    assert.deepEqual(calls, { beats: 0, zrem: 0 });
    assert.equal(hb.live, undefined);
  });

  it('one beat at a time: a beat while one is in flight does nothing', async () => {
    let answer: (n: number) => void = () => {};
    const { client, calls } = standIn(() => new Promise<number>((resolve) => (answer = resolve)));
    const hb = new ReplicaHeartbeat({ client, key: 'k', replicaId: 'a', logger: silent });
    const first = hb.beat();
    // Returns at once (a regression that beat again, or waited for the first, would hang here).
    assert.equal(await settledAtOnce(hb.beat()), true, 'a beat while one is in flight returns at once');
    assert.equal(calls.beats, 1);
    answer(2);
    await first;
    assert.equal(hb.live, 2);
    const next = hb.beat();
    assert.equal(calls.beats, 2, 'the next beat goes out once the first has ended');
    answer(4);
    await next;
    assert.equal(hb.live, 4);
  });
});
