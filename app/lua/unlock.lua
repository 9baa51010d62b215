#!lua flags=
-- Release a lock only if this holder still owns it (a lease that ran out may be someone else's).
-- KEYS[1] the lock; ARGV[1] the holder's token
-- Returns 1 when released, 0 when the lock was gone or taken over
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
