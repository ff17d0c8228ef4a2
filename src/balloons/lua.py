"""The Lua scripts behind every multi-key state change. Each touches the keys of one pool only.

Scripts are plain strings so that both redis-py (client side) and the worker's small RESP
client can load them. Every script is given its keys in ``KEYS`` by
:func:`balloons.keys.script_keys`: the pool's keys (``QUEUE`` is ``KEYS[1]``, so a cluster
routes the script to the pool's hash slot), then the keys of the jobs its caller names. It
takes the pool's key tag ``NS:{POOL}`` as ``ARGV[1]``; ``ARGV[2]`` is the caller's clock, which
no script reads. The scripts that find jobs in their pool's queue, delayed set or slot table
(``SUBMIT``, ``TAKE``, ``FILL``, ``ASSIGN``) make those jobs' key names from the tag with the
forms of :class:`balloons.keys.PoolKeys` (``jk``, ``ak``, ``dk``, made from there): keys of
the same hash slot. They say so on their first line, for servers that refuse keys not declared
(Dragonfly's ``allow-undeclared-keys``; a Lua comment elsewhere). The others touch only the
keys they are given (``tests/test_cluster.py`` checks every key each script touches).

One clock: every time a script writes or compares (leases, deadlines, due times, ``since``,
``created``, ``finished``) is ``NOW``, the Redis server's ``TIME``, read in the script (a
server that replicates script effects allows it before writes: Redis 5+, Valkey). A time the
caller gives as ``+SECONDS`` is that many seconds after ``NOW``; callers' clocks only decide
how long they sleep.

Negative codes mean a guard refused: ``-1`` the job record (or the slot) is gone, ``-2`` the
job has moved on to another attempt, ``-3`` the job is not in a state that allows the change
(or its attempt already ended), ``-4`` another machine holds the attempt.

Each attempt of a job is claimed at most once and ends at most once: the job's ``runs`` key
(highest attempt claimed, highest ended) is checked and written by the same scripts that claim
(:data:`CLAIM`, :data:`TAKE`) and end (``end_attempt``, :data:`CANCEL`) it, so that a finished
job's record put back in Redis is not run again.

A *slot* is one machine's right to exist in its pool: ``ZCARD slots`` never exceeds the
pool's cap, because slots are only added by :data:`SUBMIT` and :data:`FILL`, each of
which checks the cap in the same script (:data:`UNPIN`, :data:`ASSIGN` and :data:`RESLOT`
rename a slot in place). A pool's stopped standby machines live in its ``standby`` hash and
hold no slot until :data:`ASSIGN` gives them one.
"""

from __future__ import annotations

from .keys import IDEM_SCRIPT_KEY, JOB_SCRIPT_KEYS, POOL_SCRIPT_KEYS, PoolKeys

#: Seconds past a record's TTL (counted from its creation, or from when its retry was granted)
#: that a worker still runs it, for clocks that disagree; older, it is refused as a replay. A
#: job's runs key is kept twice this long past its TTL.
FRESH_SLACK = 600

