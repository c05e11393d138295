-- The end of a request in one call, off the request path: charge the real token counts to
-- the token-rate balances, free the stream leases, replace the quota hold by the count, and
-- name the instance that now holds the prompt's blocks.
-- ARGV[1..7]: number of charges, number of stream keys, quota (0/1), lease member, number of
-- prompt blocks, their owner, their ttl in seconds. Then 3 values per charge (interval_ms,
-- tolerance_ms, cost), and for the quota 2 (hold member, tokens used). KEYS: the charges',
-- the stream keys, the quota's used counter, holds and their total, then the prompt blocks.
local nc, ns, hq = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local member, nb, owner, ttl = ARGV[4], tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local a = 8
for i = 1, nc do
  local interval, tol, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval * cost
  redis.call('SET', KEYS[i], tostring(new_tat), 'PX', math.ceil(new_tat - now + tol) + 1000)
end
for j = 1, ns do
  redis.call('ZREM', KEYS[nc + j], member)
end
local blocks_at = nc + ns + 1
if hq == 1 then
  local used, holds, total = KEYS[nc + ns + 1], KEYS[nc + ns + 2], KEYS[nc + ns + 3]
  -- A hold that expired meanwhile was already taken off the total by an admission.
  if redis.call('ZREM', holds, ARGV[a]) == 1 then
    local grant = tonumber(string.match(ARGV[a], ':(%d+)$') or '0')
    if redis.call('DECRBY', total, grant) < 0 then redis.call('SET', total, 0) end
  end
  if redis.call('EXISTS', used) == 1 then redis.call('INCRBY', used, ARGV[a + 1]) end
  blocks_at = blocks_at + 3
end
for j = 1, nb do
  redis.call('SET', KEYS[blocks_at + j - 1], owner, 'EX', ttl)
end
return 1
