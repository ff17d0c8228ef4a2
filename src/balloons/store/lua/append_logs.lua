-- APPEND_LOGS: the worker appends a batch of log lines (and the task's latest progress) for
-- one attempt to the job's log stream, capped.
--
-- KEYS: the pool's, the job's
-- ARGV: 1 tag, 2 now (not read), 3 ulid, 4 attempt, 5 max lines, 6 progress ('' = unchanged),
--       7 note, 8 their tag, then one item per line: 'TIME SOURCE TEXT' (source: out | err |
--       log; one argument a line keeps the worker's encoding cheap)
-- Returns the number of lines stored, or -1 (the job's record is gone) / -2 (another attempt
-- runs now).

local u, n = ARGV[3], ARGV[4]
local J = jk(u)
local st = redis.call('HMGET', J, 'attempt', 'ttl')
if not st[1] then return -1 end
if tonumber(st[1]) ~= tonumber(n) then return -2 end
if ARGV[6] ~= '' then
  redis.call('HSET', J, 'progress', ARGV[6], 'note', ARGV[7], 'psig', ARGV[8])
end
local L = lk(u)
local count = 0
for i = 9, #ARGV do
  local t, s, m = string.match(ARGV[i], '^(%S+) (%S+) (.*)$')
  if t then
    redis.call('XADD', L, '*', 't', t, 'a', n, 's', s, 'm', m)
    count = count + 1
  end
end
if count > 0 then
  redis.call('XTRIM', L, 'MAXLEN', '~', ARGV[5])
  redis.call('EXPIRE', L, tonumber(st[2]) or @TTL@)
end
return count
