/**
 * The admin API with two replicas on one Redis (two in-process Tollgates, one prefix):
 * a change made through A applies on B within 1 s, B's local block cache included;
 * inspect through A agrees with B's headers; the listing is the shared state, paged to
 * the end while blocks start and end; top merges both replicas' refusals.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { RedisStore } from '../../src/store/redis/index.js';
import { admin, eventually, query, tokenFile } from '../helpers/admin.js';
import { requireRedisServer, sharedRedis, spawnRedis, stopSharedRedis, testPrefix, type RedisTarget } from '../helpers/redis.js';
import { FakeClock } from '../helpers/clock.js';
import { startTollgate, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { request, statuses } from '../helpers/http.js';

const TOKEN = 'replica-admin-token-0123456789';

/** A change through one replica must show on the other within this. */
const PROPAGATION_MS = 1_000;

function policy(prefix: string): string {
  return `
clientIp:
  trustedProxies: [127.0.0.1/32]
routes:
  - id: api
    match: { path: /api }
    algorithm: fixed-window
    limits:
      - { by: ip, limit: 2, window: 1m, block: 10m }
  - id: keys
    match: { path: /keys }
    limits:
      - { by: header:x-api-key, limit: 100, window: 1h }
  - id: quiet
    mode: shadow
    match: { path: /quiet }
    limits:
      - { by: ip, limit: 1, window: 1m }
  - id: many
    match: { path: /many }
    algorithm: sliding-log
    limits:
      - { by: ip, limit: 100, window: 1m, block: 1h }
store:
  type: redis
  redis:
    url: \${REDIS_URL}
    prefix: "${prefix}"
    timeout: 500ms
    clock: local
`;
}

function from(ip: string, headers: Record<string, string> = {}) {
  return { headers: { 'x-forwarded-for': ip, ...headers } };
}

