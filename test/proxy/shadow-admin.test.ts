import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { request, statuses } from '../helpers/http.js';
import { sampleSum } from '../helpers/metrics.js';
import { startWithEcho, type TollgateWithEcho } from '../helpers/tollgate.js';

const POLICY = `
upstream: http://127.0.0.1:9
allow:
  ips: [127.0.7.0/24]
routes:
  - id: shadowed
    match: { path: /shadowed }
    mode: shadow
    limits:
      - { by: ip, limit: 1, window: 1m }
  - id: enforced
    match: { path: /enforced }
    algorithm: fixed-window
    limits:
      - { by: ip, limit: 1, window: 1m, block: 1m }
`;

/** `tollgate_requests_total{route,decision}` now, 0 when the series does not exist yet. */
async function requests(tg: TollgateWithEcho, route: string, decision: string): Promise<number> {
  const value = sampleSum(await tg.scrape(), 'tollgate_requests_total', { route, decision });
  return Number.isNaN(value) ? 0 : value;
}

describe('shadow mode, admin endpoints and decision metrics', () => {
  let tg: TollgateWithEcho;

  before(async () => {
    tg = await startWithEcho(POLICY);
  });
  after(() => tg.close());

  it('shadow mode forwards over-limit requests, logs them with shadow: true and counts shadow_limited', async () => {
    const from = '127.0.8.1';
    const seenBefore = tg.upstream.seen.filter((s) => s.url === '/shadowed').length;
    const [allowedBefore, shadowBefore] = [await requests(tg, 'shadowed', 'allowed'), await requests(tg, 'shadowed', 'shadow_limited')];
    const replies = [];
    for (let i = 0; i < 3; i++) replies.push(await request(tg.url, '/shadowed', { from, headers: { 'x-request-id': `shadow-${i}` } }));
    assert.deepEqual(replies.map((r) => r.status), [200, 200, 200]);
    assert.equal(tg.upstream.seen.filter((s) => s.url === '/shadowed').length - seenBefore, 3, 'every request reached the upstream');
    assert.equal(replies[1].headers['retry-after'], undefined);
    const line = tg.logs.lines.find((l) => l.requestId === 'shadow-1');
    assert.ok(line, 'the over-limit request is logged');
    assert.equal(line.event, 'rate_limit_exceeded');
    assert.equal(line.shadow, true);
    assert.equal(line.route, 'shadowed');
    assert.equal(line.clientIp, from);
    assert.equal(line.limitBy, 'ip');
    assert.equal(line.limit, 1);
    assert.equal((await requests(tg, 'shadowed', 'allowed')) - allowedBefore, 1);
    assert.equal((await requests(tg, 'shadowed', 'shadow_limited')) - shadowBefore, 2);
  });

  it('tollgate_requests_total moves once per request with its decision', async () => {
    const keys = ['enforced/allowed', 'enforced/limited', 'enforced/blocked', 'enforced/bypassed', '_unmatched/bypassed'];
    const count = (key: string) => requests(tg, key.split('/')[0], key.split('/')[1]);
    const before = new Map(await Promise.all(keys.map(async (key) => [key, await count(key)] as const)));
    const delta = async (key: string): Promise<number> => (await count(key)) - (before.get(key) as number);
    assert.deepEqual(await statuses(tg.url, '/enforced', 3, { from: '127.0.8.2' }), [200, 429, 429]);
    await request(tg.url, '/enforced', { from: '127.0.7.9' }); // allowlisted
    await request(tg.url, '/nowhere', { from: '127.0.8.2' }); // no route
    assert.equal(await delta('enforced/allowed'), 1);
    assert.equal(await delta('enforced/limited'), 1, 'the request that started the block');
    assert.equal(await delta('enforced/blocked'), 1, 'refused during the block');
    assert.equal(await delta('enforced/bypassed'), 1);
    assert.equal(await delta('_unmatched/bypassed'), 1);
    const started = tg.logs.events('rate_limit_block_started').find((l) => l.route === 'enforced');
    assert.equal(started?.blocked, true);
    assert.equal(started?.retryAfter, 60);
  });

  it('admin /healthz and /readyz answer 200 while serving', async () => {
    assert.equal((await request(tg.adminUrl, '/healthz')).status, 200);
    assert.equal((await request(tg.adminUrl, '/readyz')).status, 200);
    assert.equal((await request(tg.adminUrl, '/nope')).status, 404);
  });
});
