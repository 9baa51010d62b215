#!lua flags=
-- Store one request's compact events atomically, if its key is still active (§3).
-- KEYS[1] active-keys hash, KEYS[2] shard stream, KEYS[3] drain flag
-- ARGV[1] key hash, ARGV[2] drain lease ms, ARGV[3..] encoded events
-- Returns -1 (key not active), 1 (stored; caller must schedule a drain), 0 (stored)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return -1
end
if #ARGV < 3 then
  return 0
end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[i])
end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
