--!df flags=allow-undeclared-keys
-- PICK_MACHINE: a launch in a pool with standby machines. The slot's job (if it still waits
-- for this slot) goes back to the queue, as with REQUEUE, and the slot becomes a machine's
-- own, with no job (ID-0, as a warm-floor machine's, so that the machine can stop and start
-- again under the same handoff): the stopped machine of the pool's standby set that fits the
-- slot's size most closely, of the slot's compatibility tag (a stopped machine of another
-- version or key would take none of its work) (taken out of the set in this script, so no two
-- launchers start the same machine), else a machine to create, under the name FRESH-0 (a jobless ID-0 slot keeps
-- its name). The slot count does not change: the cap holds.
--
-- KEYS: the pool's
-- ARGV: 1 tag, 2 now (not read), 3 slot, 4 fresh id
-- Returns:
--   {1, 'start', machine, slot ulid, cpus, mem}  start that stopped machine
--   {1, 'create', slot ulid, cpus, mem}  create a machine
--   {0}  the slot is gone or its machine already came: nothing to launch

local slot, fresh = ARGV[3], ARGV[4]
local info = slot_get(slot)
local lease = redis.call('ZSCORE', SLOTS, slot)
if not info or not lease or info.state ~= 'starting' then return {0} end
local u = info.job or ''
if u ~= '' then
  local st = redis.call('HMGET', jk(u), 'status', 'slot')
  if st[1] == 'STARTING' and st[2] == slot then enqueue(u) end
end
local c, m = tonumber(info.cpus) or @CPUS@, tonumber(info.mem) or @MEM@
local best, pick
local flat = redis.call('HGETALL', STANDBY)
for i = 1, #flat, 2 do
  local ok, rec = pcall(cjson.decode, flat[i + 1])
  if not ok or type(rec) ~= 'table' or type(rec.slot) ~= 'string' or not tonumber(rec.cpus)
      or not tonumber(rec.mem) or redis.call('ZSCORE', SLOTS, rec.slot..'-0') then
    redis.call('HDEL', STANDBY, flat[i])  -- unreadable, or its slot is taken: not usable
  elseif tonumber(rec.cpus) >= c and tonumber(rec.mem) >= m
      and compatible(tag_of(rec.compat), tag_of(info.compat)) then
    local key = {tonumber(rec.mem), tonumber(rec.cpus), tonumber(rec.since) or 0}
    if not pick or key[1] < pick[1] or (key[1] == pick[1] and (key[2] < pick[2]
        or (key[2] == pick[2] and key[3] < pick[3]))) then
      best, pick = flat[i], key
    end
  end
end
slot_drop(slot)
info.job, info.attempt, info.state, info.since, info.machine = '', 0, 'starting', NOW, ''
info.cancel, info.deadline, info.capped = nil, nil, nil
if best then
  local rec = cjson.decode(redis.call('HGET', STANDBY, best))
  redis.call('HDEL', STANDBY, best)
  info.cpus, info.mem, info.machine = tonumber(rec.cpus), tonumber(rec.mem), best
  redis.call('ZADD', SLOTS, NOW + cfg('boot', @BOOT@), rec.slot..'-0')
  slot_put(rec.slot..'-0', info)
  return {1, 'start', best, rec.slot, tostring(info.cpus), tostring(info.mem)}
end
local own = string.match(slot, '^(.+)-0$')
if u ~= '' or not own then own = fresh end
redis.call('ZADD', SLOTS, lease, own..'-0')
slot_put(own..'-0', info)
return {1, 'create', own, tostring(c), tostring(m)}
