import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseSize } from '../../src/config/size.js';

test('parseSize converts one integer and one lower-case unit to bytes (1024-based)', () => {
  const cases: Array<[string, number]> = [
    ['512b', 512],
    ['64kb', 65_536],
    ['1mb', 1_048_576],
    ['16kb', 16_384],
    ['0b', 0],
  ];
  for (const [text, bytes] of cases) assert.equal(parseSize(text), bytes, text);
});

test('parseSize refuses anything else, including bare numbers and upper-case units', () => {
  const invalid = ['', '512', '1KB', '1MB', '1Mb', '1.5kb', '-1kb', ' 1kb', '1kb ', '1 kb', '1gb', 'kb', '1k', '1m', '1kib'];
  for (const text of invalid) assert.equal(parseSize(text), undefined, JSON.stringify(text));
});

test('parseSize refuses values too large to be exact', () => {
  assert.equal(parseSize('99999999999999999999mb'), undefined);
});
