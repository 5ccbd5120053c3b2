-- KEYS: meta lines late ctl index usage; ARGV: closed_at_ms key. Removes the stream
-- if it is still closed with no activity past ARGV[1]. Returns 1 when removed, 0 when
-- it was reopened or written to since, -1 when it does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local open = redis.call('HGET', KEYS[1], 'open')
local activity = tonumber(redis.call('HGET', KEYS[1], 'activity') or '0')
if open == '1' or activity > tonumber(ARGV[1]) then return 0 end
forget(ARGV[2])
return 1
