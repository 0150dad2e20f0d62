/**
 * Concurrency limits through a running Tollgate (memory store): the N+1th request in
 * flight is refused with the concurrency 429 contract, slots come back however an
 * exchange ends (response sent, client gone, upstream error or timeout, tunnel closed,
 * drain), slots and rates are decided together, shadow routes take slots over the
 * limit, tiers, reloads, metrics and logs. Each test uses its own user.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { bearer, envelope, JWT_SECRET, openWebSocket, request, type Reply } from '../helpers/http.js';
import { sampleValue } from '../helpers/metrics.js';
import { startInFrontOf, type TollgateInFront } from '../helpers/tollgate.js';
import { startGatedUpstream, type GatedUpstream } from '../helpers/upstream.js';
import { eventually, withDeadline } from '../helpers/wait.js';

const POLICY = `
upstream: http://127.0.0.1:9
identity:
  jwt: { secret: ${JWT_SECRET}, algorithms: [HS256], tierClaim: plan }
routes:
  - id: transcribe
    match: { path: /slow/transcribe }
    limits:
      - { by: user, concurrent: 2, tiers: { pro: 3 } }
      - { by: user, limit: 3, window: 1m }
  - id: timeout
    match: { path: /slow/timeout }
    upstreamTimeout: 200ms
    limits:
      - { by: user, concurrent: 1 }
  - id: shadowed
    match: { path: /slow/shadow }
    mode: shadow
    limits:
      - { by: user, concurrent: 1 }
  - id: live
    match: { path: /ws/live, websocket: true }
    limits:
      - { by: user, concurrent: 1 }
`;

/** A request kept in flight by the gated upstream; `abort()` is the client going away. */
function inFlight(base: string, path: string, headers: http.OutgoingHttpHeaders): { reply: Promise<Reply>; abort(): void } {
  const url = new URL(base);
  let req: http.ClientRequest | undefined;
  const reply = new Promise<Reply>((resolve, reject) => {
    req = http.request({ host: url.hostname, port: url.port, path, method: 'GET', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
  const bounded = withDeadline(reply, 10_000, `the reply to ${path}`);
  bounded.catch(() => undefined); // an aborted request's rejection is expected
  return { reply: bounded, abort: () => req?.destroy() };
}

describe('concurrency limits (memory store)', () => {
  let tg: TollgateInFront<GatedUpstream>;

  before(async () => {
    tg = await startInFrontOf(await startGatedUpstream({ webSockets: true }), POLICY);
  });
  after(() => tg.close());

  /** Waits until `route` holds `held` slots on this replica (the gauge reads the live count). */
  async function slotsHeld(route: string, held: number): Promise<void> {
    await eventually(async () => (sampleValue(await tg.scrape(), 'tollgate_concurrent_slots', { route }) ?? 0) === held, {
      what: `${held} slot(s) held on ${route}`,
    });
  }

  it('refuses the request over the limit with the concurrency 429 contract; allowed responses list the limit', async () => {
    const user = await bearer('contract');
    const first = inFlight(tg.url, '/slow/transcribe', user);
    const second = inFlight(tg.url, '/slow/transcribe', user);
    await tg.upstream.waitForHeld(2);
    const refused = await request(tg.url, '/slow/transcribe', { headers: { ...user, 'x-request-id': 'cc-refused' } });
    assert.equal(refused.status, 429);
    const body = envelope(refused);
    assert.equal(body.error.code, 'RATE_LIMIT_EXCEEDED');
    assert.deepEqual(body.error.details, { violationType: 'user', limitType: 'concurrent', retryAfter: 1, limit: 2, route: 'transcribe', requestId: 'cc-refused' });
    assert.equal(refused.headers['retry-after'], '1');
    assert.equal(refused.headers['x-ratelimit-limit'], '2');
    assert.equal(refused.headers['x-ratelimit-remaining'], '0');
    assert.equal(refused.headers['x-ratelimit-reset'], String(Math.ceil((tg.clock.nowMs + 1000) / 1000)));
    assert.equal(refused.headers['x-ratelimit-violation-type'], 'user');
    assert.equal(refused.headers.ratelimit, '"transcribe.user.concurrent";r=0;t=1');
    assert.equal(refused.headers['ratelimit-policy'], '"transcribe.user.concurrent";q=2;qu="concurrent-requests", "transcribe.user";q=3;w=60');
    assert.equal(tg.upstream.held.length, 2, 'the refused request never reached the upstream');
    tg.upstream.release();
    const [a, b] = await Promise.all([first.reply, second.reply]);
    assert.deepEqual([a.status, b.status], [200, 200]);
    assert.equal(a.headers['ratelimit-policy'], '"transcribe.user.concurrent";q=2;qu="concurrent-requests", "transcribe.user";q=3;w=60');
    await slotsHeld('transcribe', 0);
    const line = tg.logs.events('rate_limit_exceeded').find((l) => l.requestId === 'cc-refused');
    assert.equal(line?.limitBy, 'user');
    assert.equal(line?.limit, 2);
  });

  it('slots and rates together: a refusal for a slot consumes no rate quota, a refusal by the rate takes no slot', async () => {
    const user = await bearer('together');
    const a = inFlight(tg.url, '/slow/transcribe', user);
    const b = inFlight(tg.url, '/slow/transcribe', user);
    await tg.upstream.waitForHeld(2);
    assert.equal((await request(tg.url, '/slow/transcribe', { headers: user })).status, 429, 'no free slot');
    tg.upstream.release();
    await Promise.all([a.reply, b.reply]);
    // 2 of 3 counted: the refusal above took nothing, so one more passes.
    const c = inFlight(tg.url, '/slow/transcribe', user);
    await tg.upstream.waitForHeld(1);
    tg.upstream.release();
    assert.equal((await c.reply).status, 200);
    const byRate = await request(tg.url, '/slow/transcribe', { headers: user });
    assert.equal(byRate.status, 429);
    assert.equal(envelope(byRate).error.details.limitType, 'rate');
    await slotsHeld('transcribe', 0);
  });

  it('an allowed response shows the free slots after it while the concurrency limit is the most restrictive', async () => {
    const user = await bearer('remaining');
    const first = inFlight(tg.url, '/slow/transcribe', user);
    await tg.upstream.waitForHeld(1);
    const second = inFlight(tg.url, '/slow/transcribe', user);
    await tg.upstream.waitForHeld(2);
    tg.upstream.release();
    const [a, b] = await Promise.all([first.reply, second.reply]);
    assert.equal(a.headers['x-ratelimit-remaining'], '1', 'the first left one slot free');
    assert.equal(b.headers['x-ratelimit-remaining'], '0', 'the second took the last one');
    assert.equal(b.headers.ratelimit, '"transcribe.user.concurrent";r=0;t=1');
  });

  it('a client that goes away gives its slot back', async () => {
    const user = await bearer('leaver');
    const first = inFlight(tg.url, '/slow/transcribe', user);
    const second = inFlight(tg.url, '/slow/transcribe', user);
    await tg.upstream.waitForHeld(2);
    await slotsHeld('transcribe', 2);
    first.abort();
    await slotsHeld('transcribe', 1);
    const third = inFlight(tg.url, '/slow/transcribe', user);
    await tg.upstream.waitForHeld(2);
    tg.upstream.release();
    assert.equal((await third.reply).status, 200);
    assert.equal((await second.reply).status, 200);
    await slotsHeld('transcribe', 0);
  });

  it('an upstream that fails (502) or times out (504) gives the slot back', async () => {
    const user = await bearer('failures');
    const failing = inFlight(tg.url, '/slow/timeout', user);
    await tg.upstream.waitForHeld(1);
    tg.upstream.held[0].socket.destroy(); // the upstream connection resets mid-request
    assert.equal((await failing.reply).status, 502);
    await slotsHeld('timeout', 0);
    assert.equal((await request(tg.url, '/slow/timeout', { headers: user })).status, 504);
    await slotsHeld('timeout', 0);
    assert.equal((await request(tg.url, '/slow/timeout', { headers: user })).status, 504, 'the slot was free again after the timeout');
  });

  it('tiers: a pro user holds 3', async () => {
    const pro = await bearer('paula', { plan: 'pro' });
    const calls = [0, 1, 2].map(() => inFlight(tg.url, '/slow/transcribe', pro));
    await tg.upstream.waitForHeld(3);
    const over = await request(tg.url, '/slow/transcribe', { headers: pro });
    assert.equal(over.status, 429);
    assert.equal(envelope(over).error.details.limit, 3);
    assert.match(String(over.headers['ratelimit-policy']), /^"transcribe\.user\.concurrent";q=3;qu="concurrent-requests", /);
    tg.upstream.release();
    for (const call of calls) assert.equal((await call.reply).status, 200);
  });

  it('shadow: every request takes a slot; those over the limit are forwarded and counted as shadow_limited', async () => {
    const user = await bearer('shadow');
    const before = sampleValue(await tg.scrape(), 'tollgate_requests_total', { route: 'shadowed', decision: 'shadow_limited' }) ?? 0;
    const calls = [0, 1, 2].map(() => inFlight(tg.url, '/slow/shadow', user));
    await tg.upstream.waitForHeld(3);
    await slotsHeld('shadowed', 3);
    assert.equal(sampleValue(await tg.scrape(), 'tollgate_requests_total', { route: 'shadowed', decision: 'shadow_limited' }), before + 2);
    tg.upstream.release();
    for (const call of calls) assert.equal((await call.reply).status, 200);
    await slotsHeld('shadowed', 0);
    assert.equal(tg.logs.events('rate_limit_exceeded').find((l) => l.route === 'shadowed')?.shadow, true);
  });

  it('WebSocket: the second open session is refused; a close by the client, then by the upstream, frees the slot', async () => {
    const user = await bearer('socket');
    const url = tg.url.replace('http:', 'ws:') + '/ws/live';
    const first = await openWebSocket(url, { headers: user });
    assert.ok('ws' in first, 'the first session opens');
    assert.equal(first.response.headers['ratelimit-policy'], '"live.user.concurrent";q=1;qu="concurrent-requests"');
    const refused = await openWebSocket(url, { headers: user });
    assert.ok('refused' in refused, 'the second is refused');
    assert.equal(refused.refused.statusCode, 429);
    assert.equal(JSON.parse(refused.body).error.details.limitType, 'concurrent');
    first.ws.close();
    await slotsHeld('live', 0);
    const second = await openWebSocket(url, { headers: user });
    assert.ok('ws' in second, 'a new session once the first closed');
    for (const socket of [...tg.upstream.upgradedSockets()]) socket.destroy(); // the upstream ends it
    await eventually(() => second.ws.readyState === WebSocket.CLOSED, { what: 'the session to close with the upstream' });
    await slotsHeld('live', 0);
  });
});

describe('concurrency limits across a reload and a drain', () => {
  it('a reload keeps held slots; a lowered limit applies to new admissions only', async () => {
    const tg = await startInFrontOf(await startGatedUpstream(), POLICY);
    try {
      const user = await bearer('reload');
      const calls = [0, 1].map(() => inFlight(tg.url, '/slow/transcribe', user));
      await tg.upstream.waitForHeld(2);
      writeFileSync(tg.file, POLICY.replace('{ by: user, concurrent: 2, tiers: { pro: 3 } }', '{ by: user, concurrent: 1, tiers: { pro: 3 } }'));
      assert.equal(tg.tollgate.reload().ok, true);
      assert.equal(tg.upstream.held.length, 2, 'nothing in flight was cut');
      assert.equal((await request(tg.url, '/slow/transcribe', { headers: user })).status, 429, 'both slots still held');
      tg.upstream.release();
      for (const call of calls) assert.equal((await call.reply).status, 200);
      const next = inFlight(tg.url, '/slow/transcribe', await bearer('reload-2'));
      await tg.upstream.waitForHeld(1);
      const over = await request(tg.url, '/slow/transcribe', { headers: await bearer('reload-2') });
      assert.equal(envelope(over).error.details.limit, 1, 'the new limit of 1');
      tg.upstream.release();
      assert.equal((await next.reply).status, 200);
    } finally {
      await tg.close();
    }
  });

  it('a drain gives back the slots of the WebSocket sessions it closes', async () => {
    const tg = await startInFrontOf(await startGatedUpstream({ webSockets: true }), POLICY, { args: ['--drain-timeout', '2s'] });
    try {
      const session = await openWebSocket(tg.url.replace('http:', 'ws:') + '/ws/live', { headers: await bearer('drained') });
      assert.ok('ws' in session);
      assert.equal(sampleValue(await tg.scrape(), 'tollgate_concurrent_slots', { route: 'live' }), 1);
      const closed = new Promise<number>((resolve) => session.ws.once('close', (code) => resolve(code)));
      await withDeadline(tg.tollgate.shutdown(2_000), 5_000, 'the drain');
      assert.equal(await withDeadline(closed, 5_000, 'the close frame'), 1001);
      assert.equal(sampleValue(await tg.metrics.registry.metrics(), 'tollgate_concurrent_slots', { route: 'live' }), 0);
    } finally {
      await tg.close();
    }
  });
});