describe('admin API: two replicas on one Redis', () => {
  let redis: RedisTarget | undefined;
  let upstream: EchoUpstream;
  let a: TestTollgate;
  let b: TestTollgate;
  const clock = new FakeClock();
  const call = (tg: TestTollgate, method: string, target: string, body?: unknown) => admin(tg.adminUrl, method, target, { token: TOKEN, body });

  before(async () => {
    redis = await sharedRedis();
    if (redis === undefined) return;
    upstream = await startEchoUpstream();
    const text = policy(testPrefix('admin-replicas'));
    // One token file for both, as one Secret would give them.
    const options = { upstream: upstream.url, env: { REDIS_URL: redis.url }, clock, args: ['--admin-token-file', tokenFile(TOKEN)] };
    a = await startTollgate(text, options);
    b = await startTollgate(text, { ...options, file: a.file });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await upstream?.close();
    await stopSharedRedis();
  });

  it('a block set through A refuses on B within 1 s', async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    const ip = '10.20.0.1';
    assert.equal((await request(b.url, '/api', from(ip))).status, 200);
    const set = await call(a, 'POST', '/admin/blocks', { route: 'api', by: 'ip', key: ip, duration: '1h', reason: 'incident 42' });
    assert.equal(set.status, 200, set.body);
    const started = Date.now();
    await eventually(async () => assert.equal((await request(b.url, '/api', from(ip))).status, 429), PROPAGATION_MS);
    t.diagnostic(`refused on B after ${Date.now() - started} ms`);
    const listedOnB = await call(b, 'GET', `/admin/blocks${query({ route: 'api' })}`);
    assert.deepEqual(
      listedOnB.json.blocks.filter((x: { key: string }) => x.key === ip).map((x: { manual: boolean; reason: string }) => [x.manual, x.reason]),
      [[true, 'incident 42']],
      'B lists the shared state',
    );
  });

  it('an unblock through A lifts the block on B within 1 s, although B answered it from its block cache', async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    const ip = '10.20.0.2';
    await call(a, 'POST', '/admin/blocks', { route: 'api', by: 'ip', key: ip, duration: '1h' });
    const store = b.tollgate.store as RedisStore;
    assert.equal((await request(b.url, '/api', from(ip))).status, 429, 'refused by Redis: B caches the block');
    const trips = store.roundTrips;
    assert.equal((await request(b.url, '/api', from(ip))).status, 429);
    assert.equal(store.roundTrips, trips, 'answered from B\'s block cache, without Redis');
    const lifted = await call(a, 'DELETE', '/admin/blocks', { route: 'api', by: 'ip', key: ip });
    assert.equal(lifted.json.unblocked[0].wasBlocked, true);
    const started = Date.now();
    await eventually(async () => assert.equal((await request(b.url, '/api', from(ip))).status, 200), PROPAGATION_MS);
    t.diagnostic(`allowed on B after ${Date.now() - started} ms`);
  });

  it('reset through A: B\'s automatic block (cached) is gone and the key has its full quota again', async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    const ip = '10.20.0.3';
    assert.deepEqual(await statuses(b.url, '/api', 4, from(ip)), [200, 200, 429, 429]);
    const reset = await call(a, 'POST', '/admin/reset', { route: 'api', by: 'ip', key: ip });
    assert.equal(reset.json.reset[0].held, true);
    await eventually(async () => assert.equal((await request(b.url, '/api', from(ip))).status, 200), PROPAGATION_MS);
    const reply = await request(b.url, '/api', from(ip));
    assert.equal(reply.status, 200, 'two in all: the quota started over');
    assert.equal(reply.headers['x-ratelimit-remaining'], '0');
  });

  it('inspect through A agrees with the headers B sent', async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    const ip = '10.20.0.4';
    const reply = await request(b.url, '/api', from(ip));
    const state = (await call(a, 'GET', `/admin/keys${query({ route: 'api', by: 'ip', key: ip })}`)).json.limits[0];
    assert.equal(String(state.remaining), reply.headers['x-ratelimit-remaining']);
    assert.equal(String(state.reset), reply.headers['x-ratelimit-reset']);
    assert.equal(String(state.limit), reply.headers['x-ratelimit-limit']);
    assert.equal(state.count, 1);
  });

  it('a manual block set through A refuses on B\'s shadow route', async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    const ip = '10.20.0.5';
    assert.deepEqual(await statuses(b.url, '/quiet', 3, from(ip)), [200, 200, 200]);
    await call(a, 'POST', '/admin/blocks', { route: 'quiet', by: 'ip', key: ip, duration: '10m' });
    await eventually(async () => assert.equal((await request(b.url, '/quiet', from(ip))).status, 429), PROPAGATION_MS);
    assert.equal((await request(b.url, '/quiet', from('10.20.0.6'))).status, 200);
  });

  it('a header key blocked by raw value through A is refused on B from any address', async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    const leaked = 'sk_live_replica_leak_42';
    await call(a, 'POST', '/admin/blocks', { route: 'keys', by: 'header:x-api-key', key: leaked, duration: '1d', reason: 'leaked' });
    await eventually(async () => assert.equal((await request(b.url, '/keys', from('10.20.1.1', { 'x-api-key': leaked }))).status, 429), PROPAGATION_MS);
    assert.equal((await request(b.url, '/keys', from('10.20.1.1', { 'x-api-key': 'fine' }))).status, 200);
  });

  it('a listing of 1000 blocks in Redis, paged to the end, has no duplicates or gaps while blocks start and end', async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    const route = a.tollgate.policy.routes.find((r) => r.id === 'many')!;
    const limit = route.limits[0];
    const now = clock.nowMs;
    for (let wave = 0; wave < 4; wave++) {
      const checks = Array.from({ length: 250 }, (_, i) => ({ limit, key: `${limit.keyPrefix}10.30.${wave}.${i}`, max: limit.limit }));
      await a.tollgate.store.block(checks, now, (wave + 1) * 60_000, '');
    }
    // One automatic block, started by the decide script, is in the same index.
    assert.deepEqual((await Promise.all(Array.from({ length: 101 }, () => request(b.url, '/many', from('10.30.9.9'))))).filter((r) => r.status === 429).length, 1);
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    for (;;) {
      // Pages alternate between the replicas: the cursor is the shared state's.
      const page = await call(pages % 2 === 0 ? a : b, 'GET', `/admin/blocks${query({ route: 'many', limit: 90, cursor })}`);
      assert.equal(page.status, 200, page.body);
      seen.push(...page.json.blocks.map((x: { key: string }) => x.key));
      if (++pages === 3) {
        clock.advance(60_000); // the first wave ends (listed already)
        await call(b, 'POST', '/admin/blocks', { route: 'many', by: 'ip', key: '10.31.0.1', duration: '1d' });
        await call(b, 'POST', '/admin/blocks', { route: 'many', by: 'ip', key: '10.31.0.2', duration: '30s' });
        await call(a, 'DELETE', '/admin/blocks', { route: 'many', by: 'ip', key: '10.30.3.7' });
      }
      if (page.json.nextCursor === null) break;
      cursor = page.json.nextCursor;
    }
    assert.equal(new Set(seen).size, seen.length, 'no duplicates');
    const expected = [0, 1, 2, 3].flatMap((wave) => Array.from({ length: 250 }, (_, i) => `10.30.${wave}.${i}`).sort()).filter((k) => k !== '10.30.3.7');
    const listed = seen.filter((k) => k.startsWith('10.30.') && k !== '10.30.9.9');
    assert.deepEqual(listed.slice(0, 270), expected.slice(0, 270));
    assert.deepEqual(listed.filter((k) => !k.startsWith('10.30.0.')), expected.filter((k) => !k.startsWith('10.30.0.')), 'no gaps');
    assert.ok(seen.includes('10.30.9.9'), 'the automatic block is listed');
    assert.ok(seen.includes('10.31.0.1'), 'a block started during the paging, ending last, is reached');
  });

  it('top merges the refusals of both replicas (shared every second)', async (t) => {
    if (redis === undefined) return t.skip('no Redis');
    const ip = '10.40.0.1';
    await statuses(a.url, '/api', 5, from(ip)); // 3 refused on A
    await statuses(b.url, '/api', 4, from(ip)); // 4 refused on B
    await eventually(async () => {
      const top = (await call(a, 'GET', `/admin/top${query({ route: 'api', minutes: 1 })}`)).json.top;
      assert.deepEqual(top.find((e: { key: string }) => e.key === ip), { route: 'api', by: 'ip', key: ip, count: 7 });
    }, 3_000, 100);
  });
});

