--!df flags=allow-undeclared-keys
-- FINISH: the worker records the end of an attempt, for good or with a retry scheduled (see
-- end_attempt in the prelude).
--
-- KEYS: the pool's, the job's
-- ARGV: 1 tag, 2 now (not read), 3 ulid, 4 attempt, 5 machine, 6 status, 7 result, 8 error,
--       9 reason, 10 retry delay ('' = none), 11 retry memory ('FACTOR MAX', '' = same),
--       12 the result's or the error's tag, 13 the retry's grant ('' = none)
-- Returns:
--   1  ended    2  retry scheduled
--   -1  the job's record is gone    -2  the job moved on to another attempt
--   -3  the job is not RUNNING or STARTING, or this attempt already ended (a replay: the job
--       ends FAILED, record_invalid)
--   -4  another machine holds the attempt

return end_attempt(ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10],
  ARGV[11], ARGV[12], ARGV[13])
