-- KEYS: meta lines late ctl index; ARGV: now_ms ttl_ms key. Refreshes the TTL of
-- every key of the stream and its place in the account index.
local function touch()
  redis.call('HSET', KEYS[1], 'activity', ARGV[1])
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
  redis.call('ZADD', KEYS[5], ARGV[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[5], ARGV[2])
end
