#!/usr/bin/env bash
# The job service from another language: bash and curl only (no JSON tool), against a running
# service. Submits command jobs, long-polls one, reads its logs as server-sent events, cancels
# another, and checks the problems (RFC 9457) and Idempotency-Key's answers.
#
#   BALLOONS_URL=http://127.0.0.1:8280 BALLOONS_TOKEN=... bash tests/service_curl.sh
#
# Prints one "ok: ..." line per check; exits 1 naming the first check that fails.
set -euo pipefail
: "${BALLOONS_URL:?the base URL of the service}"
: "${BALLOONS_TOKEN:?an API key with jobs:read and jobs:write}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
checks=0

fail() {
  echo "FAILED: $*" >&2
  [ -s "$work/body" ] && echo "last body: $(head -c 2000 "$work/body")" >&2
  exit 1
}
ok() {
  checks=$((checks + 1))
  echo "ok: $*"
}

# api METHOD PATH [CURL-ARGS...]: the body in $work/body, "STATUS CONTENT-TYPE" on stdout.
api() {
  local method=$1 path=$2
  shift 2
  curl -sS -X "$method" -o "$work/body" -w '%{http_code} %{content_type}' \
    -H "Authorization: Bearer $BALLOONS_TOKEN" "$@" "$BALLOONS_URL$path"
}
# submit JSON [CURL-ARGS...]: POST /v1/jobs.
submit() {
  local body=$1
  shift
  api POST /v1/jobs -H 'Content-Type: application/json' --data-binary "$body" "$@"
}
# field NAME: a string or number member of the (compact) JSON body, the first one named so.
field() {
  sed -n -E "s/.*\"$1\":(\"([^\"]*)\"|([-0-9.a-z]+)).*/\2\3/p" "$work/body" | head -n 1
}
# expect WANT GOT WHAT
expect() {
  [ "$2" = "$1" ] || fail "$3: expected $1, got $2"
}
# problem STATUS CODE GOT WHAT: an application/problem+json answer with that status and code.
problem() {
  expect "$1 application/problem+json" "$3" "$4 (status and media type)"
  expect "$2" "$(field code)" "$4 (problem code)"
  expect "$1" "$(field status)" "$4 (problem status member)"
  expect "urn:balloons:problem:$2" "$(field type)" "$4 (problem type)"
  ok "$4: $1 $2"
}

# -------------------------------------------------------------- a command job, long-polled
hello='{"command": {"cmd": ["sh", "-c", "echo hello from curl; echo to stderr >&2"]}, "timeout": 60}'
got=$(submit "$hello")
expect "201 application/json" "$got" "submit a command job"
job=$(field id)
[ -n "$job" ] || fail "the 201 names no job id"
expect command "$(field kind)" "the job's kind"
ok "submitted command job $job"

got=$(api GET "/v1/jobs/$job?wait=30")
expect "200 application/json" "$got" "long-poll the job"
expect succeeded "$(field state)" "the job's state after the long-poll"
expect null "$(field result)" "a passive command's result"
ok "long-polled to succeeded"

# ----------------------------------------------------------------- its logs, as SSE
curl -sS -N --max-time 60 -H "Authorization: Bearer $BALLOONS_TOKEN" \
  -H 'Accept: text/event-stream' -D "$work/headers" -o "$work/events" \
  "$BALLOONS_URL/v1/jobs/$job/logs"
grep -qi '^content-type: text/event-stream' "$work/headers" || fail "logs are not text/event-stream"
grep -q '^event: log$' "$work/events" || fail "no log event: $(cat "$work/events")"
grep -q '^data: .*"hello from curl"' "$work/events" || fail "no stdout line: $(cat "$work/events")"
grep -q '^data: .*"to stderr"' "$work/events" || fail "no stderr line: $(cat "$work/events")"
grep -q '^id: [0-9]*-[0-9]*$' "$work/events" || fail "log events carry no id"
grep -q '^event: end$' "$work/events" || fail "the stream has no end event"
ok "read the logs as server-sent events, to their end event"
# Resuming after the last event id sends only what follows: here, the end.
last=$(sed -n 's/^id: //p' "$work/events" | tail -n 1)
curl -sS -N --max-time 60 -H "Authorization: Bearer $BALLOONS_TOKEN" \
  -H "Last-Event-ID: $last" -o "$work/events" "$BALLOONS_URL/v1/jobs/$job/logs"
if grep -q '^event: log$' "$work/events"; then fail "Last-Event-ID sent old lines again"; fi
grep -q '^event: end$' "$work/events" || fail "the resumed stream has no end event"
ok "resumed the logs after Last-Event-ID $last"

# ------------------------------------------------------------------------ cancel one
got=$(submit '{"command": {"cmd": ["sleep", "60"]}, "timeout": 120}')
expect "201 application/json" "$got" "submit a long command job"
long=$(field id)
got=$(api POST "/v1/jobs/$long/cancel")
expect "202 application/json" "$got" "cancel it"
got=$(api GET "/v1/jobs/$long?wait=30")
expect cancelled "$(field state)" "the cancelled job's state"
ok "cancelled $long"
got=$(api POST "/v1/jobs/$long/cancel")
problem 409 job-finished "$got" "cancel it again"

# ------------------------------------------------------------------------- problems
got=$(curl -sS -o "$work/body" -w '%{http_code} %{content_type}' "$BALLOONS_URL/v1/jobs/$job")
problem 401 unauthenticated "$got" "a request without a key"
got=$(curl -sS -o "$work/body" -w '%{http_code} %{content_type}' \
  -H 'Authorization: Bearer not-a-key-of-this-service' "$BALLOONS_URL/v1/jobs/$job")
problem 401 unauthenticated "$got" "a request with an unknown key"
missing="${job%.*}.00000000000000000000000000"
got=$(api GET "/v1/jobs/$missing")
problem 404 job-not-found "$got" "a job that does not exist"
expect "$missing" "$(field job_id)" "the 404 names the job"
got=$(submit '{"task": "no.such:task"}')
problem 422 unknown-task "$got" "an unknown task"
got=$(submit '{"command": {"cmd": []}}')
problem 400 invalid-request "$got" "an empty command"
got=$(submit '{"command": ')
problem 400 invalid-request "$got" "a body that is not JSON"
got=$(api GET "/v1/jobs/$job?wait=forever")
problem 400 invalid-request "$got" "a wait that is not a number"

# ----------------------------------------------------------------- Idempotency-Key
key="curl-$(date +%s)-$$"
body='{"command": {"cmd": ["true"]}, "timeout": 60}'
got=$(submit "$body" -H "Idempotency-Key: $key")
expect "201 application/json" "$got" "the first submit with a key"
first=$(field id)
got=$(submit "$body" -H "Idempotency-Key: $key")
expect "200 application/json" "$got" "the same submit again"
expect "$first" "$(field id)" "the replay's job"
ok "a replayed Idempotency-Key answers 200 with the same job"
got=$(submit '{"command": {"cmd": ["false"]}, "timeout": 60}' -H "Idempotency-Key: $key")
problem 422 idempotency-key-reused "$got" "the same key with another body"

echo "$checks passed, 0 failed"
