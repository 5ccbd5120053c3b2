-- KEYS: sections lock; ARGV: token ttl_ms next head, then pairs of a section's
-- index and its JSON (the sections the lease changed). Writes them and releases
-- the lease, only while the lease is still ours. Returns 1, or 0 when it was lost
-- (expired and maybe taken by another): nothing is written then.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'next', ARGV[3], 'head', ARGV[4])
-- One field a call: a batch may change thousands of sections, more arguments than
-- one call may take.
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HDEL', KEYS[1], 'state')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
