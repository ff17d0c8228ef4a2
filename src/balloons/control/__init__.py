"""The control plane: what keeps pools healthy when no job is being submitted.

The supervisor's loop (:mod:`.supervisor`: the warm floor, standby, due jobs, lost machines),
ending a slot whose machine is gone (:mod:`.reclaim`, shared with the fork server) and the
sweep of machines nothing will use again (:mod:`.orphans`).
"""
