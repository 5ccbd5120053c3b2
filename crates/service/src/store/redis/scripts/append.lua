-- KEYS: meta lines late ctl index usage; ARGV: now ttl key hard_line_limit
-- hard_byte_limit account_byte_limit, then pos json pairs in ascending pos. Returns
-- {status, appended, duplicates, contig, lines_in_redis, bytes_in_redis};
-- status -1 not found, -2 closed, -3 over the stream's hard limit, -4 the account
-- holds its byte limit in Redis already (a batch may pass it once; the next is
-- refused).
local open = redis.call('HGET', KEYS[1], 'open')
if not open then return {-1, 0, 0, 0, 0, 0} end
if open ~= '1' then return {-2, 0, 0, 0, 0, 0} end
local m = redis.call('HMGET', KEYS[1], 'contig', 'top', 'trimmed', 'lines', 'moved', 'bytes', 'moved_bytes')
local contig, top, trimmed = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
local in_redis = tonumber(m[4]) - tonumber(m[5])
local in_redis_bytes = tonumber(m[6]) - tonumber(m[7] or 0)
if #ARGV > 6 and (in_redis >= tonumber(ARGV[4]) or in_redis_bytes >= tonumber(ARGV[5])) then
  return {-3, 0, 0, contig, in_redis, in_redis_bytes}
end
local account_bytes = tonumber(redis.call('HGET', KEYS[6], 'bytes') or '0')
if #ARGV > 6 and account_bytes >= tonumber(ARGV[6]) then
  return {-4, 0, 0, contig, account_bytes, 0}
end
local appended, dups, bytes = 0, 0, 0
for i = 7, #ARGV, 2 do
  local pos = tonumber(ARGV[i])
  local json = ARGV[i + 1]
  local stored
  if pos < contig or pos < trimmed then stored = true
  elseif pos >= top then stored = false
  else stored = has(pos) end
  if stored then
    dups = dups + 1
  else
    if pos >= top then
      redis.call('XADD', KEYS[2], string.format('%d-1', pos), 'l', json)
      top = pos + 1
    else
      redis.call('ZADD', KEYS[3], pos, json)
    end
    if pos == contig then contig = pos + 1 end
    appended = appended + 1
    bytes = bytes + #json
  end
end
while contig < top and has(contig) do contig = contig + 1 end
redis.call('HSET', KEYS[1], 'contig', string.format('%d', contig), 'top', string.format('%d', top))
redis.call('HINCRBY', KEYS[1], 'lines', appended)
redis.call('HINCRBY', KEYS[1], 'bytes', bytes)
if bytes > 0 then redis.call('HINCRBY', KEYS[6], 'bytes', bytes) end
redis.call('PEXPIRE', KEYS[6], ARGV[2])
touch()
if appended > 0 then redis.call('PUBLISH', KEYS[4], 1) end
return {0, appended, dups, contig, in_redis + appended, in_redis_bytes + bytes}
