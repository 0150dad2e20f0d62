/**
 * ViolationLog on a hand-driven clock and flush timer: which refusals become lines,
 * which are folded into summaries and when those are written, the per-second budget,
 * the bounded key map, close(). No test waits for real time.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLogger } from '../../src/observability/logger.js';
import { ViolationLog, type Violation, type ViolationLogOptions } from '../../src/observability/violations.js';
import { FakeClock, ManualTimer, T0 } from '../helpers/clock.js';
import { LogCapture } from '../helpers/tollgate.js';

function setup(options: Partial<ViolationLogOptions> = {}) {
  const clock = new FakeClock();
  const timer = new ManualTimer();
  const logs = new LogCapture();
  const log = new ViolationLog(createLogger('info', logs), { clock: clock.now, flushTimer: timer.schedule, ...options });
  return { clock, timer, logs, log };
}

/** A refusal of `key`, quiet for 60 s (a 1 m window) unless told otherwise. */
function violation(key: string, overrides: Partial<Violation> = {}, now = T0): Violation {
  return {
    route: 'api',
    limitBy: 'ip',
    keyKind: 'ip',
    userId: undefined,
    clientIp: '192.0.2.1',
    limit: 10,
    count: 10,
    blocked: false,
    blockStarted: false,
    strike: 0,
    retryAfter: 60,
    requestId: `req-${key}`,
    shadow: false,
    key,
    quietUntil: now + 60_000,
    ...overrides,
  };
}

const events = (logs: LogCapture) => logs.lines.map((l) => l.event);

