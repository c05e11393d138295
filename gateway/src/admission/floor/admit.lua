-- Benchmarks only (cargo feature `bench-floor`, used by bench/limits.sh FLOOR=1): the floor of
-- one admission call. It decodes the same arguments as admit.lua and admits every request
-- without reading or writing a key, so a gateway built with it pays for the Redis round trip
-- (the call, the wake-ups, decoding and replying) and for nothing the decisions do.
local A = cmsgpack.unpack(ARGV[1])
local out = {}
local a = 5
for _ = 1, A[1] do
  local nc, ns, hq, nb = A[a + 1], A[a + 2], A[a + 3], A[a + 4]
  a = a + 5
  local quota_at = a + 5 * nc + 3 * ns
  a = quota_at + 10 * hq + nb
  local r = {1, 0, 0, 0, -1, 0, ''}
  if hq == 1 then
    local prompt, cap = A[quota_at + 5], A[quota_at + 6]
    if cap < 0 then cap = A[quota_at + 7] end
    r[4], r[5] = prompt + cap, cap
  end
  for _ = 1, nc do
    r[#r + 1] = 1
    r[#r + 1] = 0
    r[#r + 1] = 0
    r[#r + 1] = 0
  end
  out[#out + 1] = #r
  for _, x in ipairs(r) do out[#out + 1] = x end
end
return out
