-- reserve: KEYS = H, X, B per window. ARGV = id, ttl_ms, n, then per window:
-- live_from, amount_nano, amount_tokens, cap_nano (-1: none), cap_tokens (-1: none), key_ttl_s.
-- Returns {admitted, n, [su, st, ru, rt, nbuckets, buckets...] per window}; buckets only
-- for the windows that refused. All or nothing: one full window refuses the whole call.
local id, ttl_ms, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local totals, refused = {}, {}
local any_refused = false
for i = 1, n do
  local a = 3 + (i - 1) * 6
  local h, x, b = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local su, st, ru, rt = normalize(h, x, b, ARGV[a + 1])
  local an, at = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local cn, ct = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local held = redis.call('HEXISTS', h, 'r:' .. id) == 1
  -- A window whose settled spend reached its cap is exhausted: it refuses even nothing.
  if not held and ((cn >= 0 and (su + ru + an > cn or su >= cn)) or
                   (ct >= 0 and (st + rt + at > ct or st >= ct))) then
    refused[i] = true
    any_refused = true
    -- The window binds (the amount would fit it empty): remember when, for the status.
    if not ((cn >= 0 and an > cn) or (ct >= 0 and at > ct)) then
      redis.call('HSET', h, 'refused', int(now_ms))
    end
  end
  totals[i] = {su, st, ru, rt}
end
local out = {any_refused and 0 or 1, n}
for i = 1, n do
  local a = 3 + (i - 1) * 6
  local h, x, b = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local tt = totals[i]
  if not any_refused and redis.call('HEXISTS', h, 'r:' .. id) == 0 then
    local an, at = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    redis.call('HSET', h, 'r:' .. id, ARGV[a + 2] .. ' ' .. ARGV[a + 3])
    redis.call('HINCRBY', h, 'ru', int(an))
    redis.call('HINCRBY', h, 'rt', int(at))
    redis.call('ZADD', x, int(now_ms + ttl_ms), id)
    keep(h, x, b, tonumber(ARGV[a + 6]))
    tt[3] = tt[3] + an
    tt[4] = tt[4] + at
  end
  out[#out + 1] = tt[1]
  out[#out + 1] = tt[2]
  out[#out + 1] = tt[3]
  out[#out + 1] = tt[4]
  if refused[i] then
    local bl = buckets(h, b)
    out[#out + 1] = #bl / 3
    for _, v in ipairs(bl) do out[#out + 1] = v end
  else
    out[#out + 1] = 0
  end
end
return out
