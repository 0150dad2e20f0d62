/**
 * The Lua side of the Redis store. `DECIDE_LUA` is the decision procedure of
 * `MemoryStore.decide` (src/store/memory.ts) and the four algorithms of
 * src/limiter/algorithms/ written a second time: same operations on IEEE-754
 * doubles, in the same order, so both stores give the same answers to the same
 * schedule (test/store/redis-vectors.test.ts holds them to it). `SETTLE_LUA` is
 * `MemoryStore.settle` with the algorithms' `adjust`; both scripts share the state
 * and algorithm code below (`COMMON_LUA`).
 *
 * `ADMIN_LUA` and `BLOCKS_LUA` serve the admin API (inspect, block, unblock, reset;
 * the listing of running blocks) and share `COMMON_LUA` too.
 *
 * Each script's sha1 is pinned below; test/store/redis-scripts.test.ts recomputes
 * it offline, so editing a script without updating its hash fails without Redis.
 */

/**
 * A check's spec, shared by both scripts: "code max windowMs block need take [p0 p1 p2 p3]"
 * - code: fw | sw | sl | tb, or cc for a concurrency check (windowMs = lease length);
 * - block: block ms (0 = none), or an escalating list "ms,ms,...,ms/forgetAfterMs";
 * - need / take: units left that admit the request / units it takes;
 * - p0..p3 (fixed-window calendar periods only): the starts of the previous, current and
 *   next periods and the end of the next, computed by TypeScript (Lua has no time-zone
 *   database); the script picks the period containing its own `now`.
 * One argument, not many: fewer to encode and copy, and the checks of one route repeat
 * the same few specs, parsed once per script call.
 *
 * States: fixed-window, sliding-window and token-bucket keep their state and block in
 * one string ("b<blockedUntil> n n [n]", %.17g numbers, blockedUntil 0 = none; "m..."
 * instead of "b...": the block was set by an operator): one key per check, read (GET) and
 * written (SET ... PX) at most once per script call however many checks name it. A
 * value in any other form reads as no state (and is overwritten). sliding-log's state is
 * a ZSET, so its block is a second key (a string: blocked-until ms, "m" first for an
 * operator's block). An escalating limit's strike count is one more key (a string,
 * expiring `forgetAfter` after its block ends). An operator's reason is one more key
 * (":m", living as long as the block), read only by the admin scripts.
 *
 * Running blocks are indexed per route (a ZSET of members "<until, 15 digits>:<state key>",
 * all scored 0, so text order is (until, key) order): the decide script adds a member
 * when it starts a block, the admin script when it sets or lifts one, and every add
 * drops the members of blocks that ended. The admin listing pages through it with
 * ZRANGEBYLEX.
 */
