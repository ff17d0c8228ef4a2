--!df flags=allow-undeclared-keys
-- STRANDED: queued jobs of another code version of the caller's key that no machine will take
-- (balloons.control.versions). A job is stranded while it is QUEUED, its tag is of the
-- caller's key and of another known version, no slot of the pool (a machine idle, booting or
-- running) is of a tag that may take it, and no supervisor of its version has run this script
-- for the pool within the grace (one does, every step: cfg 'seen:TAG'). 'scan' marks each
-- stranded job ('stranded': since when, cleared once it is not) and returns those stranded
-- for the grace; 'retag' gives one of them the caller's tag (its signed record unchanged, a
-- note of its old tag in 'rerouted'), so that machines of the caller's version take it;
-- 'fail' ends one FAILED, with the reason and the error the caller sealed.
--
-- KEYS: the pool's (and, for 'retag' and 'fail', the job's)
-- ARGV: 1 tag, 2 now (not read), 3 mode ('scan' | 'retag' | 'fail'), 4 the caller's
--       compatibility tag (KEYID.VERSION, of a known version), 5 the grace (seconds),
--       6 ulid, 7 its attempt, 8 its tag, 9 reason, 10 error, 11 its tag ('retag', 'fail')
-- Returns:
--   scan: a flat list of the jobs stranded for the grace, two items each: ulid, attempt
--   retag, fail: {1} done; {0} the job is no longer stranded as it was (not QUEUED, another
--     attempt or tag, a machine of its tag came, or not stranded for the grace)

local mode, mine, grace = ARGV[3], tag_of(ARGV[4]), tonumber(ARGV[5]) or 0
if mine == '' or string.sub(mine, 14) == '000000000000' then return {} end
redis.call('HSET', CFG, 'seen:'..mine, NOW)
local held = {}
for _, s in ipairs(redis.call('ZRANGE', SLOTS, 0, -1)) do
  local info = slot_get(s)
  if info then held[#held + 1] = tag_of(info.compat) end
end
-- Whether a job of tag jt is stranded: of this key, of another known version, with no
-- machine that may take it and no supervisor of its version seen within the grace.
local function stranded(jt)
  if jt == '' or jt == mine or string.sub(jt, 1, 12) ~= string.sub(mine, 1, 12)
      or string.sub(jt, 14) == '000000000000' then
    return false
  end
  for _, t in ipairs(held) do
    if compatible(jt, t) then return false end
  end
  local seen = tonumber(redis.call('HGET', CFG, 'seen:'..jt))
  return not seen or NOW - seen >= grace
end
if mode == 'scan' then
  -- The versions no supervisor has stepped for a day (WAKE_TTL) are forgotten.
  local cf = redis.call('HGETALL', CFG)
  for i = 1, #cf, 2 do
    if string.sub(cf[i], 1, 5) == 'seen:' and NOW - (tonumber(cf[i + 1]) or 0) > @WAKE_TTL@ then
      redis.call('HDEL', CFG, cf[i])
    end
  end
  local out = {}
  for _, u in ipairs(redis.call('ZRANGE', QUEUE, 0, 999)) do
    local J = jk(u)
    local st = redis.call('HMGET', J, 'status', 'compat', 'attempt', 'stranded')
    if st[1] == 'QUEUED' then
      if stranded(tag_of(st[2])) then
        local since = tonumber(st[4])
        if not since then redis.call('HSET', J, 'stranded', NOW) end
        if since and NOW - since >= grace then
          out[#out + 1] = u
          out[#out + 1] = tostring(st[3] or '')
        end
      elseif st[4] then
        redis.call('HDEL', J, 'stranded')
      end
    end
  end
  return out
end
local u = ARGV[6]
local J = jk(u)
local st = redis.call('HMGET', J, 'status', 'compat', 'attempt', 'stranded', 'payload',
  'created', 'ttl', 'hook')
local since = tonumber(st[4])
if st[1] ~= 'QUEUED' or tonumber(st[3]) ~= tonumber(ARGV[7]) or tag_of(st[2]) ~= ARGV[8]
    or not stranded(ARGV[8]) or not since or NOW - since < grace then
  return {0}
end
redis.call('HDEL', J, 'stranded')
if mode == 'retag' then
  redis.call('HSET', J, 'compat', mine, 'rerouted', ARGV[8])
  if redis.call('SCARD', IDLE) > 0 then wake(mine, u) end
  return {1}
end
redis.call('ZREM', QUEUE, u)
redis.call('ZREM', DELAYED, u)
-- Its attempt counts as ended, so that the record put back is not run.
local claimed, ended = runs_get(u)
if ended < (tonumber(st[3]) or 0) then runs_swap(u, claimed, tonumber(st[3]), st[5]) end
redis.call('HSET', J, 'status', 'FAILED', 'finished', NOW, 'reason', ARGV[9], 'error', ARGV[10],
  'esig', ARGV[11])
stat_end(stat_task(st[5]), 'FAILED', ARGV[9], st[6], nil)
local ttl = tonumber(st[7]) or @TTL@
redis.call('DEL', dk(u))
redis.call('LPUSH', dk(u), 'FAILED')
redis.call('EXPIRE', dk(u), ttl)
redis.call('EXPIRE', J, ttl)
if st[8] then hook_end(u) end
return {1}
