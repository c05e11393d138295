-- The end of a batch of requests of one org (one hash slot), in one call, off the request
-- path: charge the real token counts to the token-rate balances, free the stream leases,
-- replace the quota holds by the counts, and name the instances that now hold the prompts'
-- blocks. The same as settling each request on its own, one after the other.
-- ARGV[1..5]: number of charged balances, stream keys, quota periods and prompt blocks, and
-- the blocks' ttl in seconds. Then per balance 2 values (the TAT's increment in ms: interval
-- times tokens, summed over the batch; tolerance ms), per stream key the number of leases to
-- free and their members, per quota period the number of holds, the holds' members
-- ("<id>:<tokens>") and the tokens used, and per block its instance. KEYS: the balances',
-- the stream keys, per quota period its used counter, holds and their total, then the blocks.
local nc, ns, nq, nb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local a = 6
if nc > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for i = 1, nc do
    local inc, tol = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    a = a + 2
    local tat = tonumber(redis.call('GET', KEYS[i]) or now)
    if tat < now then tat = now end
    local new_tat = tat + inc
    redis.call('SET', KEYS[i], tostring(new_tat), 'PX', math.ceil(new_tat - now + tol) + 1000)
  end
end
for j = 1, ns do
  local n = tonumber(ARGV[a])
  redis.call('ZREM', KEYS[nc + j], unpack(ARGV, a + 1, a + n))
  a = a + 1 + n
end
local k = nc + ns + 1
for _ = 1, nq do
  local used, holds, total = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local n = tonumber(ARGV[a])
  local tokens = tonumber(ARGV[a + n + 1])
  if n > 0 then
    -- A hold that expired meanwhile was already taken off the total by an admission.
    local scores = redis.call('ZMSCORE', holds, unpack(ARGV, a + 1, a + n))
    local freed = 0
    for i = 1, n do
      if scores[i] then
        freed = freed + tonumber(string.match(ARGV[a + i], ':(%d+)$') or '0')
      end
    end
    if freed > 0 then
      redis.call('ZREM', holds, unpack(ARGV, a + 1, a + n))
      if redis.call('DECRBY', total, freed) <= 0 then redis.call('DEL', total) end
    end
  end
  if tokens > 0 and redis.call('EXISTS', used) == 1 then redis.call('INCRBY', used, tokens) end
  a = a + n + 2
  k = k + 3
end
for j = 1, nb do
  redis.call('SET', KEYS[k + j - 1], ARGV[a + j - 1], 'EX', ttl)
end
return 1
