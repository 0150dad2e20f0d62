/** Milliseconds per duration unit accepted in the policy file. */
const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60 * 1000,
  h: 60 * 60 * 1000,
  d: 24 * 60 * 60 * 1000,
};

/** One unsigned integer immediately followed by one unit; no spaces, signs, fractions or compounds. */
export const DURATION = /^(\d+)(ms|s|m|h|d)$/;

/** How a duration is written, for error messages. */
export const DURATION_EXAMPLES = '500ms, 30s, 1m, 2h, 1d';

/**
 * Converts a policy-file duration (`500ms`, `30s`, `1m`, `2h`, `1d`) to milliseconds.
 * Returns undefined for anything else, including bare numbers (`60` has no unit, so
 * it is ambiguous) and values too large to be exact in a double. `0s` parses to 0;
 * whether zero is acceptable is the caller's rule.
 */
export function parseDuration(text: string): number | undefined {
  const match = DURATION.exec(text);
  if (match === null) return undefined;
  const ms = Number(match[1]) * UNIT_MS[match[2]];
  return Number.isSafeInteger(ms) ? ms : undefined;
}

/** Node's timers wait at most 2^31-1 ms (~24.8 days): a longer delay fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