describe('admin API: Redis down', () => {
  it('answers 503 RATE_LIMITER_UNAVAILABLE with Retry-After, quickly', async (t) => {
    if (!requireRedisServer(t)) return;
    const server = await spawnRedis();
    const file = tokenFile(TOKEN);
    const tg = await startTollgate(policy(testPrefix('admin-down')), { upstream: 'http://127.0.0.1:9', env: { REDIS_URL: server.url }, args: ['--admin-token-file', file] });
    try {
      assert.equal((await call0(tg, 'GET', `/admin/keys${query({ route: 'api', by: 'ip', key: '10.0.0.1' })}`)).status, 200);
      await server.kill();
      const started = Date.now();
      const reply = await call0(tg, 'POST', '/admin/blocks', { route: 'api', by: 'ip', key: '10.0.0.1', duration: '1h' });
      assert.equal(reply.status, 503);
      assert.equal(reply.json.error.code, 'RATE_LIMITER_UNAVAILABLE');
      assert.equal(reply.headers['retry-after'], '1');
      assert.ok(Date.now() - started < 3_000);
      assert.equal(tg.logs.events('admin_action').length, 0, 'nothing changed, nothing audited');
    } finally {
      await tg.close();
      await server.stop();
    }
  });
});

function call0(tg: TestTollgate, method: string, target: string, body?: unknown) {
  return admin(tg.adminUrl, method, target, { token: TOKEN, body });
}
