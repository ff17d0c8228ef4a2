-- START_FAILED: the start of a stopped machine taken from the standby set failed (the machine
-- is gone, or the API refused): its slot, still waiting for that machine, is renamed FRESH-0
-- with no machine, for a new machine to be created in its place, of the launch's size (the
-- entry had the standby record's).
--
-- KEYS: the pool's
-- ARGV: 1 tag, 2 now (not read), 3 slot, 4 machine, 5 fresh id, 6 and 7 the new machine's CPUs
--       and MB (the entry's when absent)
-- Returns 1, or 0 when the slot has moved on (its machine did start and took it, or it is gone).

local slot, machine, fresh = ARGV[3], ARGV[4], ARGV[5]..'-0'
local info = slot_get(slot)
local lease = redis.call('ZSCORE', SLOTS, slot)
if not info or not lease or info.state ~= 'starting' or info.machine ~= machine then return 0 end
slot_drop(slot)
redis.call('HDEL', STANDBY, machine)
info.machine, info.since = '', NOW
info.cpus, info.mem = tonumber(ARGV[6]) or info.cpus, tonumber(ARGV[7]) or info.mem
redis.call('ZADD', SLOTS, NOW + cfg('boot', @BOOT@), fresh)
slot_put(fresh, info)
return 1
