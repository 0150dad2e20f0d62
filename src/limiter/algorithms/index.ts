import type { AlgorithmName } from '../../config/types.js';
import { fixedWindow } from './fixed-window.js';
import { slidingLog } from './sliding-log.js';
import { slidingWindow } from './sliding-window.js';
import { tokenBucket } from './token-bucket.js';
import type { Algorithm } from './types.js';

export type { Algorithm, Verdict } from './types.js';

/** Every algorithm by its policy name. States are opaque outside their module. */
export const ALGORITHMS: Readonly<Record<AlgorithmName, Algorithm<any>>> = Object.freeze({
  'sliding-window': slidingWindow,
  'sliding-log': slidingLog,
  'fixed-window': fixedWindow,
  'token-bucket': tokenBucket,
});
