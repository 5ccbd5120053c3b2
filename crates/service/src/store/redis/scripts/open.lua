if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'open', 1, 'lines', 0, 'bytes', 0, 'contig', 0, 'top', 0, 'trimmed', 0, 'moved', 0, 'moved_bytes', 0)
else
  redis.call('HSET', KEYS[1], 'open', 1)
  redis.call('DEL', KEYS[4])
end
touch()
return 0
