-- Quota reservation for one org and period, atomically (no two requests can both take the
-- last tokens). KEYS[1] = used, KEYS[2] = reserved. ARGV: hard (0 = unlimited), prompt
-- estimate, completion cap wanted (-1 = none given), default cap, ttl ms.
-- Returns {status, used, grant, cap}: status 1 granted, 0 exceeded, -1 counter missing
-- (the caller rebuilds it from the ledger and asks again).
local used = redis.call('GET', KEYS[1])
if not used then return {-1, 0, 0, 0} end
used = tonumber(used)
local reserved = tonumber(redis.call('GET', KEYS[2]) or '0')
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
redis.call('INCRBY', KEYS[2], grant)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {1, used, grant, cap}
