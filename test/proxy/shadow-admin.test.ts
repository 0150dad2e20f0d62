import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTollgate, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { request, statuses } from './client.js';

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

/** `tollgate_requests_total{route,decision}` as a map `route/decision -> value`. */
async function requestCounts(tg: TestTollgate): Promise<Map<string, number>> {
  const text = await (await fetch(`${tg.adminUrl}/metrics`)).text();
  const counts = new Map<string, number>();
  for (const match of text.matchAll(/^tollgate_requests_total\{([^}]*)\} (\S+)$/gm)) {
    const labels = Object.fromEntries([...match[1].matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    counts.set(`${labels.route}/${labels.decision}`, Number(match[2]));
  }
  return counts;
}

describe('shadow mode, admin endpoints and decision metrics', () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;

  before(async () => {
    upstream = await startEchoUpstream();
    tg = await startTollgate(POLICY, { upstream: upstream.url });
  });
  after(async () => {
    await tg.close();
    await upstream.close();
  });

  it('shadow mode forwards over-limit requests, logs them with shadow: true and counts shadow_limited', async () => {
    const from = '127.0.8.1';
    const seenBefore = upstream.seen.filter((s) => s.url === '/shadowed').length;
    const replies = [];
    for (let i = 0; i < 3; i++) replies.push(await request(tg.url, '/shadowed', { from, headers: { 'x-request-id': `shadow-${i}` } }));
    assert.deepEqual(replies.map((r) => r.status), [200, 200, 200]);
    assert.equal(upstream.seen.filter((s) => s.url === '/shadowed').length - seenBefore, 3, 'every request reached the upstream');
    assert.equal(replies[1].headers['retry-after'], undefined);
    const line = tg.logs.lines.find((l) => l.requestId === 'shadow-1');
    assert.ok(line, 'the over-limit request is logged');
    assert.equal(line.event, 'rate_limit_exceeded');
    assert.equal(line.shadow, true);
    assert.equal(line.route, 'shadowed');
    assert.equal(line.clientIp, from);
    assert.equal(line.limitBy, 'ip');
    assert.equal(line.limit, 1);
    const counts = await requestCounts(tg);
    assert.equal(counts.get('shadowed/allowed'), 1);
    assert.equal(counts.get('shadowed/shadow_limited'), 2);
  });

  it('tollgate_requests_total moves once per request with its decision', async () => {
    const before = await requestCounts(tg);
    const delta = async (key: string): Promise<number> => ((await requestCounts(tg)).get(key) ?? 0) - (before.get(key) ?? 0);
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
    const health = await fetch(`${tg.adminUrl}/healthz`);
    assert.equal(health.status, 200);
    const ready = await fetch(`${tg.adminUrl}/readyz`);
    assert.equal(ready.status, 200);
    assert.equal((await fetch(`${tg.adminUrl}/nope`)).status, 404);
  });
});
