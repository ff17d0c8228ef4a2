--!df flags=allow-undeclared-keys
-- SCALE_UP: the supervisor's step for one pool: promote due jobs, then take slots for queued
-- work under the cap (beyond what idle machines and machines on their way with no job of their
-- own, which take queued work when they boot, will take) and for the warm floor.
--
-- KEYS: the pool's
-- ARGV: 1 tag, 2 now (not read), 3 fresh floor ids (ULIDs, space separated)
-- Returns a flat list of launches, five items each: slot, ulid (a fresh id and attempt 0 for a
-- floor machine), attempt, cpus, memory_mb; {} when there is nothing to launch.

promote_due(1000)
local out = {}
local cap = cfg('cap', @CAP@)
local spare = redis.call('SCARD', IDLE)
for _, s in ipairs(redis.call('ZRANGE', SLOTS, 0, -1)) do
  local info = slot_get(s)
  if info and info.state == 'starting' and (info.job or '') == '' then spare = spare + 1 end
end
while redis.call('ZCARD', SLOTS) < cap do
  local q = redis.call('ZRANGE', QUEUE, spare, spare)
  local u = q[1]
  if not u then break end
  redis.call('ZREM', QUEUE, u)
  if redis.call('HGET', jk(u), 'status') == 'QUEUED' then
    for _, x in ipairs(take_slot(u, redis.call('HGET', jk(u), 'attempt'))) do
      table.insert(out, x)
    end
  end
end
local floor = math.min(cfg('min', @MIN@), cap)
for id in string.gmatch(ARGV[3], '%S+') do
  if redis.call('ZCARD', SLOTS) >= floor then break end
  local slot = id..'-0'
  redis.call('ZADD', SLOTS, NOW + cfg('boot', @BOOT@), slot)
  slot_put(slot, {job='', attempt=0, cpus=cfg('cpus', @CPUS@), mem=cfg('mem', @MEM@), state='starting',
    since=NOW, machine=''})
  for _, x in ipairs({slot, id, '0', tostring(cfg('cpus', @CPUS@)), tostring(cfg('mem', @MEM@))}) do
    table.insert(out, x)
  end
end
return out
