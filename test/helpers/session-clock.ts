import type { SessionClock, TimerHandle } from '../../src/sessions/types.js';

/** A session clock tests move by hand: timers fire inside advance(), in due order. */
export class ManualClock implements SessionClock {
  nowMs = 1_000;
  #timers = new Map<number, { due: number; fn: () => void }>();
  #next = 1;

  readonly now = (): number => this.nowMs;

  setTimer(fn: () => void, ms: number): TimerHandle {
    const id = this.#next++;
    this.#timers.set(id, { due: this.nowMs + ms, fn });
    return id;
  }

  clearTimer(handle: TimerHandle): void {
    this.#timers.delete(handle as number);
  }

  /** Timers armed and not yet fired. */
  get pending(): number {
    return this.#timers.size;
  }

  advance(ms: number): void {
    const target = this.nowMs + ms;
    for (;;) {
      let first: [number, { due: number; fn: () => void }] | undefined;
      for (const entry of this.#timers) if (entry[1].due <= target && (first === undefined || entry[1].due < first[1].due)) first = entry;
      if (first === undefined) break;
      this.#timers.delete(first[0]);
      this.nowMs = Math.max(this.nowMs, first[1].due);
      first[1].fn();
    }
    this.nowMs = target;
  }
}
