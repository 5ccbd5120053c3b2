-- KEYS: sections; ARGV: first next ttl_ms. Lines first..next hold no marker: the
-- index standing at `first` moves to `next` (no lease needed, see IndexStore::advance).
-- Returns 1 when it moved, else 0.
if tonumber(redis.call('HGET', KEYS[1], 'next') or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'next', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
