/**
 * The admin API of one running Tollgate (memory store): authentication (off, 401, lock-out,
 * rotation), inspect against the response headers, block / unblock / reset, a manual
 * block on a shadow route, header keys by raw value, IPv6 /64 keys, the listing paged to
 * the end while blocks start and end, top, the audit lines and the metric.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { admin, eventually, query, tokenFile } from '../helpers/admin.js';
import { startTollgate, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { request, statuses } from '../helpers/http.js';

const TOKEN = 'admin-token-0123456789abcdef';

const POLICY = `
clientIp:
  trustedProxies: [127.0.0.1/32]
identity:
  header: x-user-id
routes:
  - id: api
    match: { path: /api }
    algorithm: fixed-window
    limits:
      - { by: ip, limit: 3, window: 1m, block: 5m }
      - { by: user, limit: 5, window: 1m }
  - id: keys
    match: { path: /keys }
    limits:
      - { by: header:x-api-key, limit: 100, window: 1h }
  - id: quiet
    mode: shadow
    match: { path: /quiet }
    limits:
      - { by: ip, limit: 1, window: 1m }
  - id: escalate
    match: { path: /esc }
    algorithm: fixed-window
    limits:
      - { by: ip, limit: 1, window: 1m, block: [1m, 10m] }
  - id: many
    match: { path: /many }
    limits:
      - { by: ip, limit: 100, window: 1m, block: 1h }
`;

/** A client behind the trusted proxy 127.0.0.1. */
function from(ip: string, headers: Record<string, string> = {}) {
  return { headers: { 'x-forwarded-for': ip, ...headers } };
}

