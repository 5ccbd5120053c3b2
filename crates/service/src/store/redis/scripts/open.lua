-- KEYS: meta lines late ctl index; ARGV: now_ms ttl_ms key max_streams. Creates or
-- reopens the stream. Returns 0, or -4 when a new stream would pass the account's
-- max_streams (counted in its index, less entries whose keys have expired).
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', string.format('(%d', tonumber(ARGV[1]) - tonumber(ARGV[2])))
  if redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[4]) then return -4 end
  redis.call('HSET', KEYS[1], 'open', 1, 'lines', 0, 'bytes', 0, 'contig', 0, 'top', 0, 'trimmed', 0, 'moved', 0, 'moved_bytes', 0)
else
  redis.call('HSET', KEYS[1], 'open', 1)
  redis.call('DEL', KEYS[4])
end
touch()
return 0
