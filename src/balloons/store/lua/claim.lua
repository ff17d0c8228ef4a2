--!df flags=allow-undeclared-keys
-- CLAIM: a machine claims its first job, the one its handoff names (slot ULID-ATTEMPT).
--
-- KEYS: the pool's, the job's
-- ARGV: 1 tag, 2 now (not read), 3 ulid, 4 attempt, 5 machine, 6 error and 7 its tag (the
--       failure recorded when the slot's entry is unreadable)
-- Returns:
--   {1, payload, args, sig, heartbeat, idle, grant, isolation}  run it (isolation: the pool's)
--   {-1, 'no slot' | ''}  the slot or the job's record is gone
--   {-2, status}  the job moved on to another attempt
--   {-3, status}  the job is not STARTING on this slot
--   {-4, 'bad slot'}  the slot's entry was altered: the slot is freed and the attempt failed
--        (record_invalid)
--   {-5, 'replayed'}  the attempt was claimed or ended before (the record was put back): the
--        job ends FAILED (record_invalid) and the machine, its slot idle, takes queued work
--   On -1 (record gone), -2, -3 and -5 the slot stays, idle, for the machine to take work.

local u, n, machine = ARGV[3], ARGV[4], ARGV[5]
local slot = u..'-'..n
local info = slot_get(slot)
if not redis.call('ZSCORE', SLOTS, slot) then return {-1, 'no slot'} end
if info == false then
  slot_drop(slot)
  end_attempt(u, n, machine, 'FAILED', '', ARGV[6], 'record_invalid', '', '', ARGV[7], '')
  return {-4, 'bad slot'}
end
if not info then return {-1, 'no slot'} end
local J = jk(u)
local st = redis.call('HMGET', J, 'status', 'attempt', 'payload', 'args', 'sig', 'started', 'slot',
  'grant')
info.machine = machine
local ok = st[1] == 'STARTING' and tonumber(st[2]) == tonumber(n) and st[7] == slot
local replayed = ok and not first_claim(u, n, st[3])
if not ok or replayed then
  info.job = ''
  info.state = 'idle'
  slot_put(slot, info)
  if replayed then
    refuse_replay(u)
    return {-5, 'replayed'}
  end
  if not st[1] then return {-1, ''} end
  if tonumber(st[2]) ~= tonumber(n) then return {-2, st[1]} end
  return {-3, st[1]}
end
-- The slot's machine took this long from its launch to its claim.
if info.state == 'starting' then
  stat_observe('boot', stat_task(st[3]), NOW - (tonumber(info.since) or NOW))
end
info.state = 'running'
info.since = NOW
slot_put(slot, info)
redis.call('ZADD', SLOTS, 'XX', NOW + 5 * cfg('hb', @HEARTBEAT@), slot)
redis.call('HSET', J, 'status', 'RUNNING', 'machine', machine)
if not st[6] then redis.call('HSET', J, 'started', NOW) end
attempt_update(u, n, {machine=machine, started=NOW})
return {1, st[3] or '', st[4] or '', st[5] or '', tostring(cfg('hb', @HEARTBEAT@)), tostring(cfg('idle', @IDLE@)),
  st[8] or '', redis.call('HGET', CFG, 'iso') or ''}
