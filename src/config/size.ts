/** Bytes per size unit accepted in the policy file (1024-based, lower-case only). */
const UNIT_BYTES: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1024,
  mb: 1024 * 1024,
};

/** One unsigned integer immediately followed by one lower-case unit. */
export const SIZE = /^(\d+)(b|kb|mb)$/;

/** How a size is written, for error messages. */
export const SIZE_EXAMPLES = '512b, 64kb, 1mb';

/**
 * Converts a policy-file size (`512b`, `64kb`, `1mb`; 1024-based) to bytes. Returns
 * undefined for anything else: bare numbers, upper-case units (`1MB` could mean 10^6),
 * fractions, and values too large to be exact in a double. `0b` parses to 0; whether
 * zero is acceptable is the caller's rule.
 */
export function parseSize(text: string): number | undefined {
  const match = SIZE.exec(text);
  if (match === null) return undefined;
  const bytes = Number(match[1]) * UNIT_BYTES[match[2]];
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}
