-- ARGV[4], when given: close only if the stream's `activity` is not past it (ms).
-- Returns 0, -1 when the stream does not exist, -2 when it was active since ARGV[4].
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[4] and tonumber(redis.call('HGET', KEYS[1], 'activity') or '0') > tonumber(ARGV[4]) then
  return -2
end
redis.call('HSET', KEYS[1], 'open', 0)
if redis.call('EXISTS', KEYS[4]) == 0 then redis.call('XADD', KEYS[4], '1-1', 'closed', 1) end
touch()
redis.call('PUBLISH', KEYS[4], 1)
return 0
