--!df flags=allow-undeclared-keys
-- SUBMIT_MANY: store and place many new jobs of one pool, in order, each exactly as SUBMIT
-- does: the body of submit.lua (included below by the loader) runs once per job, given that
-- job's arguments in SUBMIT's order, so that a job of the batch is placed as if it had been
-- submitted alone at that moment (cap, FIFO order and priorities, warm machines, the
-- idempotency key). One call for the batch: the script's own cost (the server's TIME, the
-- functions and key names) is paid once rather than per job.
-- A guard that refuses one job (its id taken: {0}; its idempotency key names a job that
-- exists: {2, ulid}) refuses only that one. An error stops the batch where it stands: the
-- jobs before it are stored (the caller reports the batch's fate as unknown).
--
-- KEYS: the pool's (no job's: each job's keys are made from its id, in the pool's hash slot)
-- ARGV: 1 tag, 2 now (not read), 3 ttl, 4 pool config, 5 the jobs' compatibility tag, then 9
--       per job: ulid, payload, args, sig, due, priority, cpus, memory_mb, idempotency digest
-- Returns: one SUBMIT reply per job, in order.

local function submit_one(ARGV)
--@include SUBMIT
end
local n = (#ARGV - 5) / 9
local a = {ARGV[1], ARGV[2], '', '', '', '', ARGV[3], ARGV[4], '', '', '', '', '', ARGV[5]}
local out = {}
for i = 0, n - 1 do
  local b = 5 + i * 9
  a[3], a[4], a[5], a[6], a[9] = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  a[10], a[11], a[12], a[13] = ARGV[b + 6], ARGV[b + 7], ARGV[b + 8], ARGV[b + 9]
  out[i + 1] = submit_one(a)
end
return out
