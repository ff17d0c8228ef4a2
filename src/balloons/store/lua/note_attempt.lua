-- NOTE_ATTEMPT: add a note (what the backend did to launch it) to an attempt's record,
-- keeping its fields.
--
-- KEYS: the pool's, the job's
-- ARGV: 1 tag, 2 now (not read), 3 ulid, 4 attempt, 5 note
-- Returns 1, or -1 when the job's record is gone.

if not redis.call('HGET', jk(ARGV[3]), 'ttl') then return -1 end
attempt_update(ARGV[3], ARGV[4], {note=ARGV[5]})
return 1
