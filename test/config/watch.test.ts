import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, test } from 'node:test';
import { watchConfigFile } from '../../src/config/watch.js';

describe('watchConfigFile', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-watch-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('an edit in the directory calls onChange once, debounced', async () => {
    const file = path.join(dir, 'policies.yaml');
    writeFileSync(file, 'a: 1\n');
    let changes = 0;
    const watcher = watchConfigFile(file, () => changes++, { debounceMs: 20 });
    try {
      writeFileSync(file, 'a: 2\n');
      writeFileSync(file, 'a: 3\n');
      for (let waited = 0; changes === 0 && waited < 2_000; waited += 10) await sleep(10);
      await sleep(50);
      assert.equal(changes, 1);
    } finally {
      watcher.close();
    }
  });

  // fs.watch throws synchronously for ENOSPC (inotify limit) and EACCES too; neither can be
  // provoked here without root or lowering the limit, so a missing directory stands in.
  test('a watch that cannot start is reported, not thrown, and leaves a watcher that closes', () => {
    const errors: Error[] = [];
    const watcher = watchConfigFile(path.join(dir, 'missing', 'policies.yaml'), () => assert.fail('no change expected'), {
      onError: (error) => errors.push(error),
    });
    assert.equal(errors.length, 1);
    assert.equal((errors[0] as NodeJS.ErrnoException).code, 'ENOENT');
    watcher.close();
  });

  test('without onError, or with one that throws, a failed start is still not thrown', () => {
    const file = path.join(dir, 'missing', 'policies.yaml');
    watchConfigFile(file, () => {}).close();
    const throwing = (): void => {
      throw new Error('logger broke');
    };
    watchConfigFile(file, () => {}, { onError: throwing }).close();
  });
});
