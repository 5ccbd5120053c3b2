-- KEYS: meta lines late ctl index usage. Defines `forget(key)`: deletes the stream's
-- keys and its index entry, gives the bytes it held in Redis back to the account's
-- usage, and wakes its tails (they read again, find it gone and end).
local function forget(key)
  local m = redis.call('HMGET', KEYS[1], 'bytes', 'moved_bytes')
  local held = (tonumber(m[1]) or 0) - (tonumber(m[2]) or 0)
  if held ~= 0 then redis.call('HINCRBY', KEYS[6], 'bytes', -held) end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  redis.call('ZREM', KEYS[5], key)
  redis.call('PUBLISH', KEYS[4], 1)
end