const COMMON_LUA = `local floor, ceil, fmod, min, max = math.floor, math.ceil, math.fmod, math.min, math.max
local format, match, gmatch, tonumber = string.format, string.match, string.gmatch, tonumber
local call = redis.call

local slack = 0
-- The time being decided at: every algorithm below reads it.
local now = 0

local function fmt(x) return format('%.17g', x) end

-- String states are parsed once and then kept here (every write updates them), so a
-- key named twice in one call is consumed twice, as MemoryStore does with its shared
-- state object. A state is {n, n, n?, blk = blocked-until, man = an operator's block};
-- st[1] is nil for a key with no counter state (absent, or holding only a block).
local states = {}
local function load(key)
  local st = states[key]
  if st ~= nil then return st end
  local v = call('GET', key)
  if v then
    local tag, b, x, y, z = match(v, '^([bm])(%S+) ?(%S*) ?(%S*) ?(%S*)$')
    if tag then
      -- Built whole: a constructor sizes the table once, where adding fields grows it.
      st = {tonumber(x), tonumber(y), tonumber(z), blk = tonumber(b) or 0, man = tag == 'm', px = false}
    end
  end
  if st == nil then st = {nil, nil, nil, blk = 0, man = false, px = false} end
  states[key] = st
  return st
end
local function tagOf(st) if st.man then return 'm' end return 'b' end
-- Writes are deferred to the end of the call (flush): a key that many checks of one call
-- write (a global or per-route key, a busy client's key: every decision of a batch) is
-- formatted and SET once. A state keeps its pending PX (st.px) until then; Redis freezes
-- the clock for a script, so the last write's PX is what a SET per write leaves.
local dirtyKeys, dirtyStates, dirtyN = {}, {}, 0
local function pend(key, st, px)
  if not st.px then
    dirtyN = dirtyN + 1
    dirtyKeys[dirtyN], dirtyStates[dirtyN] = key, st
  end
  st.px = px
end
-- The key's TTL in ms as the writes so far left it (PTTL's answers: -2 absent, -1 none).
local function pttl(key, st)
  if st.px then return st.px end
  return call('PTTL', key)
end
-- Writes a string state with its TTL; a running block is kept, and keeps the key alive.
local function store(key, st, ttl)
  local blk = st.blk
  if blk > now and blk - now > ttl then ttl = blk - now end
  pend(key, st, ceil(ttl + slack))
end
-- Starts a block on a string state (manual: an operator's): the counts are kept as they
-- are, and the key lives until the later of its own expiry and the block's end.
local function storeBlock(key, untilMs, blockMs, manual)
  local st = load(key)
  st.blk = untilMs
  st.man = manual
  local ttl = ceil(blockMs + slack)
  local left = pttl(key, st)
  if left > ttl then ttl = left end
  pend(key, st, ttl)
end
-- A deleted key's pending write is dropped.
local function dropPending(st) st.px = false end
-- The stored form of a state (see the layout above).
local function encode(st)
  local blk = st.blk
  if blk == 0 then
    -- The common case (counted, so no block runs): no tag or block to format.
    if st[3] == nil then return format('b0 %.17g %.17g', st[1], st[2]) end
    return format('b0 %.17g %.17g %.17g', st[1], st[2], st[3])
  end
  if st[1] == nil then return tagOf(st) .. fmt(blk) end
  if st[3] == nil then return format('%s%.17g %.17g %.17g', tagOf(st), blk, st[1], st[2]) end
  return format('%s%.17g %.17g %.17g %.17g', tagOf(st), blk, st[1], st[2], st[3])
end
-- Sends the pending writes; every script calls it before it returns.
local function flush()
  for i = 1, dirtyN do
    local st = dirtyStates[i]
    if st.px then
      call('SET', dirtyKeys[i], encode(st), 'PX', st.px)
      st.px = false
    end
  end
  dirtyN = 0
end
-- sliding-log's block key: "<until>", or "m<until>" for an operator's block.
local function slBlock(v)
  if not v then return 0, false end
  if string.sub(v, 1, 1) == 'm' then return tonumber(string.sub(v, 2)) or 0, true end
  return tonumber(v) or 0, false
end
-- A running block's member in its route's index: "<until>:<state key>".
local function member(untilMs, key) return format('%015.0f', untilMs) .. ':' .. key end
-- Adds a running block to the index idx, and drops the members of blocks that ended.
local function indexAdd(idx, untilMs, key)
  call('ZREMRANGEBYLEX', idx, '-', '(' .. format('%015.0f', now))
  call('ZADD', idx, 0, member(untilMs, key))
  local ttl = ceil(untilMs - now + slack)
  if call('PTTL', idx) < ttl then call('PEXPIRE', idx, ttl) end
end
-- Counting happens only when no limit of the decision is blocked: the stored block
-- (if any) has ended, so it is dropped. st is the key's loaded state, updated in place
-- (a new table per write cost more than the write).
local function store2(key, st, a, b, ttl)
  st[1], st[2], st[3], st.blk, st.man = a, b, nil, 0, false
  store(key, st, ttl)
end
local function store3(key, st, a, b, c, ttl)
  st[1], st[2], st[3], st.blk, st.man = a, b, c, 0, false
  store(key, st, ttl)
end

-- Spec string -> {code, max, window ms, block ms, need, take, blocks = {..} | nil,
-- forget = ms, periods = {p0, p1, p2, p3} | nil}, parsed once per call.
local specs = {}
local function spec(s)
  local sp = specs[s]
  if sp ~= nil then return sp end
  local f = {}
  for tok in gmatch(s, '%S+') do f[#f + 1] = tok end
  sp = {f[1], tonumber(f[2]), tonumber(f[3]), 0, tonumber(f[5]), tonumber(f[6])}
  local block = f[4] or ''
  local list, forget = match(block, '^([%d,]+)/(%d+)$')
  if list then
    sp.blocks = {}
    for ms in gmatch(list, '%d+') do sp.blocks[#sp.blocks + 1] = tonumber(ms) end
    sp[4] = sp.blocks[1]
    sp.forget = tonumber(forget)
  else
    sp[4] = tonumber(block)
  end
  if f[7] then sp.periods = {tonumber(f[7]), tonumber(f[8]), tonumber(f[9]), tonumber(f[10])} end
  if not sp[1] or not sp[2] or not sp[3] or not sp[4] or not sp[5] or not sp[6] then sp = false end
  specs[s] = sp
  return sp
end

-- The window of a check at time t: its start and length (calendar periods: the one the
-- spec's bounds put t in; else aligned to the epoch).
local function windowAt(sp, t)
  local p = sp.periods
  if p == nil then return t - fmod(t, sp[3]), sp[3] end
  if t >= p[3] then return p[3], p[4] - p[3] end
  if t >= p[2] then return p[2], p[3] - p[2] end
  return p[1], p[2] - p[1]
end

-- fixed-window: {start, count}
local function fwPeek(st, mx, start, w, need, take)
  local count = 0
  if st[1] == start then count = st[2] end
  local resetAt = start + w
  if count + need <= mx then return 1, max(0, mx - count - take), resetAt, 0, count + take end
  return 0, 0, resetAt, resetAt - now, count
end
local function fwConsume(key, st, start, w, take)
  local count = 0
  if st[1] == start then count = st[2] end
  store2(key, st, start, count + take, max(1, start + w - now))
end
local function fwAdjust(key, st, takenStart, w, delta)
  if st[1] ~= takenStart then return end
  st[2] = max(0, st[2] + delta)
  store(key, st, max(1, st[1] + w - now))
end

-- sliding-window: {start, cur, prev}
local function swRotate(st, w)
  local start = now - fmod(now, w)
  if st[1] == nil or st[1] < start - w or st[1] > start then return start, 0, 0 end
  if st[1] == start then return start, st[2], st[3] end
  return start, 0, st[2]
end
local function swWait(start, cur, prev, mx, w, need)
  if cur + need <= mx and prev > 0 then
    local elapsed = ceil(w - ((mx - cur - need) * w) / prev)
    if elapsed < w then return start + elapsed - now end
  end
  local nxt = start + w
  if cur <= mx - need then return nxt - now end
  local elapsed = ceil(w - ((mx - need) * w) / cur)
  return nxt + elapsed - now
end
local function swPeek(st, mx, w, need, take)
  local start, cur, prev = swRotate(st, w)
  local estimate = (prev * (w - (now - start))) / w + cur
  local resetAt = start + w
  if estimate + need <= mx then
    return 1, max(0, floor(mx - estimate - take)), resetAt, 0, ceil(estimate) + take
  end
  local retry = max(1, swWait(start, cur, prev, mx, w, need))
  return 0, 0, max(resetAt, now + retry), retry, ceil(estimate)
end
local function swConsume(key, st, w, take)
  local start, cur, prev = swRotate(st, w)
  store3(key, st, start, cur + take, prev, max(1, start + 2 * w - now))
end
local function swAdjust(key, st, w, delta, takenAt)
  if st[1] == nil then return end
  local start, cur, prev = swRotate(st, w)
  local takenStart = takenAt - fmod(takenAt, w)
  if takenStart == start then cur = max(0, cur + delta)
  elseif takenStart == start - w then prev = max(0, prev + delta) end
  st[1], st[2], st[3] = start, cur, prev
  store(key, st, max(1, start + 2 * w - now))
end

-- token-bucket: {units, at}; one token = w units, so every quantity is an integer
local function tbAvailable(st, mx, w)
  if st[1] == nil then return mx * w end
  local elapsed = 0
  if now > st[2] then elapsed = now - st[2] end
  return min(mx * w, st[1] + elapsed * mx)
end
local function tbTtl(units, at, mx, w)
  return max(1, ceil((mx * w - tbAvailable({units, at}, mx, w)) / mx))
end
local function tbPeek(st, mx, w, need, take)
  local cap = mx * w
  local units = tbAvailable(st, mx, w)
  if units >= need * w then
    local left = units - take * w
    local remaining = 0
    if left > 0 then remaining = floor(left / w) end
    return 1, remaining, now + ceil((cap - left) / mx), 0, ceil((cap - left) / w)
  end
  return 0, 0, now + ceil((cap - units) / mx), ceil((need * w - units) / mx), ceil((cap - units) / w)
end
local function tbConsume(key, st, mx, w, take)
  local units = tbAvailable(st, mx, w) - take * w
  local at = now
  if st[1] ~= nil then at = max(now, st[2]) end
  store2(key, st, units, at, tbTtl(units, at, mx, w))
end
local function tbAdjust(key, st, mx, w, delta)
  local units = min(mx * w, tbAvailable(st, mx, w) - delta * w)
  if st[1] == nil then
    -- No state is a full bucket: a give-back changes nothing, a charge starts from full.
    if delta > 0 then store2(key, st, units, now, tbTtl(units, now, mx, w)) end
    return
  end
  local at = max(now, st[2])
  st[1], st[2] = units, at
  store(key, st, tbTtl(units, at, mx, w))
end
`;

