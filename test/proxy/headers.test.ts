import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTollgate, type TestTollgate } from '../helpers/tollgate.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { echo, envelope, request } from './client.js';

// Fixed windows make every header value exact arithmetic on the injected clock.
const POLICY = `
upstream: http://127.0.0.1:9
defaults: { algorithm: fixed-window }
routes:
  - id: exact
    match: { path: /exact, methods: [POST] }
    message: Slow down on exact
    limits:
      - { by: ip, limit: 3, window: 1m }
  - id: lowest
    match: { path: /lowest }
    limits:
      - { by: ip, limit: 5, window: 1m }
      - { by: global, limit: 3, window: 10s }
  - id: tie
    match: { path: /tie }
    limits:
      - { by: global, limit: 4, window: 10s }
      - { by: ip, limit: 4, window: 90s }
  - id: longest
    match: { path: /longest }
    limits:
      - { by: ip, limit: 2, window: 10s }
      - { by: global, limit: 2, window: 1m }
  - id: subsecond
    match: { path: /subsecond }
    limits:
      - { by: ip, limit: 5, window: 1500ms }
  - id: blocked
    match: { path: /blocked }
    limits:
      - { by: ip, limit: 1, window: 1m }
      - { by: header:x-api-key, limit: 1, window: 10s, block: 5m }
`;