# Shared by every script: key names, the slot table, the attempt log, and the one place where
# an attempt ends (for good, or with a retry scheduled).
_PRELUDE = """
local T = ARGV[1]
local NOW = (function() local t = redis.call('TIME'); return t[1] + t[2] / 1e6 end)()
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
  for _, k in ipairs({'job', 'machine', 'state'}) do
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
  redis.call('EXPIRE', ak(u), tonumber(redis.call('HGET', jk(u), 'ttl')) or 86400)
end
local function need_of(u)
  local need = redis.call('HGET', jk(u), 'need') or '1:256'
  local c, m = string.match(need, '(%d+):(%d+)')
  return tonumber(c) or 1, tonumber(m) or 256
end
local function fits(info, u)
  local c, m = need_of(u)
  return (tonumber(info.cpus) or 0) >= c and (tonumber(info.mem) or 0) >= m
end
-- How many idle machines could run a job needing c cpus and m MB, counting no further than
-- limit + 1 (nil: all).
local function idle_fit_count(c, m, limit)
  local idle = redis.call('SMEMBERS', IDLE)
  if #idle == 0 or (limit and #idle <= limit) then return #idle end
  local n = 0
  for _, s in ipairs(idle) do
    local info = slot_get(s)
    if info and (tonumber(info.cpus) or 0) >= c and (tonumber(info.mem) or 0) >= m then
      n = n + 1
      if limit and n > limit then return n end
    end
  end
  return n
end
local function enqueue(u)
  local score = redis.call('HGET', jk(u), 'qscore') or NOW
  redis.call('ZADD', QUEUE, score, u)
  redis.call('HSET', jk(u), 'status', 'QUEUED')
  redis.call('HDEL', jk(u), 'due', 'slot', 'machine')
  if redis.call('SCARD', IDLE) > 0 then
    redis.call('LPUSH', WAKE, u)
    redis.call('LTRIM', WAKE, 0, 999)
  end
end
-- Give job u a new slot (a machine to be launched for it). The caller checked the cap.
-- Returns what the launcher needs: {slot, ulid, attempt, cpus, memory_mb}.
local function take_slot(u, attempt)
  local slot = u..'-'..attempt
  local c, m = need_of(u)
  redis.call('ZADD', SLOTS, NOW + cfg('boot', 60), slot)
  slot_put(slot, {job=u, attempt=tonumber(attempt), cpus=c, mem=m, state='starting', since=NOW,
    machine=''})
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
    or tonumber(redis.call('HGET', jk(u), 'ttl')) or 86400
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
-- A record put back to run an attempt that already ran or ended (a replay) is not run again:
-- the job ends FAILED, record_invalid, and its waiters are woken.
local function refuse_replay(u)
  local J = jk(u)
  redis.call('ZREM', QUEUE, u)
  redis.call('ZREM', DELAYED, u)
  redis.call('HSET', J, 'status', 'FAILED', 'reason', 'record_invalid', 'finished', NOW)
  redis.call('HDEL', J, 'error', 'esig', 'slot', 'machine', 'due')
  redis.call('DEL', dk(u))
  redis.call('LPUSH', dk(u), 'FAILED')
  redis.call('EXPIRE', dk(u), tonumber(redis.call('HGET', J, 'ttl')) or 86400)
end
-- End attempt n of job u: for good (status), or with a retry when retry_delay is not ''.
-- Returns 1 (ended), 2 (retry scheduled) or a negative guard code.
-- tag: the outcome's (the result's, else the error's); grant: the next attempt's permission
-- to run, when a retry is scheduled (both made by the caller, which holds the app's secret).
local function end_attempt(u, n, machine, status, result, err, reason, retry_delay, retry_mem,
    tag, grant)
  local J = jk(u)
  local st = redis.call('HMGET', J, 'status', 'attempt', 'machine', 'ttl', 'need', 'payload')
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
  attempt_update(u, n, a)
  local ttl = tonumber(st[4]) or 86400
  if status == 'FAILED' and retry_delay ~= '' then
    local next_n = tonumber(n) + 1
    redis.call('HSET', J, 'attempt', next_n, 'reason', reason, 'error', err, 'esig', tag,
      'grant', grant)
    if retry_mem ~= '' then
      -- 'FACTOR MAX': the next attempt's machine gets FACTOR times the memory, up to MAX.
      local c, m = string.match(st[5] or '1:256', '(%d+):(%d+)')
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
  if status == 'SUCCEEDED' then
    redis.call('HSET', J, 'result', result, 'rsig', tag)
  else
    redis.call('HSET', J, 'error', err, 'esig', tag)
  end
  redis.call('DEL', dk(u))
  redis.call('LPUSH', dk(u), status)
  redis.call('EXPIRE', J, ttl)
  redis.call('EXPIRE', dk(u), ttl)
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
""".replace("@KEEP@", str(2 * FRESH_SLACK))


def _key_names() -> str:
    """The prelude's key names, from :mod:`balloons.keys`: one line per key of the pool
    (``local QUEUE = KEYS[1]``, ...) and a function per kind of job key, which makes the key
    of any job of the pool from its id (``jk(u)``: the job's record, ...)."""
    lines = [f"local {name.upper()} = KEYS[{i}]\n" for i, name in enumerate(POOL_SCRIPT_KEYS, 1)]
    sample = PoolKeys("NS", "POOL")
    for fn, method in (*JOB_SCRIPT_KEYS, IDEM_SCRIPT_KEY):
        # Each is the pool's tag, a suffix, then the id.
        suffix = getattr(sample, method)("\0").removeprefix(sample.tag).removesuffix("\0")
        lines.append(f"local function {fn}(u) return T..'{suffix}'..u end\n")
    return "".join(lines)


_PRELUDE = _PRELUDE.replace("--@keys\n", _key_names(), 1)
#: The first line of a script that makes key names it was not given (jobs it finds in its
#: pool): a Lua comment, read by Dragonfly, which otherwise refuses undeclared keys.
_FINDS_JOBS = "--!df flags=allow-undeclared-keys\n"


def _split_prelude() -> tuple[str, dict[str, str]]:
    """The prelude as its header (the variables every script uses) and its functions, each
    with the comments above it: name -> code, in prelude order. Plain string work, no regular
    expression: every machine imports this module."""
    lines = _PRELUDE.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("local function ")]
    firsts = []
    for i in starts:
        while i > 0 and lines[i - 1].startswith("--"):
            i -= 1
        firsts.append(i)
    functions = {}
    for start, first, end in zip(starts, firsts, [*firsts[1:], len(lines)], strict=True):
        line = lines[start]
        functions[line[len("local function ") : line.index("(")]] = "".join(lines[first:end])
    return "".join(lines[: firsts[0]]), functions


