import type { PolicyConfig, RedisNodeConfig } from './types.js';

export const REDACTED = '[redacted]';

/**
 * A deep copy of the policy that is safe to show (GET /config): the JWT secret and
 * public key, Redis passwords and any password inside a URL become "[redacted]".
 * Everything else is kept so the copy still explains what is in force.
 */
export function redactPolicy(config: PolicyConfig): unknown {
  const copy = structuredClone(config);
  if (copy.upstream !== undefined) copy.upstream = redactUrlPassword(copy.upstream);
  const jwt = copy.identity?.jwt;
  if (jwt !== undefined) {
    if (jwt.secret !== undefined) jwt.secret = REDACTED;
    if (jwt.publicKey !== undefined) jwt.publicKey = REDACTED;
    if (jwt.jwksUrl !== undefined) jwt.jwksUrl = redactUrlPassword(jwt.jwksUrl);
  }
  const redis = copy.store.redis;
  if (redis !== undefined) {
    if (redis.url !== undefined) redis.url = redactUrlPassword(redis.url);
    redactNodePassword(redis);
    redis.sentinels?.forEach(redactNodePassword);
    redis.cluster?.forEach(redactNodePassword);
  }
  return copy;
}

function redactNodePassword(node: Pick<RedisNodeConfig, 'password'>): void {
  if (node.password !== undefined) node.password = REDACTED;
}

/**
 * `redis://user:secret@host:6379/0` -> `redis://user:[redacted]@host:6379/0`.
 * Userinfo without a colon (`redis://secret@host`) may be a bare password (some Redis
 * clients read it so), so all of it is hidden. Works on the text rather than through
 * `URL`, which would percent-encode the brackets.
 */
export function redactUrlPassword(url: string): string {
  const parts = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)(.*)$/is.exec(url);
  if (parts === null) return url;
  const [, scheme, authority, rest] = parts;
  const at = authority.lastIndexOf('@');
  if (at < 0) return url;
  const userinfo = authority.slice(0, at);
  const colon = userinfo.indexOf(':');
  const visibleUser = colon < 0 ? '' : `${userinfo.slice(0, colon)}:`;
  return `${scheme}${visibleUser}${REDACTED}${authority.slice(at)}${rest}`;
}
