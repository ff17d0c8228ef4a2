--!df flags=allow-undeclared-keys
-- LOST: a slot's machine is gone (it died, or its lease ran out): free the slot and end its
-- job's attempt with the reason (a retry when the job's policy grants one).
--
-- KEYS: the pool's, the job's (ARGV[4])
-- ARGV: 1 tag, 2 now (not read), 3 slot, 4 ulid, 5 attempt, 6 error, 7 reason, 8 retry delay,
--       9 retry memory, 10 only-if-expired ('1' | '0'), 11 the error's tag, 12 the retry's grant
-- Returns:
--   {1, ulid, attempt, machine, ended}  freed; ended is 0 when the slot held no job, else
--        what FINISH returns: 1 ended, 2 retry scheduled, or a guard's code (-1 record gone,
--        -2 moved on, -3 already ended, -4 another machine)
--   {0}  nothing to do (the slot is gone, or its lease has not run out)
--   {-2}  the slot moved on to another job: read it again

local slot = ARGV[3]
local lease = redis.call('ZSCORE', SLOTS, slot)
if not lease then redis.call('HDEL', SLOT, slot); return {0} end
if ARGV[10] == '1' and tonumber(lease) > NOW then return {0} end
local info = slot_get(slot)
local altered = info == false
if altered then
  -- An altered entry: the slot's name tells the attempt it was launched for, if still its.
  local ju, jn = string.match(slot, '^(.+)-(%d+)$')
  info = {job=''}
  if ju and jn ~= '0' and redis.call('HGET', jk(ju), 'slot') == slot then
    info = {job=ju, attempt=tonumber(jn)}
  end
end
info = info or {job=''}
local u = info.job or ''
if not altered and (u ~= ARGV[4] or (u ~= '' and tostring(info.attempt) ~= ARGV[5])) then
  return {-2}
end
slot_drop(slot)
local ended = 0
if u ~= '' then
  ended = end_attempt(u, info.attempt, '', 'FAILED', '', ARGV[6], ARGV[7], ARGV[8], ARGV[9],
    ARGV[11], ARGV[12])
end
return {1, u, tostring(info.attempt or 0), info.machine or '', ended}