describe('ViolationLog', () => {
  it('logs the first refusal of a key, folds the rest, and reports them at the first flush after the quiet period', () => {
    const { clock, timer, logs, log } = setup();
    log.record(violation('k'));
    for (let i = 0; i < 4; i++) {
      clock.advance(1_000);
      log.record(violation('k', {}, clock.nowMs));
    }
    assert.deepEqual(events(logs), ['rate_limit_exceeded']);
    assert.equal(logs.lines[0].requestId, 'req-k');

    clock.set(T0 + 59_999); // the quiet period runs until T0 + 60 s
    timer.fire();
    assert.deepEqual(events(logs), ['rate_limit_exceeded'], 'no summary before the quiet period ends');
    clock.set(T0 + 60_000);
    timer.fire();
    assert.deepEqual(events(logs), ['rate_limit_exceeded', 'rate_limit_suppressed']);
    assert.deepEqual(
      { route: logs.lines[1].route, limitBy: logs.lines[1].limitBy, suppressed: logs.lines[1].suppressed },
      { route: 'api', limitBy: 'ip', suppressed: 4 },
    );
    timer.fire();
    assert.equal(logs.lines.length, 2, 'a summary is written once');
  });

  it('flushes on a 1 s period, from a timer that close() stops', () => {
    const { timer, log } = setup();
    assert.deepEqual(timer.periods, [1_000]);
    log.close();
    assert.deepEqual(timer.periods, []);
  });

  it('without flushTimer, flushes every second of real time on its own interval', (t) => {
    t.mock.timers.enable({ apis: ['setInterval'] });
    const clock = new FakeClock();
    const logs = new LogCapture();
    const log = new ViolationLog(createLogger('info', logs), { clock: clock.now });
    log.record(violation('k'));
    log.record(violation('k'));
    clock.advance(60_000);
    t.mock.timers.tick(999);
    assert.deepEqual(events(logs), ['rate_limit_exceeded']);
    t.mock.timers.tick(1);
    assert.deepEqual(events(logs), ['rate_limit_exceeded', 'rate_limit_suppressed']);
    log.close();
    log.record(violation('j', {}, clock.nowMs));
    log.record(violation('j', {}, clock.nowMs));
    clock.advance(60_000);
    t.mock.timers.tick(5_000);
    assert.deepEqual(events(logs), ['rate_limit_exceeded', 'rate_limit_suppressed', 'rate_limit_exceeded'], 'closed: no more flushes');
  });

  it('a refusal after the quiet period is a new line, and reports the previous period itself', () => {
    const { clock, logs, log } = setup();
    log.record(violation('k'));
    log.record(violation('k'));
    log.record(violation('k'));
    clock.advance(60_000);
    log.record(violation('k', { requestId: 'second-window' }, clock.nowMs));
    assert.deepEqual(events(logs), ['rate_limit_exceeded', 'rate_limit_suppressed', 'rate_limit_exceeded']);
    assert.equal(logs.lines[1].suppressed, 2);
    assert.equal(logs.lines[2].requestId, 'second-window');
  });

  it('names block starts, refusals during a block and shadow refusals; never the store key', () => {
    const { logs, log } = setup();
    log.record(violation('a', { blocked: true, blockStarted: true, retryAfter: 300 }));
    log.record(violation('b', { blocked: true }));
    log.record(violation('c', { shadow: true }));
    assert.deepEqual(events(logs), ['rate_limit_block_started', 'rate_limit_blocked', 'rate_limit_exceeded']);
    assert.deepEqual(
      logs.lines.map((l) => [l.msg, l.shadow]),
      [
        ['rate limit exceeded', undefined],
        ['rate limit exceeded', undefined],
        ['rate limit exceeded (shadow mode: request allowed)', true],
      ],
    );
    assert.equal(logs.lines[0].retryAfter, 300);
    for (const line of logs.lines) assert.equal('key' in line || 'quietUntil' in line, false);
  });

  it('a quiet period lasts at least 1 s, whatever the violation says', () => {
    const { clock, logs, log } = setup();
    log.record(violation('k', { quietUntil: T0 }));
    clock.advance(999);
    log.record(violation('k', { quietUntil: T0 }, clock.nowMs));
    assert.equal(logs.lines.length, 1);
    clock.advance(1);
    log.record(violation('k', { quietUntil: T0 }, clock.nowMs));
    assert.deepEqual(events(logs), ['rate_limit_exceeded', 'rate_limit_suppressed', 'rate_limit_exceeded']);
  });

  it('keeps to linesPerSecond across keys: the rest is counted in one overflow line per flush', () => {
    const { clock, timer, logs, log } = setup({ linesPerSecond: 3 });
    for (const key of ['a', 'b', 'c', 'd', 'e']) log.record(violation(key));
    assert.deepEqual(events(logs), ['rate_limit_exceeded', 'rate_limit_exceeded', 'rate_limit_exceeded']);
    timer.fire();
    assert.deepEqual(logs.lines.slice(3).map((l) => [l.event, l.dropped]), [['rate_limit_log_overflow', 2]]);
    timer.fire();
    assert.equal(logs.lines.length, 4, 'the overflow count is reported once');
    // A new second has a new budget.
    clock.advance(1_000);
    for (const key of ['f', 'g']) log.record(violation(key, {}, clock.nowMs));
    assert.equal(logs.lines.filter((l) => l.event === 'rate_limit_exceeded').length, 5);
  });

  it('a key pushed out of the bounded map reports its pending count at once', () => {
    const { logs, log } = setup({ maxKeys: 2 });
    log.record(violation('a'));
    log.record(violation('a'));
    log.record(violation('b'));
    log.record(violation('c')); // evicts 'a', the least recently used
    assert.deepEqual(events(logs), ['rate_limit_exceeded', 'rate_limit_exceeded', 'rate_limit_suppressed', 'rate_limit_exceeded']);
    assert.equal(logs.lines[2].suppressed, 1);
  });

  it('close() reports every pending count and the overflow, before the quiet periods end', () => {
    const { logs, log } = setup({ linesPerSecond: 2 });
    for (const key of ['a', 'a', 'a', 'b', 'c']) log.record(violation(key));
    assert.deepEqual(events(logs), ['rate_limit_exceeded', 'rate_limit_exceeded']);
    log.close();
    // 'a' had 2 folded; its summary is over the (same-second) budget too, so it is counted as dropped.
    assert.deepEqual(logs.lines.slice(2).map((l) => [l.event, l.dropped]), [['rate_limit_log_overflow', 2]]);
  });

  it('close() writes the pending summaries when the budget allows', () => {
    const { logs, log } = setup();
    for (let i = 0; i < 3; i++) log.record(violation('a'));
    log.record(violation('b'));
    log.close();
    assert.deepEqual(
      logs.lines.map((l) => [l.event, l.suppressed]),
      [
        ['rate_limit_exceeded', undefined],
        ['rate_limit_exceeded', undefined],
        ['rate_limit_suppressed', 2],
      ],
    );
  });
});
