-- KEYS: sections lock; ARGV: token lease_ms. Takes a stream's section-index lease;
-- returns {next, state} (each false when not stored yet), or 0 while another holds it.
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
return redis.call('HMGET', KEYS[1], 'next', 'state')