_HEADER, _FUNCTIONS = _split_prelude()
#: The header's lines, each defining one name: (name, line).
_HEADER_LINES = [(line.split()[1], line) for line in _HEADER.splitlines(True) if line.strip()]


def _uses(code: str, name: str) -> bool:
    """Whether Lua ``code`` mentions the identifier ``name`` (in a string or a comment too,
    harmlessly). Plain string search, no regular expression: every machine imports this
    module, and it runs for every script at import."""
    i = code.find(name)
    while i >= 0:
        before = code[i - 1] if i else " "
        after = code[i + len(name) : i + len(name) + 1] or " "
        if not (before.isalnum() or before == "_" or after.isalnum() or after == "_"):
            return True
        i = code.find(name, i + 1)
    return False


def _script(uses: str, body: str, later: str = "", finds: bool = False) -> str:
    """A script: the prelude's header lines that it uses, the prelude functions named in
    ``uses`` (all that ``body`` calls, and all that those call: a test checks the lists),
    then ``body``. A script defines only what it uses, since every definition runs on every
    call. The functions named in ``later`` are defined where ``body`` has the line
    ``--@later`` (inside a function of the body, so that they are made only on the paths
    that call that function). ``finds``: the script makes the keys of jobs it finds in its
    pool (its first line is ``_FINDS_JOBS``)."""
    needed, deferred = set(uses.split()), set(later.split())
    code = "".join(c for name, c in _FUNCTIONS.items() if name in needed)
    if deferred:
        inner = "".join(c for name, c in _FUNCTIONS.items() if name in deferred)
        body = body.replace("--@later\n", inner, 1)
    code += body
    header = [line for name, line in _HEADER_LINES if name == "T" or _uses(code, name)]
    return (_FINDS_JOBS if finds else "") + "".join(header) + code


# ARGV: tag, now, ulid, payload, args, sig, ttl, pool config ('name value ...': cap, boot,
#       idle, min, hb, cpus, mem), due ('' = now, '+SECONDS' = from now, else an epoch time),
#       priority, cpus, memory_mb,
#       idempotency digest ('' = none)
# Returns {1, 'launch', slot, ulid, attempt, cpus, memory_mb} (the ulid is another job's when
#         older jobs wait) | {1, 'warm', ''} | {1, 'queued', position} | {1, 'delayed', ''} |
#         {2, existing ulid} | {0} (id taken); 3 instead of 1 when the pool's keys were new
#         (its first job, or a Redis that lost its data), so that the pool is listed again
# The job is placed before its record is written, so that the record is written once, with
# its final status: this is the path every job takes, and it is kept to a dozen commands.
SUBMIT = _script(
    "jk idem",
    """
local u, conf, due = ARGV[3], ARGV[8], ARGV[9]
local J = jk(u)
local ttl = tonumber(ARGV[7])
-- The functions of the rarer paths (idle machines to check, older jobs waiting), made only
-- when one of those runs.
local function slow()
--@later
  return idle_fit_count, take_slot
end
if ARGV[13] ~= '' then
  local ik = idem(ARGV[13])
  local prev = redis.call('GET', ik)
  if prev and redis.call('EXISTS', jk(prev)) == 1 then return {2, prev} end
  redis.call('SET', ik, u, 'EX', ttl)
end
-- The pool's index of jobs, which is also the guard against an id in use.
if redis.call('ZADD', JOBS, 'NX', NOW, u) == 0 then return {0} end
-- The pool's settings: the latest submitter's, written only when they changed.
local cur = redis.call('HMGET', CFG, 'conf', 'cap', 'boot')
local cap, boot = tonumber(cur[2]) or 1, tonumber(cur[3]) or 60
if cur[1] ~= conf then
  local settings = {'conf', conf}
  for name, value in string.gmatch(conf, '(%S+) (%S+)') do
    settings[#settings + 1] = name
    settings[#settings + 1] = value
    if name == 'cap' then cap = tonumber(value) or cap end
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
    'created', NOW, 'ttl', ARGV[7], 'qscore', score, 'need', c..':'..m, 'status', status,
    name or 'status', value or status)
  if ARGV[13] ~= '' then redis.call('HSET', J, 'key', ARGV[13]) end
  redis.call('EXPIRE', J, ttl)
end
if string.sub(due, 1, 1) == '+' then due = NOW + tonumber(string.sub(due, 2)) end
if due ~= '' and tonumber(due) > NOW then
  store('QUEUED', 'due', due)
  redis.call('ZADD', DELAYED, due, u)
  return {ok, 'delayed', ''}
end
local q = redis.call('ZCARD', QUEUE)
local idle = redis.call('SCARD', IDLE)
local function queue()
  store('QUEUED')
  redis.call('ZADD', QUEUE, score, u)
  if idle > 0 then
    redis.call('LPUSH', WAKE, u)
    redis.call('LTRIM', WAKE, 0, 999)
  end
end
if idle > q then
  local idle_fit_count = slow()
  if idle_fit_count(c, m, q) > q then
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
    ',"state":"starting","since":'..since..',"machine":""}')
  return {ok, 'launch', slot, u, '1', tostring(c), tostring(m)}
end
queue()
if slots < cap then
  -- Older jobs wait ahead of this one: launch for the head of the queue instead.
  local _, take_slot = slow()
  local head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
  redis.call('ZREM', QUEUE, head)
  local l = take_slot(head, redis.call('HGET', jk(head), 'attempt'))
  return {ok, 'launch', l[1], l[2], l[3], l[4], l[5]}
end
return {ok, 'queued', tostring(redis.call('ZRANK', QUEUE, u) + 1)}
""",
    later="ak cfg slot_get slot_put attempt_update need_of idle_fit_count take_slot",
    finds=True,
)

