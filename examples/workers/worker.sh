#!/bin/sh
# A balloons worker in POSIX sh and curl (HTTP worker protocol v1, docs/worker-protocol.md).
#
#   worker.sh COMMAND [ARG...]
#
# Runs COMMAND with the job's input (JSON) on its stdin. What COMMAND prints on stdout (JSON;
# nothing means null) is the job's result; its stderr lines are the job's log lines. Exit 0
# completes the attempt, any other code fails it (not retryable). A heartbeat every few
# seconds (BALLOONS_HEARTBEAT_SECONDS, default 2) keeps the lease; a cancel stops COMMAND. The
# machine holds only its attempt's URL and token: no store or cloud credentials.
set -u
: "${BALLOONS_ATTEMPT_URL:?not set: run this on a balloons machine}"
: "${BALLOONS_ATTEMPT_TOKEN:?not set}"
: "${BALLOONS_INPUT_PATH:?not set}"
work=$(mktemp -d) || exit 70
trap 'rm -rf "$work"' EXIT

# call METHOD PATH [BODY-FILE]: the answer's body on stdout; fails on an HTTP error. Calls ride
# out a service that is asleep or restarting (connection refused, 429, 5xx) with curl's backoff.
call() {
  curl -sS --fail-with-body --retry 8 --retry-connrefused --retry-max-time 120 \
    -X "$1" -H "Authorization: Bearer $BALLOONS_ATTEMPT_TOKEN" \
    -H "Content-Type: application/json" ${3:+--data-binary "@$3"} \
    "$BALLOONS_ATTEMPT_URL$2"
}

# JSON string body of each line of a file (backslash, quote, tab; other control characters
# dropped), as NDJSON log lines of SOURCE.
ndjson() {
  tr -d '\000-\010\013-\037' <"$1" |
    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/	/\\t/g' \
      -e "s/^/{\"source\":\"$2\",\"text\":\"/" -e 's/$/"}/'
}

call GET "" >"$work/attempt.json" || exit 75  # also marks the attempt running

"$@" <"$BALLOONS_INPUT_PATH" >"$work/out" 2>"$work/err" &
child=$!
(
  nap=
  trap 'kill $nap 2>/dev/null; exit 0' TERM
  while :; do
    sleep "${BALLOONS_HEARTBEAT_SECONDS:-2}" &
    nap=$!
    wait "$nap" || break
    beat=$(call POST /heartbeat) || break
    case $beat in *'"cancel":true'*) kill "$child" 2>/dev/null; break ;; esac
  done
) &
beater=$!
wait "$child"
code=$?
kill "$beater" 2>/dev/null

if [ -s "$work/err" ]; then
  ndjson "$work/err" err >"$work/logs.ndjson"
  call POST /logs "$work/logs.ndjson" >/dev/null
fi
if [ "$code" -eq 0 ]; then
  if [ -s "$work/out" ]; then result=$(cat "$work/out"); else result=null; fi
  printf '{"result": %s}\n' "$result" >"$work/body.json"
  call POST /complete "$work/body.json" >/dev/null && exit 0
  message="the command's output is not JSON"
else
  message="the command exited with code $code"
fi
printf '{"error": {"type": "CommandError", "message": "%s", "traceback": ""}, "retryable": false}\n' \
  "$message" >"$work/body.json"
call POST /fail "$work/body.json" >/dev/null
exit 1
