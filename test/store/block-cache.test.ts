/**
 * BlockCache (src/store/redis/block-cache.ts): keys Redis said are blocked, answered
 * locally until their block ends, on the times the test passes (no Redis, no clock).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BlockCache } from '../../src/store/redis/block-cache.js';
import type { LimitCheck, LimitOutcome } from '../../src/store/types.js';
import { T0 } from '../helpers/clock.js';
import { limitFixture } from '../helpers/redis.js';

const login = limitFixture({ routeId: 'login', by: 'ip', limit: 5, windowMs: 60_000, blockMs: 300_000, algorithm: 'fixed-window', index: 0 });
const perUser = limitFixture({ routeId: 'login', by: 'user', limit: 20, windowMs: 60_000, algorithm: 'sliding-window', index: 1 });

function check(client: string, limit = login): LimitCheck {
  return { limit, key: limit.keyPrefix + client, max: limit.limit };
}

/** Redis's refusal of a blocked key, as the store hands it over: blocked until `until`, retry in `retryAfterMs`. */
function refusal(until: number, retryAfterMs: number, overrides: Partial<LimitOutcome> = {}): LimitOutcome {
  return { allowed: false, max: 5, remaining: 0, resetAt: until, retryAfterMs, count: 5, blockedUntil: until, blockStarted: true, strike: 1, ...overrides };
}

describe('BlockCache', () => {
  it('knows nothing at first: every decision goes to Redis', () => {
    const cache = new BlockCache(10);
    assert.equal(cache.decide([check('a')], T0), undefined);
    assert.equal(cache.size, 0);
  });

  it('refuses a blocked key as Redis did, with Retry-After counting down on the local clock', () => {
    const cache = new BlockCache(10);
    const until = T0 + 300_000;
    cache.add(check('a').key, refusal(until, 300_000, { resetAt: until, count: 5 }), T0);
    for (const elapsed of [0, 1_000, 299_999]) {
      const decision = cache.decide([check('a')], T0 + elapsed);
      assert.deepEqual(decision, {
        allowed: false,
        outcomes: [
          { allowed: false, max: 5, remaining: 0, resetAt: until, retryAfterMs: 300_000 - elapsed, count: 5, blockedUntil: until, blockStarted: false, strike: 0 },
        ],
      });
    }
  });

  it('keeps the retry time Redis named when it is later than the block end (the window wait)', () => {
    const cache = new BlockCache(10);
    const until = T0 + 10_000;
    // Blocked for 10 s, but the algorithm allows again only after 25 s.
    cache.add(check('a').key, refusal(until, 25_000, { resetAt: T0 + 60_000 }), T0);
    const decision = cache.decide([check('a')], T0 + 4_000);
    assert.ok(decision !== undefined);
    const [outcome] = decision.outcomes;
    assert.equal(outcome.retryAfterMs, 21_000);
    assert.equal(outcome.resetAt, T0 + 60_000);
  });

  it('forgets a block when it ends: the next decision goes to Redis again', () => {
    const cache = new BlockCache(10);
    const until = T0 + 5_000;
    cache.add(check('a').key, refusal(until, 5_000), T0);
    assert.notEqual(cache.decide([check('a')], until - 1), undefined);
    assert.equal(cache.decide([check('a')], until), undefined, 'the block covers [start, until)');
    assert.equal(cache.size, 0, 'the ended entry is dropped');
  });

  it('with several checks: refuses if any key is blocked; the others are reported unevaluated, with their full quota', () => {
    const cache = new BlockCache(10);
    const until = T0 + 300_000;
    cache.add(check('10.0.0.1').key, refusal(until, 300_000), T0);
    const checks = [check('10.0.0.1'), check('u:alice', perUser)];
    const decision = cache.decide(checks, T0 + 100);
    assert.ok(decision !== undefined);
    assert.equal(decision.allowed, false);
    assert.equal(decision.outcomes[0].allowed, false);
    assert.deepEqual(decision.outcomes[1], {
      allowed: true,
      max: 20,
      remaining: 20,
      resetAt: T0 + 100,
      retryAfterMs: 0,
      count: 0,
      blockedUntil: 0,
      blockStarted: false,
      strike: 0,
    });
    // Unblocked keys alone: nothing to say.
    assert.equal(cache.decide([check('u:alice', perUser)], T0 + 100), undefined);
  });

  it('a check whose block ended does not count among the blocked ones, and is dropped', () => {
    const cache = new BlockCache(10);
    cache.add(check('short').key, refusal(T0 + 1_000, 1_000), T0);
    cache.add(check('long').key, refusal(T0 + 60_000, 60_000), T0);
    const decision = cache.decide([check('short'), check('long')], T0 + 2_000);
    assert.ok(decision !== undefined);
    assert.deepEqual(
      decision.outcomes.map((o) => [o.allowed, o.blockedUntil]),
      [
        [true, 0],
        [false, T0 + 60_000],
      ],
    );
    assert.equal(cache.size, 1);
  });

  it('is bounded: past maxEntries the least recently used block is forgotten (Redis is asked again)', () => {
    const cache = new BlockCache(2);
    for (const client of ['a', 'b']) cache.add(check(client).key, refusal(T0 + 60_000, 60_000), T0);
    assert.notEqual(cache.decide([check('a')], T0), undefined); // 'a' is now the most recently used
    cache.add(check('c').key, refusal(T0 + 60_000, 60_000), T0);
    assert.equal(cache.size, 2);
    assert.equal(cache.decide([check('b')], T0), undefined, 'b was evicted');
    assert.notEqual(cache.decide([check('a')], T0), undefined);
    assert.notEqual(cache.decide([check('c')], T0), undefined);
  });

  it('clear() forgets every block', () => {
    const cache = new BlockCache(10);
    cache.add(check('a').key, refusal(T0 + 60_000, 60_000), T0);
    cache.clear();
    assert.equal(cache.size, 0);
    assert.equal(cache.decide([check('a')], T0), undefined);
  });
});
