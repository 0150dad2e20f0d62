/**
 * The Lua registry, checked offline: each pinned sha1 is the hash of its script (a
 * stale constant fails here without Redis), and the scripts respect the rules that
 * keep them Cluster-safe and lossless.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { ADMIN_LUA, BLOCKS_LUA, DECIDE_LUA, HEARTBEAT_LUA, RENEW_LUA, SCRIPT_SHA1, SETTLE_LUA } from '../../src/store/redis/scripts.js';

const SCRIPTS = { decide: DECIDE_LUA, heartbeat: HEARTBEAT_LUA, settle: SETTLE_LUA, renew: RENEW_LUA, admin: ADMIN_LUA, blocks: BLOCKS_LUA } as const;

describe('redis scripts registry', () => {
  it('every pinned script is checked here', () => {
    assert.deepEqual(Object.keys(SCRIPT_SHA1).sort(), Object.keys(SCRIPTS).sort());
  });

  for (const [name, lua] of Object.entries(SCRIPTS)) {
    it(`${name}: the pinned sha1 is the sha1 of the script`, () => {
      const sha = createHash('sha1').update(lua).digest('hex');
      assert.equal(SCRIPT_SHA1[name as keyof typeof SCRIPTS], sha, `update SCRIPT_SHA1.${name} to ${sha}`);
    });

    it(`${name}: every key comes from KEYS (no key built inside the script)`, () => {
      for (const match of lua.matchAll(/call\('(\w+)',\s*([^,)]+)/g)) {
        const [, command, firstArg] = match;
        if (command === 'TIME') continue;
        assert.match(firstArg.trim(), /^(KEYS\[[^\]]+\]|key|blockKeys\[i\]|dirtyKeys\[i\]|strikeKey|blockKey|reasonKey|idx)$/, `${command} must name a key from KEYS, got ${firstArg}`);
      }
      // The names above hold only KEYS entries (`keys[i]` keeps each check's `key`).
      for (const match of lua.matchAll(/\b(key|blockKeys\[i\]|strikeKeys\[i\]|blockKey|strikeKey|reasonKey|idx)\s*=\s*([^\n]+)/g)) {
        assert.match(match[2].trim(), /^(KEYS\[[^\]]+\]|keys\[i\])$/, `${match[1]} must be assigned from KEYS, got ${match[2]}`);
      }
      // Helpers that take a key take it as one of those names.
      for (const match of lua.matchAll(/(?<!function )\b(?:indexAdd|storeBlock)\((\w+(?:\[i\])?)/g)) assert.match(match[1], /^(idx|key)$/);
      // strikeKey is only ever a parameter, passed strikeKeys[i].
      for (const match of lua.matchAll(/(?<!function )nextBlock\(sp, ([^)]+)\)/g)) assert.equal(match[1].trim(), 'strikeKeys[i]');
      for (const match of lua.matchAll(/\bkeys\[i\]\s*=\s*([^\n]+)/g)) assert.equal(match[1].trim(), 'key');
      // Deferred writes (flush): the pending list holds the keys its writers were given.
      for (const match of lua.matchAll(/\bdirtyKeys\[dirtyN\], dirtyStates\[dirtyN\] = (\w+), (\w+)/g)) assert.deepEqual([match[1], match[2]], ['key', 'st']);
      for (const match of lua.matchAll(/(?<!function )\bpend\((\w+)/g)) assert.equal(match[1], 'key');
    });
  }

  for (const [name, lua] of Object.entries({ decide: DECIDE_LUA, settle: SETTLE_LUA, admin: ADMIN_LUA })) {
    it(`${name}: every write carries its expiry (SET with PX, ZADD followed by PEXPIRE)`, () => {
      const sets = [...lua.matchAll(/call\('SET'[^\n]*/g)].map((m) => m[0]);
      assert.ok(sets.length >= 1);
      for (const set of sets) assert.match(set, /'PX'/, set);
      assert.doesNotMatch(lua, /'(INCR|INCRBY|HSET|HINCRBY|EXPIRE)'/);
      for (const zadd of lua.matchAll(/call\('ZADD'/g)) {
        assert.ok(lua.indexOf("call('PEXPIRE'", zadd.index) > zadd.index, 'ZADD must be followed by PEXPIRE');
      }
    });
  }

  it('decide: fractional state is written with full double precision', () => {
    assert.match(DECIDE_LUA, /format\('%\.17g', x\)/);
    assert.doesNotMatch(DECIDE_LUA, /tostring\(st/);
  });
});
