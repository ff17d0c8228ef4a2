-- HEARTBEAT: a machine renews its slot's lease (five heartbeats) and tells its job's deadline;
-- it learns its job's status (to stop a cancelled one) and the pool's heartbeat and idle
-- timeout: a machine launched with no job of its own (ID-0, FRESH-0) never runs CLAIM, which
-- tells the others.
--
-- KEYS: the pool's, the job's (when there is one)
-- ARGV: 1 tag, 2 now (not read), 3 slot, 4 ulid ('' = none), 5 attempt, 6 deadline ('' = none,
--       '+SECONDS' = that long from now), 7 capped ('1' when the deadline is the job's max_cost)
-- Returns:
--   {1, job status | 'GONE' | 'MOVED' | '', heartbeat, idle}  GONE: the job's record is gone;
--        MOVED: the job is on another attempt; '': no job named
--   {-1}  the slot is gone

local slot, u = ARGV[3], ARGV[4]
if not redis.call('ZSCORE', SLOTS, slot) then return {-1} end
local hb = cfg('hb', @HEARTBEAT@)
redis.call('ZADD', SLOTS, 'XX', NOW + 5 * hb, slot)
if ARGV[6] ~= '' then
  local info = slot_get(slot)
  if info then
    info.deadline = NOW + tonumber(string.sub(ARGV[6], 2))
    info.capped = (ARGV[7] == '1')
    slot_put(slot, info)
  end
end
local status = ''
if u ~= '' then
  local st = redis.call('HMGET', jk(u), 'status', 'attempt')
  if not st[1] then status = 'GONE'
  elseif tonumber(st[2]) ~= tonumber(ARGV[5]) then status = 'MOVED'
  else status = st[1] end
end
return {1, status, tostring(hb), tostring(cfg('idle', @IDLE@))}
