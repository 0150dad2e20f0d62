/**
 * Calendar periods for fixed-window limits: weeks from Monday 00:00, months from the
 * 1st 00:00, and days, weeks or months that start at local midnight in an IANA time zone
 * (daylight-saving changes included: a local day lasts 23, 24 or 25 hours).
 *
 * Periods are computed in TypeScript only (Lua has no time-zone database): the Redis
 * store passes the previous, current and next periods' bounds to its script, which picks
 * by its own clock.
 */
import type { CalendarPeriodConfig } from '../config/types.js';

/** A period `[start, end)` in unix ms. */
export interface Period {
  readonly start: number;
  readonly end: number;
}

const DAY_MS = 24 * 60 * 60 * 1000;
/** 1970-01-05, the first Monday after the epoch, as a day number (days since 1970-01-01). */
const FIRST_MONDAY = 4;

/** Floor modulo (the result has the sign of `m`). */
function mod(n: number, m: number): number {
  return ((n % m) + m) % m;
}

/** A civil date, month 1-12. */
interface CivilDate {
  year: number;
  month: number;
  day: number;
}

/** Days since 1970-01-01 of a civil date (proleptic Gregorian). */
function dayNumber(date: CivilDate): number {
  return Date.UTC(date.year, date.month - 1, date.day) / DAY_MS;
}

function civilOfDay(day: number): CivilDate {
  const d = new Date(day * DAY_MS);
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate() };
}

/** The local civil date and time of instants in one time zone. */
class Zone {
  readonly #format: Intl.DateTimeFormat;

  constructor(timeZone: string) {
    this.#format = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
  }

  /** The local wall-clock time at `t`, as if it were UTC (ms, whole seconds). */
  #wall(t: number): number {
    const f: Record<string, number> = {};
    for (const part of this.#format.formatToParts(t)) if (part.type !== 'literal') f[part.type] = Number(part.value);
    return Date.UTC(f.year, f.month - 1, f.day, f.hour, f.minute, f.second);
  }

  /** Local wall-clock time minus UTC at `t` (ms). */
  #offsetAt(t: number): number {
    return this.#wall(t) - t;
  }

  /** The local date at `t` as a day number. */
  dayAt(t: number): number {
    return Math.floor(this.#wall(t) / DAY_MS);
  }

  /**
   * The first instant whose local date is `day` or later: local midnight, or the end of
   * a gap when midnight does not exist that day (a DST change at 00:00). First the usual
   * case, midnight minus the zone's offset there; if that is not the first instant of the
   * day, a coarse scan finds the half hour it lies in (offsets lie within -12h..+14h) and
   * bisection the millisecond. Runs once per period.
   */
  startOfDay(day: number): number {
    const midnight = day * DAY_MS;
    // The zone's offset near local midnight, read twice so a change between UTC and local midnight is seen.
    const first = midnight - this.#offsetAt(midnight);
    const guess = midnight - this.#offsetAt(first);
    if (this.dayAt(guess) >= day && this.dayAt(guess - 1) < day) return guess;
    const step = 30 * 60 * 1000; // 30 min: no zone changes its offset twice within it
    let lo = midnight - 15 * 60 * 60 * 1000;
    while (this.dayAt(lo + step) < day) lo += step;
    let hi = lo + step;
    while (hi - lo > 1) {
      const mid = lo + Math.floor((hi - lo) / 2);
      if (this.dayAt(mid) >= day) hi = mid;
      else lo = mid;
    }
    return hi;
  }
}

/** UTC as a Zone (no Intl needed). */
const UTC = {
  dayAt: (t: number): number => Math.floor(t / DAY_MS),
  startOfDay: (day: number): number => day * DAY_MS,
};

/**
 * The periods of one limit's window. `at(now)` keeps the last two periods it computed,
 * so the current period (and the one a settlement was taken in) cost no date arithmetic.
 */
export class Calendar {
  readonly unit: 'd' | 'w' | 'mo';
  readonly count: number;
  readonly timezone: string | undefined;
  readonly #zone: Zone | typeof UTC;
  #last: Period = { start: 0, end: 0 };
  #previous: Period = { start: 0, end: 0 };

  constructor(config: CalendarPeriodConfig) {
    this.unit = config.unit;
    this.count = config.count;
    this.timezone = config.timezone;
    this.#zone = config.timezone === undefined || config.timezone === 'UTC' ? UTC : new Zone(config.timezone);
  }

  /** `1mo`, `2w`, `1d@Europe/Berlin`: the window as store keys name it. */
  get name(): string {
    return `${this.count}${this.unit}${this.timezone === undefined ? '' : `@${this.timezone}`}`;
  }

  /** The period containing `t`. */
  at(t: number): Period {
    const last = this.#last;
    if (t >= last.start && t < last.end) return last;
    const previous = this.#previous;
    if (t >= previous.start && t < previous.end) return previous;
    const period = this.#compute(t);
    this.#previous = last;
    this.#last = period;
    return period;
  }

  /** The period after `period`. */
  next(period: Period): Period {
    return this.at(period.end);
  }

  /** The period before `period`. */
  previous(period: Period): Period {
    return this.#compute(period.start - 1);
  }

  #compute(t: number): Period {
    const zone = this.#zone;
    const today = zone.dayAt(t);
    const n = this.count;
    let first: number;
    let after: number;
    switch (this.unit) {
      case 'd':
        first = today - mod(today, n);
        after = first + n;
        break;
      case 'w': {
        const week = Math.floor((today - FIRST_MONDAY) / 7);
        first = FIRST_MONDAY + 7 * (week - mod(week, n));
        after = first + 7 * n;
        break;
      }
      case 'mo': {
        const date = civilOfDay(today);
        const index = date.year * 12 + (date.month - 1);
        const start = index - mod(index, n);
        first = dayNumber({ year: Math.floor(start / 12), month: mod(start, 12) + 1, day: 1 });
        after = dayNumber({ year: Math.floor((start + n) / 12), month: mod(start + n, 12) + 1, day: 1 });
        break;
      }
    }
    return { start: zone.startOfDay(first), end: zone.startOfDay(after) };
  }
}
