-- KEYS: sections lock; ARGV: token lease_ms. Takes a stream's section-index lease;
-- returns {next, head, state} (each false when not stored; `state` is the whole
-- index as an earlier layout kept it), or 0 while another holds it.
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
return redis.call('HMGET', KEYS[1], 'next', 'head', 'state')