async function metric(tg: TestTollgate, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${tg.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

describe('admin API: no token configured', () => {
  let tg: TestTollgate;
  before(async () => {
    tg = await startTollgate(POLICY, { upstream: 'http://127.0.0.1:9' });
  });
  after(() => tg.close());

  it('every /admin/* path answers 404, with or without a token; /healthz, /readyz, /metrics, /config stay', async () => {
    for (const [method, target] of [['GET', '/admin/keys?route=api&by=ip&key=1.2.3.4'], ['GET', '/admin/blocks'], ['POST', '/admin/blocks'], ['DELETE', '/admin/blocks'], ['POST', '/admin/reset'], ['GET', '/admin/top'], ['GET', '/admin/nope'], ['GET', '/admin']]) {
      const reply = await admin(tg.adminUrl, method, target, { token: TOKEN, body: method === 'GET' ? undefined : { route: 'api' } });
      assert.equal(reply.status, 404, `${method} ${target}`);
    }
    for (const target of ['/healthz', '/readyz', '/metrics', '/config']) assert.equal((await request(tg.adminUrl, target)).status, 200, target);
  });
});

describe('admin API (memory store)', () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;
  let file: string;
  const call = (method: string, target: string, body?: unknown, token = TOKEN, source?: string) => admin(tg.adminUrl, method, target, { token, body, from: source });

  before(async () => {
    upstream = await startEchoUpstream();
    file = tokenFile(`\n  ${TOKEN}  \n`);
    tg = await startTollgate(POLICY, { upstream: upstream.url, args: ['--admin-token-file', file] });
  });
  after(async () => {
    await tg.close();
    await upstream.close();
  });

  it('a missing or wrong token is 401 ADMIN_UNAUTHORIZED in the envelope; whitespace around the file\'s token is not part of it', async () => {
    for (const token of [undefined, 'wrong', `${TOKEN}x`, TOKEN.slice(1)]) {
      const reply = await admin(tg.adminUrl, 'GET', '/admin/blocks', { token, from: '127.0.1.1' });
      assert.equal(reply.status, 401);
      assert.equal(reply.json.success, false);
      assert.equal(reply.json.error.code, 'ADMIN_UNAUTHORIZED');
      assert.equal(typeof reply.json.error.details.requestId, 'string');
    }
    assert.equal((await call('GET', '/admin/blocks')).status, 200);
    assert.equal((await admin(tg.adminUrl, 'GET', '/admin/blocks', { headers: { authorization: `bearer   ${TOKEN}` } })).status, 200, 'the scheme is case-insensitive');
  });

  it('more than 10 failures in a minute from one peer: 429 with Retry-After for every request of that peer, the right token included, until 60 s after its last failure; X-Forwarded-For is ignored', async () => {
    const peer = '127.0.2.1';
    for (let i = 0; i < 10; i++) {
      // A spoofed X-Forwarded-For must not spread the failures over "other" clients.
      const reply = await admin(tg.adminUrl, 'GET', '/admin/blocks', { token: 'wrong', from: peer, headers: { 'x-forwarded-for': `10.9.0.${i}` } });
      assert.equal(reply.status, 401, `failure ${i + 1}`);
    }
    const eleventh = await admin(tg.adminUrl, 'GET', '/admin/blocks', { token: 'wrong', from: peer });
    assert.equal(eleventh.status, 429);
    assert.equal(eleventh.json.error.code, 'RATE_LIMIT_EXCEEDED');
    assert.equal(eleventh.headers['retry-after'], '60');
    const right = await call('GET', '/admin/blocks', undefined, TOKEN, peer);
    assert.equal(right.status, 429, 'the right token is refused too while locked out');
    assert.equal((await call('GET', '/admin/blocks', undefined, TOKEN, '127.0.2.2')).status, 200, 'other peers are not affected');
    tg.clock.advance(30_000);
    assert.equal((await call('GET', '/admin/blocks', undefined, TOKEN, peer)).headers['retry-after'], '30');
    tg.clock.advance(30_001);
    assert.equal((await call('GET', '/admin/blocks', undefined, TOKEN, peer)).status, 200, '60 s after the last failure');
    assert.equal(tg.logs.events('admin_auth_locked').length, 1);
  });

  it('a rotated token file takes effect (within a few seconds); the old token stops working', async () => {
    const next = 'rotated-token-fedcba9876543210';
    // Each try with the new token before it applies is a failure: try every 400 ms, from
    // peers of its own, well under the lock-out.
    try {
      writeFileSync(file, next + '\n');
      await eventually(async () => assert.equal((await call('GET', '/admin/blocks', undefined, next, '127.0.3.1')).status, 200), 5_000, 400);
      assert.equal((await call('GET', '/admin/blocks', undefined, TOKEN, '127.0.3.3')).status, 401);
    } finally {
      writeFileSync(file, TOKEN);
    }
    await eventually(async () => assert.equal((await call('GET', '/admin/blocks', undefined, TOKEN, '127.0.3.2')).status, 200), 5_000, 400);
    const text = JSON.stringify(tg.logs.lines);
    assert.ok(!text.includes(TOKEN) && !text.includes(next), 'the token never appears in logs');
    assert.ok(tg.logs.events('admin_token_loaded').length >= 2);
  });

  it('bad requests are 400 ADMIN_BAD_REQUEST: unknown route, unknown by, malformed body, bad duration; unknown paths 404, wrong methods 405', async () => {
    const bad = [
      await call('GET', `/admin/keys${query({ route: 'nope', by: 'ip', key: '1.2.3.4' })}`),
      await call('GET', `/admin/keys${query({ route: 'api', by: 'cookie', key: '1.2.3.4' })}`),
      await call('GET', `/admin/keys${query({ route: 'api', by: 'header:x-api-key', key: 'k' })}`),
      await call('GET', `/admin/keys${query({ route: 'api', by: 'ip', key: 'not-an-ip' })}`),
      await call('GET', `/admin/keys${query({ route: 'api', by: 'ip' })}`),
      await admin(tg.adminUrl, 'POST', '/admin/blocks', { token: TOKEN, raw: '{"route": "api",' }),
      await admin(tg.adminUrl, 'POST', '/admin/blocks', { token: TOKEN, raw: '[1, 2]' }),
      await call('POST', '/admin/blocks', { route: 'api', by: 'ip', key: '1.2.3.4', duration: '90' }),
      await call('POST', '/admin/blocks', { route: 'api', by: 'ip', key: '1.2.3.4', duration: '0s' }),
      await call('POST', '/admin/blocks', { route: 'api', by: 'ip', key: '1.2.3.4' }),
      await call('POST', '/admin/blocks', { route: 'api', by: 'ip', key: 7, duration: '1m' }),
      await call('POST', '/admin/blocks', { by: 'ip', key: '1.2.3.4', duration: '1m' }),
      await call('GET', `/admin/blocks${query({ cursor: 'garbage' })}`),
      await call('GET', `/admin/top${query({ minutes: 0 })}`),
      await call('GET', `/admin/top${query({ minutes: 16 })}`),
    ];
    for (const [i, reply] of bad.entries()) {
      assert.equal(reply.status, 400, `case ${i}: ${reply.body}`);
      assert.equal(reply.json.error.code, 'ADMIN_BAD_REQUEST', `case ${i}`);
    }
    const unknown = await call('GET', '/admin/nope');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.error.code, 'ADMIN_NOT_FOUND');
    const wrongMethod = await call('PUT', '/admin/blocks');
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.allow, 'GET, POST, DELETE');
  });

  it('inspect agrees with the response headers; remaining is what the next response would show before counting it', async () => {
    const ip = '10.1.0.1';
    let last;
    for (let i = 0; i < 2; i++) last = await request(tg.url, '/api', from(ip, { 'x-user-id': 'ann' }));
    assert.equal(last!.status, 200);
    const reply = await call('GET', `/admin/keys${query({ route: 'api', by: 'ip', key: ip })}`);
    assert.equal(reply.status, 200);
    assert.equal(reply.json.limits.length, 1);
    const [state] = reply.json.limits;
    assert.deepEqual(
      { route: state.route, by: state.by, for: state.for, key: state.key, window: state.window, limit: state.limit, count: state.count, blockedUntil: state.blockedUntil, strikes: state.strikes },
      { route: 'api', by: 'ip', for: 'any', key: ip, window: 60, limit: 3, count: 2, blockedUntil: null, strikes: 0 },
    );
    assert.equal(String(state.remaining), last!.headers['x-ratelimit-remaining']);
    assert.equal(String(state.reset), last!.headers['x-ratelimit-reset']);
    // Without `by`: every limit of the route the key fits (the ip and, as a user id, the user limit).
    const all = await call('GET', `/admin/keys${query({ route: 'api', key: 'ann' })}`);
    assert.deepEqual(all.json.limits.map((l: { by: string; count: number }) => [l.by, l.count]), [['user', 2]]);
    // The next request shows one less, as inspect predicted it would before counting it.
    const next = await request(tg.url, '/api', from(ip));
    assert.equal(Number(next.headers['x-ratelimit-remaining']), state.remaining - 1);
  });

  it('a block set by an operator refuses at once, is listed as manual with its reason, inspect shows it; unblock lifts it and keeps the counters', async () => {
    const ip = '10.2.0.1';
    assert.equal((await request(tg.url, '/api', from(ip))).status, 200);
    const before = await metric(tg, 'tollgate_admin_actions_total', 'action="block"');
    const set = await call('POST', '/admin/blocks', { route: 'api', by: 'ip', key: ip, duration: '1h', reason: 'abusive scraper' });
    assert.equal(set.status, 200, set.body);
    const until = Math.ceil((tg.clock.nowMs + 3_600_000) / 1000);
    assert.deepEqual(set.json.blocks, [{ route: 'api', by: 'ip', for: 'any', key: ip, until, strike: 0, manual: true, reason: 'abusive scraper' }]);
    const refused = await request(tg.url, '/api', from(ip));
    assert.equal(refused.status, 429);
    assert.equal(refused.headers['retry-after'], '3600');
    const listed = await call('GET', `/admin/blocks${query({ route: 'api' })}`);
    assert.deepEqual(listed.json.blocks.find((b: { key: string }) => b.key === ip), { route: 'api', by: 'ip', for: 'any', key: ip, until, strike: 0, manual: true, reason: 'abusive scraper' });
    const inspected = (await call('GET', `/admin/keys${query({ route: 'api', by: 'ip', key: ip })}`)).json.limits[0];
    assert.deepEqual([inspected.blockedUntil, inspected.manual, inspected.reason, inspected.remaining, inspected.count], [until, true, 'abusive scraper', 0, 1]);
    assert.equal(await metric(tg, 'tollgate_admin_actions_total', 'action="block"'), before + 1);
    const line = tg.logs.events('admin_action').at(-1)!;
    assert.deepEqual(
      { action: line.action, route: line.route, by: line.by, keyKind: line.keyKind, key: line.key, duration: line.duration, reason: line.reason, callerIp: line.callerIp },
      { action: 'block', route: 'api', by: 'ip', keyKind: 'ip', key: ip, duration: '1h', reason: 'abusive scraper', callerIp: '127.0.0.1' },
    );

    const lifted = await call('DELETE', '/admin/blocks', { route: 'api', by: 'ip', key: ip });
    assert.deepEqual(lifted.json.unblocked, [{ route: 'api', by: 'ip', for: 'any', key: ip, wasBlocked: true }]);
    assert.equal(tg.logs.events('admin_action').at(-1)!.action, 'unblock');
    // The counter stayed at 1: two more pass, the third trips the limit and blocks again.
    assert.deepEqual(await statuses(tg.url, '/api', 3, from(ip)), [200, 200, 429]);
    const again = (await call('GET', `/admin/keys${query({ route: 'api', by: 'ip', key: ip })}`)).json.limits[0];
    assert.deepEqual([again.manual, again.strikes, again.count], [false, 1, 3], 'blocked again by the limit itself');
  });

  it('reset forgets counters, block and strikes: the next request gets the full quota', async () => {
    const ip = '10.3.0.1';
    assert.deepEqual(await statuses(tg.url, '/esc', 2, from(ip)), [200, 429]);
    const blocked = (await call('GET', `/admin/keys${query({ route: 'escalate', by: 'ip', key: ip })}`)).json.limits[0];
    assert.equal(blocked.strikes, 1);
    assert.notEqual(blocked.blockedUntil, null);
    const reset = await call('POST', '/admin/reset', { route: 'escalate', by: 'ip', key: ip });
    assert.deepEqual(reset.json.reset, [{ route: 'escalate', by: 'ip', for: 'any', key: ip, held: true }]);
    const fresh = await request(tg.url, '/esc', from(ip));
    assert.equal(fresh.status, 200);
    assert.equal(fresh.headers['x-ratelimit-remaining'], '0');
    // Strikes were forgotten: the next violation is strike 1 again (a 1 minute block, not 10).
    const tripped = await request(tg.url, '/esc', from(ip));
    assert.equal(tripped.headers['retry-after'], '60');
    assert.equal(tg.logs.events('admin_action').at(-1)!.action, 'reset');
  });

  it('unblock forgets strikes: the next violation starts at strike 1 again', async () => {
    const ip = '10.3.0.2';
    assert.deepEqual(await statuses(tg.url, '/esc', 2, from(ip)), [200, 429]);
    tg.clock.advance(60_000);
    assert.equal((await request(tg.url, '/esc', from(ip))).status, 200);
    const second = await request(tg.url, '/esc', from(ip));
    assert.equal(second.headers['retry-after'], '600', 'strike 2: 10 minutes');
    await call('DELETE', '/admin/blocks', { route: 'escalate', by: 'ip', key: ip });
    tg.clock.advance(60_000);
    assert.equal((await request(tg.url, '/esc', from(ip))).status, 200);
    assert.equal((await request(tg.url, '/esc', from(ip))).headers['retry-after'], '60', 'strike 1 again');
  });

  it('a manual block refuses on a shadow route (which otherwise only logs)', async () => {
    const ip = '10.4.0.1';
    assert.deepEqual(await statuses(tg.url, '/quiet', 3, from(ip)), [200, 200, 200], 'shadow: over the limit, still forwarded');
    await call('POST', '/admin/blocks', { route: 'quiet', by: 'ip', key: ip, duration: '10m', reason: 'stop now' });
    const refused = await request(tg.url, '/quiet', from(ip));
    assert.equal(refused.status, 429);
    assert.equal(JSON.parse(refused.body).error.code, 'RATE_LIMIT_EXCEEDED');
    assert.equal((await request(tg.url, '/quiet', from('10.4.0.2'))).status, 200, 'others still pass');
  });

  it('header: keys are given by raw value and shown as their digest; the value never appears in logs or answers', async () => {
    const leaked = 'sk_live_leaked_0123456789';
    assert.equal((await request(tg.url, '/keys', from('10.5.0.1', { 'x-api-key': leaked }))).status, 200);
    const set = await call('POST', '/admin/blocks', { route: 'keys', by: 'header:x-api-key', key: leaked, duration: '1d', reason: 'leaked on a forum' });
    assert.equal(set.status, 200);
    const digest = set.json.blocks[0].key;
    assert.match(digest, /^h#[A-Za-z0-9_-]{22}$/);
    // Refused from any address; other keys pass.
    assert.equal((await request(tg.url, '/keys', from('10.5.0.2', { 'x-api-key': leaked }))).status, 429);
    assert.equal((await request(tg.url, '/keys', from('10.5.0.2', { 'x-api-key': 'another-key' }))).status, 200);
    // `by: header` covers every header limit; inspect by raw value; unblock by the listed digest.
    const inspected = await call('GET', `/admin/keys${query({ route: 'keys', by: 'header', key: leaked })}`);
    assert.deepEqual([inspected.json.limits[0].key, inspected.json.limits[0].count, inspected.json.limits[0].manual], [digest, 1, true]);
    const lifted = await call('DELETE', '/admin/blocks', { route: 'keys', by: 'header', listedKey: digest });
    assert.equal(lifted.json.unblocked[0].wasBlocked, true);
    assert.equal((await request(tg.url, '/keys', from('10.5.0.2', { 'x-api-key': leaked }))).status, 200);
    const logs = JSON.stringify(tg.logs.lines);
    assert.ok(!logs.includes(leaked), 'the raw header value is never logged');
    assert.ok(tg.logs.events('admin_action').some((l) => l.key === digest && l.keyKind === 'header'));
  });

  it('IPv6 keys: any address of the /64 names the key; listings show the /64', async () => {
    await call('POST', '/admin/blocks', { route: 'api', by: 'ip', key: '2001:db8:aa:bb::1', duration: '1h' });
    assert.equal((await request(tg.url, '/api', from('2001:db8:aa:bb:ffff::9'))).status, 429, 'another address of the same /64');
    assert.equal((await request(tg.url, '/api', from('2001:db8:aa:bc::1'))).status, 200, 'another /64');
    const listed = await call('GET', `/admin/blocks${query({ route: 'api' })}`);
    assert.ok(listed.json.blocks.some((b: { key: string }) => b.key === '2001:db8:aa:bb::/64'));
    const lifted = await call('DELETE', '/admin/blocks', { route: 'api', by: 'ip', key: '2001:db8:aa:bb::/64' });
    assert.equal(lifted.json.unblocked[0].wasBlocked, true);
  });

  it('route "*": unblock on every route with that by', async () => {
    const ip = '10.6.0.1';
    await call('POST', '/admin/blocks', { route: '*', by: 'ip', key: ip, duration: '1h' });
    assert.equal((await request(tg.url, '/api', from(ip))).status, 429);
    assert.equal((await request(tg.url, '/many', from(ip))).status, 429);
    const lifted = await call('DELETE', '/admin/blocks', { route: '*', by: 'ip', key: ip });
    assert.deepEqual(lifted.json.unblocked.map((u: { route: string }) => u.route), ['api', 'quiet', 'escalate', 'many']);
    assert.equal((await request(tg.url, '/many', from(ip))).status, 200);
  });

  it('a listing of 1000 blocks paged to the end has no duplicates or gaps, while blocks start and end', async () => {
    const route = tg.tollgate.policy.routes.find((r) => r.id === 'many')!;
    const limit = route.limits[0];
    const now = tg.clock.nowMs;
    // 1000 blocks in four waves of equal end times (ties are ordered by key).
    for (let wave = 0; wave < 4; wave++) {
      const checks = Array.from({ length: 250 }, (_, i) => ({ limit, key: `${limit.keyPrefix}10.7.${wave}.${i}`, max: limit.limit }));
      await tg.tollgate.store.block(checks, now, (wave + 1) * 60_000, 'wave ' + wave);
    }
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    for (;;) {
      const page = await call('GET', `/admin/blocks${query({ route: 'many', limit: 90, cursor })}`);
      assert.equal(page.status, 200, page.body);
      seen.push(...page.json.blocks.map((b: { key: string }) => b.key));
      pages++;
      if (pages === 3) {
        // Meanwhile: the first wave ends (all listed already), new blocks start, and
        // some blocks not yet listed are lifted.
        tg.clock.advance(60_000);
        await call('POST', '/admin/blocks', { route: 'many', by: 'ip', key: '10.8.0.1', duration: '1d' });
        await call('POST', '/admin/blocks', { route: 'many', by: 'ip', key: '10.8.0.2', duration: '30s' });
        await call('DELETE', '/admin/blocks', { route: 'many', by: 'ip', key: '10.7.3.7' });
      }
      if (page.json.nextCursor === null) break;
      cursor = page.json.nextCursor;
    }
    assert.equal(new Set(seen).size, seen.length, 'no duplicates');
    // Every block that ran throughout is there, in order of end then key.
    const expected = [0, 1, 2, 3].flatMap((wave) => Array.from({ length: 250 }, (_, i) => `10.7.${wave}.${i}`).sort()).filter((k) => k !== '10.7.3.7');
    const listed = seen.filter((k) => k.startsWith('10.7.'));
    assert.deepEqual(listed.slice(0, 270), expected.slice(0, 270), 'the first three pages as they were');
    assert.deepEqual(listed.filter((k) => !k.startsWith('10.7.0.')), expected.filter((k) => !k.startsWith('10.7.0.')), 'no gaps');
    assert.ok(seen.includes('10.8.0.1'), 'a block that started later and ends last is reached');
    assert.ok(pages >= 11);
  });

  it('top: the keys refused most in the last minutes, per route, current minute included', async () => {
    const hammer = '10.9.1.1';
    const other = '10.9.1.2';
    await statuses(tg.url, '/api', 10, from(hammer));
    await statuses(tg.url, '/api', 5, from(other));
    const top = await call('GET', `/admin/top${query({ route: 'api', minutes: 1 })}`);
    assert.equal(top.status, 200);
    assert.deepEqual(top.json.top.slice(0, 2), [
      { route: 'api', by: 'ip', key: hammer, count: 7 },
      { route: 'api', by: 'ip', key: other, count: 2 },
    ]);
    tg.clock.advance(60_000);
    await statuses(tg.url, '/api', 2, from(other));
    const twoMinutes = (await call('GET', `/admin/top${query({ route: 'api', minutes: 2 })}`)).json.top;
    assert.deepEqual(twoMinutes.find((e: { key: string }) => e.key === other).count, 4);
    const lastMinute = (await call('GET', `/admin/top${query({ route: 'api', minutes: 1 })}`)).json.top;
    assert.equal(lastMinute.find((e: { key: string }) => e.key === hammer), undefined, 'older minutes are left out');
    const everyRoute = (await call('GET', '/admin/top')).json.top;
    assert.ok(everyRoute.every((e: { count: number }, i: number, all: { count: number }[]) => i === 0 || all[i - 1].count >= e.count), 'sorted by count');
  });
});
