import type { RateLimitStore, StoreHold } from '../store/types.js';

/** Called with the slots a settlement takes (+n when created) and gives back (-n at its end), per route. */
export type SlotsChanged = (routeId: string, delta: number) => void;

/**
 * The work an admitted decision leaves for the end of its exchange: give back the
 * concurrency slots it holds. The proxy calls `end()` exactly once when the exchange
 * ends, whatever ends it (response sent, client gone, upstream error or timeout, tunnel
 * closed, drain, reload); further calls do nothing.
 */
export class Settlement {
  readonly #store: RateLimitStore;
  readonly #hold: StoreHold;
  readonly #routeId: string;
  readonly #slots: number;
  readonly #onSlots: SlotsChanged | undefined;
  #ended = false;

  constructor(store: RateLimitStore, hold: StoreHold, routeId: string, onSlots: SlotsChanged | undefined) {
    this.#store = store;
    this.#hold = hold;
    this.#routeId = routeId;
    let slots = 0;
    for (let i = 0; i < hold.slots.length; i++) if (hold.slots[i]) slots++;
    this.#slots = slots;
    this.#onSlots = onSlots;
    if (slots > 0) onSlots?.(routeId, slots);
  }

  get ended(): boolean {
    return this.#ended;
  }

  /**
   * The status of the exchange is known (the upstream's response head, or Tollgate's
   * own 502/504). Nothing to do yet for slots; the hook where status-dependent
   * settlement belongs.
   */
  head(_status: number): void {}

  /** The exchange ended: give back what the decision holds. Exactly once; never throws. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    try {
      this.#store.settle(this.#hold);
    } finally {
      if (this.#slots > 0) this.#onSlots?.(this.#routeId, -this.#slots);
    }
  }
}
