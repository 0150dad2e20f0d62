import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseDuration } from '../../src/config/duration.js';

test('parseDuration converts one integer and one unit to milliseconds', () => {
  const cases: Array<[string, number]> = [
    ['500ms', 500],
    ['30s', 30_000],
    ['1m', 60_000],
    ['2h', 7_200_000],
    ['1d', 86_400_000],
    ['0s', 0],
    ['007s', 7_000],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
});

test('parseDuration refuses anything else, including bare numbers', () => {
  const invalid = ['', '60', '1x', '1.5s', '-1s', '+1s', ' 1s', '1s ', '1 s', '1m30s', 's', '1S', '1M', '1ms5', '1e3ms', 'ms'];
  for (const text of invalid) assert.equal(parseDuration(text), undefined, JSON.stringify(text));
});

test('parseDuration refuses values too large to be exact', () => {
  assert.equal(parseDuration('99999999999999999999d'), undefined);
  assert.equal(parseDuration('9007199254740991ms'), Number.MAX_SAFE_INTEGER);
});
