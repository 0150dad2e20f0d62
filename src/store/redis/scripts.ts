/**
 * The Lua side of the Redis store. `DECIDE_LUA` is the decision procedure of
 * `MemoryStore.decide` (src/store/memory.ts) and the four algorithms of
 * src/limiter/algorithms/ written a second time: same operations on IEEE-754
 * doubles, in the same order, so both stores give the same answers to the same
 * schedule (test/store/redis-vectors.test.ts holds them to it).
 *
 * Each script's sha1 is pinned below; test/store/redis-scripts.test.ts recomputes
 * it offline, so editing a script without updating its hash fails without Redis.
 */

/**
 * One batch of decisions, one round trip. Per decision: reads every block and state,
 * peeks every limit and, only if all pass, counts all; otherwise starts the blocks of
 * the refused limits. Decisions run in order, so each sees the writes of the ones
 * before it: exactly the semantics of sequential calls. Every write carries its
 * expiry (SET ... PX, ZADD + PEXPIRE in the same script).
 */
export const DECIDE_LUA = `-- tollgate decide (batched)
-- KEYS        per check, in decision order: its state key. fixed-window, sliding-window
--             and token-bucket keep their block in the same string ("b<blockedUntil> n n
--             [n]", %.17g numbers, blockedUntil 0 = none): one key and one GET per check.
--             A value in any other form reads as no state (and is overwritten).
--             sliding-log's state is a ZSET, so its block follows as a second key
--             (a string: blocked-until ms).
-- ARGV[1]     ms added to every TTL (slack for clock: local; 0 with TIME)
-- ARGV[2]     batch id, unique across replicas (sliding-log members)
-- then per decision: now in ms ('' = the server clock, TIME, read once per batch),
--   check count n, flags ('s' = shadow: take the concurrency slots even when refused,
--   '' = none), and per check one spec "code max windowMs blockMs" (code: fw|sw|sl|tb,
--   or cc for a concurrency check, whose windowMs is the lease length; one argument,
--   not four: fewer arguments to encode and copy, and the checks of one route repeat
--   the same few specs, parsed once per batch)
-- A concurrency check's key is a ZSET of leases: member = "<batch id>:<decision>:<check>"
-- (what the store gives back on release), score = the lease's expiry; expired leases are
-- dropped when the key is read, so a dead replica's slots free themselves.
-- Returns one string of space-separated numbers (cheaper for the client to decode
-- than an array): the server's now (0 if unused), then per decision and check:
-- allowed 0/1, remaining, resetAt, retryAfterMs, count, blockedUntil (0 = none),
-- blockStarted 0/1.
local floor, ceil, fmod, min, max = math.floor, math.ceil, math.fmod, math.min, math.max
local format, match, tonumber = string.format, string.match, tonumber
local call = redis.call

local slack = tonumber(ARGV[1])
local bid = ARGV[2]
local serverNow = nil
-- The decision being run: every algorithm below reads it.
local now = 0

local function fmt(x) return format('%.17g', x) end

-- String states are parsed once and then kept here (every write updates them), so a
-- key named twice in a batch is consumed twice, as MemoryStore does with its shared
-- state object. A state is {n, n, n?, blk = blocked-until}; st[1] is nil for a key
-- with no counter state (absent, or holding only a block).
local states = {}
local function load(key)
  local st = states[key]
  if st ~= nil then return st end
  st = {blk = 0}
  local v = call('GET', key)
  if v then
    local b, x, y, z = match(v, '^b(%S+) ?(%S*) ?(%S*) ?(%S*)$')
    if b then
      st.blk = tonumber(b) or 0
      st[1], st[2], st[3] = tonumber(x), tonumber(y), tonumber(z)
    end
  end
  states[key] = st
  return st
end
-- Counting happens only when no limit of the decision is blocked: the stored block
-- (if any) has ended, so it is dropped.
local function store2(key, a, b, ttl)
  states[key] = {a, b, blk = 0}
  call('SET', key, format('b0 %.17g %.17g', a, b), 'PX', ceil(ttl + slack))
end
local function store3(key, a, b, c, ttl)
  states[key] = {a, b, c, blk = 0}
  call('SET', key, format('b0 %.17g %.17g %.17g', a, b, c), 'PX', ceil(ttl + slack))
end
-- Starts a block on a string state: the counts are kept as they are, and the key lives
-- until the later of its own expiry and the block's end.
local function storeBlock(key, untilMs, blockMs)
  local st = load(key)
  st.blk = untilMs
  local v
  if st[1] == nil then v = 'b' .. fmt(untilMs)
  elseif st[3] == nil then v = format('b%.17g %.17g %.17g', untilMs, st[1], st[2])
  else v = format('b%.17g %.17g %.17g %.17g', untilMs, st[1], st[2], st[3]) end
  local ttl = ceil(blockMs + slack)
  local left = call('PTTL', key)
  if left > ttl then ttl = left end
  call('SET', key, v, 'PX', ttl)
end

-- fixed-window: {start, count}
local function fwPeek(st, mx, w)
  local start = now - fmod(now, w)
  local count = 0
  if st[1] == start then count = st[2] end
  local resetAt = start + w
  if count + 1 <= mx then return 1, mx - count - 1, resetAt, 0, count + 1 end
  return 0, 0, resetAt, resetAt - now, count
end
local function fwConsume(key, st, mx, w)
  local start = now - fmod(now, w)
  local count = 0
  if st[1] == start then count = st[2] end
  store2(key, start, count + 1, max(1, start + w - now))
end

-- sliding-window: {start, cur, prev}
local function swRotate(st, w)
  local start = now - fmod(now, w)
  if st[1] == nil or st[1] < start - w or st[1] > start then return start, 0, 0 end
  if st[1] == start then return start, st[2], st[3] end
  return start, 0, st[2]
end
local function swWait(start, cur, prev, mx, w)
  if cur + 1 <= mx and prev > 0 then
    local elapsed = ceil(w - ((mx - cur - 1) * w) / prev)
    if elapsed < w then return start + elapsed - now end
  end
  local nxt = start + w
  if cur <= mx - 1 then return nxt - now end
  local elapsed = ceil(w - ((mx - 1) * w) / cur)
  return nxt + elapsed - now
end
local function swPeek(st, mx, w)
  local start, cur, prev = swRotate(st, w)
  local estimate = (prev * (w - (now - start))) / w + cur
  local resetAt = start + w
  if estimate + 1 <= mx then
    return 1, floor(mx - estimate - 1), resetAt, 0, ceil(estimate) + 1
  end
  local retry = max(1, swWait(start, cur, prev, mx, w))
  return 0, 0, max(resetAt, now + retry), retry, ceil(estimate)
end
local function swConsume(key, st, mx, w)
  local start, cur, prev = swRotate(st, w)
  store3(key, start, cur + 1, prev, max(1, start + 2 * w - now))
end

-- token-bucket: {units, at}; one token = w units, so every quantity is an integer
local function tbAvailable(st, mx, w)
  if st[1] == nil then return mx * w end
  local elapsed = 0
  if now > st[2] then elapsed = now - st[2] end
  return min(mx * w, st[1] + elapsed * mx)
end
local function tbPeek(st, mx, w)
  local cap = mx * w
  local units = tbAvailable(st, mx, w)
  if units >= w then
    local left = units - w
    return 1, floor(left / w), now + ceil((cap - left) / mx), 0, ceil((cap - left) / w)
  end
  return 0, 0, now + ceil((cap - units) / mx), ceil((w - units) / mx), ceil((cap - units) / w)
end
local function tbConsume(key, st, mx, w)
  local units = tbAvailable(st, mx, w) - w
  local at = now
  if st[1] ~= nil then at = max(now, st[2]) end
  store2(key, units, at, max(1, ceil((mx * w - tbAvailable({units, at}, mx, w)) / mx)))
end

-- sliding-log: a ZSET of request timestamps (scores); members are request ids
local function slPeek(key, mx, w)
  local count = call('ZCOUNT', key, '(' .. fmt(now - w), '+inf')
  if count + 1 <= mx then return 1, mx - count - 1, now + w, 0, count + 1 end
  -- The (count - max + 1)-th oldest live entry must leave the window first.
  local total = call('ZCARD', key)
  local kth = call('ZRANGE', key, total - mx, total - mx, 'WITHSCORES')
  local last = call('ZRANGE', key, -1, -1, 'WITHSCORES')
  return 0, 0, tonumber(last[2]) + w, tonumber(kth[2]) + w - now, count
end
local function slConsume(key, mx, w, member)
  call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - w))
  call('ZADD', key, fmt(now), member)
  local last = call('ZRANGE', key, -1, -1, 'WITHSCORES')
  call('PEXPIRE', key, ceil(max(1, tonumber(last[2]) + w - now) + slack))
end

-- concurrency slots: a ZSET of leases scored by expiry
local SLOT_RETRY_MS = 1000
local function ccPeek(key, mx)
  call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
  local held = call('ZCARD', key)
  if held + 1 <= mx then return 1, mx - held - 1, now + SLOT_RETRY_MS, 0, held + 1 end
  return 0, 0, now + SLOT_RETRY_MS, SLOT_RETRY_MS, held
end
local function ccTake(key, lease, member)
  call('ZADD', key, fmt(now + lease), member)
  local ttl = ceil(lease + slack)
  if call('PTTL', key) < ttl then call('PEXPIRE', key, ttl) end
end

local out = {''}

-- Spec string -> {code, max, window ms, block ms}, parsed once per batch.
local specs = {}
local function spec(s)
  local sp = specs[s]
  if sp then return sp end
  local code, mx, w, b = match(s, '^(%a+) (%S+) (%S+) (%S+)$')
  sp = {code, tonumber(mx), tonumber(w), tonumber(b)}
  if not code or not sp[2] or not sp[3] or not sp[4] then
    sp = false
  end
  specs[s] = sp
  return sp
end

-- Per check of the decision being run, reused across decisions (entries 1..n are
-- written before they are read): allocating them per decision cost ~6% of the script.
local passed, verdicts, blocked, checks, keys, blockKeys = {}, {}, {}, {}, {}, {}

-- One decision: its keys start after KEYS[k], its checks' args at ARGV[a]. Returns an
-- error reply, or nil and the index of its last key.
local function decide(k, a, n, rid, shadow)
  -- 1. read every block and state and peek every limit
  local allowed = true
  for i = 1, n do
    local sp = spec(ARGV[a + i - 1])
    if not sp then return redis.error_reply('tollgate: bad check spec ' .. tostring(ARGV[a + i - 1])) end
    checks[i] = sp
    local code, mx, w = sp[1], sp[2], sp[3]
    k = k + 1
    local key = KEYS[k]
    keys[i] = key
    local untilMs
    if code == 'sl' then
      k = k + 1
      blockKeys[i] = KEYS[k]
      untilMs = tonumber(call('GET', KEYS[k]) or 0)
    elseif code == 'cc' then
      untilMs = 0
    else
      untilMs = load(key).blk
    end
    if untilMs > now then blocked[i] = untilMs else blocked[i] = 0 end
    -- A peek answers: allowed 0/1, remaining, resetAt, retryAfterMs, count.
    local ok, remaining, resetAt, retry, count
    if code == 'sw' then ok, remaining, resetAt, retry, count = swPeek(load(key), mx, w)
    elseif code == 'fw' then ok, remaining, resetAt, retry, count = fwPeek(load(key), mx, w)
    elseif code == 'tb' then ok, remaining, resetAt, retry, count = tbPeek(load(key), mx, w)
    elseif code == 'sl' then ok, remaining, resetAt, retry, count = slPeek(key, mx, w)
    elseif code == 'cc' then ok, remaining, resetAt, retry, count = ccPeek(key, mx)
    else return redis.error_reply('tollgate: unknown algorithm ' .. tostring(code)) end
    passed[i] = ok
    verdicts[i] = format('%d %d %.17g %.17g %d', ok, remaining, resetAt, retry, count)
    if blocked[i] ~= 0 or ok == 0 then allowed = false end
  end

  -- 2. count all, or count nothing and start the blocks of the refused limits
  for i = 1, n do
    local sp = checks[i]
    local code, mx, w, blockMs = sp[1], sp[2], sp[3], sp[4]
    local key = keys[i]
    local started = 0
    if code == 'cc' then
      if allowed or shadow then ccTake(key, w, rid .. ':' .. i) end
    elseif allowed then
      if code == 'sw' then swConsume(key, load(key), mx, w)
      elseif code == 'fw' then fwConsume(key, load(key), mx, w)
      elseif code == 'tb' then tbConsume(key, load(key), mx, w)
      else slConsume(key, mx, w, rid .. ':' .. i) end
    elseif blocked[i] == 0 and passed[i] == 0 and blockMs > 0 then
      blocked[i] = now + blockMs
      if code == 'sl' then call('SET', blockKeys[i], fmt(blocked[i]), 'PX', ceil(blockMs + slack))
      else storeBlock(key, blocked[i], blockMs) end
      started = 1
    end
    out[#out + 1] = verdicts[i]
    out[#out + 1] = format('%.17g %d', blocked[i], started)
  end
  return nil, k
end

local k, a, d = 0, 3, 0
while a <= #ARGV do
  d = d + 1
  local t = tonumber(ARGV[a])
  if t == nil then
    if serverNow == nil then
      local time = call('TIME')
      serverNow = tonumber(time[1]) * 1000 + floor(tonumber(time[2]) / 1000)
    end
    t = serverNow
  end
  now = t
  local n = tonumber(ARGV[a + 1])
  local failed, last = decide(k, a + 3, n, bid .. ':' .. d, ARGV[a + 2] == 's')
  if failed then return failed end
  k = last
  a = a + 3 + n
end
out[1] = fmt(serverNow or 0)
return table.concat(out, ' ')
`;

