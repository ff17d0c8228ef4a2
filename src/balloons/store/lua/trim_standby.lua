-- TRIM_STANDBY: trim a pool's standby set to keep machines (the most recently stopped stay);
-- the caller destroys the machines dropped.
--
-- KEYS: the pool's
-- ARGV: 1 tag, 2 now (not read), 3 keep ('' = the pool's standby setting)
-- Returns the ids of the machines dropped.

local keep = tonumber(ARGV[3]) or cfg('standby', @STANDBY@)
local flat = redis.call('HGETALL', STANDBY)
local all = {}
for i = 1, #flat, 2 do
  local ok, rec = pcall(cjson.decode, flat[i + 1])
  local since = ok and type(rec) == 'table' and tonumber(rec.since) or 0
  table.insert(all, {flat[i], since})
end
table.sort(all, function(a, b) return a[2] > b[2] end)
local out = {}
for i = keep + 1, #all do
  redis.call('HDEL', STANDBY, all[i][1])
  table.insert(out, all[i][1])
end
return out
