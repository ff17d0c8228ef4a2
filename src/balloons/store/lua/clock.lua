-- CLOCK: the clock every script of the pool reads (on a cluster, that of the node serving the
-- pool): for a supervisor or a waiter to compare the leases and deadlines the scripts wrote.
--
-- KEYS: the pool's (the first routes it to the pool's node)
-- ARGV: 1 tag, 2 now (not read)
-- Returns {seconds, microseconds}, as TIME.

return redis.call('TIME')