# A machine's first job, named by its handoff. ARGV: tag, now, ulid, attempt, machine, error
# and its tag (the failure recorded when the slot's entry is unreadable)
# Returns {1, payload, args, sig, heartbeat, idle, grant} or {code, status}; {-4, 'bad slot'}
# when the slot's entry was altered: the slot is freed and the attempt failed (record_invalid);
# {-5, 'replayed'} when the attempt was claimed or ended before (the record was put back): the
# job ends FAILED (record_invalid) and the machine, its slot idle, takes queued work.
CLAIM = _script(
    "jk ak dk rk cfg slot_get slot_put slot_drop attempt_update enqueue runs_read runs_swap "
    "first_claim refuse_replay end_attempt",
    """
local u, n, machine = ARGV[3], ARGV[4], ARGV[5]
local slot = u..'-'..n
local info = slot_get(slot)
if not redis.call('ZSCORE', SLOTS, slot) then return {-1, 'no slot'} end
if info == false then
  slot_drop(slot)
  end_attempt(u, n, machine, 'FAILED', '', ARGV[6], 'record_invalid', '', '', ARGV[7], '')
  return {-4, 'bad slot'}
end
if not info then return {-1, 'no slot'} end
local J = jk(u)
local st = redis.call('HMGET', J, 'status', 'attempt', 'payload', 'args', 'sig', 'started', 'slot',
  'grant')
info.machine = machine
local ok = st[1] == 'STARTING' and tonumber(st[2]) == tonumber(n) and st[7] == slot
local replayed = ok and not first_claim(u, n, st[3])
if not ok or replayed then
  info.job = ''
  info.state = 'idle'
  slot_put(slot, info)
  if replayed then
    refuse_replay(u)
    return {-5, 'replayed'}
  end
  if not st[1] then return {-1, ''} end
  if tonumber(st[2]) ~= tonumber(n) then return {-2, st[1]} end
  return {-3, st[1]}
end
info.state = 'running'
info.since = NOW
slot_put(slot, info)
redis.call('ZADD', SLOTS, 'XX', NOW + 5 * cfg('hb', 2), slot)
redis.call('HSET', J, 'status', 'RUNNING', 'machine', machine)
if not st[6] then redis.call('HSET', J, 'started', NOW) end
attempt_update(u, n, {machine=machine, started=NOW})
return {1, st[3] or '', st[4] or '', st[5] or '', tostring(cfg('hb', 2)), tostring(cfg('idle', 10)),
  st[8] or ''}
""",
)

