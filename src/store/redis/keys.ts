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

/**
 * A route's index of running blocks (a ZSET, docs/redis.md): in the route's hash tag, so
 * the decide script and the admin scripts reach it with the route's keys. `admin` is
 * no `by` of a limit, so it cannot meet a limit's keys.
 */
export function blockIndexKey(prefix: string, routeId: string): string {
  return `${prefix}{${routeId}}:admin:blocks`;
}
