-- REQUEUE: the launch of a new slot's machine has to wait (a rate limit): the job no longer
-- waits for that one machine but goes back to the queue (its place in line is kept), where
-- whichever machine of the pool is free first takes it. The slot stays, with no job, under a
-- fresh name (ID-0, as a warm-floor machine's), so that the job may be given a slot again; its
-- machine takes queued work when it boots.
--
-- KEYS: the pool's, the job's
-- ARGV: 1 tag, 2 now (not read), 3 slot, 4 ulid, 5 fresh id
-- Returns 1, or 0 when the job or the slot has moved on (the launch then stays as it was).

local slot, u, fresh = ARGV[3], ARGV[4], ARGV[5]..'-0'
local info = slot_get(slot)
local lease = redis.call('ZSCORE', SLOTS, slot)
if not info or not lease or info.job ~= u or info.state ~= 'starting' then return 0 end
local st = redis.call('HMGET', jk(u), 'status', 'slot')
if st[1] ~= 'STARTING' or st[2] ~= slot then return 0 end
slot_drop(slot)
info.job, info.attempt = '', 0
redis.call('ZADD', SLOTS, lease, fresh)
slot_put(fresh, info)
enqueue(u)
return 1
