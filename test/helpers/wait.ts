/**
 * Deadlines for every wait in a test. A wait without one turns a regression into a
 * hung CI job; with one, the test fails in seconds and says what it was waiting for.
 *
 * - `withDeadline(promise, ms, what)`: one promise, bounded.
 * - `eventually(check, options)`: polls until `check` passes, bounded.
 * - `nextEvent(emitter, name, options)`: the next event of an emitter, bounded;
 * - `settledAtOnce(promise)`: whether a promise waits for nothing (no clock involved).
 */
import type { EventEmitter } from 'node:events';
import { once } from 'node:events';

/**
 * Default deadline of a wait, in ms. Every wait in the suite normally ends within
 * tens of milliseconds; 5 s leaves a loaded 2-core box two orders of magnitude of
 * slack and still fails a hang long before the runner's own timeout (package.json).
 */
export const WAIT_MS = 5_000; // 5s

/** The error of a wait that ran out of time: says what it waited for, and for how long. */
export class DeadlineError extends Error {
  override readonly name = 'DeadlineError';
}

/**
 * Settles as `promise` does, or rejects with a DeadlineError ("timed out after Nms
 * waiting for WHAT") once `ms` have passed. The timer never keeps the process alive.
 */
export function withDeadline<T>(promise: PromiseLike<T>, ms: number, what: string): Promise<T> {
  // Made now, thrown later: its stack shows the test line that waited, not a timer.
  const error = new DeadlineError(`timed out after ${ms}ms waiting for ${what}`);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(error), ms);
    timer.unref();
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

export interface EventuallyOptions {
  /** Give up after this long (default WAIT_MS). */
  timeoutMs?: number;
  /** Pause between attempts (default 20 ms). */
  intervalMs?: number;
  /** Named in the failure message (default "a check to pass"). */
  what?: string;
}

/**
 * Calls `check` until it neither throws nor returns `false`, and returns its value.
 * Past the deadline it throws a DeadlineError naming `what`, with the last failure as
 * its message tail and `cause`. `check` may be async; a hung `check` is cut by the
 * deadline too.
 */
export async function eventually<T>(check: () => T | Promise<T>, options: EventuallyOptions = {}): Promise<Exclude<T, false>> {
  const { timeoutMs = WAIT_MS, intervalMs = 20, what = 'a check to pass' } = options;
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    const left = end - Date.now();
    try {
      const value = await withDeadline(Promise.resolve().then(check), Math.max(1, left), what);
      if (value !== false) return value as Exclude<T, false>;
      last = undefined;
    } catch (error) {
      last = error;
    }
    if (Date.now() + intervalMs > end) {
      const detail = last instanceof Error ? `: ${last.message}` : last === undefined ? ' (it kept returning false)' : `: ${String(last)}`;
      throw new DeadlineError(`timed out after ${timeoutMs}ms waiting for ${what}${detail}`, { cause: last });
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * The arguments of the next `name` event of `emitter`, or a DeadlineError after
 * `timeoutMs`. An 'error' event first rejects with that error (as events.once does).
 */
export function nextEvent(emitter: EventEmitter, name: string, options: { timeoutMs?: number; what?: string } = {}): Promise<unknown[]> {
  const { timeoutMs = WAIT_MS, what = `a '${name}' event` } = options;
  const aborter = new AbortController();
  return withDeadline(once(emitter, name, { signal: aborter.signal }), timeoutMs, what).finally(() => aborter.abort());
}

/**
 * True if `promise` is settled already (it waits for no timer, socket or other turn of
 * the event loop): "answers at once" without measuring time. Two chains of the same
 * depth race; the settled one's reaction runs first.
 */
export async function settledAtOnce(promise: PromiseLike<unknown>): Promise<boolean> {
  const settled = Promise.resolve(promise).then(
    () => true,
    () => true,
  );
  const pending = Promise.resolve(false).then((v) => v);
  return Promise.race([settled, pending]);
}
