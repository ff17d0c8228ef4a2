--!df flags=allow-undeclared-keys
-- HOOK_RECORD: the job service records a delivery attempt of a job's callback, and either
-- ends its deliveries (delivered, given up) or puts its next attempt off.
--
-- KEYS: the pool's, the job's
-- ARGV: 1 tag, 2 now (not read), 3 ulid, 4 attempt, 5 the attempt's record (JSON),
--   6 seconds until the next attempt ('' when there is none), 7 the state when none
-- Returns:
--   1  recorded
--   -1  the callback record is gone (dropped from the outbox)
--   -2  recorded, but a later attempt was taken meanwhile (its record decides what is next)

local u = ARGV[3]
local H = hk(u)
if redis.call('EXISTS', H) == 0 then
  redis.call('ZREM', OUTBOX, u)
  return -1
end
redis.call('HSET', H, 'd:'..ARGV[4], ARGV[5])
local ttl = redis.call('TTL', jk(u))
if ttl > 0 then redis.call('EXPIRE', H, ttl) end
if tonumber(redis.call('HGET', H, 'n')) ~= tonumber(ARGV[4]) then return -2 end
if ARGV[6] == '' then
  redis.call('HSET', H, 'state', ARGV[7])
  redis.call('ZREM', OUTBOX, u)
else
  redis.call('ZADD', OUTBOX, NOW + tonumber(ARGV[6]), u)
end
return 1
