-- KEYS: sections lock; ARGV: token ttl_ms next state. Writes the index back and
-- releases the lease, only while the lease is still ours. Returns 1, or 0 when it
-- was lost (expired and maybe taken by another): nothing is written then.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'next', ARGV[3], 'state', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
