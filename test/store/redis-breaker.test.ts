/** The circuit breaker in front of Redis, on an injected clock (no Redis needed). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CircuitBreaker } from '../../src/store/redis/breaker.js';

function breaker(): { breaker: CircuitBreaker; changes: boolean[]; advance: (ms: number) => void } {
  let now = 1_000;
  const changes: boolean[] = [];
  return {
    breaker: new CircuitBreaker({ failures: 3, coolDownMs: 1_000, clock: () => now, onChange: (open) => changes.push(open) }),
    changes,
    advance: (ms) => {
      now += ms;
    },
  };
}

describe('circuit breaker', () => {
  it('opens after 3 consecutive failures, not after 3 failures with a success between', () => {
    const { breaker: b, changes } = breaker();
    b.failure(false);
    b.failure(false);
    b.success();
    b.failure(false);
    b.failure(false);
    assert.equal(b.open, false);
    b.failure(false);
    assert.equal(b.open, true);
    assert.deepEqual(changes, [true]);
  });

  it('while open skips calls for the cool-down, then lets exactly one probe through', () => {
    const { breaker: b, advance } = breaker();
    for (let i = 0; i < 3; i++) b.failure(false);
    assert.equal(b.allow(), false);
    advance(999);
    assert.equal(b.allow(), false);
    advance(1);
    assert.equal(b.allow(), true, 'the probe');
    assert.equal(b.allow(), false, 'only one probe at a time');
  });

  it('a failed probe waits another cool-down; a late failure of an earlier call changes nothing', () => {
    const { breaker: b, changes, advance } = breaker();
    for (let i = 0; i < 3; i++) b.failure(false);
    advance(1_000);
    assert.equal(b.allow(), true);
    b.failure(false); // sent before the breaker opened, timed out now
    assert.equal(b.allow(), false, 'the probe is still in flight');
    b.failure(true);
    assert.equal(b.allow(), false);
    advance(1_000);
    assert.equal(b.allow(), true);
    assert.deepEqual(changes, [true], 'no transition logged for failures while open');
  });

  it('closes on success and reports the transition once', () => {
    const { breaker: b, changes, advance } = breaker();
    for (let i = 0; i < 3; i++) b.failure(false);
    advance(1_000);
    assert.equal(b.allow(), true);
    b.success();
    b.success();
    assert.equal(b.open, false);
    assert.equal(b.allow(), true);
    assert.deepEqual(changes, [true, false]);
  });

  it('probeNow (connection ready again) lets the next call probe without waiting out the cool-down', () => {
    const { breaker: b } = breaker();
    for (let i = 0; i < 3; i++) b.failure(false);
    assert.equal(b.allow(), false);
    b.probeNow();
    assert.equal(b.allow(), true);
    assert.equal(b.allow(), false);
  });
});
