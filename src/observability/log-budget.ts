/**
 * A per-second budget of log lines: bounds a flood (many distinct keys, many closing
 * sessions) to `perSecond` lines; lines over it are counted as dropped, for one
 * overflow summary line.
 */
export class LogBudget {
  readonly #perSecond: number;
  #second = 0;
  #used = 0;
  #dropped = 0;

  constructor(perSecond: number) {
    this.#perSecond = perSecond;
  }

  /** True when one more line fits in the budget of `now`'s second (unix ms); else it is counted as dropped. */
  take(now: number): boolean {
    const second = Math.floor(now / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#used = 0;
    }
    if (this.#used >= this.#perSecond) {
      this.#dropped++;
      return false;
    }
    this.#used++;
    return true;
  }

  /** Lines dropped since the last call (and resets the count). */
  takeDropped(): number {
    const dropped = this.#dropped;
    this.#dropped = 0;
    return dropped;
  }
}
