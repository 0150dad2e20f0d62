/**
 * Calendar periods against instants worked out by hand from each zone's rules (offsets
 * and DST changes as published in the IANA database), not computed by the module.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Calendar } from '../../src/limiter/calendar.js';

const at = (iso: string): number => Date.parse(iso);
const period = (calendar: Calendar, iso: string): [string, string] => {
  const p = calendar.at(at(iso));
  return [new Date(p.start).toISOString(), new Date(p.end).toISOString()];
};

describe('Calendar', () => {
  it('months in UTC: the last millisecond of January and the first of February', () => {
    const month = new Calendar({ unit: 'mo', count: 1 });
    assert.deepEqual(period(month, '2027-01-31T23:59:59.999Z'), ['2027-01-01T00:00:00.000Z', '2027-02-01T00:00:00.000Z']);
    assert.deepEqual(period(month, '2027-02-01T00:00:00.000Z'), ['2027-02-01T00:00:00.000Z', '2027-03-01T00:00:00.000Z']);
    assert.deepEqual(period(month, '2028-02-15T12:00:00.000Z'), ['2028-02-01T00:00:00.000Z', '2028-03-01T00:00:00.000Z'], 'leap February');
    assert.deepEqual(period(month, '2027-12-31T23:00:00.000Z'), ['2027-12-01T00:00:00.000Z', '2028-01-01T00:00:00.000Z'], 'across a year');
  });

  it('several months: quarters counted from January of year 0', () => {
    assert.deepEqual(period(new Calendar({ unit: 'mo', count: 3 }), '2027-05-15T00:00:00Z'), ['2027-04-01T00:00:00.000Z', '2027-07-01T00:00:00.000Z']);
  });

  it('weeks start on Monday 00:00', () => {
    const week = new Calendar({ unit: 'w', count: 1 });
    // 2026-12-03 is a Thursday; 2026-11-30 a Monday.
    assert.deepEqual(period(week, '2026-12-03T10:00:00Z'), ['2026-11-30T00:00:00.000Z', '2026-12-07T00:00:00.000Z']);
    assert.deepEqual(period(week, '2026-12-06T23:59:59.999Z'), ['2026-11-30T00:00:00.000Z', '2026-12-07T00:00:00.000Z'], 'Sunday night');
    assert.deepEqual(period(week, '2026-12-07T00:00:00Z'), ['2026-12-07T00:00:00.000Z', '2026-12-14T00:00:00.000Z']);
  });

  it('local days in Europe/Berlin: 23 hours in spring, 25 in autumn', () => {
    const day = new Calendar({ unit: 'd', count: 1, timezone: 'Europe/Berlin' });
    // 2027-03-28: 02:00 CET -> 03:00 CEST. Local midnight is 23:00Z before, 22:00Z after.
    assert.deepEqual(period(day, '2027-03-28T12:00:00Z'), ['2027-03-27T23:00:00.000Z', '2027-03-28T22:00:00.000Z']);
    // 2027-10-31: 03:00 CEST -> 02:00 CET.
    assert.deepEqual(period(day, '2027-10-31T12:00:00Z'), ['2027-10-30T22:00:00.000Z', '2027-10-31T23:00:00.000Z']);
  });

  it('a local month and week in Europe/Berlin', () => {
    const month = new Calendar({ unit: 'mo', count: 1, timezone: 'Europe/Berlin' });
    assert.deepEqual(period(month, '2027-03-31T21:59:59.999Z'), ['2027-02-28T23:00:00.000Z', '2027-03-31T22:00:00.000Z']);
    assert.deepEqual(period(month, '2027-03-31T22:00:00.000Z'), ['2027-03-31T22:00:00.000Z', '2027-04-30T22:00:00.000Z']);
    const week = new Calendar({ unit: 'w', count: 1, timezone: 'Europe/Berlin' });
    // Monday 2027-03-29 00:00 CEST = 2027-03-28T22:00Z; the week before began Monday 22nd 00:00 CET = 21st 23:00Z.
    assert.deepEqual(period(week, '2027-03-28T21:00:00Z'), ['2027-03-21T23:00:00.000Z', '2027-03-28T22:00:00.000Z']);
  });

  it('a day whose midnight does not exist starts when the gap ends (America/Sao_Paulo, 2018-11-04)', () => {
    // DST began at 00:00 -03 (clocks to 01:00 -02): the day began at 01:00 -02 = 03:00Z and ended at 00:00 -02 = 02:00Z.
    assert.deepEqual(period(new Calendar({ unit: 'd', count: 1, timezone: 'America/Sao_Paulo' }), '2018-11-04T12:00:00Z'), [
      '2018-11-04T03:00:00.000Z',
      '2018-11-05T02:00:00.000Z',
    ]);
  });

  it('half-hour and day-ahead offsets (Asia/Kolkata +05:30, Pacific/Kiritimati +14)', () => {
    assert.deepEqual(period(new Calendar({ unit: 'd', count: 1, timezone: 'Asia/Kolkata' }), '2027-01-01T12:00:00Z'), ['2026-12-31T18:30:00.000Z', '2027-01-01T18:30:00.000Z']);
    // 12:00Z on Jan 1 is 02:00 on Saturday Jan 2 in Kiritimati; that week began Monday Dec 28 00:00 +14 = Dec 27 10:00Z.
    assert.deepEqual(period(new Calendar({ unit: 'w', count: 1, timezone: 'Pacific/Kiritimati' }), '2027-01-01T12:00:00Z'), ['2026-12-27T10:00:00.000Z', '2027-01-03T10:00:00.000Z']);
  });

  it('the previous and next periods, and the names store keys use', () => {
    const month = new Calendar({ unit: 'mo', count: 1, timezone: 'Europe/Berlin' });
    const march = month.at(at('2027-03-15T00:00:00Z'));
    assert.equal(new Date(month.previous(march).start).toISOString(), '2027-01-31T23:00:00.000Z');
    assert.equal(new Date(month.next(march).end).toISOString(), '2027-04-30T22:00:00.000Z', 'April ends at 22:00Z');
    assert.equal(month.name, '1mo@Europe/Berlin');
    assert.equal(new Calendar({ unit: 'w', count: 2 }).name, '2w');
  });

  it('keeps the periods it computed: the same object while time stays inside', () => {
    const day = new Calendar({ unit: 'd', count: 1, timezone: 'Europe/Berlin' });
    const first = day.at(at('2027-03-28T01:00:00Z'));
    assert.equal(day.at(at('2027-03-28T21:00:00Z')), first);
    const next = day.at(at('2027-03-29T01:00:00Z'));
    assert.notEqual(next, first);
    assert.equal(day.at(at('2027-03-28T05:00:00Z')), first, 'the previous period is kept too (settlements name it)');
  });
});
