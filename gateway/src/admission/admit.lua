-- Admission in one round trip: rate limits (GCRA), concurrent-stream leases and the quota
-- reservation, decided together and applied only when all allow (a refused request spends
-- nothing). Every key carries its org's hash tag, so on a Redis Cluster they share a slot.
-- ARGV[1..6]: number of rate checks, number of stream limits, quota (0/1), lease member,
-- lease ms, number of prompt blocks. Then 4 values per check (interval_ms, tolerance_ms, cost, mode: 0 admit,
-- 1 charge), 1 per stream limit (max, 0 = none), and for the quota 7 (hard, prompt estimate,
-- completion cap wanted or -1, default cap, counters' ttl ms, hold id, hold ttl ms).
-- KEYS: the checks', the stream limits', the quota's used counter, holds (a sorted set of
-- "<id>:<tokens>" scored by expiry) and their running total, then the prompt's
-- blocks (shallow to deep; each names the instance that last served it, for cache-aware
-- routing across replicas).
-- Returns {status, index, used, grant, cap, depth, owner, then 4 per check: allowed,
-- remaining, reset_ms, retry_ms}; status 1 admitted, 0 refused by check `index`, 2 stream
-- limit `index` full, 3 quota exceeded, -1 quota counter missing (rebuilt from the ledger by
-- the caller); depth is the deepest block with an owner (0 = none), owner its instance.
local nc, ns, hq = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local member, lease_ms, nb = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local a = 7
local used = 0
local quota_at = nc + ns + 1
if hq == 1 then
  local u = redis.call('GET', KEYS[quota_at])
  if not u then return {-1, 0, 0, 0, 0, 0, ''} end
  used = tonumber(u)
end
local out = {1, 0, used, 0, -1, 0, ''}
local tats, ttls = {}, {}
local refused = 0
for i = 1, nc do
  local interval, tol = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local cost, mode = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  a = a + 4
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
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
  out[#out + 1] = allowed and 1 or 0
  out[#out + 1] = math.floor(headroom / interval)
  out[#out + 1] = math.ceil(math.max(after - now, 0))
  out[#out + 1] = math.ceil(math.max(retry, 0))
  tats[i] = new_tat
  ttls[i] = math.ceil(new_tat - now + tol) + 1000
end
if refused > 0 then
  out[1], out[2] = 0, refused
  return out
end
for j = 1, ns do
  local key, max = KEYS[nc + j], tonumber(ARGV[a])
  a = a + 1
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if max > 0 and redis.call('ZCARD', key) >= max then
    out[1], out[2] = 2, j
    return out
  end
end
local grant, cap = 0, -1
local blocks_at = quota_at
if hq == 1 then
  blocks_at = quota_at + 3
  local holds, total = KEYS[quota_at + 1], KEYS[quota_at + 2]
  local hard, prompt = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local want, default_cap = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  -- The total is kept as holds come and go; only expired holds (a dead gateway's) are read.
  local reserved = tonumber(redis.call('GET', total) or '0')
  local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  if #expired > 0 then
    for _, m in ipairs(expired) do
      reserved = reserved - tonumber(string.match(m, ':(%d+)$') or '0')
    end
    if reserved < 0 then reserved = 0 end
    redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
    redis.call('SET', total, reserved)
  end
  cap = want
  if hard > 0 then
    local remaining = hard - used - reserved
    if remaining <= prompt then
      out[1] = 3
      return out
    end
    if cap < 0 then cap = default_cap end
    if cap > remaining - prompt then cap = remaining - prompt end
  end
  local capped = cap
  if capped < 0 then capped = 0 end
  grant = prompt + capped
  if grant > 0 then
    redis.call('ZADD', holds, now + tonumber(ARGV[a + 6]), ARGV[a + 5] .. ':' .. grant)
    redis.call('INCRBY', total, grant)
  end
  redis.call('PEXPIRE', KEYS[quota_at], tonumber(ARGV[a + 4]))
  redis.call('PEXPIRE', holds, tonumber(ARGV[a + 4]))
  redis.call('PEXPIRE', total, tonumber(ARGV[a + 4]))
end
for i = 1, nc do
  redis.call('SET', KEYS[i], tostring(tats[i]), 'PX', ttls[i])
end
for j = 1, ns do
  redis.call('ZADD', KEYS[nc + j], now + lease_ms, member)
  redis.call('PEXPIRE', KEYS[nc + j], lease_ms * 2)
end
out[4], out[5] = grant, cap
for j = nb, 1, -1 do
  local owner = redis.call('GET', KEYS[blocks_at + j - 1])
  if owner then
    out[6], out[7] = j, owner
    break
  end
end
return out
