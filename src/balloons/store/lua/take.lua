--!df flags=allow-undeclared-keys
-- TAKE: a warm machine asks for its next job: the one it already holds (a lost reply), else
-- the first queued job that fits it; else its slot goes idle, or is given back (mode
-- 'release', above the warm floor). Promotes due jobs first. A queued record of an attempt
-- that was claimed or ended before (put back: a replay) is not taken: its job ends FAILED
-- (record_invalid).
--
-- KEYS: the pool's
-- ARGV: 1 tag, 2 now (not read), 3 slot, 4 machine, 5 mode ('take' | 'release' |
--       'retire': give the slot back whatever the warm floor, the machine of a pool with
--       isolation 'machine' after its job), 6 standby
--       ('1' when the machine stops rather than being destroyed as its worker exits), 7 the
--       machine's compatibility tag (KEYID.VERSION): it takes only jobs of its tag; a job of
--       another key is noted in its record ('passed': this key's id) and left for a machine of
--       its key. Released, a machine of a version other than its key's current one (the pool's
--       cfg 'v:KEYID', from the latest submit) gives its slot back even under the warm floor.
-- Returns:
--   {1, ulid, attempt, payload, args, sig, grant, more, isolation}  run it; more is 1
--         while other jobs wait in the queue (the machine then sends its next TAKE with
--         this job's FINISH); isolation is the pool's
--   {0, idle}  nothing to do: wait for a wake, up to the pool's idle timeout
--   {-1}  the slot is gone: exit
--   {-5}  the slot was given back: exit
--   {-6}  the slot was given back and the machine kept in the pool's standby set: exit, and
--         the machine stops until a launch starts it again

local slot, machine, mode, mine = ARGV[3], ARGV[4], ARGV[5], tag_of(ARGV[7])
if not redis.call('ZSCORE', SLOTS, slot) then
  redis.call('HDEL', SLOT, slot)
  redis.call('SREM', IDLE, slot)
  return {-1}
end
local info = slot_get(slot) or {cpus=@CPUS@, mem=@MEM@}
info.machine = machine
if mine ~= '' then info.compat = mine end
-- A warm machine's idle time belongs to its pool, not to a job: count it per machine size.
if info.state == 'idle' and tonumber(info.since) then
  redis.call('HINCRBYFLOAT', USAGE, 'idle:'..(info.cpus or @CPUS@)..':'..(info.mem or @MEM@),
    math.max(0, NOW - tonumber(info.since)))
  info.since = NOW
end
-- A job this machine already holds (the reply to an earlier TAKE or CLAIM was lost to a
-- dropped connection) is returned again rather than stranded: only while its claim stands and
-- it has not ended (else it is a finished job's record put back on this machine: refused).
if info.job and info.job ~= '' then
  local cur = redis.call('HMGET', jk(info.job), 'status', 'attempt', 'payload', 'args', 'sig',
    'slot', 'machine', 'grant')
  if cur[1] == 'RUNNING' and cur[6] == slot and cur[7] == machine
      and tonumber(cur[2]) == tonumber(info.attempt) then
    local claimed, ended = runs_get(info.job)
    if claimed == tonumber(cur[2]) and ended < claimed then
      return {1, info.job, cur[2], cur[3] or '', cur[4] or '', cur[5] or '', cur[8] or '',
        math.min(1, redis.call('ZCARD', QUEUE)), redis.call('HGET', CFG, 'iso') or ''}
    end
    refuse_replay(info.job)
  end
end
-- A machine of a pool with isolation 'machine' ran its job: no other job for it.
if mode == 'retire' then
  slot_drop(slot)
  return {-5}
end
promote_due(50)
for _, u in ipairs(redis.call('ZRANGE', QUEUE, 0, 49)) do
  local J = jk(u)
  local st = redis.call('HMGET', J, 'status', 'attempt', 'payload', 'args', 'sig', 'started',
    'grant', 'compat')
  local jt = tag_of(st[8])
  if st[1] ~= 'QUEUED' then
    redis.call('ZREM', QUEUE, u)
  elseif not compatible(jt, mine) then
    -- left for a machine of its tag; one of another key says so in the job's record
    if string.sub(jt, 1, 12) ~= string.sub(mine, 1, 12) then
      redis.call('HSETNX', J, 'passed', string.sub(mine, 1, 12))
    end
  elseif not fits(info, u) then
    -- left for a machine that fits it
  elseif not first_claim(u, st[2], st[3]) then
    refuse_replay(u)  -- an attempt claimed or ended before, put back in the queue: a replay
  else
    redis.call('ZREM', QUEUE, u)
    redis.call('HSET', J, 'status', 'RUNNING', 'machine', machine, 'slot', slot)
    if not st[6] then redis.call('HSET', J, 'started', NOW) end
    attempt_update(u, st[2], {machine=machine, slot=slot, launched=NOW, started=NOW, warm=true,
      cpus=tonumber(info.cpus) or @CPUS@, mem=tonumber(info.mem) or @MEM@})
    info.job, info.attempt, info.state, info.since = u, tonumber(st[2]), 'running', NOW
    -- The last job's cancel and deadline are not this one's (its heartbeat sends its own).
    info.cancel, info.deadline, info.capped = nil, nil, nil
    slot_put(slot, info)
    redis.call('SREM', IDLE, slot)
    redis.call('ZADD', SLOTS, 'XX', NOW + 5 * cfg('hb', @HEARTBEAT@), slot)
    return {1, u, st[2], st[3] or '', st[4] or '', st[5] or '', st[7] or '',
      math.min(1, redis.call('ZCARD', QUEUE)), redis.call('HGET', CFG, 'iso') or ''}
  end
end
-- Whether this machine runs the version of its key that the warm floor keeps (none known:
-- any).
local function current()
  local v = mine ~= '' and redis.call('HGET', CFG, 'v:'..string.sub(mine, 1, 12))
  return not v or v == string.sub(mine, 14) or v == '000000000000'
    or string.sub(mine, 14) == '000000000000'
end
if mode == 'release' and (redis.call('ZCARD', SLOTS) > cfg('min', @MIN@) or not current()) then
  slot_drop(slot)
  -- A machine of its own slot (ID-0) that stops when it exits is kept for a later launch to
  -- start again, while the pool keeps fewer stopped machines than its standby setting.
  local own = string.match(slot, '^(.+)-0$')
  if ARGV[6] == '1' and own and machine ~= ''
      and redis.call('HLEN', STANDBY) < cfg('standby', @STANDBY@) then
    redis.call('HSET', STANDBY, machine, cjson.encode({slot=own, cpus=tonumber(info.cpus) or @CPUS@,
      mem=tonumber(info.mem) or @MEM@, since=NOW, compat=mine}))
    return {-6}
  end
  return {-5}
end
info.job, info.attempt, info.state, info.since = '', 0, 'idle', NOW
info.cancel, info.deadline, info.capped = nil, nil, nil
slot_put(slot, info)
redis.call('SADD', IDLE, slot)
redis.call('ZADD', SLOTS, 'XX', NOW + 5 * cfg('hb', @HEARTBEAT@), slot)
return {0, tostring(cfg('idle', @IDLE@))}
