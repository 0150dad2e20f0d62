/**
 * Circuit breaker in front of Redis. After `failures` consecutive failures it opens:
 * calls are skipped (answered by `onError`) for `coolDownMs`; then one probe goes
 * through; its success closes the breaker, its failure opens it again. A hung Redis
 * thus costs the timeout only to the calls already in flight when it stopped.
 */
export interface BreakerOptions {
  /** Consecutive failures that open the breaker. */
  failures: number;
  /** How long an open breaker skips Redis before letting one probe through. */
  coolDownMs: number;
  clock: () => number;
  /** Called once per transition: true = opened (degraded), false = closed (healthy). */
  onChange: (open: boolean) => void;
}

export const DEFAULT_BREAKER = Object.freeze({
  failures: 3,
  coolDownMs: 1_000, // 1s: short enough to recover quickly, long enough to shed a hung Redis
});

export class CircuitBreaker {
  readonly #threshold: number;
  readonly #coolDownMs: number;
  readonly #clock: () => number;
  readonly #onChange: (open: boolean) => void;
  #failures = 0;
  #open = false;
  #probeAt = 0;
  #probing = false;

  constructor(options: BreakerOptions) {
    this.#threshold = options.failures;
    this.#coolDownMs = options.coolDownMs;
    this.#clock = options.clock;
    this.#onChange = options.onChange;
  }

  get open(): boolean {
    return this.#open;
  }

  /** May this call go to Redis? While open, true once per cool-down (the probe). */
  allow(): boolean {
    if (!this.#open) return true;
    if (this.#probing || this.#clock() < this.#probeAt) return false;
    this.#probing = true;
    return true;
  }

  /** Redis answered: any answer proves it is reachable again. */
  success(): void {
    this.#failures = 0;
    if (!this.#open) return;
    this.#open = false;
    this.#probing = false;
    this.#onChange(false);
  }

  /** @param probe the failed call was let through by an open breaker */
  failure(probe: boolean): void {
    this.#failures++;
    if (this.#open) {
      // A call sent before the breaker opened changes nothing; a failed probe waits again.
      if (!probe) return;
      this.#probing = false;
      this.#probeAt = this.#clock() + this.#coolDownMs;
      return;
    }
    if (this.#failures < this.#threshold) return;
    this.#open = true;
    this.#probing = false;
    this.#probeAt = this.#clock() + this.#coolDownMs;
    this.#onChange(true);
  }

  /** The connection came back: probe on the next call instead of waiting out the cool-down. */
  probeNow(): void {
    if (this.#open && !this.#probing) this.#probeAt = 0;
  }
}
