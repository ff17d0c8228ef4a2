"""What runs on a machine: ``python -m balloons.machine`` (also ``balloons worker``).

The worker loop (:mod:`.worker`), one attempt run and its outcome recorded (:mod:`.execute`),
one attempt's record opened and checked (:mod:`.attempt`), a fresh process per job
(:mod:`.isolate`), what a machine is told at launch (:mod:`.handoff`), the heartbeat thread
(:mod:`.heartbeat`), the watchdog of its deadlines (:mod:`.watchdog`), an async task's event
loop (:mod:`.coroutine`) and the capture of a task's output (:mod:`.capture`). Every job pays
this package's start-up, so it imports nothing itself and its modules keep to the import
budget ``tests/test_worker.py`` checks.
"""
