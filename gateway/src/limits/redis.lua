-- GCRA over several keys at once, atomically: every check is decided, and the new TATs are
-- stored only when all are allowed (a request refused by the org limit does not spend the
-- user's). Same arithmetic as limits/gcra.rs. The clock is Redis's own, so replicas agree.
-- KEYS: one per check. ARGV: per check, 4 values: interval_ms, tolerance_ms, cost, mode
-- (0 = admit, 1 = charge). Returns per check: allowed (0/1), remaining, reset_ms, retry_ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local tats = {}
local ttls = {}
local all = true
for i, key in ipairs(KEYS) do
  local b = (i - 1) * 4
  local interval = tonumber(ARGV[b + 1])
  local tol = tonumber(ARGV[b + 2])
  local cost = tonumber(ARGV[b + 3])
  local mode = tonumber(ARGV[b + 4])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval * cost
  local limit = tol + interval
  local allowed = (mode == 1) or (new_tat - now <= limit)
  local after, retry = new_tat, 0
  if not allowed then
    all = false
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
if all then
  for i, key in ipairs(KEYS) do
    redis.call('SET', key, tostring(tats[i]), 'PX', ttls[i])
  end
end
return out
