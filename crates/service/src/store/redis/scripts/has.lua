-- Whether `pos` (a number) is stored in the stream (KEYS[2]) or the late set (KEYS[3]).
local function has(pos)
  local id = string.format('%d-1', pos)
  if #redis.call('XRANGE', KEYS[2], id, id) > 0 then return true end
  return redis.call('ZCOUNT', KEYS[3], pos, pos) > 0
end