describe('rate-limit headers and the 429 envelope', () => {
  let upstream: EchoUpstream;
  let tg: TestTollgate;
  let startSeconds: number;

  before(async () => {
    upstream = await startEchoUpstream();
    tg = await startTollgate(POLICY, { upstream: upstream.url });
    // 15s into an aligned minute, so reset and t differ from the window length.
    tg.clock.advance(15_000);
    startSeconds = Math.floor(tg.clock.nowMs / 1000);
  });
  after(async () => {
    await tg.close();
    await upstream.close();
  });

  it('allowed requests carry X-RateLimit-* and the IETF RateLimit-Policy / RateLimit fields', async () => {
    const windowEnd = startSeconds - 15 + 60;
    const first = await request(tg.url, '/exact', { method: 'POST', from: '127.0.0.11' });
    assert.equal(first.status, 200);
    assert.equal(first.headers['x-ratelimit-limit'], '3');
    assert.equal(first.headers['x-ratelimit-remaining'], '2');
    assert.equal(first.headers['x-ratelimit-reset'], String(windowEnd));
    assert.equal(first.headers['ratelimit-policy'], '"exact.ip";q=3;w=60');
    assert.equal(first.headers.ratelimit, '"exact.ip";r=2;t=45');
    assert.equal(first.headers['retry-after'], undefined);
    assert.equal(first.headers['x-ratelimit-violation-type'], undefined);
    // The upstream's own headers survive next to ours.
    assert.equal(first.headers['x-upstream'], 'echo');
    assert.deepEqual(first.headers['set-cookie'], ['a=1', 'b=2']);

    const second = await request(tg.url, '/exact', { method: 'POST', from: '127.0.0.11' });
    assert.equal(second.headers['x-ratelimit-remaining'], '1');
    assert.equal(second.headers.ratelimit, '"exact.ip";r=1;t=45');
  });

  it('the 429 has Retry-After, Remaining 0, the violation type and the exact JSON body', async (t) => {
    const from = '127.0.0.12';
    for (let i = 0; i < 3; i++) assert.equal((await request(tg.url, '/exact', { method: 'POST', from })).status, 200);
    const seenBefore = upstream.seen.length;
    tg.clock.advance(5_000); // 20s into the window: 40s left
    t.after(() => tg.clock.advance(-5_000)); // the later tests expect the clock where it was, pass or fail
    const refused = await request(tg.url, '/exact', { method: 'POST', from, headers: { 'x-request-id': 'req-429-check' } });
    assert.equal(refused.status, 429);
    assert.equal(upstream.seen.length, seenBefore, 'a refused request never reaches the upstream');
    assert.equal(refused.headers['retry-after'], '40');
    assert.equal(refused.headers['x-ratelimit-limit'], '3');
    assert.equal(refused.headers['x-ratelimit-remaining'], '0');
    assert.equal(refused.headers['x-ratelimit-reset'], String(startSeconds - 15 + 60));
    assert.equal(refused.headers['x-ratelimit-violation-type'], 'ip');
    assert.equal(refused.headers['ratelimit-policy'], '"exact.ip";q=3;w=60');
    assert.equal(refused.headers.ratelimit, '"exact.ip";r=0;t=40');
    assert.equal(refused.headers['x-request-id'], 'req-429-check');
    assert.match(String(refused.headers['content-type']), /^application\/json/);
    assert.deepEqual(JSON.parse(refused.body), {
      success: false,
      error: {
        code: 'RATE_LIMIT_EXCEEDED',
        message: 'Slow down on exact',
        details: { violationType: 'ip', limitType: 'rate', retryAfter: 40, limit: 3, route: 'exact', requestId: 'req-429-check' },
      },
    });
  });

  it('with two limits the headers show the one with the lowest remaining', async () => {
    const reply = await request(tg.url, '/lowest', { from: '127.0.0.13' });
    assert.equal(reply.status, 200);
    // ip: 4 of 5 left; global: 2 of 3 left -> global is shown.
    assert.equal(reply.headers['x-ratelimit-limit'], '3');
    assert.equal(reply.headers['x-ratelimit-remaining'], '2');
    assert.equal(reply.headers['ratelimit-policy'], '"lowest.ip";q=5;w=60, "lowest.global";q=3;w=10');
    assert.equal(reply.headers.ratelimit, '"lowest.global";r=2;t=5');
  });

  it('on a tie in remaining the headers show the limit that resets later', async () => {
    const reply = await request(tg.url, '/tie', { from: '127.0.0.14' });
    // Both have 3 left; the 90s window resets later than the 10s one.
    assert.equal(reply.headers['x-ratelimit-limit'], '4');
    assert.equal(reply.headers['x-ratelimit-remaining'], '3');
    // The clock sits 15s into an aligned 90s window (the start is a multiple of 90s).
    assert.equal(reply.headers['x-ratelimit-reset'], String(startSeconds - 15 + 90));
    assert.equal(reply.headers.ratelimit, '"tie.ip";r=3;t=75');
  });

  it('a 429 with two violated limits reports the one with the longest wait', async () => {
    const from = '127.0.0.15';
    assert.equal((await request(tg.url, '/longest', { from })).status, 200);
    assert.equal((await request(tg.url, '/longest', { from })).status, 200);
    const refused = await request(tg.url, '/longest', { from });
    assert.equal(refused.status, 429);
    // ip waits 5s (10s window), global 45s (1m window): global is reported.
    assert.equal(refused.headers['x-ratelimit-violation-type'], 'global');
    assert.equal(refused.headers['retry-after'], '45');
    assert.equal(refused.headers.ratelimit, '"longest.global";r=0;t=45');
    const details = envelope(refused).error.details;
    assert.equal(details.violationType, 'global');
    assert.equal(details.retryAfter, 45);
    assert.equal(details.limit, 2);
    assert.equal(details.route, 'longest');
    assert.equal(envelope(refused).error.message, 'Too many requests, please retry later', 'default message');
  });

  it('a running block outweighs a shorter window wait, and is reported as a header violation', async () => {
    const from = '127.0.0.16';
    const headers = { 'x-api-key': 'key-blocked' };
    assert.equal((await request(tg.url, '/blocked', { from, headers })).status, 200);
    // Both limits are violated: ip (45s to the window end) and the api key (starts a 5m block).
    const refused = await request(tg.url, '/blocked', { from, headers });
    assert.equal(refused.status, 429);
    assert.equal(refused.headers['x-ratelimit-violation-type'], 'header');
    assert.equal(refused.headers['retry-after'], '300');
    assert.equal(envelope(refused).error.details.violationType, 'header');
    assert.equal(envelope(refused).error.details.retryAfter, 300);
  });

  it('the IETF window `w` is whole seconds, rounded up', async () => {
    const reply = await request(tg.url, '/subsecond', { from: '127.0.0.17' });
    assert.equal(reply.headers['ratelimit-policy'], '"subsecond.ip";q=5;w=2');
  });

  it('X-Request-Id is propagated when given, generated otherwise, and returned either way', async () => {
    const given = await request(tg.url, '/unlimited', { headers: { 'x-request-id': 'abc-123' } });
    assert.equal(given.headers['x-request-id'], 'abc-123');
    assert.equal(echo(given).headers['x-request-id'], 'abc-123');

    const generated = await request(tg.url, '/unlimited');
    const id = generated.headers['x-request-id'];
    assert.match(String(id), /^[0-9a-f-]{36}$/);
    assert.equal(echo(generated).headers['x-request-id'], id);

    // A value that could smuggle into logs is replaced, not passed on.
    const unsafe = await request(tg.url, '/unlimited', { headers: { 'x-request-id': 'a b"<script>' } });
    assert.match(String(unsafe.headers['x-request-id']), /^[0-9a-f-]{36}$/);
  });
});
