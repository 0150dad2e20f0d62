/**
 * Time that tests move by hand, instead of sleeping:
 * - `FakeClock`: a `() => number` clock (Tollgate's `clock`, stores, resolvers);
 * - `ManualTimer`: a periodic timer that fires when the test says (ViolationLog's `flushTimer`).
 */
import type { FlushTimer } from '../../src/observability/violations.js';

/** Unix ms at an aligned minute (and hour), so window arithmetic in tests stays readable. */
export const T0 = 1_764_000_000_000;

/** A clock tests move by hand; starts at T0 unless told otherwise. */
export class FakeClock {
  constructor(public nowMs = T0) {}
  /** The clock function to inject. */
  readonly now = (): number => this.nowMs;
  advance(ms: number): void {
    this.nowMs += ms;
  }
  /** Moves to an absolute time (e.g. back to the start before each test). */
  set(ms: number): void {
    this.nowMs = ms;
  }
}

/**
 * A periodic timer that only fires on `fire()`. Pass `timer.schedule` where code takes a
 * FlushTimer-shaped `(callback, everyMs) => stop` (e.g. `new ViolationLog(logger, { flushTimer })`).
 */
export class ManualTimer {
  readonly #callbacks = new Map<number, { callback: () => void; everyMs: number }>();
  #next = 0;

  readonly schedule: FlushTimer = (callback, everyMs) => {
    const id = this.#next++;
    this.#callbacks.set(id, { callback, everyMs });
    return () => this.#callbacks.delete(id);
  };

  /** Runs every scheduled callback once, as if its period had elapsed. */
  fire(): void {
    for (const { callback } of [...this.#callbacks.values()]) callback();
  }

  /** Periods of the callbacks still scheduled (empty once every one was stopped). */
  get periods(): number[] {
    return [...this.#callbacks.values()].map((c) => c.everyMs);
  }
}
