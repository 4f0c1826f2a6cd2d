-- read: KEYS = H, X, B per window. ARGV = n, then live_from per window.
-- Returns {n, [su, st, ru, rt, refused_ms (0: never), nbuckets, buckets...] per window}.
local n = tonumber(ARGV[1])
local out = {n}
for i = 1, n do
  local h, x, b = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local su, st, ru, rt = normalize(h, x, b, ARGV[1 + i])
  out[#out + 1] = su
  out[#out + 1] = st
  out[#out + 1] = ru
  out[#out + 1] = rt
  out[#out + 1] = num(redis.call('HGET', h, 'refused'))
  local bl = buckets(h, b)
  out[#out + 1] = #bl / 3
  for _, v in ipairs(bl) do out[#out + 1] = v end
end
return out
