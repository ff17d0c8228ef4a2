-- READ_STATS: a pool's running aggregates (its stats hash, fields in balloons.store.keys), read
-- for /metrics as one JSON array (field, value, field, value, ...), which the reader decodes in
-- one call rather than as thousands of replies. Changes nothing.
--
-- KEYS: the pool's
-- ARGV: 1 tag, 2 now (not read), 3 the most fields read
-- Returns the JSON text; '' when the hash holds more fields than that, or is not a hash
-- (altered in Redis: not read).

local n = redis.pcall('HLEN', STATS)
if type(n) ~= 'number' or n > tonumber(ARGV[3]) then return '' end
if n == 0 then return '[]' end
return cjson.encode(redis.call('HGETALL', STATS))
