-- KEYS: meta lines late; ARGV: from max [max_bytes].
-- Returns {open (1/0, or -1 when absent), trimmed, pos, json, pos, json, ...}, merged in pos order;
-- with max_bytes, no more than that many bytes of json, but always the first line.
local m = redis.call('HMGET', KEYS[1], 'open', 'trimmed')
if not m[1] then return {-1} end
local from, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_bytes, bytes = tonumber(ARGV[3] or '') or math.huge, 0
local trimmed = tonumber(m[2])
if from < trimmed then from = trimmed end
local out = {m[1] == '1' and 1 or 0, trimmed}
local s = redis.call('XRANGE', KEYS[2], string.format('%d-0', from), '+', 'COUNT', max)
local z = redis.call('ZRANGEBYSCORE', KEYS[3], from, '+inf', 'WITHSCORES', 'LIMIT', 0, max)
local si, zi, n = 1, 1, 0
while n < max do
  local spos, zpos
  if s[si] then spos = tonumber(string.match(s[si][1], '^(%d+)')) end
  if z[zi] then zpos = tonumber(z[zi + 1]) end
  if not spos and not zpos then break end
  local pos, json
  if zpos and (not spos or zpos < spos) then
    pos, json = zpos, z[zi]; zi = zi + 2
  else
    pos, json = spos, s[si][2][2]; si = si + 1
  end
  if n > 0 and bytes + #json > max_bytes then break end
  bytes = bytes + #json
  out[#out + 1] = pos; out[#out + 1] = json
  n = n + 1
end
return out
