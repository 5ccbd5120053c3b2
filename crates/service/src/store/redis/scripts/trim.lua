-- KEYS: meta lines late usage; ARGV: expected trimmed, new trimmed, bytes of the
-- moved lines. Forgets lines below the new mark (already in an overflow segment), and
-- their bytes in the account's usage. Returns lines moved, or -1 when another
-- replica moved them first.
local trimmed = redis.call('HGET', KEYS[1], 'trimmed')
if trimmed ~= ARGV[1] then return -1 end
local target = tonumber(ARGV[2])
local before = redis.call('XLEN', KEYS[2]) + redis.call('ZCARD', KEYS[3])
redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-0', target))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.format('%d', target))
local moved = before - redis.call('XLEN', KEYS[2]) - redis.call('ZCARD', KEYS[3])
redis.call('HSET', KEYS[1], 'trimmed', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'moved', moved)
redis.call('HINCRBY', KEYS[1], 'moved_bytes', ARGV[3])
redis.call('HINCRBY', KEYS[4], 'bytes', -tonumber(ARGV[3]))
return moved
