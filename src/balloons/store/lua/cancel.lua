--!df flags=allow-undeclared-keys
-- CANCEL: end a job as CANCELLED. The job keeps no error (an earlier attempt's is dropped):
-- readers say it was cancelled. Its attempt counts as ended, so that the record put back is
-- not run; a running machine learns it from its next heartbeat (the slot's cancel time).
--
-- KEYS: the pool's, the job's
-- ARGV: 1 tag, 2 now (not read), 3 ulid
-- Returns:
--   {1, previous status, slot, machine}  cancelled
--   {-1, ''}  the job's record is gone
--   {-3, status}  the job already ended (SUCCEEDED, FAILED or CANCELLED)

local u = ARGV[3]
local J = jk(u)
local st = redis.call('HMGET', J, 'status', 'attempt', 'slot', 'machine', 'ttl', 'payload',
  'created', 'started', 'hook')
if not st[1] then return {-1, ''} end
if st[1] == 'SUCCEEDED' or st[1] == 'FAILED' or st[1] == 'CANCELLED' then return {-3, st[1]} end
redis.call('ZREM', QUEUE, u)
redis.call('ZREM', DELAYED, u)
redis.call('HSET', J, 'status', 'CANCELLED', 'finished', NOW, 'reason', 'cancelled')
redis.call('HDEL', J, 'error', 'esig')
local claimed, ended = runs_get(u)
if ended < (tonumber(st[2]) or 0) then runs_swap(u, claimed, tonumber(st[2]), st[6]) end
local task = stat_task(st[6])
stat_end(task, 'CANCELLED', 'cancelled', st[7], st[8])
if st[1] == 'RUNNING' or st[1] == 'STARTING' then
  local a = attempt_update(u, st[2], {ended=NOW, outcome='CANCELLED', reason='cancelled'})
  stat_attempt(task, a)
  local info = st[3] and slot_get(st[3])
  if info and info.job == u then info.cancel = NOW; slot_put(st[3], info) end
end
local ttl = tonumber(st[5]) or @TTL@
redis.call('DEL', dk(u))
redis.call('LPUSH', dk(u), 'CANCELLED')
redis.call('EXPIRE', dk(u), ttl)
redis.call('EXPIRE', J, ttl)
if st[9] then hook_end(u) end
return {1, st[1], st[3] or '', st[4] or ''}
