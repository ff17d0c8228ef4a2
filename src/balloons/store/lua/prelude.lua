-- The prelude: what every script shares. The loader (balloons/store/lua/__init__.py) puts before a
-- script the lines below that it uses and the functions it calls (and those they call), and
-- writes the pool's key names where the line --@keys stands, from balloons/store/keys.py.
--
-- KEYS of every script (balloons.store.keys.script_keys): the pool's keys, in POOL_SCRIPT_KEYS
-- order (QUEUE is KEYS[1], so a cluster routes the script to the pool's hash slot), then the
-- keys of each job its caller names (JOB_SCRIPT_KEYS), then the idempotency key if any.
-- ARGV[1] is the pool's key tag NS:{POOL}; ARGV[2] is the caller's clock, which no script
-- reads. A script that finds jobs in its pool's queue, delayed set or slot table makes their
-- key names with jk(u), ak(u), dk(u), lk(u), rk(u): keys of the same hash slot.
--
-- One clock: every time a script writes or compares is NOW, the server's TIME (a server that
-- replicates script effects allows it before writes: Redis 5+, Valkey). A time given as
-- '+SECONDS' is that many seconds after NOW. @NAME@ is a default from Python (the loader's
-- constants()).
--
-- Reply codes (named by balloons.store.replies.Code, which decodes every reply): 1 done (or more,
-- as each script says), 0 nothing to do; a negative code means
-- a guard refused:
--   -1  the job's record (or the slot) is gone
--   -2  the job has moved on to another attempt (or the slot to another job)
--   -3  the job is not in a state that allows the change, or its attempt already ended
--   -4  another machine holds the attempt (CLAIM: the slot's entry was altered)
--   -5  CLAIM: the attempt was claimed or ended before (a replay); TAKE: the slot was given back
--   -6  TAKE: the slot was given back and the machine kept in the pool's standby set
--
-- Each attempt is claimed at most once and ends at most once: the job's runs key (highest
-- attempt claimed, highest ended) is checked and written by the scripts that claim (CLAIM,
-- TAKE) and end (end_attempt, CANCEL) it, so that a finished job's record put back in Redis is
-- not run again.
--
-- A slot is one machine's right to exist in its pool: ZCARD slots never exceeds the pool's
-- cap, because slots are only added by SUBMIT (SUBMIT_MANY runs its body per job) and SCALE_UP,
-- each of which checks the cap in
-- the same script (REQUEUE, PICK_MACHINE and START_FAILED rename a slot in place). A pool's
-- stopped standby machines live in its standby hash and hold no slot until PICK_MACHINE gives
-- them one.

local T = ARGV[1]
local NOW = (function() local t = redis.call('TIME'); return t[1] + t[2] / 1e6 end)()
local BUCKETS
--@keys

local function cfg(name, default)
  local v = redis.call('HGET', CFG, name)
  return tonumber(v) or default
end
-- A slot's entry: nil when there is none, false when it is not an entry balloons wrote
-- (altered in Redis), so that no script fails on it.
local function slot_get(s)
  local raw = redis.call('HGET', SLOT, s)
  if not raw then return nil end
  local ok, info = pcall(cjson.decode, raw)
  if not ok or type(info) ~= 'table' or #info > 0 then return false end
  for _, k in ipairs({'job', 'machine', 'state', 'compat'}) do
    if info[k] ~= nil and type(info[k]) ~= 'string' then return false end
  end
  for _, k in ipairs({'attempt', 'cpus', 'mem', 'since', 'deadline', 'cancel'}) do
    if info[k] ~= nil and type(info[k]) ~= 'number' then return false end
  end
  if not pcall(cjson.encode, info) then return false end  -- Infinity, NaN, sparse arrays
  return info
end
local function slot_put(s, info) redis.call('HSET', SLOT, s, cjson.encode(info)) end
local function slot_drop(s)
  redis.call('ZREM', SLOTS, s)
  redis.call('HDEL', SLOT, s)
  redis.call('SREM', IDLE, s)
end
-- A compatibility tag (KEYID.VERSION, 12 hex digits each: balloons.compat) read from Redis:
-- itself when balloons could have written it, else '' (none: a job or machine from before
-- tags, which any machine may take, or which may take any job).
local function tag_of(c)
  if type(c) == 'string' and #c == 25 and string.match(c, '^%x+%.%x+$') then return c end
  return ''
