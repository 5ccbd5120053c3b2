-- KEYS: meta lines late ctl index pace; ARGV: now_ms ttl_ms key max_streams
-- interval_us burst max_wait_us. Creates or reopens the stream. Returns {0, 0}; {-4, 0}
-- when a new stream would pass the account's max_streams (counted in its index, less
-- entries whose keys have expired); for a new stream past the account's burst of new
-- streams (interval_us apart, burst at once), {-6, wait_us}: its turn is reserved in
-- wait_us, and the caller opens again then with interval_us -2 (its turn taken), or
-- {-5, wait_us} when that is over max_wait_us (nothing reserved; interval_us -1: no
-- new stream at all, {-5, 0}, the caller says when to retry).
-- The pace is GCRA as `NewStreamPace` keeps it in memory: `pace` holds the time (µs,
-- Redis's own clock, the same for every replica) when the account's bucket is full
-- again, and expires then.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', string.format('(%d', tonumber(ARGV[1]) - tonumber(ARGV[2])))
  if redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[4]) then return {-4, 0} end
  local interval = tonumber(ARGV[5])
  if interval == -1 then return {-5, 0} end
  if interval >= 0 then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local full_at = math.max(tonumber(redis.call('GET', KEYS[6]) or 0), now) + interval
    local wait = math.max(full_at - now - interval * math.max(tonumber(ARGV[6]), 1), 0)
    if wait > tonumber(ARGV[7]) then return {-5, wait} end
    redis.call('SET', KEYS[6], string.format('%d', full_at), 'PX', math.floor((full_at - now) / 1000) + 1)
    if wait > 0 then return {-6, wait} end
  end
  redis.call('HSET', KEYS[1], 'open', 1, 'lines', 0, 'bytes', 0, 'contig', 0, 'top', 0, 'trimmed', 0, 'moved', 0, 'moved_bytes', 0)
else
  redis.call('HSET', KEYS[1], 'open', 1)
  redis.call('DEL', KEYS[4])
end
touch()
return {0, 0}