/**
 * One batch of decisions, one round trip. Per decision: reads every block and state,
 * peeks every limit and, only if all pass, counts all; otherwise starts the blocks of
 * the refused limits. Decisions run in order, so each sees the writes of the ones
 * before it: exactly the semantics of sequential calls. Every write carries its
 * expiry (SET ... PX, ZADD + PEXPIRE in the same script).
 */
export const DECIDE_LUA = `-- tollgate decide (batched)
-- KEYS        per check, in decision order: its state key; sliding-log adds its block
--             key, an escalating limit its strike key (in that order); after a
--             decision's checks, its route's index of running blocks (flag 'i').
-- ARGV[1]     ms added to every TTL (slack for clock: local; 0 with TIME)
-- ARGV[2]     batch id, unique across replicas (sliding-log and lease members)
-- then per decision: now in ms ('' = the server clock, TIME, read once per batch),
--   check count n, flags ('s' = shadow: take the concurrency slots even when refused,
--   unless an operator's block refused; 'i' = an index key follows the checks' keys;
--   '' = none), and per check its spec (see COMMON_LUA).
-- A concurrency check's key is a ZSET of leases: member = "<batch id>:<decision>:<check>"
-- (what the store gives back on release), score = the lease's expiry; expired leases are
-- dropped when the key is read, so a dead replica's slots free themselves.
-- Returns one string of space-separated numbers (cheaper for the client to decode
-- than an array): the server's now (0 if unused), then per decision and check:
-- allowed 0/1, remaining, resetAt, retryAfterMs, count, blockedUntil (0 = none),
-- blockStarted (0, 1 = started, 2 = refused by a running operator's block), strike (of
-- the block started, 0 = none); or, for a check that passed with no block (retryAfterMs,
-- blockedUntil, blockStarted and strike 0), the short form "+ remaining resetAt count".
${COMMON_LUA}
slack = tonumber(ARGV[1])
local bid = ARGV[2]
local serverNow = nil

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

-- The next block of an escalating limit: strike = the remembered one + 1 while it is
-- remembered ("<strike> <forgetAt>": forgetAfter after the previous block ended; the
-- key's TTL only collects it), length = that strike's entry, the last repeating.
local function nextBlock(sp, strikeKey)
  local strike = 1
  local v = call('GET', strikeKey)
  if v then
    local n, forgetAt = match(v, '^(%d+) (%S+)$')
    if n and tonumber(forgetAt) > now then strike = tonumber(n) + 1 end
  end
  local ms = sp.blocks[min(strike, #sp.blocks)]
  call('SET', strikeKey, format('%d %.17g', strike, now + ms + sp.forget), 'PX', ceil(ms + sp.forget + slack))
  return strike, ms
end

local out = {''}
-- An integer that %d prints as %.17g does (2^53: every such double is exact).
local function whole(x) return x == floor(x) and x < 9007199254740992 and x > -9007199254740992 end

-- Per check of the decision being run, reused across decisions (entries 1..n are
-- written before they are read): allocating them per decision cost ~6% of the script.
local passed, remainings, resets, retries, counts, blocked, manual, checks, keys, blockKeys, strikeKeys, starts, widths = {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}
-- Reply entries written so far (out[1] is the server's now).
local outN = 1

-- One decision: its keys start after KEYS[k], its checks' args at ARGV[a]. Returns an
-- error reply, or nil and the index of its last key.
local function decide(k, a, n, rid, shadow, indexed)
  -- 1. read every block and state and peek every limit
  local allowed = true
  local byOperator = false
  for i = 1, n do
    local sp = spec(ARGV[a + i - 1])
    if not sp then return redis.error_reply('tollgate: bad check spec ' .. tostring(ARGV[a + i - 1])) end
    checks[i] = sp
    local code, mx, w, need, take = sp[1], sp[2], sp[3], sp[5], sp[6]
    k = k + 1
    local key = KEYS[k]
    keys[i] = key
    local untilMs, man = 0, false
    if code == 'sl' then
      k = k + 1
      blockKeys[i] = KEYS[k]
      untilMs, man = slBlock(call('GET', KEYS[k]))
    elseif code ~= 'cc' then
      local st = load(key)
      untilMs, man = st.blk, st.man
    end
    if sp.blocks then
      k = k + 1
      strikeKeys[i] = KEYS[k]
    end
    manual[i] = false
    if untilMs > now then
      blocked[i] = untilMs
      if man then manual[i], byOperator = true, true end
    else blocked[i] = 0 end
    -- A peek answers: allowed 0/1, remaining, resetAt, retryAfterMs, count.
    local ok, remaining, resetAt, retry, count
    if code == 'sw' then ok, remaining, resetAt, retry, count = swPeek(load(key), mx, w, need, take)
    elseif code == 'fw' then
      starts[i], widths[i] = windowAt(sp, now)
      ok, remaining, resetAt, retry, count = fwPeek(load(key), mx, starts[i], widths[i], need, take)
    elseif code == 'tb' then ok, remaining, resetAt, retry, count = tbPeek(load(key), mx, w, need, take)
    elseif code == 'sl' then ok, remaining, resetAt, retry, count = slPeek(key, mx, w)
    elseif code == 'cc' then ok, remaining, resetAt, retry, count = ccPeek(key, mx)
    else return redis.error_reply('tollgate: unknown algorithm ' .. tostring(code)) end
    passed[i], remainings[i], resets[i], retries[i], counts[i] = ok, remaining, resetAt, retry, count
    if blocked[i] ~= 0 or ok == 0 then allowed = false end
  end

  local idx
  if indexed then
    k = k + 1
    idx = KEYS[k]
  end

  -- 2. count all, or count nothing and start the blocks of the refused limits
  for i = 1, n do
    local sp = checks[i]
    local code, mx, w, blockMs, take = sp[1], sp[2], sp[3], sp[4], sp[6]
    local key = keys[i]
    local started, strike = 0, 0
    if code == 'cc' then
      if allowed or (shadow and not byOperator) then ccTake(key, w, rid .. ':' .. i) end
    elseif allowed then
      if code == 'sw' then swConsume(key, load(key), w, take)
      elseif code == 'fw' then fwConsume(key, load(key), starts[i], widths[i], take)
      elseif code == 'tb' then tbConsume(key, load(key), mx, w, take)
      else slConsume(key, mx, w, rid .. ':' .. i) end
    elseif blocked[i] == 0 and passed[i] == 0 and blockMs > 0 then
      strike = 1
      if sp.blocks then strike, blockMs = nextBlock(sp, strikeKeys[i]) end
      blocked[i] = now + blockMs
      if code == 'sl' then call('SET', blockKeys[i], fmt(blocked[i]), 'PX', ceil(blockMs + slack))
      else storeBlock(key, blocked[i], blockMs, false) end
      if idx then indexAdd(idx, blocked[i], key) end
      started = 1
    elseif manual[i] then
      started = 2
    end
    outN = outN + 1
    local resetAt, retry, untilMs = resets[i], retries[i], blocked[i]
    if passed[i] == 1 and retry == 0 and untilMs == 0 and started == 0 and whole(resetAt) then
      -- The usual check (passed, no block): its short form; %d is a fraction of %.17g's time.
      out[outN] = format('+ %d %d %d', remainings[i], resetAt, counts[i])
    elseif whole(resetAt) and whole(retry) and whole(untilMs) then
      out[outN] = format('%d %d %d %d %d %d %d %d', passed[i], remainings[i], resetAt, retry, counts[i], untilMs, started, strike)
    else
      out[outN] = format('%d %d %.17g %.17g %d %.17g %d %d', passed[i], remainings[i], resetAt, retry, counts[i], untilMs, started, strike)
    end
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
  local flags = ARGV[a + 2]
  local failed, last = decide(k, a + 3, n, bid .. ':' .. d, string.find(flags, 's', 1, true) ~= nil, string.find(flags, 'i', 1, true) ~= nil)
  if failed then
    flush()
    return failed
  end
  k = last
  a = a + 3 + n
end
flush()
out[1] = fmt(serverNow or 0)
return table.concat(out, ' ')
`;

