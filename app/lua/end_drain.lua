#!lua flags=
-- End a drain without losing a wake-up: keep the flag if entries arrived past the cursor.
-- KEYS[1] shard stream, KEYS[2] drain flag; ARGV[1] start of the unread range ('-' or '(<id>')
-- Returns 1 (more to do, flag kept) or 0 (flag released)
if #redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', 1) > 0 then
  return 1
end
redis.call('DEL', KEYS[2])
return 0
