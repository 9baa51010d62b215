#!lua flags=
-- Store one request's compact events atomically, if its key is still active and the
-- integration is within its rate limit (§3).
-- KEYS[1] active-keys hash, KEYS[2] shard stream, KEYS[3] drain flag, KEYS[4] rate bucket
-- ARGV[1] key hash, ARGV[2] drain lease ms, ARGV[3] events/s (0: no limit), ARGV[4] burst,
-- ARGV[5..] encoded events
-- Returns one integer: -1 key not active, 1 stored (caller must schedule a drain),
-- 0 stored, or -(100 + s) rate limited, retry after s seconds
-- (a single integer rather than a table: the cheapest reply, and one every server speaks)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return -1
end
local n = #ARGV - 4
if n <= 0 then
  return 0
end
local rate, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
if rate > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
  local b = redis.call('HMGET', KEYS[4], 'tokens', 'at')
  local tokens, at = tonumber(b[1]) or burst, tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  local need = math.min(n, burst)
  if tokens < need then
    return -(100 + math.ceil((need - tokens) / rate))
  end
  redis.call('HSET', KEYS[4], 'tokens', tostring(tokens - n), 'at', tostring(now))
  redis.call('EXPIRE', KEYS[4], math.ceil(burst / rate) + 60)
end
for i = 5, #ARGV do
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[i])
end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
