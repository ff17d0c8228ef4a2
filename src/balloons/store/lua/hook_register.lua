--!df flags=allow-undeclared-keys
-- HOOK_REGISTER: the job service records a job's callback after its submit: the job record's
-- 'hook' field (which the scripts that end it read), the hook record (tagged spec, state
-- pending), kept as long as the job's record, and the job's outbox entry:
-- due now when the job has already ended, else +inf until the script that ends it makes it
-- due (hook_end in the prelude). One script, so that no end falls between the two.
--
-- KEYS: the pool's, the job's
-- ARGV: 1 tag, 2 now (not read), 3 ulid, 4 spec, 5 spec's tag, 6 TTL when the job has none
-- Returns: 1 registered, 2 registered and due now (the job had ended), -1 no such job

local u = ARGV[3]
local J = jk(u)
local status = redis.call('HGET', J, 'status')
if not status then return -1 end
redis.call('HSET', J, 'hook', 1)
local H = hk(u)
redis.call('HSET', H, 'spec', ARGV[4], 'sig', ARGV[5], 'state', 'pending', 'n', 0)
local ttl = redis.call('TTL', J)
if ttl <= 0 then ttl = tonumber(ARGV[6]) end
redis.call('EXPIRE', H, ttl)
if status == 'SUCCEEDED' or status == 'FAILED' or status == 'CANCELLED' then
  redis.call('ZADD', OUTBOX, NOW, u)
  return 2
end
redis.call('ZADD', OUTBOX, 'NX', '+inf', u)
return 1