/**
 * Settles what finished exchanges held: releases concurrency slots and adds (or gives
 * back) units to the rate checks that were counted, in the window they were taken
 * from. One call per event-loop turn carries every settlement of that turn.
 */
export const SETTLE_LUA = `-- tollgate settle (batched)
-- KEYS     the concurrency keys of the r releases, then the state key of each adjustment
-- ARGV[1]  r, the number of releases
-- ARGV[2]  ms added to every TTL (slack for clock: local)
-- ARGV[3]  now in ms ('' = the server clock, TIME)
-- ARGV[3 + i], i = 1..r: the lease member to remove from KEYS[i]
-- then per adjustment: its check's spec (see COMMON_LUA), when the units were taken
--   (the decision's now), and the units to add (negative: give back)
-- Returns the number of leases removed (an expired or unknown one counts 0).
${COMMON_LUA}
local r = tonumber(ARGV[1])
slack = tonumber(ARGV[2])
now = tonumber(ARGV[3])
if now == nil then
  local time = call('TIME')
  now = tonumber(time[1]) * 1000 + floor(tonumber(time[2]) / 1000)
end
local removed = 0
for i = 1, r do
  removed = removed + call('ZREM', KEYS[i], ARGV[3 + i])
end
local a = 4 + r
for i = r + 1, #KEYS do
  local sp = spec(ARGV[a])
  local takenAt, delta = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  if sp then
    local key = KEYS[i]
    local code, mx, w = sp[1], sp[2], sp[3]
    if code == 'fw' then
      local takenStart, width = windowAt(sp, takenAt)
      fwAdjust(key, load(key), takenStart, width, delta)
    elseif code == 'sw' then swAdjust(key, load(key), w, delta, takenAt)
    elseif code == 'tb' then tbAdjust(key, load(key), mx, w, delta) end
  end
end
flush()
return removed
`;