# A warm machine asks for its next job. ARGV: tag, now, slot, machine, mode ('take' | 'release'),
#       standby ('1' when the machine stops rather than being destroyed as its worker exits)
# Returns {1, ulid, attempt, payload, args, sig, grant} | {0, idle} (wait for a wake) |
#         {-1} (the slot is gone: exit) | {-5} (slot given back: exit) |
#         {-6} (slot given back and the machine kept in the pool's standby set: exit, and its
#         machine stops until a launch starts it again)
#         A queued record of an attempt that was claimed or ended before (put back: a replay)
#         is not taken: its job ends FAILED (record_invalid).
TAKE = _script(
    "jk ak dk rk cfg slot_get slot_put slot_drop attempt_update need_of fits enqueue promote_due "
    "runs_read runs_get runs_swap first_claim refuse_replay",
    """
local slot, machine, mode = ARGV[3], ARGV[4], ARGV[5]
if not redis.call('ZSCORE', SLOTS, slot) then
  redis.call('HDEL', SLOT, slot)
  redis.call('SREM', IDLE, slot)
  return {-1}
end
local info = slot_get(slot) or {cpus=1, mem=256}
info.machine = machine
-- A warm machine's idle time belongs to its pool, not to a job: count it per machine size.
if info.state == 'idle' and tonumber(info.since) then
  redis.call('HINCRBYFLOAT', USAGE, 'idle:'..(info.cpus or 1)..':'..(info.mem or 256),
    math.max(0, NOW - tonumber(info.since)))
  info.since = NOW
end
-- A job this machine already holds (the reply to an earlier TAKE or CLAIM was lost to a
-- dropped connection) is returned again rather than stranded: only while its claim stands and
-- it has not ended (else it is a finished job's record put back on this machine: refused).
if info.job and info.job ~= '' then
  local cur = redis.call('HMGET', jk(info.job), 'status', 'attempt', 'payload', 'args', 'sig',
    'slot', 'machine', 'grant')
  if cur[1] == 'RUNNING' and cur[6] == slot and cur[7] == machine
      and tonumber(cur[2]) == tonumber(info.attempt) then
    local claimed, ended = runs_get(info.job)
    if claimed == tonumber(cur[2]) and ended < claimed then
      return {1, info.job, cur[2], cur[3] or '', cur[4] or '', cur[5] or '', cur[8] or ''}
    end
    refuse_replay(info.job)
  end
end
promote_due(50)
for _, u in ipairs(redis.call('ZRANGE', QUEUE, 0, 49)) do
  local J = jk(u)
  local st = redis.call('HMGET', J, 'status', 'attempt', 'payload', 'args', 'sig', 'started',
    'grant')
  if st[1] ~= 'QUEUED' then
    redis.call('ZREM', QUEUE, u)
  elseif not fits(info, u) then
    -- left for a machine that fits it
  elseif not first_claim(u, st[2], st[3]) then
    refuse_replay(u)  -- an attempt claimed or ended before, put back in the queue: a replay
  else
    redis.call('ZREM', QUEUE, u)
    redis.call('HSET', J, 'status', 'RUNNING', 'machine', machine, 'slot', slot)
    if not st[6] then redis.call('HSET', J, 'started', NOW) end
    attempt_update(u, st[2], {machine=machine, slot=slot, launched=NOW, started=NOW, warm=true,
      cpus=tonumber(info.cpus) or 1, mem=tonumber(info.mem) or 256})
    info.job, info.attempt, info.state, info.since = u, tonumber(st[2]), 'running', NOW
    -- The last job's cancel and deadline are not this one's (its heartbeat sends its own).
    info.cancel, info.deadline, info.capped = nil, nil, nil
    slot_put(slot, info)
    redis.call('SREM', IDLE, slot)
    redis.call('ZADD', SLOTS, 'XX', NOW + 5 * cfg('hb', 2), slot)
    return {1, u, st[2], st[3] or '', st[4] or '', st[5] or '', st[7] or ''}
  end
end
if mode == 'release' and redis.call('ZCARD', SLOTS) > cfg('min', 0) then
  slot_drop(slot)
  -- A machine of its own slot (ID-0) that stops when it exits is kept for a later launch to
  -- start again, while the pool keeps fewer stopped machines than its standby setting.
  local own = string.match(slot, '^(.+)-0$')
  if ARGV[6] == '1' and own and machine ~= ''
      and redis.call('HLEN', STANDBY) < cfg('standby', 0) then
    redis.call('HSET', STANDBY, machine, cjson.encode({slot=own, cpus=tonumber(info.cpus) or 1,
      mem=tonumber(info.mem) or 256, since=NOW}))
    return {-6}
  end
  return {-5}
end
info.job, info.attempt, info.state, info.since = '', 0, 'idle', NOW
info.cancel, info.deadline, info.capped = nil, nil, nil
slot_put(slot, info)
redis.call('SADD', IDLE, slot)
redis.call('ZADD', SLOTS, 'XX', NOW + 5 * cfg('hb', 2), slot)
return {0, tostring(cfg('idle', 10))}
""",
    finds=True,
)

# ARGV: tag, now, slot, ulid ('' = none), attempt, deadline ('' = none, '+SECONDS' = that long
#       from now), capped ('1' when the deadline is the job's max_cost)
# Returns {1, job status | 'GONE' | 'MOVED' | '', heartbeat, idle} or {-1} when the slot is
# gone. The pool's heartbeat and idle timeout ride along: a machine launched with no job of its
# own (ID-0, FRESH-0) never runs CLAIM, which tells the others.
HEARTBEAT = _script(
    "jk cfg slot_get slot_put",
    """
local slot, u = ARGV[3], ARGV[4]
if not redis.call('ZSCORE', SLOTS, slot) then return {-1} end
local hb = cfg('hb', 2)
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
return {1, status, tostring(hb), tostring(cfg('idle', 10))}
""",
)

# The worker records the end of an attempt.
# ARGV: tag, now, ulid, attempt, machine, status, result, error, reason, retry delay ('' = none),
#       retry memory ('FACTOR MAX', '' = same), the result's or the error's tag, the retry's
#       grant ('' = none)
FINISH = _script(
    "jk ak dk rk attempt_update enqueue runs_read runs_swap refuse_replay end_attempt",
    """
return end_attempt(ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10],
  ARGV[11], ARGV[12], ARGV[13])
""",
)

