import type { CompiledCostHeader } from '../policy/types.js';

/** ASCII digits only: no sign, fraction, exponent or spaces. */
const DIGITS = /^[0-9]{1,16}$/;

/** What an upstream's cost header says: the units to charge, and whether the header was usable. */
export interface ReportedCost {
  units: number;
  /** False when the header was present but malformed or repeated (its reservation is charged). */
  valid: boolean;
}

/**
 * The cost the upstream reported in `value` (the response header as node gives it: a
 * string, an array when repeated, undefined when absent): ASCII digits up to 2^53 - 1,
 * capped at `cost.max`. Anything else charges the reservation: silently when the header
 * is missing, as invalid when it is malformed or repeated.
 */
export function reportedCost(value: string | string[] | undefined, cost: CompiledCostHeader): ReportedCost {
  if (value === undefined) return { units: cost.reserve, valid: true };
  if (typeof value !== 'string' || !DIGITS.test(value)) return { units: cost.reserve, valid: false };
  const units = Number(value);
  if (!Number.isSafeInteger(units)) return { units: cost.reserve, valid: false };
  return { units: units > cost.max ? cost.max : units, valid: true };
}
