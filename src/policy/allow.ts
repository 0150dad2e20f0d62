import type { AllowConfig } from '../config/types.js';
import { createAddressSet } from './ip-set.js';
import type { AllowList, ClientAddress, Identity } from './types.js';

const NOBODY_ALLOWED: AllowList = Object.freeze({ isAllowed: () => false });

/** Requests that bypass every limit: by resolved client IP (CIDRs) or by user id. */
export function createAllowList(config: AllowConfig): AllowList {
  const ips = createAddressSet(config.ips, 'allow.ips');
  const users: ReadonlySet<string> = new Set(config.users);
  if (ips.size === 0 && users.size === 0) return NOBODY_ALLOWED;
  return Object.freeze({
    isAllowed(client: ClientAddress, identity: Identity): boolean {
      if (identity.userId !== undefined && users.has(identity.userId)) return true;
      return ips.size > 0 && ips.has(client.ip);
    },
  });
}
