/**
 * The Redis hash tag of a key (what Cluster hashes), else the whole key. Keys are
 * `prefix + {route}:...`: all keys of one decision share the tag, so decisions with
 * the same tag can share a script call.
 */
export function hashTag(key: string): string {
  const open = key.indexOf('{');
  if (open === -1) return key;
  const close = key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : key;
}
