--!df flags=allow-undeclared-keys
-- SCALE_UP: the supervisor's step for one pool: promote due jobs, then take slots for queued
-- work of its tag under the cap (beyond what idle machines and machines on their way with no
-- job of their own, of its tag, which take queued work when they boot, will take) and for the
-- warm floor of its tag. At the cap, an idle machine of another tag gives its slot up for
-- queued work of this tag, and an idle machine of another version of this key for the floor:
-- so old machines never hold the cap against new work, and the floor follows the version.
--
-- KEYS: the pool's
-- ARGV: 1 tag, 2 now (not read), 3 fresh floor ids (ULIDs, space separated: as many as the
--       pool's warm floor, from its signed settings: the cfg hash's 'min' is not read), 4 the
--       caller's compatibility tag (KEYID.VERSION; '' = none: every job and machine counts),
--       which is also recorded as its key's current version (cfg 'v:KEYID'), 5 and 6 the CPUs
--       and MB of a floor machine (its signed settings' too; the defaults when absent), 7 the
--       cap (the signed settings' max_machines, 0 when they do not verify: no slot taken at
--       all; the cfg hash's 'cap' is not read: a cap raised there launched more machines than
--       declared)
-- Returns a flat list of launches, five items each: slot, ulid (a fresh id and attempt 0 for a
-- floor machine), attempt, cpus, memory_mb; {} when there is nothing to launch.

local tag = tag_of(ARGV[4])
if tag ~= '' and string.sub(tag, 14) ~= '000000000000' then
  redis.call('HSET', CFG, 'v:'..string.sub(tag, 1, 12), string.sub(tag, 14))
end
promote_due(1000)
local out = {}
local cap = tonumber(ARGV[7]) or @CAP@
local spare, mine = 0, 0
for _, s in ipairs(redis.call('ZRANGE', SLOTS, 0, -1)) do
  local info = slot_get(s)
  if info and compatible(tag, tag_of(info.compat)) then
    mine = mine + 1
    if redis.call('SISMEMBER', IDLE, s) == 1
        or (info.state == 'starting' and (info.job or '') == '') then
      spare = spare + 1
    end
  elseif info == false and tag == '' then
    mine = mine + 1
  end
end
local function room(same_key)
  return cap > 0 and (redis.call('ZCARD', SLOTS) < cap or retire_idle(tag, same_key))
end
local seen = 0
for _, u in ipairs(redis.call('ZRANGE', QUEUE, 0, 999)) do
  local st = redis.call('HMGET', jk(u), 'status', 'compat', 'attempt')
  if st[1] ~= 'QUEUED' then
    redis.call('ZREM', QUEUE, u)
  elseif compatible(tag_of(st[2]), tag) then
    seen = seen + 1
    if seen > spare then
      if not room(false) then break end
      redis.call('ZREM', QUEUE, u)
      for _, x in ipairs(take_slot(u, st[3], tag)) do table.insert(out, x) end
      mine = mine + 1
    end
  end
end
local ids, fc, fm = {}, tonumber(ARGV[5]) or @CPUS@, tonumber(ARGV[6]) or @MEM@
for id in string.gmatch(ARGV[3], '%S+') do table.insert(ids, id) end
local floor = math.min(#ids, cap)
for _, id in ipairs(ids) do
  if (tag == '' and redis.call('ZCARD', SLOTS) or mine) >= floor or not room(true) then break end
  local slot = id..'-0'
  redis.call('ZADD', SLOTS, NOW + cfg('boot', @BOOT@), slot)
  slot_put(slot, {job='', attempt=0, cpus=fc, mem=fm, state='starting', since=NOW, machine='',
    compat=tag})
  mine = mine + 1
  for _, x in ipairs({slot, id, '0', tostring(fc), tostring(fm)}) do
    table.insert(out, x)
  end
end
return out
