"""The store: Redis and everything balloons keeps there.

The key schema (:mod:`.keys`), the Lua scripts behind every multi-key change (:mod:`.lua`)
and their typed replies (:mod:`.replies`), the clients (redis-py in :mod:`.reads` and
:mod:`.writes`, the small RESP client of the hot paths in :mod:`.resp`, Cluster routing in
:mod:`.cluster`, URLs in :mod:`.redisurl`), the records read back as hostile input
(:mod:`.records`), each read and control call of jobs and apps as a query that the sync and
the asyncio client both run (:mod:`.queries`), and the embedded Valkey server of the default
setup (:mod:`.embedded`).
Machines import parts of this package, so it imports nothing itself.
"""