# A slot's machine is gone (it died, or its lease ran out): free the slot and end its job's
# attempt with the reason. ARGV: tag, now, slot, ulid, attempt, error, reason, retry delay,
# retry memory, only-if-expired ('1' | '0'), the error's tag, the retry's grant
# Returns {1, ulid, attempt, machine, ended} | {0} (nothing to do) | {-2} (the slot moved on to
# another job: read it again).
LOST = _script(
    "jk ak dk rk slot_get slot_drop attempt_update enqueue runs_read runs_swap refuse_replay "
    "end_attempt",
    """
local slot = ARGV[3]
local lease = redis.call('ZSCORE', SLOTS, slot)
if not lease then redis.call('HDEL', SLOT, slot); return {0} end
if ARGV[10] == '1' and tonumber(lease) > NOW then return {0} end
local info = slot_get(slot)
local altered = info == false
if altered then
  -- An altered entry: the slot's name tells the attempt it was launched for, if still its.
  local ju, jn = string.match(slot, '^(.+)-(%d+)$')
  info = {job=''}
  if ju and jn ~= '0' and redis.call('HGET', jk(ju), 'slot') == slot then
    info = {job=ju, attempt=tonumber(jn)}
  end
end
info = info or {job=''}
local u = info.job or ''
if not altered and (u ~= ARGV[4] or (u ~= '' and tostring(info.attempt) ~= ARGV[5])) then
  return {-2}
end
slot_drop(slot)
local ended = 0
if u ~= '' then
  ended = end_attempt(u, info.attempt, '', 'FAILED', '', ARGV[6], ARGV[7], ARGV[8], ARGV[9],
    ARGV[11], ARGV[12])
end
return {1, u, tostring(info.attempt or 0), info.machine or '', ended}
""",
)

# ARGV: tag, now, ulid. The job keeps no error (an earlier attempt's is dropped): readers say
# it was cancelled. Its attempt counts as ended, so that the record put back is not run.
# Returns {1, previous status, slot, machine} or {code, status}.
CANCEL = _script(
    "jk ak dk rk slot_get slot_put attempt_update runs_read runs_get runs_swap",
    """
local u = ARGV[3]
local J = jk(u)
local st = redis.call('HMGET', J, 'status', 'attempt', 'slot', 'machine', 'ttl', 'payload')
if not st[1] then return {-1, ''} end
if st[1] == 'SUCCEEDED' or st[1] == 'FAILED' or st[1] == 'CANCELLED' then return {-3, st[1]} end
redis.call('ZREM', QUEUE, u)
redis.call('ZREM', DELAYED, u)
redis.call('HSET', J, 'status', 'CANCELLED', 'finished', NOW, 'reason', 'cancelled')
redis.call('HDEL', J, 'error', 'esig')
local claimed, ended = runs_get(u)
if ended < (tonumber(st[2]) or 0) then runs_swap(u, claimed, tonumber(st[2]), st[6]) end
if st[1] == 'RUNNING' or st[1] == 'STARTING' then
  attempt_update(u, st[2], {ended=NOW, outcome='CANCELLED', reason='cancelled'})
  local info = st[3] and slot_get(st[3])
  if info and info.job == u then info.cancel = NOW; slot_put(st[3], info) end
end
local ttl = tonumber(st[5]) or 86400
redis.call('DEL', dk(u))
redis.call('LPUSH', dk(u), 'CANCELLED')
redis.call('EXPIRE', dk(u), ttl)
redis.call('EXPIRE', J, ttl)
return {1, st[1], st[3] or '', st[4] or ''}
""",
)

# The supervisor's step for one pool: promote due jobs, then take slots for queued work under
# the cap (beyond what idle machines and machines on their way with no job of their own, which
# take queued work when they boot, will take) and for the warm floor.
# ARGV: tag, now, fresh floor ids (ULIDs, space separated)
# Returns a flat list of launches, five items each: slot, ulid (a fresh id and attempt 0 for a
# floor machine), attempt, cpus, memory_mb.
FILL = _script(
    "jk ak cfg slot_get slot_put attempt_update need_of enqueue take_slot promote_due",
    """
promote_due(1000)
local out = {}
local cap = cfg('cap', 1)
local spare = redis.call('SCARD', IDLE)
for _, s in ipairs(redis.call('ZRANGE', SLOTS, 0, -1)) do
  local info = slot_get(s)
  if info and info.state == 'starting' and (info.job or '') == '' then spare = spare + 1 end
end
while redis.call('ZCARD', SLOTS) < cap do
  local q = redis.call('ZRANGE', QUEUE, spare, spare)
  local u = q[1]
  if not u then break end
  redis.call('ZREM', QUEUE, u)
  if redis.call('HGET', jk(u), 'status') == 'QUEUED' then
    for _, x in ipairs(take_slot(u, redis.call('HGET', jk(u), 'attempt'))) do
      table.insert(out, x)
    end
  end
end
local floor = math.min(cfg('min', 0), cap)
for id in string.gmatch(ARGV[3], '%S+') do
  if redis.call('ZCARD', SLOTS) >= floor then break end
  local slot = id..'-0'
  redis.call('ZADD', SLOTS, NOW + cfg('boot', 60), slot)
  slot_put(slot, {job='', attempt=0, cpus=cfg('cpus', 1), mem=cfg('mem', 256), state='starting',
    since=NOW, machine=''})
  for _, x in ipairs({slot, id, '0', tostring(cfg('cpus', 1)), tostring(cfg('mem', 256))}) do
    table.insert(out, x)
  end
end
return out
""",
    finds=True,
)

