--!df flags=allow-undeclared-keys
-- HOOK_CLAIM: the job service takes the next delivery of a job's callback when it is due: the
-- delivery is counted and the job's outbox entry put off by a lease, so that another service
-- process does not make the same attempt meanwhile (one that dies mid-attempt leaves it to
-- the next when the lease ends).
--
-- KEYS: the pool's, the job's
-- ARGV: 1 tag, 2 now (not read), 3 ulid, 4 lease (seconds)
-- Returns:
--   {1, attempt, spec, tag, server time}  the delivery to make now
--   {0}  not due (or not in the outbox)
--   {-1}  no callback record, or its deliveries are over: dropped from the outbox

local u = ARGV[3]
local due = redis.call('ZSCORE', OUTBOX, u)
if not due or tonumber(due) > NOW then return {0} end
local H = hk(u)
local st = redis.call('HMGET', H, 'spec', 'sig', 'state')
if not st[1] or (st[3] and st[3] ~= 'pending') then
  redis.call('ZREM', OUTBOX, u)
  return {-1}
end
local n = redis.call('HINCRBY', H, 'n', 1)
redis.call('ZADD', OUTBOX, NOW + tonumber(ARGV[4]), u)
return {1, n, st[1], st[2] or '', tostring(NOW)}
