#!lua flags=
-- Store the compact events of several requests to one shard, each request atomically and
-- only if its key is still active and its integration within its rate limit (§3).
-- KEYS[1] shard stream, KEYS[2] drain flag, then per request: active-keys hash, rate bucket
-- ARGV[1] drain lease ms, ARGV[2] events/s (0: no limit), ARGV[3] burst,
--   then per request: key hash, event count n, the n encoded events
-- Returns one integer per request: 0 stored, -1 key not active, -(100 + s) rate limited
-- (retry after s seconds); then 1 if the caller must schedule a drain of the shard, else 0.
local rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local out, stored, now = {}, 0, nil
local a, k = 4, 3
while a <= #ARGV do
  local n = tonumber(ARGV[a + 1])
  local code = 0
  if redis.call('HEXISTS', KEYS[k], ARGV[a]) == 0 then
    code = -1
  elseif n > 0 and rate > 0 then
    if not now then
      local t = redis.call('TIME')
      now = tonumber(t[1]) + tonumber(t[2]) / 1e6
    end
    local b = redis.call('HMGET', KEYS[k + 1], 'tokens', 'at')
    local tokens, at = tonumber(b[1]) or burst, tonumber(b[2]) or now
    tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
    local need = math.min(n, burst)
    if tokens < need then
      code = -(100 + math.ceil((need - tokens) / rate))
    else
      redis.call('HSET', KEYS[k + 1], 'tokens', tostring(tokens - n), 'at', tostring(now))
      redis.call('EXPIRE', KEYS[k + 1], math.ceil(burst / rate) + 60)
    end
  end
  if code == 0 then
    for i = a + 2, a + 1 + n do
      redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
    end
    stored = stored + n
  end
  out[#out + 1] = code
  a, k = a + 2 + n, k + 2
end
local schedule = 0
if stored > 0 and redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  schedule = 1
end
out[#out + 1] = schedule
return out
