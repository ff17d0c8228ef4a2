--!df flags=allow-undeclared-keys
-- SUBMIT: store a new job and place it, in one script: on an idle machine that fits it
-- (queued, with a wake token), else on a new slot if the pool is under its cap and no older job
-- waits, else in the queue (FIFO within a priority); a due time puts it in the delayed set
-- (and wakes an idle machine, which then waits until it falls due).
-- With older jobs queued, a slot under the cap goes to the first job in line that no idle
-- machine will take (this one, when idle machines were woken for those ahead of it).
-- The job is placed before its record is written, so that the record is written once, with
-- its final status: this is the path every job takes, and it is kept to a dozen commands.
--
-- KEYS: the pool's, the new job's, the idempotency key (when ARGV[13] is not '')
-- ARGV: 1 tag, 2 now (not read), 3 ulid, 4 payload, 5 args, 6 sig, 7 ttl, 8 pool config
--       ('name value ...': cap, boot, idle, min, hb, cpus, mem, standby; its cap is the one
--       this submit places under, never the cfg hash's field, which any Redis writer may
--       raise), 9 due ('' = now,
--       '+SECONDS' = from now, else an epoch time), 10 priority, 11 cpus, 12 memory_mb,
--       13 idempotency digest ('' = none), 14 the job's compatibility tag (KEYID.VERSION:
--       only idle machines of that tag are counted, the queued job launched for is one of
--       that tag, and at the cap an idle machine of another tag is retired to make room)
-- Returns:
--   {1, 'launch', slot, ulid, attempt, cpus, memory_mb}  launch a machine for the slot (the
--        ulid is another job's when older jobs wait that no idle machine will take)
--   {1, 'warm', ''}  an idle machine will take it     {1, 'queued', position}  queued
--   {1, 'delayed', ''}  in the delayed set
--   3 in place of 1: the pool's keys were new (its first job, or a Redis that lost its
--        data), so that the pool is listed again
--   {2, existing ulid}  the idempotency key names a job that exists
--   {0}  the job id is taken

local u, conf, due = ARGV[3], ARGV[8], ARGV[9]
local J = jk(u)
local ttl = tonumber(ARGV[7])
-- The functions of the rarer paths (idle machines to check, older jobs waiting), made only
-- when one of those runs.
local function slow()
  --@define idle_fit_count take_slot retire_idle untaken_job
  return idle_fit_count, take_slot, retire_idle, untaken_job
end
-- The caller's tag (balloons.compat makes it; tags read from Redis go through tag_of).
local tag = ARGV[14] or ''
if #tag ~= 25 then tag = '' end
if ARGV[13] ~= '' then
  local ik = idem(ARGV[13])
  local prev = redis.call('GET', ik)
  if prev and redis.call('EXISTS', jk(prev)) == 1 then return {2, prev} end
  redis.call('SET', ik, u, 'EX', ttl)
end
-- The pool's index of jobs, which is also the guard against an id in use.
if redis.call('ZADD', JOBS, 'NX', NOW, u) == 0 then return {0} end
-- The pool's settings: the latest submitter's, written only when they changed.
-- The cap is the caller's own (its pool's as it declared it: 'cap' comes first in the pool's
-- config), whatever the hash holds.
local cap = tonumber(string.match(conf, '^cap (%d+)') or string.match(conf, ' cap (%d+)'))
  or @CAP@
local cur = redis.call('HMGET', CFG, 'conf', 'boot')
local boot = tonumber(cur[2]) or @BOOT@
if cur[1] ~= conf then
  local settings = {'conf', conf}
  for name, value in string.gmatch(conf, '(%S+) (%S+)') do
    settings[#settings + 1] = name
    settings[#settings + 1] = value
    if name == 'boot' then boot = tonumber(value) or boot end
  end
  redis.call('HSET', CFG, unpack(settings))
end
local seq = redis.call('INCR', SEQ)
local ok = seq == 1 and 3 or 1  -- 3: the pool's first job (or Redis lost its data)
if seq % 64 == 0 and redis.call('ZCARD', JOBS) > 1000 then
  redis.call('ZREMRANGEBYSCORE', JOBS, '-inf', NOW - ttl)
end
local score = seq - tonumber(ARGV[10]) * 1e12
local c, m = tonumber(ARGV[11]), tonumber(ARGV[12])
-- The job's record, written once, with its placement: one more field when given.
local function store(status, name, value)
  redis.call('HSET', J, 'payload', ARGV[4], 'args', ARGV[5], 'sig', ARGV[6], 'attempt', 1,
    'created', NOW, 'ttl', ARGV[7], 'qscore', score, 'need', c..':'..m, 'compat', tag,
    'status', status, name or 'status', value or status)
  if ARGV[13] ~= '' then redis.call('HSET', J, 'key', ARGV[13]) end
  redis.call('EXPIRE', J, ttl)
end
if string.sub(due, 1, 1) == '+' then due = NOW + tonumber(string.sub(due, 2)) end
if due ~= '' and tonumber(due) > NOW then
  store('QUEUED', 'due', due)
  redis.call('ZADD', DELAYED, due, u)
  -- An idle machine of its tag wakes and waits again until the job falls due, not longer.
  if redis.call('SCARD', IDLE) > 0 then wake(tag, 'due') end
  return {ok, 'delayed', ''}
end
local q = redis.call('ZCARD', QUEUE)
local idle = redis.call('SCARD', IDLE)
local function queue()
  store('QUEUED')
  redis.call('ZADD', QUEUE, score, u)
  if idle > 0 then wake(tag, u) end
end
if idle > q then
  local idle_fit_count = slow()
  if idle_fit_count(c, m, q, tag) > q then
    queue()
    return {ok, 'warm', ''}
  end
end
local slots = redis.call('ZCARD', SLOTS)
if slots < cap and q == 0 then
  -- A new slot for this job, as take_slot gives one, without reading back what is known here;
  -- the attempt's record is written by its first change (see attempt_update).
  local slot = u..'-1'
  local since = NOW
  store('STARTING', 'slot', slot)
  redis.call('ZADD', SLOTS, NOW + boot, slot)
  redis.call('HSET', SLOT, slot, '{"job":"'..u..'","attempt":1,"cpus":'..c..',"mem":'..m..
    ',"state":"starting","since":'..since..',"machine":"","compat":"'..tag..'"}')
  return {ok, 'launch', slot, u, '1', tostring(c), tostring(m)}
end
queue()
if slots >= cap then
  -- At the cap, with machines idle: when none of this tag would take the job, one of another
  -- tag (another version, another key) gives its slot up to a machine of this one.
  if idle == 0 or tag == '' then return {ok, 'queued', tostring(redis.call('ZRANK', QUEUE, u) + 1)} end
  local idle_fit_count, _, retire_idle = slow()
  if idle_fit_count(c, m, 0, tag) > 0 or not retire_idle(tag, false) then
    return {ok, 'queued', tostring(redis.call('ZRANK', QUEUE, u) + 1)}
  end
end
-- A machine of this tag is launched for the first queued job it may take that no idle machine
-- will take (older jobs of other tags are left for machines of theirs, and one an idle machine
-- was woken for to it: it would wait for a boot while a later job ran warm, and a job too big
-- for the idle machines would get no machine), this one at the latest.
local _, take_slot, _, untaken_job = slow()
local h = untaken_job(tag, u) or u
redis.call('ZREM', QUEUE, h)
local l = take_slot(h, redis.call('HGET', jk(h), 'attempt'), tag)
return {ok, 'launch', l[1], l[2], l[3], l[4], l[5]}