end
local function job_tag(u) return tag_of(redis.call('HGET', jk(u), 'compat')) end
-- Whether a machine of tag m may take a job of tag j: the same tag, or the same key when
-- either knows no version (balloons.compat.ANY_VERSION).
local function compatible(j, m)
  if j == '' or m == '' or j == m then return true end
  return string.sub(j, 1, 12) == string.sub(m, 1, 12)
    and (string.sub(j, 14) == '000000000000' or string.sub(m, 14) == '000000000000')
end
-- A wake token for the idle machines of tag c (of the pool's wake list for no tag).
local function wake(c, u)
  local k = c ~= '' and wk(c) or WAKE
  redis.call('LPUSH', k, u)
  redis.call('LTRIM', k, 0, 999)
  if c ~= '' then redis.call('EXPIRE', k, @WAKE_TTL@) end
end
-- Retire an idle machine of another tag than c (of c's key only, with same_key), so that its
-- slot goes to a machine of tag c: the slot is dropped and a wake token sent, on which the
-- machine asks for work, finds its slot gone and exits. Returns whether one was.
local function retire_idle(c, same_key)
  if c == '' then return false end
  for _, s in ipairs(redis.call('SMEMBERS', IDLE)) do
    local info = slot_get(s)
    local t = info and tag_of(info.compat) or ''
    if info and t ~= '' and not compatible(t, c)
        and (not same_key or string.sub(t, 1, 12) == string.sub(c, 1, 12)) then
      slot_drop(s)
      wake(t, 'retire')
      return true
    end
  end
  return false
end
local function attempt_update(u, n, fields)
  local raw = redis.call('HGET', ak(u), n)
  local a = raw and cjson.decode(raw) or {n=tonumber(n)}
  if not raw and not fields.launched and tonumber(n) == 1 then
    -- SUBMIT gives a job its first machine without writing the attempt (the hot path): the
    -- record is written on the attempt's first change, from what the job's record holds
    -- (unless the change is a launch: a slot taken, or a warm machine taking the job).
    local st = redis.call('HMGET', jk(u), 'slot', 'created', 'need')
    if st[1] == u..'-1' then
      local c, m = string.match(st[3] or '', '(%d+):(%d+)')
      a.launched, a.slot, a.cpus, a.mem = tonumber(st[2]), st[1], tonumber(c), tonumber(m)
    end
  end
  for k, v in pairs(fields) do a[k] = v end
  redis.call('HSET', ak(u), n, cjson.encode(a))
  redis.call('EXPIRE', ak(u), tonumber(redis.call('HGET', jk(u), 'ttl')) or @TTL@)
  return a
end
-- Running aggregates for /metrics, in the pool's stats hash (fields in balloons.store.keys):
-- each change that ends an attempt or a job adds to them, so that a scrape reads a few hashes,
-- never the jobs. A task's name is taken from the payload when it is one balloons could have
-- written (else '?'), so that a record altered in Redis adds no label. The writes are
-- pcalls: a stats hash altered in Redis (a field that holds no number, another type) loses
-- that figure, never the change the script makes.
local function stat_task(payload)
  local at = string.find(payload or '', '"task":', 1, true)
  local name = at and string.match(payload, '^"([%w_.:-]+)"', at + 7)
  if name and #name <= 200 then return name end
  return '?'
end
-- Sums are whole milliseconds (HINCRBY is cheaper than HINCRBYFLOAT on every job's path).
local function stat_add(f, v)
  v = tonumber(v)
  if v and v >= 0 and v < 1e9 then
    redis.pcall('HINCRBY', STATS, f, math.floor(v * 1000 + 0.5))
  end
end
local function stat_observe(kind, task, v)
  v = tonumber(v)
  if not v or not (v >= 0 and v < 1e9) then return end
  BUCKETS = BUCKETS or {@STAT_BUCKETS@}  -- made once per script run, when used
  local b = #BUCKETS + 1
  for i = 1, #BUCKETS do
    if v <= BUCKETS[i] then b = i; break end
  end
  redis.pcall('HINCRBY', STATS, kind..':'..b..':'..task, 1)
  redis.pcall('HINCRBY', STATS, kind..':s:'..task, math.floor(v * 1000 + 0.5))
end
-- Billed machine-seconds v of size c:m, ended now, added to this hour's place in the pool's
-- spend hash (a ring of @SPEND_HOURS@ hours, fields in balloons.store.keys): the first
-- attempt to end in a new hour starts its place again, so the hash never grows.
local function stat_spend(c, m, v)
  v = tonumber(v)
  if not v or not (v >= 0 and v < 1e9) then return end
  local hour = math.floor(NOW / 3600)
  local f = c..':'..m..':'..(hour % @SPEND_HOURS@)
  local ms = math.floor(v * 1000 + 0.5)
  if tonumber(redis.pcall('HGET', SPEND, f..':h')) == hour then
    redis.pcall('HINCRBY', SPEND, f, ms)
  else
    redis.pcall('HSET', SPEND, f, ms, f..':h', hour)
  end
end
-- An attempt a ended now: its run time when it started, and its machine's
-- seconds from its launch when a machine ran it (one that never claimed it is not billed),
-- in total and by the hour.
local function stat_attempt(task, a)
  local started = tonumber(a.started)
  if not started then return end
  local from = tonumber(a.launched) or started
  stat_observe('run', task, NOW - started)  -- its sum is the task-seconds
  local c, m = math.floor(tonumber(a.cpus) or @CPUS@), math.floor(tonumber(a.mem) or @MEM@)
  stat_add('ms:'..c..':'..m..':'..task, NOW - from)
  stat_spend(c, m, NOW - from)
end
-- A job ended now for good: counted by status and reason, with its queue wait (created to
-- first start) and its time from submit to end.
local function stat_end(task, status, reason, created, started)
  redis.pcall('HINCRBY', STATS, 'n:'..status..':'..(reason or '')..':'..task, 1)
  created = tonumber(created)
  if not created then return end
  stat_observe('e2e', task, NOW - created)
  if tonumber(started) then stat_observe('queue', task, tonumber(started) - created) end
end
local function need_of(u)
  local need = redis.call('HGET', jk(u), 'need') or '@CPUS@:@MEM@'
  local c, m = string.match(need, '(%d+):(%d+)')
  return tonumber(c) or @CPUS@, tonumber(m) or @MEM@
end
local function fits(info, u)
  local c, m = need_of(u)
  return (tonumber(info.cpus) or 0) >= c and (tonumber(info.mem) or 0) >= m
end
-- How many idle machines could run a job of tag t needing c cpus and m MB, counting no
-- further than limit + 1 (nil: all).
local function idle_fit_count(c, m, limit, t)
  local idle = redis.call('SMEMBERS', IDLE)
  if #idle == 0 or (limit and #idle <= limit) then return #idle end
  local n = 0
  for _, s in ipairs(idle) do
    local info = slot_get(s)
    if info and (tonumber(info.cpus) or 0) >= c and (tonumber(info.mem) or 0) >= m
        and compatible(t, tag_of(info.compat)) then
      n = n + 1
      if limit and n > limit then return n end
    end
  end
  return n
end
-- The first queued job that a machine of tag t may take and no idle machine will take, for a
-- launch: each idle machine takes the first queued job of its tag that fits it (TAKE), so the
-- jobs in line, from the head, are each given the smallest idle machine left that may take
-- them. At most 50 idle machines are counted; nil when they would take every job up to last.
local function untaken_job(t, last)
  local free = {}
  for _, s in ipairs(redis.call('SMEMBERS', IDLE)) do
    local info = slot_get(s)
    if info then
      free[#free + 1] = {tonumber(info.cpus) or 0, tonumber(info.mem) or 0, tag_of(info.compat)}
    end
    if #free == 50 then break end
  end
  for _, v in ipairs(redis.call('ZRANGE', QUEUE, 0, 99)) do
    if v == last or redis.call('HGET', jk(v), 'status') == 'QUEUED' then
      local jt, c, m = job_tag(v), need_of(v)
      local best
      for i, f in ipairs(free) do
        if f[1] >= c and f[2] >= m and compatible(jt, f[3]) and (not best or f[1] < free[best][1]
            or (f[1] == free[best][1] and f[2] < free[best][2])) then
          best = i
        end
      end
      if best then
        table.remove(free, best)
      elseif compatible(jt, t) then
        return v
      end
    end
    if v == last then return nil end
  end
  return nil
end
local function enqueue(u)
  local score = redis.call('HGET', jk(u), 'qscore') or NOW
  redis.call('ZADD', QUEUE, score, u)
  redis.call('HSET', jk(u), 'status', 'QUEUED')
  redis.call('HDEL', jk(u), 'due', 'slot', 'machine')
  if redis.call('SCARD', IDLE) > 0 then wake(job_tag(u), u) end
end
-- Give job u a new slot (a machine to be launched for it, of the job's tag, else of tag t).
-- The caller checked the cap. Returns what the launcher needs: {slot, ulid, attempt, cpus,
-- memory_mb}. An attempt that is not a number (a record altered in Redis) counts as 1: its
-- launch is refused when its record does not verify, as any altered record's.
local function take_slot(u, attempt, t)
  attempt = string.match(tostring(attempt), '^%d+$') or '1'
  local slot = u..'-'..attempt
  local c, m = need_of(u)
  local jt = job_tag(u)
  redis.call('ZADD', SLOTS, NOW + cfg('boot', @BOOT@), slot)
  slot_put(slot, {job=u, attempt=tonumber(attempt), cpus=c, mem=m, state='starting', since=NOW,
    machine='', compat=(jt ~= '' and jt or t or '')})
  redis.call('HSET', jk(u), 'status', 'STARTING', 'slot', slot)
  redis.call('HDEL', jk(u), 'due')
  attempt_update(u, attempt, {launched=NOW, slot=slot, cpus=c, mem=m})
  return {slot, u, tostring(attempt), tostring(c), tostring(m)}
end
-- Each attempt runs at most once: a job's runs key holds 'CLAIMED ENDED', the highest attempt
-- claimed and the highest ended (0 0 when there is none, or it is not one balloons wrote). It
-- is kept as long as the job's record may still be run (the TTL its signed payload names: the
-- worker refuses the record later) and then some, for clocks that disagree.
local function runs_read(raw)
  local c, e = string.match(raw or '', '^(%d+) (%d+)$')
  return tonumber(c) or 0, tonumber(e) or 0
end
local function runs_get(u)
  local ok, raw = pcall(redis.call, 'GET', rk(u))
  return runs_read(ok and raw or '')
end
-- Write 'CLAIMED ENDED' for job u in one command; returns what the key held (claimed, ended,
-- the raw value to put back when the caller refuses after all, and the expiry).
local function runs_swap(u, claimed, ended, payload)
  local at = string.find(payload or '', '"ttl":', 1, true)  -- a plain find: no pattern scan
  local ttl = at and tonumber(string.match(payload, '^%d+', at + 6))
    or tonumber(redis.call('HGET', jk(u), 'ttl')) or @TTL@
  local keep = math.floor(math.max(0, math.min(ttl, 1e9))) + @KEEP@
  local ok, old = pcall(redis.call, 'SET', rk(u), claimed..' '..ended, 'EX', keep, 'GET')
  if not ok then  -- not a string: not one balloons wrote
    redis.call('SET', rk(u), claimed..' '..ended, 'EX', keep)
    old = false
  end
  local c, e = runs_read(old or '')
  return c, e, old, keep
end
-- Whether attempt n of job u may be claimed now (no machine claimed it, and neither it nor a
-- later attempt ended); if so the claim is recorded. (A claim of n follows the end of n - 1.)
local function first_claim(u, n, payload)
  n = tonumber(n)
  if not n then return false end
  local c, e, old, keep = runs_swap(u, n, n - 1, payload)
  if c < n and e < n then return true end
  redis.call('SET', rk(u), old, 'EX', keep)
  return false
end
-- A job that ends with a callback (its record's 'hook' field, which the job service's
-- HOOK_REGISTER sets beside its hook record) is made due in its pool's outbox, where the
-- service finds the deliveries to make. The callers read the field with the record's others.
local function hook_end(u)
  redis.call('ZADD', OUTBOX, NOW, u)
end
-- A record put back to run an attempt that already ran or ended (a replay) is not run again:
-- the job ends FAILED, record_invalid, and its waiters are woken.
local function refuse_replay(u)
  local J = jk(u)
  local st = redis.call('HMGET', J, 'payload', 'created', 'started', 'hook')
  stat_end(stat_task(st[1]), 'FAILED', 'record_invalid', st[2], st[3])
  redis.call('ZREM', QUEUE, u)
  redis.call('ZREM', DELAYED, u)
  redis.call('HSET', J, 'status', 'FAILED', 'reason', 'record_invalid', 'finished', NOW)
  redis.call('HDEL', J, 'error', 'esig', 'slot', 'machine', 'due')
  redis.call('DEL', dk(u))
  redis.call('LPUSH', dk(u), 'FAILED')
  redis.call('EXPIRE', dk(u), tonumber(redis.call('HGET', J, 'ttl')) or @TTL@)
  if st[4] then hook_end(u) end
end
-- End attempt n of job u: for good (status), or with a retry when retry_delay is not ''.
-- Returns 1 (ended), 2 (retry scheduled) or a negative guard code.
-- tag: the outcome's (the result's, else the error's); grant: the next attempt's permission
-- to run, when a retry is scheduled (both made by the caller, which holds the app's secret).
local function end_attempt(u, n, machine, status, result, err, reason, retry_delay, retry_mem,
    tag, grant)
  local J = jk(u)
  local st = redis.call('HMGET', J, 'status', 'attempt', 'machine', 'ttl', 'need', 'payload',
    'created', 'started', 'hook')
  if not st[1] then return -1 end
  if tonumber(st[2]) ~= tonumber(n) then return -2 end
  if st[1] ~= 'RUNNING' and st[1] ~= 'STARTING' then return -3 end
  if machine ~= '' and st[3] and st[3] ~= '' and st[3] ~= machine then return -4 end
  -- An attempt ends once: a record put back to an attempt that ended (a replay) earns it no
  -- retry; it ends record_invalid.
  local _, ended, was, keep = runs_swap(u, tonumber(n), tonumber(n), st[6])
  if ended >= tonumber(n) then
    redis.call('SET', rk(u), was, 'EX', keep)
    refuse_replay(u)
    return -3
  end
  local a = {ended=NOW, outcome=status}
  if reason ~= '' then a.reason = reason end
  if err ~= '' then
    -- The human message stays with its attempt (the job's error is only its last one's):
    -- the error's summary, with the tag its writer gave it for this attempt.
    local ok, e = pcall(cjson.decode, err)
    if ok and type(e) == 'table' and type(e.summary) == 'string' and e.summary ~= '' then
      a.message = e.summary
      if type(e.msig) == 'string' then a.msig = e.msig end
    end
  end
  if machine ~= '' then a.machine = machine end
  local task = stat_task(st[6])
  stat_attempt(task, attempt_update(u, n, a))
  local ttl = tonumber(st[4]) or @TTL@
  if status == 'FAILED' and retry_delay ~= '' then
    redis.pcall('HINCRBY', STATS, 'retry:'..reason..':'..task, 1)
    local next_n = tonumber(n) + 1
    redis.call('HSET', J, 'attempt', next_n, 'reason', reason, 'error', err, 'esig', tag,
      'grant', grant)
    if retry_mem ~= '' then
      -- 'FACTOR MAX': the next attempt's machine gets FACTOR times the memory, up to MAX.
      local c, m = string.match(st[5] or '@CPUS@:@MEM@', '(%d+):(%d+)')
      local factor, cap = string.match(retry_mem, '(%S+) (%S+)')
      local mem = math.min(tonumber(cap), math.floor(tonumber(m) * tonumber(factor)))
      redis.call('HSET', J, 'need', c..':'..math.max(tonumber(m), mem))
    end
    local delay = tonumber(retry_delay) or 0
    redis.call('HDEL', J, 'slot', 'machine')
    if delay > 0 then
      redis.call('HSET', J, 'status', 'QUEUED', 'due', NOW + delay)
      redis.call('ZADD', DELAYED, NOW + delay, u)
    else
      enqueue(u)
    end
    redis.call('EXPIRE', J, ttl)
    return 2
  end
  redis.call('HSET', J, 'status', status, 'finished', NOW, 'reason', reason)
  stat_end(task, status, reason, st[7], st[8])
  if status == 'SUCCEEDED' then
    redis.call('HSET', J, 'result', result, 'rsig', tag)
  else
    redis.call('HSET', J, 'error', err, 'esig', tag)
  end
  redis.call('DEL', dk(u))
  redis.call('LPUSH', dk(u), status)
  redis.call('EXPIRE', J, ttl)
  redis.call('EXPIRE', dk(u), ttl)
  if st[9] then hook_end(u) end
  return 1
end
local function promote_due(limit)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', NOW, 'LIMIT', 0, limit)
  for _, u in ipairs(due) do
    redis.call('ZREM', DELAYED, u)
    if redis.call('HGET', jk(u), 'status') == 'QUEUED' then enqueue(u) end
  end
  return #due
end
