-- KEYS: meta lines late ctl index usage; ARGV: key. Removes the stream whatever its
-- state. Returns 1 when it existed, 0 when not.
local existed = redis.call('EXISTS', KEYS[1])
forget(ARGV[1])
return existed
