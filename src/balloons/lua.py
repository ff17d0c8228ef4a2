"""The Lua scripts behind every multi-key state change. Each touches the keys of one pool only.

Scripts are plain strings so that both redis-py (client side) and the worker's small RESP
client can load them. Every script returns ``1`` (or a table starting with ``1``) on success
and a negative code when its guard refuses: ``-1`` the job record is gone, ``-2`` the job has
moved on to another attempt, ``-3`` the job is not in a state that allows the change,
``-4`` another machine holds the attempt.
"""

from __future__ import annotations

# KEYS: job, attempts, jobs-index
# ARGV: payload, args, sig, created, ttl, ulid
SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local created = ARGV[4]
redis.call('HSET', KEYS[1], 'payload', ARGV[1], 'args', ARGV[2], 'sig', ARGV[3],
  'status', 'STARTING', 'attempt', 1, 'created', created, 'ttl', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[3], created, ARGV[6])
-- The attempt record is written when the attempt is claimed or ends; the index is trimmed
-- of entries older than the record TTL only once it grows, to keep submit cheap.
if redis.call('ZCARD', KEYS[3]) > 1000 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(created) - tonumber(ARGV[5]))
end
return 1
"""

# KEYS: job, attempts
# ARGV: attempt, machine, now
# Returns {1, payload, args, sig} or {code, status}.
CLAIM = """
local st = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'payload', 'args', 'sig', 'started',
  'created', 'ttl')
if not st[1] then return {-1, ''} end
if tonumber(st[2]) ~= tonumber(ARGV[1]) then return {-2, st[1]} end
if st[1] ~= 'STARTING' then return {-3, st[1]} end
redis.call('HSET', KEYS[1], 'status', 'RUNNING', 'machine', ARGV[2])
if not st[6] then redis.call('HSET', KEYS[1], 'started', ARGV[3]) end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
local a = raw and cjson.decode(raw) or {n=tonumber(ARGV[1])}
a.machine = ARGV[2]
a.started = tonumber(ARGV[3])
if not a.launched and tonumber(ARGV[1]) == 1 then a.launched = tonumber(st[7]) end
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(a))
redis.call('EXPIRE', KEYS[2], tonumber(st[8]) or 86400)
return {1, st[3] or '', st[4] or '', st[5] or ''}
"""

# KEYS: job, attempts, done
# ARGV: attempt, machine ('' = any), status, result, error, reason, now
FINISH = """
local st = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'machine', 'ttl')
if not st[1] then return -1 end
if tonumber(st[2]) ~= tonumber(ARGV[1]) then return -2 end
if st[1] ~= 'RUNNING' and st[1] ~= 'STARTING' then return -3 end
if ARGV[2] ~= '' and st[3] and st[3] ~= '' and st[3] ~= ARGV[2] then return -4 end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finished', ARGV[7], 'reason', ARGV[6])
if ARGV[3] == 'SUCCEEDED' then
  redis.call('HSET', KEYS[1], 'result', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'error', ARGV[5])
end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
local a = raw and cjson.decode(raw) or {n=tonumber(ARGV[1])}
if not a.launched and tonumber(ARGV[1]) == 1 then
  a.launched = tonumber(redis.call('HGET', KEYS[1], 'created'))
end
a.ended = tonumber(ARGV[7])
a.outcome = ARGV[3]
if ARGV[6] ~= '' then a.reason = ARGV[6] end
if ARGV[2] ~= '' and not a.machine then a.machine = ARGV[2] end
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(a))
redis.call('DEL', KEYS[3])
redis.call('LPUSH', KEYS[3], ARGV[3])
local ttl = tonumber(st[4]) or 86400
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
return 1
"""

# KEYS: job, attempts
# ARGV: attempt, note
# Adds a note (what the backend did to launch it) to an attempt record, keeping its fields.
NOTE = """
local ttl = redis.call('HGET', KEYS[1], 'ttl')
if not ttl then return -1 end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
local a = raw and cjson.decode(raw) or {n=tonumber(ARGV[1])}
a.note = ARGV[2]
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(a))
redis.call('EXPIRE', KEYS[2], tonumber(ttl))
return 1
"""
