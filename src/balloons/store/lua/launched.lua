-- LAUNCHED: the machine launched for a slot with no job (ID-0, FRESH-0: a warm-floor machine,
-- or one launched after its job went back to the queue) is named in the slot's entry once the
-- backend created it, while the slot still waits for it: whoever checks on the slot's boot (a
-- supervisor, a waiter) then asks the backend about that machine, and notices a machine that
-- died before taking work without waiting out the boot lease.
--
-- KEYS: the pool's
-- ARGV: 1 tag, 2 now (not read), 3 slot, 4 machine
-- Returns 1, or 0 when the slot has moved on (its machine already took it, or it is gone).

local slot, machine = ARGV[3], ARGV[4]
local info = slot_get(slot)
if not info or info.state ~= 'starting' or (info.machine or '') ~= '' then return 0 end
if not redis.call('ZSCORE', SLOTS, slot) then return 0 end
info.machine = machine
slot_put(slot, info)
return 1
