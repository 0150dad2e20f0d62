import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, test } from 'node:test';
import { watchConfigFile } from '../../src/config/watch.js';
import { eventually } from '../helpers/wait.js';

describe('watchConfigFile', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-watch-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('edits in quick succession call onChange once, a debounce period after the last one', async (t) => {
    const DEBOUNCE_MS = 300;
    const file = path.join(dir, 'policies.yaml');
    writeFileSync(file, 'a: 1\n');
    const calls: number[] = [];
    const watcher = watchConfigFile(file, () => calls.push(performance.now()), { debounceMs: DEBOUNCE_MS });
    t.after(() => watcher.close());
    // Three edits, each well within the debounce period of the one before: one burst.
    const writes: number[] = [];
    for (const text of ['a: 2\n', 'a: 3\n', 'a: 4\n']) {
      writeFileSync(file, text);
      writes.push(performance.now());
      await sleep(DEBOUNCE_MS / 6);
    }
    await eventually(() => calls.length > 0, { what: 'onChange after the burst' });
    // The events of a write come after it, and the debounce timer never fires early: a
    // call before the last write + the period means onChange did not wait for quiet.
    const lastWrite = writes[writes.length - 1];
    assert.ok(calls[0] >= lastWrite + DEBOUNCE_MS - 1, `onChange ran ${(calls[0] - lastWrite).toFixed(0)} ms after the last write`);
    // Had the burst been split (no debounce, or one that does not restart), a second call
    // would follow within another period: wait two, and count. (A write that a loaded box
    // delayed by a whole period really is a new burst: it is allowed its own call.)
    await sleep(2 * DEBOUNCE_MS);
    const bursts = 1 + writes.slice(1).filter((at, i) => at - writes[i] >= DEBOUNCE_MS).length;
    assert.equal(calls.length, bursts, `onChange ran ${calls.length} times for ${bursts} burst(s)`);
  });

  test('an edit after the quiet period is another change', async (t) => {
    const file = path.join(dir, 'second.yaml');
    writeFileSync(file, 'a: 1\n');
    let changes = 0;
    const watcher = watchConfigFile(file, () => changes++, { debounceMs: 20 });
    t.after(() => watcher.close());
    writeFileSync(file, 'a: 2\n');
    await eventually(() => changes === 1, { what: 'the first change' });
    writeFileSync(file, 'a: 3\n');
    await eventually(() => changes === 2, { what: 'the second change' });
  });

  test('close() cancels a pending call and stops watching', async (t) => {
    const file = path.join(dir, 'closed.yaml');
    writeFileSync(file, 'a: 1\n');
    let changes = 0;
    const watcher = watchConfigFile(file, () => changes++, { debounceMs: 600 });
    // A second watcher of the same file with a short period: once it has been called, the
    // first has seen the event too and its call is pending (due 600 ms after it).
    let seen = 0;
    const control = watchConfigFile(file, () => seen++, { debounceMs: 20 });
    t.after(() => control.close());
    writeFileSync(file, 'a: 2\n');
    await eventually(() => seen > 0, { what: 'the control watcher to see the edit' });
    watcher.close();
    writeFileSync(file, 'a: 3\n');
    await eventually(() => seen > 1, { what: 'the control watcher to see the second edit' });
    await sleep(900); // past the pending call's due time
    assert.equal(changes, 0, 'the pending call was cancelled and nothing after close() was watched');
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
    const silent = watchConfigFile(file, () => {});
    assert.equal(typeof silent.close, 'function');
    assert.doesNotThrow(() => silent.close());
    let reported = 0;
    const throwing = (): void => {
      reported++;
      throw new Error('logger broke');
    };
    const watcher = watchConfigFile(file, () => {}, { onError: throwing });
    assert.equal(reported, 1, 'the failure was reported before the reporter threw');
    assert.doesNotThrow(() => watcher.close());
  });
});