/**
 * The admin API's operations on one route's keys (incident response), atomic per call:
 * inspect (the quota as the key's last response showed it, counting nothing), block (an
 * operator's block: the "m" state tag, its reason in ":m", indexed), unblock (lift the
 * block, forget the strikes, keep the counts) and reset (forget everything). Concurrency
 * checks are only inspected. Every answer is the key's state after the operation, read
 * as the decide script reads it.
 */
export const ADMIN_LUA = `-- tollgate admin (one route)
-- KEYS[1]     the route's index of running blocks
-- then per check 4 keys: its state key, sliding-log's block key (":b"), its strike key
--             (":s") and the operator's reason key (":m"), used by the limit or not
-- ARGV[1]     op: inspect | block | unblock | reset
-- ARGV[2]     now in ms ('' = the server clock, TIME)
-- ARGV[3]     ms added to every TTL (slack for clock: local)
-- ARGV[4]     block: its length in ms ('' otherwise)
-- ARGV[5]     block: the operator's reason ('' otherwise)
-- ARGV[6..]   per check its spec (see COMMON_LUA)
-- Returns an array of strings: the server's now (0 if unused), then per check: changed
--   0/1 (block, unblock: a block was running before; reset: the key held state), count,
--   remaining, resetAt, blockedUntil (0 = none), manual 0/1, strikes, reason.
${COMMON_LUA}
local op = ARGV[1]
local serverNow = 0
now = tonumber(ARGV[2])
if now == nil then
  local time = call('TIME')
  now = tonumber(time[1]) * 1000 + floor(tonumber(time[2]) / 1000)
  serverNow = now
end
slack = tonumber(ARGV[3])
local blockMs = tonumber(ARGV[4]) or 0
local reason = ARGV[5]
local idx = KEYS[1]

-- The block on a check's key (until, manual); until may lie in the past.
local function blockOf(code, key, blockKey)
  if code == 'sl' then return slBlock(call('GET', blockKey)) end
  if code == 'cc' then return 0, false end
  local st = load(key)
  return st.blk, st.man
end

-- The strikes remembered (see KeyState.strikes in src/store/types.ts).
local function strikesOf(sp, strikeKey, untilMs, man)
  if sp.blocks then
    local v = call('GET', strikeKey)
    if v then
      local n, forgetAt = match(v, '^(%d+) (%S+)$')
      if n and tonumber(forgetAt) > now then return tonumber(n) end
    end
    return 0
  end
  if untilMs > now and not man then return 1 end
  return 0
end

-- The key's state: the algorithm's answer for a request that needs and takes nothing.
local function inspect(sp, key, blockKey, strikeKey, reasonKey)
  local code, mx, w = sp[1], sp[2], sp[3]
  local _, remaining, resetAt, count
  if code == 'sw' then _, remaining, resetAt, _, count = swPeek(load(key), mx, w, 0, 0)
  elseif code == 'fw' then
    local start, width = windowAt(sp, now)
    _, remaining, resetAt, _, count = fwPeek(load(key), mx, start, width, 0, 0)
  elseif code == 'tb' then _, remaining, resetAt, _, count = tbPeek(load(key), mx, w, 0, 0)
  elseif code == 'sl' then
    count = call('ZCOUNT', key, '(' .. fmt(now - w), '+inf')
    remaining, resetAt = max(0, mx - count), now
    if count > 0 then resetAt = tonumber(call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]) + w end
  else
    count = call('ZCOUNT', key, '(' .. fmt(now), '+inf')
    remaining, resetAt = max(0, mx - count), now
  end
  local untilMs, man = blockOf(code, key, blockKey)
  if untilMs <= now then untilMs, man = 0, false end
  if untilMs ~= 0 then remaining, resetAt = 0, max(resetAt, untilMs) end
  local why = ''
  if man then why = call('GET', reasonKey) or '' end
  local flag = '0'
  if man then flag = '1' end
  return {fmt(count), fmt(remaining), fmt(resetAt), fmt(untilMs), flag, fmt(strikesOf(sp, strikeKey, untilMs, man)), why}
end

-- An operator's block until now + blockMs, or the running block's end if later.
local function block(sp, key, blockKey, reasonKey)
  local code = sp[1]
  local running = blockOf(code, key, blockKey)
  if running <= now then running = 0 end
  local untilMs = max(running, now + blockMs)
  local ttl = untilMs - now
  if code == 'sl' then call('SET', blockKey, 'm' .. fmt(untilMs), 'PX', ceil(ttl + slack))
  else storeBlock(key, untilMs, ttl, true) end
  call('SET', reasonKey, reason, 'PX', ceil(ttl + slack))
  if running ~= 0 then call('ZREM', idx, member(running, key)) end
  indexAdd(idx, untilMs, key)
  return running ~= 0
end

-- Lifts the block and forgets the strikes; the counts stay (and keep their TTL).
local function unblock(sp, key, blockKey, strikeKey, reasonKey)
  local code = sp[1]
  local untilMs = 0
  if code == 'sl' then
    untilMs = slBlock(call('GET', blockKey))
    call('DEL', blockKey)
  else
    local st = load(key)
    untilMs = st.blk
    if untilMs ~= 0 or st.man then
      st.blk, st.man = 0, false
      if st[1] == nil then
        dropPending(st)
        call('DEL', key)
      else
        local left = pttl(key, st)
        if left > 0 then store(key, st, left - slack) end
      end
    end
  end
  call('DEL', strikeKey)
  call('DEL', reasonKey)
  if untilMs ~= 0 then call('ZREM', idx, member(untilMs, key)) end
  return untilMs > now
end

-- Forgets the key's counts, block and strikes.
local function reset(sp, key, blockKey, strikeKey, reasonKey)
  local untilMs = blockOf(sp[1], key, blockKey)
  if untilMs ~= 0 then call('ZREM', idx, member(untilMs, key)) end
  local st = states[key]
  if st ~= nil then dropPending(st) end
  states[key] = nil
  return call('DEL', key, blockKey, strikeKey, reasonKey) > 0
end

local out = {fmt(serverNow)}
local k, a = 1, 6
while a <= #ARGV do
  local sp = spec(ARGV[a])
  if not sp then
    flush()
    return redis.error_reply('tollgate: bad check spec ' .. tostring(ARGV[a]))
  end
  local key = KEYS[k + 1]
  local blockKey = KEYS[k + 2]
  local strikeKey = KEYS[k + 3]
  local reasonKey = KEYS[k + 4]
  k, a = k + 4, a + 1
  local changed = false
  if op == 'inspect' or sp[1] == 'cc' then changed = false
  elseif op == 'block' then changed = block(sp, key, blockKey, reasonKey)
  elseif op == 'unblock' then changed = unblock(sp, key, blockKey, strikeKey, reasonKey)
  elseif op == 'reset' then changed = reset(sp, key, blockKey, strikeKey, reasonKey)
  else
    flush()
    return redis.error_reply('tollgate: unknown admin op ' .. tostring(op))
  end
  if changed then out[#out + 1] = '1' else out[#out + 1] = '0' end
  local state = inspect(sp, key, blockKey, strikeKey, reasonKey)
  for j = 1, #state do out[#out + 1] = state[j] end
end
flush()
return out
`;