/**
 * Replica heartbeat: records this replica in a sorted set scored by the server clock,
 * drops replicas not seen for the live window and returns how many are live.
 */
export const HEARTBEAT_LUA = `-- tollgate heartbeat
-- KEYS[1]  the replicas sorted set (member = replica id, score = last seen, server ms)
-- ARGV[1]  this replica's id
-- ARGV[2]  live window ms: replicas not seen for longer are dropped
-- ARGV[3]  TTL of the set in ms
-- Returns the number of live replicas (this one included).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%.17g', now), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.17g', now - tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
`;

/**
 * Gives back what finished exchanges held: releases concurrency slots. One call per
 * event-loop turn carries every release of that turn.
 */
export const SETTLE_LUA = `-- tollgate settle (batched)
-- KEYS   per release: the concurrency key (a ZSET of leases)
-- ARGV   per release: the lease member to remove
-- Returns the number of leases removed (an expired or unknown one counts 0).
local removed = 0
for i = 1, #KEYS do
  removed = removed + redis.call('ZREM', KEYS[i], ARGV[i])
end
return removed
`;

/**
 * Renews the leases this replica holds (every third of the lease length), so the slots
 * of a replica that died free themselves when its leases expire. A lease that already
 * expired (Redis unreachable for longer than a lease) is not re-added: its slot may have
 * been handed out again meanwhile.
 */
export const RENEW_LUA = `-- tollgate renew leases (batched)
-- KEYS     per lease: its concurrency key (a ZSET of leases)
-- ARGV[1]  lease length in ms
-- ARGV[2]  now in ms ('' = the server clock, TIME)
-- ARGV[3]  ms added to the key TTL (slack for clock: local)
-- ARGV[3+i] the lease member of KEYS[i]
-- Returns the number of leases renewed.
local lease = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local ttl = math.ceil(lease + tonumber(ARGV[3]))
local score = string.format('%.17g', now + lease)
local renewed = 0
for i = 1, #KEYS do
  renewed = renewed + redis.call('ZADD', KEYS[i], 'XX', 'CH', score, ARGV[3 + i])
  if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return renewed
`;

/** sha1 of each script (what EVALSHA sends); pinned so a stale edit is caught offline. */
export const SCRIPT_SHA1 = Object.freeze({
  decide: '3877a7588c88f379425c8501e3d4c65271235731',
  heartbeat: '56f1982dd4dd0c0603bab9afbcd52b25bd1db1e4',
  settle: '6ee1ef47b57ca97ef9c1ca1774d193042ab87642',
  renew: '774219d5e307ccfb77d529a5c899e0b4ae35fdf6',
});
