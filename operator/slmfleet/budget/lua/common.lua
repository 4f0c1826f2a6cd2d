-- slmfleet ledger, shared prelude (prepended to every script; see redis_ledger.py).
-- A window is three keys: a hash H (totals su/st/ru/rt, buckets bu:<id>/bt:<id>,
-- reservations r:<id> = "<nano> <tokens>"), a sorted set X (reservation id -> expiry
-- in server milliseconds) and a sorted set B (bucket ids). All amounts are integers:
-- nano-dollars and tokens. Time for expiry is the server's, the same for every replica.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local MAX_PURGE = 1000

-- Integers as Redis wants them (Lua's own number formatting turns 1e15 into "1e+15").
local function int(x) return string.format('%d', x) end

local function num(v)
  if not v then return 0 end
  local n = tonumber(v)
  if n == nil then error('slmfleet: corrupt ledger value ' .. tostring(v)) end
  return n
end

-- Drop expired reservations and buckets older than live_from; return the totals.
local function normalize(h, x, b, live_from)
  local expired = redis.call('ZRANGEBYSCORE', x, '-inf', int(now_ms), 'LIMIT', 0, MAX_PURGE)
  for _, rid in ipairs(expired) do
    local v = redis.call('HGET', h, 'r:' .. rid)
    if v then
      local u, k = string.match(v, '^(%d+) (%d+)$')
      redis.call('HINCRBY', h, 'ru', int(-num(u)))
      redis.call('HINCRBY', h, 'rt', int(-num(k)))
      redis.call('HDEL', h, 'r:' .. rid)
    end
    redis.call('ZREM', x, rid)
  end
  local old = redis.call('ZRANGEBYSCORE', b, '-inf', '(' .. live_from, 'LIMIT', 0, MAX_PURGE)
  for _, bid in ipairs(old) do
    redis.call('HINCRBY', h, 'su', int(-num(redis.call('HGET', h, 'bu:' .. bid))))
    redis.call('HINCRBY', h, 'st', int(-num(redis.call('HGET', h, 'bt:' .. bid))))
    redis.call('HDEL', h, 'bu:' .. bid, 'bt:' .. bid)
    redis.call('ZREM', b, bid)
  end
  local s = redis.call('HMGET', h, 'su', 'st', 'ru', 'rt')
  return num(s[1]), num(s[2]), num(s[3]), num(s[4])
end

-- Live buckets as a flat list: id, nano, tokens, id, nano, tokens, ...
local function buckets(h, b)
  local out = {}
  for _, bid in ipairs(redis.call('ZRANGE', b, 0, -1)) do
    local v = redis.call('HMGET', h, 'bu:' .. bid, 'bt:' .. bid)
    out[#out + 1] = bid
    out[#out + 1] = num(v[1])
    out[#out + 1] = num(v[2])
  end
  return out
end

local function keep(h, x, b, ttl)
  redis.call('EXPIRE', h, ttl)
  redis.call('EXPIRE', x, ttl)
  redis.call('EXPIRE', b, ttl)
end