/**
 * A page of one route's index of running blocks, for the admin listing: drops the
 * members of blocks that ended, then reads up to a page of members after the previous
 * page's last one. Members are ordered by (until, key), so paging to the end sees every
 * block that runs throughout exactly once, while others start and end.
 */
export const BLOCKS_LUA = `-- tollgate blocks page
-- KEYS[1]  a route's index of running blocks (members "<until, 15 digits>:<state key>")
-- ARGV[1]  now in ms ('' = the server clock, TIME)
-- ARGV[2]  the last member of the previous page ('' = from the start)
-- ARGV[3]  page size
-- Returns an array: the server's now (0 if unused), then up to ARGV[3] members after ARGV[2].
local serverNow = 0
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  serverNow = now
end
local idx = KEYS[1]
redis.call('ZREMRANGEBYLEX', idx, '-', '(' .. string.format('%015.0f', now))
local from = '-'
if ARGV[2] ~= '' then from = '(' .. ARGV[2] end
local page = redis.call('ZRANGEBYLEX', idx, from, '+', 'LIMIT', 0, tonumber(ARGV[3]))
table.insert(page, 1, string.format('%.17g', serverNow))
return page
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

/** sha1 of each script (what EVALSHA sends); pinned so a stale edit is caught offline. */
export const SCRIPT_SHA1 = Object.freeze({
  decide: '77368c86af21975f29bd16d53b4e425018dd56e6',
  heartbeat: '56f1982dd4dd0c0603bab9afbcd52b25bd1db1e4',
  settle: 'a034bc5684edae04b154c428c60b2a018be917bd',
  renew: '774219d5e307ccfb77d529a5c899e0b4ae35fdf6',
  admin: '16f58f148795ea09a9b832fd40313937c6ee1016',
  blocks: 'a30489f7113d0289c0035a2b18438c4f1b719656',
});
