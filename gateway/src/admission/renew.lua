-- Extends a running stream's lease on each of its stream keys (only where it is still held:
-- a lease already freed is not brought back). ARGV: lease member, lease ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  if redis.call('ZSCORE', key, ARGV[1]) then
    redis.call('ZADD', key, 'XX', now + lease, ARGV[1])
    redis.call('PEXPIRE', key, lease * 2)
  end
end
return 1
