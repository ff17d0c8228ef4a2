-- CONFIRM_LAUNCH: the client is about to launch the machine of a slot it was granted a while
-- ago (the launch waited for a rate limit): renew the slot's boot lease while the slot still
-- waits for that machine. A slot with no job (see REQUEUE) is given back instead when nothing
-- is queued any more: its machine would find no work.
--
-- KEYS: the pool's
-- ARGV: 1 tag, 2 now (not read), 3 slot
-- Returns 1 (launch it), or 0 when the slot is gone, claimed, or given back.

local slot = ARGV[3]
if not redis.call('ZSCORE', SLOTS, slot) then return 0 end
local info = slot_get(slot)
if not info or info.state ~= 'starting' then return 0 end
if (info.job or '') == '' and redis.call('ZCARD', QUEUE) == 0 then
  slot_drop(slot)
  return 0
end
redis.call('ZADD', SLOTS, 'XX', NOW + cfg('boot', @BOOT@), slot)
return 1