# The launch of a new slot's machine has to wait (a rate limit): the job no longer waits for
# that one machine but goes back to the queue (its place in line is kept), where whichever
# machine of the pool is free first takes it. The slot stays, with no job, under a fresh name
# (ID-0, as a warm-floor machine's), so that the job may be given a slot again; its machine
# takes queued work when it boots. ARGV: tag, now, slot, ulid, fresh id
# Returns 1, or 0 when the job or the slot has moved on (the launch then stays as it was).
UNPIN = _script(
    "jk slot_get slot_put slot_drop enqueue",
    """
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
""",
)

# The client is about to launch the machine of a slot it was granted a while ago (the launch
# waited for a rate limit): renew the slot's boot lease while the slot still waits for that
# machine. A slot with no job (see UNPIN) is given back instead when nothing is queued any
# more: its machine would find no work. ARGV: tag, now, slot
# Returns 1 (launch it), or 0 when the slot is gone, claimed, or given back.
BOOTING = _script(
    "cfg slot_get slot_drop",
    """
local slot = ARGV[3]
if not redis.call('ZSCORE', SLOTS, slot) then return 0 end
local info = slot_get(slot)
if not info or info.state ~= 'starting' then return 0 end
if (info.job or '') == '' and redis.call('ZCARD', QUEUE) == 0 then
  slot_drop(slot)
  return 0
end
redis.call('ZADD', SLOTS, 'XX', NOW + cfg('boot', 60), slot)
return 1
""",
)

# A launch in a pool with standby machines. The slot's job (if it still waits for this slot)
# goes back to the queue, as with UNPIN, and the slot becomes a machine's own, with no job
# (ID-0, as a warm-floor machine's, so that the machine can stop and start again under the
# same handoff): the stopped machine of the pool's standby set that fits the slot's size most
# closely (taken out of the set in this script, so no two launchers start the same machine),
# else a machine to create, under the name FRESH-0 (a jobless ID-0 slot keeps its name).
# The slot count does not change: the cap holds. ARGV: tag, now, slot, fresh id
# Returns {1, 'start', machine, slot ulid, cpus, mem} | {1, 'create', slot ulid, cpus, mem} |
#         {0} (the slot is gone or its machine already came: nothing to launch)
ASSIGN = _script(
    "jk cfg slot_get slot_put slot_drop enqueue",
    """
local slot, fresh = ARGV[3], ARGV[4]
local info = slot_get(slot)
local lease = redis.call('ZSCORE', SLOTS, slot)
if not info or not lease or info.state ~= 'starting' then return {0} end
local u = info.job or ''
if u ~= '' then
  local st = redis.call('HMGET', jk(u), 'status', 'slot')
  if st[1] == 'STARTING' and st[2] == slot then enqueue(u) end
end
local c, m = tonumber(info.cpus) or 1, tonumber(info.mem) or 256
local best, pick
local flat = redis.call('HGETALL', STANDBY)
for i = 1, #flat, 2 do
  local ok, rec = pcall(cjson.decode, flat[i + 1])
  if not ok or type(rec) ~= 'table' or type(rec.slot) ~= 'string' or not tonumber(rec.cpus)
      or not tonumber(rec.mem) or redis.call('ZSCORE', SLOTS, rec.slot..'-0') then
    redis.call('HDEL', STANDBY, flat[i])  -- unreadable, or its slot is taken: not usable
  elseif tonumber(rec.cpus) >= c and tonumber(rec.mem) >= m then
    local key = {tonumber(rec.mem), tonumber(rec.cpus), tonumber(rec.since) or 0}
    if not pick or key[1] < pick[1] or (key[1] == pick[1] and (key[2] < pick[2]
        or (key[2] == pick[2] and key[3] < pick[3]))) then
      best, pick = flat[i], key
    end
  end
end
slot_drop(slot)
info.job, info.attempt, info.state, info.since, info.machine = '', 0, 'starting', NOW, ''
info.cancel, info.deadline, info.capped = nil, nil, nil
if best then
  local rec = cjson.decode(redis.call('HGET', STANDBY, best))
  redis.call('HDEL', STANDBY, best)
  info.cpus, info.mem, info.machine = tonumber(rec.cpus), tonumber(rec.mem), best
  redis.call('ZADD', SLOTS, NOW + cfg('boot', 60), rec.slot..'-0')
  slot_put(rec.slot..'-0', info)
  return {1, 'start', best, rec.slot, tostring(info.cpus), tostring(info.mem)}
end
local own = string.match(slot, '^(.+)-0$')
if u ~= '' or not own then own = fresh end
redis.call('ZADD', SLOTS, lease, own..'-0')
slot_put(own..'-0', info)
return {1, 'create', own, tostring(c), tostring(m)}
""",
    finds=True,
)

