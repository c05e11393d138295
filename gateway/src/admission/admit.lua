-- Admission of a batch of requests of one org (one hash slot) in one call: for each request
-- in turn, its rate limits (GCRA), concurrent-stream leases and quota reservation, decided
-- together and applied only when all allow (a refused request spends nothing), exactly as
-- if each request had its own call, one after the other. Plain values are read with one
-- MGET and each key is written once for the whole batch, which is what makes a batch cheap.
-- What only a dead gateway leaves behind (expired leases and holds) is swept once a second
-- per key (its sweep mark), or at once when it is what stands between a request and its
-- admission, so every decision is the same as with a sweep on each call.
--
-- KEYS: first the plain ones (read together): rate-limit TATs, quota used counters and hold
-- totals, sweep marks, prompt blocks; then the sorted sets: stream leases, quota holds.
-- ARGV[1]: one MessagePack array (decoded in C, so no number is parsed from text): number
-- of requests, number of plain keys, lease ms, hold ttl ms. Then per request: lease member,
-- number of rate checks, stream limits, quota (0/1), prompt blocks; 5 values per check (TAT
-- key, interval_ms, tolerance_ms, cost, mode: 0 admit, 1 charge); 3 per stream limit (lease
-- key, its sweep mark, max above 0); for the quota 10 (used key, total key, holds key, their
-- sweep mark, hard, prompt estimate, completion cap wanted or -1, default cap, counters' ttl
-- ms, hold id); 1 per prompt block (shallow to deep). Keys are given by their index in KEYS.
-- Returns, per request, its length and then {status, index, used, grant, cap, depth, owner,
-- then 4 per check: allowed, remaining, reset_ms, retry_ms}; status 1 admitted, 0 refused by
-- check `index`, 2 stream limit `index` full, 3 quota exceeded, -1 quota counter missing
-- (rebuilt from the ledger by the caller); depth is the deepest block with an owner (0 =
-- none), owner its instance.
local A = cmsgpack.unpack(ARGV[1])
local n, np, lease_ms, hold_ms = A[1], A[2], A[3], A[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Every lease and hold of the batch starts now: their expiries are written out once.
local lease_at, hold_at = tostring(now + lease_ms), tostring(now + hold_ms)
local val = {}
if np > 0 then val = redis.call('MGET', unpack(KEYS, 1, np)) end
local num = {}      -- plain key -> its number, as this batch has left it
local tat_ttl = {}  -- TAT key -> the ttl to write it with
local stored = {}   -- lease key -> members stored (after any sweep)
local adds = {}     -- sorted set key -> {score, member, ...} to add
local expire = {}   -- sorted set key -> its expiry (ms) to set
local swept = {}    -- key -> swept in this call
local totals = {}   -- total key -> {ttl ms, holds key, was missing}
local function number(k, default)
  if num[k] == nil then num[k] = tonumber(val[k] or default) end
  return num[k]
end
local function mark(m)
  -- A missing mark: a sweep is due (and the mark is set for the next second).
  if val[m] then return false end
  val[m] = '1'
  redis.call('SET', KEYS[m], '1', 'PX', 1000)
  return true
end
local function sweep_leases(k)
  swept[k] = true
  redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
  stored[k] = redis.call('ZCARD', KEYS[k])
end
local function sweep_holds(h, total)
  swept[h] = true
  local expired = redis.call('ZRANGEBYSCORE', KEYS[h], '-inf', now)
  if #expired > 0 then
    local reserved = number(total, '0')
    for _, m in ipairs(expired) do
      reserved = reserved - tonumber(string.match(m, ':(%d+)$') or '0')
    end
    if reserved < 0 then reserved = 0 end
    num[total] = reserved
    redis.call('ZREMRANGEBYSCORE', KEYS[h], '-inf', now)
  end
end
local out = {}
local a = 5
for _ = 1, n do
  local member = A[a]
  local nc, ns, hq, nb = A[a + 1], A[a + 2], A[a + 3], A[a + 4]
  a = a + 5
  local checks_at, streams_at = a, a + 5 * nc
  local quota_at = streams_at + 3 * ns
  local blocks_at = quota_at + 10 * hq
  a = blocks_at + nb
  local r = {1, 0, 0, 0, -1, 0, ''}
  local tats = {}
  local refused = 0
  for i = 1, nc do
    local c = checks_at + 5 * (i - 1)
    local k = A[c]
    local interval, tol = A[c + 1], A[c + 2]
    local cost, mode = A[c + 3], A[c + 4]
    local tat = number(k, now)
    if tat < now then tat = now end
    local new_tat = tat + interval * cost
    local limit = tol + interval
    local allowed = (mode == 1) or (new_tat - now <= limit)
    local after, retry = new_tat, 0
    if not allowed then
      if refused == 0 then refused = i end
      after = tat
      retry = new_tat - limit - now
    end
    local headroom = limit - (after - now)
    if headroom < 0 then headroom = 0 end
    r[#r + 1] = allowed and 1 or 0
    r[#r + 1] = math.floor(headroom / interval)
    r[#r + 1] = math.ceil(math.max(after - now, 0))
    r[#r + 1] = math.ceil(math.max(retry, 0))
    tats[i] = {k, new_tat, math.ceil(new_tat - now + tol) + 1000}
  end
  if refused > 0 then
    r[1], r[2] = 0, refused
  end
  if r[1] == 1 then
    for j = 1, ns do
      local s = streams_at + 3 * (j - 1)
      local k, m, max = A[s], A[s + 1], A[s + 2]
      if stored[k] == nil then
        if mark(m) then
          sweep_leases(k)
          expire[k] = lease_ms * 2
        else
          stored[k] = redis.call('ZCARD', KEYS[k])
        end
        -- A new key gets its expiry at once, others at the sweep (a lease is at least a
        -- second, so one second between sweeps never lets a lease outlive its key).
        if stored[k] == 0 then expire[k] = lease_ms * 2 end
      end
      local pending = adds[k] and #adds[k] / 2 or 0
      if stored[k] + pending >= max and not swept[k] then sweep_leases(k) end
      if stored[k] + pending >= max then
        r[1], r[2] = 2, j
        break
      end
    end
  end
  local grant, cap = 0, -1
  if r[1] == 1 and hq == 1 then
    local q = quota_at
    local used_k, total_k, holds_k, m = A[q], A[q + 1], A[q + 2], A[q + 3]
    local hard, prompt = A[q + 4], A[q + 5]
    local want, default_cap = A[q + 6], A[q + 7]
    local used = number(used_k, nil)
    if not used then
      r = {-1, 0, 0, 0, 0, 0, ''}
    else
      r[3] = used
      if totals[total_k] == nil then
        totals[total_k] = {A[q + 8], holds_k, not val[total_k]}
        if mark(m) then
          sweep_holds(holds_k, total_k)
          totals[total_k][3] = true
        end
      end
      cap = want
      if hard > 0 then
        if cap < 0 then cap = default_cap end
        -- Expired holds are swept before they could refuse or cap this request.
        if not swept[holds_k] and number(total_k, '0') > 0 and hard - used - number(total_k, '0') - prompt < math.max(cap, 1) then
          sweep_holds(holds_k, total_k)
        end
        local remaining = hard - used - number(total_k, '0')
        if remaining <= prompt then
          r[1] = 3
        elseif cap > remaining - prompt then
          cap = remaining - prompt
        end
      end
      if r[1] == 1 then
        local capped = cap
        if capped < 0 then capped = 0 end
        grant = prompt + capped
        if grant > 0 then
          adds[holds_k] = adds[holds_k] or {}
          local h = adds[holds_k]
          h[#h + 1] = hold_at
          h[#h + 1] = A[q + 9] .. ':' .. grant
          num[total_k] = number(total_k, '0') + grant
        end
      end
    end
  end
  if r[1] == 1 then
    -- Admitted: this request's charges and leases stand for the next one.
    for i = 1, nc do
      local k = tats[i][1]
      num[k], tat_ttl[k] = tats[i][2], tats[i][3]
    end
    for j = 1, ns do
      local k = A[streams_at + 3 * (j - 1)]
      adds[k] = adds[k] or {}
      local l = adds[k]
      l[#l + 1] = lease_at
      l[#l + 1] = member
    end
    r[4], r[5] = grant, cap
    for j = nb, 1, -1 do
      local owner = val[A[blocks_at + j - 1]]
      if owner then
        r[6], r[7] = j, owner
        break
      end
    end
  end
  out[#out + 1] = #r
  for _, x in ipairs(r) do out[#out + 1] = x end
end
for k, ttl in pairs(tat_ttl) do
  redis.call('SET', KEYS[k], tostring(num[k]), 'PX', ttl)
end
for k, l in pairs(adds) do
  redis.call('ZADD', KEYS[k], unpack(l))
end
for k, ms in pairs(expire) do
  redis.call('PEXPIRE', KEYS[k], ms)
end
for k, q in pairs(totals) do
  -- q: counters' ttl, holds key, expiry due (new key or sweep).
  local total = num[k]
  if total ~= nil and (adds[q[2]] or swept[q[2]]) then
    if total > 0 then
      redis.call('SET', KEYS[k], total, 'PX', q[1])
    else
      redis.call('DEL', KEYS[k])
    end
  end
  if q[3] and (adds[q[2]] or swept[q[2]]) then redis.call('PEXPIRE', KEYS[q[2]], q[1]) end
end
return out
