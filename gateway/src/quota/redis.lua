-- Quota reservation for one org and period, atomically (no two requests can both take the
-- last tokens). KEYS[1] = used (a number), KEYS[2] = holds (a sorted set of "<id>:<tokens>"
-- scored by expiry, so a gateway that dies mid-request cannot hold budget for long).
-- ARGV: hard (0 = unlimited), prompt estimate, completion cap wanted (-1 = none given),
-- default cap, ttl ms of the counters, hold id, hold ttl ms.
-- Returns {status, used, grant, cap}: status 1 granted, 0 exceeded, -1 counter missing
-- (the caller rebuilds it from the ledger and asks again).
local used = redis.call('GET', KEYS[1])
if not used then return {-1, 0, 0, 0} end
used = tonumber(used)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local reserved = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  reserved = reserved + tonumber(string.match(member, ':(%d+)$') or '0')
end
local hard = tonumber(ARGV[1])
local prompt = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local default_cap = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local cap = want
if hard > 0 then
  local remaining = hard - used - reserved
  if remaining <= prompt then return {0, used, 0, 0} end
  if cap < 0 then cap = default_cap end
  if cap > remaining - prompt then cap = remaining - prompt end
end
if cap < 0 then cap = 0 end
local grant = prompt + cap
if grant > 0 then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[7]), ARGV[6] .. ':' .. grant)
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {1, used, grant, cap}
