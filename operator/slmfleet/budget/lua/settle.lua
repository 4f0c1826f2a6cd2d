-- settle: KEYS = H, X, B per window, then the settled marker M. ARGV = id, n,
-- marker_ttl_s, then per window: bucket, live_from, actual_nano, actual_tokens, key_ttl_s.
-- Returns {status, found, n, [su, st, ru, rt] per window}; status 1 counted, 2 already
-- settled (nothing added: a retry). found: the reservation was still held somewhere.
local id, n, marker_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local m = KEYS[3 * n + 1]
local first = redis.call('SET', m, '1', 'NX', 'EX', marker_ttl)
local status = first and 1 or 2
local found = 0
local out = {status, 0, n}
for i = 1, n do
  local a = 3 + (i - 1) * 5
  local h, x, b = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local su, st, ru, rt = normalize(h, x, b, ARGV[a + 2])
  if status == 1 then
    local v = redis.call('HGET', h, 'r:' .. id)
    if v then
      local u, k = string.match(v, '^(%d+) (%d+)$')
      redis.call('HINCRBY', h, 'ru', int(-num(u)))
      redis.call('HINCRBY', h, 'rt', int(-num(k)))
      redis.call('HDEL', h, 'r:' .. id)
      redis.call('ZREM', x, id)
      ru, rt = ru - num(u), rt - num(k)
      found = 1
    end
    local bucket, an, at = ARGV[a + 1], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
    if tonumber(bucket) >= tonumber(ARGV[a + 2]) then
      redis.call('HINCRBY', h, 'bu:' .. bucket, int(an))
      redis.call('HINCRBY', h, 'bt:' .. bucket, int(at))
      redis.call('ZADD', b, bucket, bucket)
      redis.call('HINCRBY', h, 'su', int(an))
      redis.call('HINCRBY', h, 'st', int(at))
      su, st = su + an, st + at
    end
    keep(h, x, b, tonumber(ARGV[a + 5]))
  end
  out[#out + 1] = su
  out[#out + 1] = st
  out[#out + 1] = ru
  out[#out + 1] = rt
end
out[2] = found
return out
