#!lua flags=
-- Store the compact events of several requests to one shard, each request atomically and
-- only if its key is still active and its integration within its rate limit (§3), and log
-- every request in its integration's deliveries (§7) in the same call.
-- Requests are grouped by API key, so each key's hash and bucket are read once per call.
-- KEYS[1] shard stream, KEYS[2] drain flag, KEYS[3] pending events per integration (hash),
--   then per key: active-keys hash, rate bucket, the integration's deliveries stream
-- ARGV[1] drain lease ms, ARGV[2] events/s (0: no limit), ARGV[3] burst,
-- ARGV[4] deliveries kept per integration (0: no log), ARGV[5] oldest delivery id kept,
-- ARGV[6] the log's lifetime in seconds (an integration that stops sending loses it too),
-- ARGV[7] every request's encoded events, each ending in "\n", key by key in request order
--   (one argument: thousands of small ones cost the client more than the whole call),
--   then per key: integration id, key hash, its requests' event counts ("1,1,3"), and
--   their delivery notes ("<ignored>:<event letters>", comma separated)
-- Returns {schedule, codes}: schedule is 1 if the caller must schedule a drain of the
-- shard, else 0; codes is "" when every request was stored, else one code per request, key
-- by key, comma separated: 0 stored, -1 key not active, -(100 + s) rate limited (retry
-- after s seconds). (One short reply: the client parses each array element in Python.)
local rate, burst, blob = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[7]
local kept, oldest, lifetime = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local out, refused, stored, now, pos, k = {}, false, 0, nil, 1, 4
for a = 8, #ARGV, 4 do
  local iid = ARGV[a]
  local active = redis.call('HEXISTS', KEYS[k], ARGV[a + 1]) == 1
  local tokens, spent, added = nil, false, 0
  local notes = string.gmatch(ARGV[a + 3], '[^,]+')
  for count in string.gmatch(ARGV[a + 2], '%d+') do
    local n = tonumber(count)
    local code = 0
    if not active then
      code = -1
    elseif n > 0 and rate > 0 then
      if not tokens then
        if not now then
          local t = redis.call('TIME')
          now = tonumber(t[1]) + tonumber(t[2]) / 1e6
        end
        local b = redis.call('HMGET', KEYS[k + 1], 'tokens', 'at')
        local at = tonumber(b[2]) or now
        tokens = math.min(burst, (tonumber(b[1]) or burst) + math.max(0, now - at) * rate)
      end
      local need = math.min(n, burst)
      if tokens < need then
        code = -(100 + math.ceil((need - tokens) / rate))
      else
        tokens, spent = tokens - n, true
      end
    end
    local first = pos
    for _ = 1, n do
      local stop = string.find(blob, '\n', pos, true)
      if code == 0 then
        redis.call('XADD', KEYS[1], '*', 'e', string.sub(blob, pos, stop - 1))
      end
      pos = stop + 1
    end
    local note = notes()
    if kept > 0 then
      local status = code == 0 and '202' or (code == -1 and '401' or '429')
      redis.call('XADD', KEYS[k + 2], 'MAXLEN', '~', kept, '*',
        's', status, 'm', note, 'e', string.sub(blob, first, pos - 2))
    end
    if code == 0 then
      stored, added = stored + n, added + n
    else
      refused = true
    end
    out[#out + 1] = code
  end
  if added > 0 then redis.call('HINCRBY', KEYS[3], iid, added) end
  if kept > 0 then
    redis.call('XTRIM', KEYS[k + 2], 'MINID', '~', oldest)
    redis.call('EXPIRE', KEYS[k + 2], lifetime)
  end
  if spent then
    redis.call('HSET', KEYS[k + 1], 'tokens', tostring(tokens), 'at', tostring(now))
    redis.call('EXPIRE', KEYS[k + 1], math.ceil(burst / rate) + 60)
  end
  k = k + 3
end
local schedule = 0
if stored > 0 and redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  schedule = 1
end
return {schedule, refused and table.concat(out, ',') or ''}
