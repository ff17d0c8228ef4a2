-- MACHINE_WANTED: whether a machine may still be wanted (the supervisor's orphan sweep): it
-- sits in its pool's standby set, or its slot holds a lease. Both are read at once: a launch
-- moves a machine from one to the other in one script.
--
-- KEYS: the pool's
-- ARGV: 1 tag, 2 now (not read), 3 machine, 4 slot ('-' = none)
-- Returns {1 | 0 (in the standby set), lease | nil}.

return {redis.call('HEXISTS', STANDBY, ARGV[3]), redis.call('ZSCORE', SLOTS, ARGV[4])}