# The start of a stopped machine taken from the standby set failed (the machine is gone, or
# the API refused): its slot, still waiting for that machine, is renamed FRESH-0 with no
# machine, for a new machine to be created in its place. ARGV: tag, now, slot, machine, fresh id
# Returns 1, or 0 when the slot has moved on (its machine did start and took it, or it is gone).
RESLOT = _script(
    "cfg slot_get slot_put slot_drop",
    """
local slot, machine, fresh = ARGV[3], ARGV[4], ARGV[5]..'-0'
local info = slot_get(slot)
local lease = redis.call('ZSCORE', SLOTS, slot)
if not info or not lease or info.state ~= 'starting' or info.machine ~= machine then return 0 end
slot_drop(slot)
redis.call('HDEL', STANDBY, machine)
info.machine, info.since = '', NOW
redis.call('ZADD', SLOTS, NOW + cfg('boot', 60), fresh)
slot_put(fresh, info)
return 1
""",
)

# Trim a pool's standby set to ``keep`` machines (the most recently stopped stay); the caller
# destroys the machines dropped. ARGV: tag, now, keep ('' = the pool's standby setting)
# Returns the ids of the machines dropped.
SHED = _script(
    "cfg",
    """
local keep = tonumber(ARGV[3]) or cfg('standby', 0)
local flat = redis.call('HGETALL', STANDBY)
local all = {}
for i = 1, #flat, 2 do
  local ok, rec = pcall(cjson.decode, flat[i + 1])
  local since = ok and type(rec) == 'table' and tonumber(rec.since) or 0
  table.insert(all, {flat[i], since})
end
table.sort(all, function(a, b) return a[2] > b[2] end)
local out = {}
for i = keep + 1, #all do
  redis.call('HDEL', STANDBY, all[i][1])
  table.insert(out, all[i][1])
end
return out
""",
)

# Adds a note (what the backend did to launch it) to an attempt record, keeping its fields.
# ARGV: tag, now, ulid, attempt, note
NOTE = _script(
    "jk ak attempt_update",
    """
if not redis.call('HGET', jk(ARGV[3]), 'ttl') then return -1 end
attempt_update(ARGV[3], ARGV[4], {note=ARGV[5]})
return 1
""",
)

# The worker appends a batch of log lines (and the task's latest progress) for one attempt.
# ARGV: tag, now, ulid, attempt, max lines, progress ('' = unchanged), note, their tag, then
#       one item per line: 'TIME SOURCE TEXT' (source: out | err | log; one argument a line
#       keeps the worker's encoding cheap)
# Returns the number of lines stored, or -1 (record gone) / -2 (another attempt runs now).
LOG = _script(
    "jk lk",
    """
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
  redis.call('EXPIRE', L, tonumber(st[2]) or 86400)
end
return count
""",
)

# Whether a machine may still be wanted (the supervisor's orphan sweep): it sits in its pool's
# standby set, or its slot holds a lease. Both are read at once: a launch moves a machine from
# one to the other in one script. ARGV: tag, now, machine, slot ('-' = none)
# Returns {1 | 0, lease | nil}
INUSE = _script(
    "",
    """
return {redis.call('HEXISTS', STANDBY, ARGV[3]), redis.call('ZSCORE', SLOTS, ARGV[4])}
""",
)

# The machine launched for a slot with no job (ID-0, FRESH-0: a warm-floor machine, or one
# launched after its job went back to the queue) is named in the slot's entry once the backend
# created it, while the slot still waits for it: whoever checks on the slot's boot (a
# supervisor, a waiter) then asks the backend about that machine, and notices a machine that
# died before taking work without waiting out the boot lease. ARGV: tag, now, slot, machine
# Returns 1, or 0 when the slot has moved on (its machine already took it, or it is gone).
LAUNCHED = _script(
    "slot_get slot_put",
    """
local slot, machine = ARGV[3], ARGV[4]
local info = slot_get(slot)
if not info or info.state ~= 'starting' or (info.machine or '') ~= '' then return 0 end
if not redis.call('ZSCORE', SLOTS, slot) then return 0 end
info.machine = machine
slot_put(slot, info)
return 1
""",
)

# The clock every script of the pool reads (on a cluster, that of the node serving the pool):
# for a supervisor or a waiter to compare the leases and deadlines the scripts wrote.
# Returns {seconds, microseconds}, as TIME.
CLOCK = _script("", "\nreturn redis.call('TIME')\n")
