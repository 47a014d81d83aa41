#!/usr/bin/env bash
# test_jobs_failures: with real processes — retries until success, retries
# exhausted (job failed, dependants skipped, attempts = 1 + retries), a
# not-retryable failure (no retry at all), a per-stage timeout, and
# cancelling a running job (the worker stops the op, stages end cancelled).
source "$(dirname "$0")/jobs_lib.sh"

start_redis
start_broker
start_worker w1
start_worker w2
wait_workers 2

# retryable failure that succeeds on the third attempt
printf 'stages:\n  f: {op: fail, times: 2, retries: 3}\n  after_f: {op: noop, inputs: [f]}\n' >"$T/retry.yaml"
J=$("$G" submit "$T/retry.yaml")
[ "$(wait_job "$J" 30)" = done ] || fail "retry job: $(job_state "$J")"
check_py "$J" 'S["f"]["attempts"] == 3 and S["f"]["metrics"]["succeeded_at"] == 3 and S["after_f"]["state"] == "done"' \
  "third attempt succeeds"

# retries exhausted: failed for good, dependants skipped, a sibling still runs
cat >"$T/exhaust.yaml" <<'EOF'
stages:
  f: {op: fail, retries: 2, message: always}
  child: {op: noop, inputs: [f]}
  grandchild: {op: echo, input: child}
  sibling: {op: echo, x: 1}
EOF
J=$("$G" submit "$T/exhaust.yaml")
[ "$(wait_job "$J" 30)" = failed ] || fail "exhausted job: $(job_state "$J")"
check_py "$J" 'S["f"]["state"] == "failed" and S["f"]["attempts"] == 3' "1 + 2 retries"
check_py "$J" '"always" in S["f"]["error"] and "attempt 3" in S["f"]["error"]' "last error kept"
check_py "$J" 'S["child"]["state"] == "skipped" and S["grandchild"]["state"] == "skipped"' "dependants skipped"
check_py "$J" 'S["sibling"]["state"] == "done"' "independent stage still done"
set +e
"$G" watch "$J" >/dev/null
rc=$?
set -e
[ $rc -eq 1 ] || fail "watch of a failed job exits $rc, not 1"

# not retryable: exactly one attempt despite retries: 5
printf 'stages:\n  f: {op: fail, retryable: false, retries: 5}\n' >"$T/final.yaml"
J=$("$G" submit "$T/final.yaml")
[ "$(wait_job "$J" 30)" = failed ] || fail "final job"
check_py "$J" 'S["f"]["attempts"] == 1 and "not retryable" in S["f"]["error"]' "no retry of a final error"

# timeout: the attempt is stopped after 1 s; with retries 1 it happens twice
printf 'stages:\n  t: {op: sleep, seconds: 60, timeout: 1, retries: 1}\n  d: {op: noop, inputs: [t]}\n' >"$T/timeout.yaml"
t0=$(now_ms)
J=$("$G" submit "$T/timeout.yaml")
[ "$(wait_job "$J" 30)" = failed ] || fail "timeout job: $(job_state "$J")"
el=$(($(now_ms) - t0))
check_py "$J" 'S["t"]["attempts"] == 2 and ("timeout" in S["t"]["error"].lower() or "timed out" in S["t"]["error"].lower()) and S["d"]["state"] == "skipped"' \
  "timeout fails the attempt"
[ $el -lt 15000 ] || fail "two 1 s timeouts took $el ms"
# the workers are free again afterwards (the op really stopped)
for _ in $(seq 50); do
  busy=$("$G" workers --json | $PY -c 'import json,sys; print(sum(w["state"]=="busy" for w in json.load(sys.stdin)["workers"]))')
  [ "$busy" = 0 ] && break
  sleep 0.1
done
[ "$busy" = 0 ] || fail "workers still busy after the timeout"

# cancel: a running sleep stops within a second; nothing else runs
cat >"$T/cancel.yaml" <<'EOF'
stages:
  long: {op: sleep, seconds: 60}
  long2: {op: sleep, seconds: 60}
  next: {op: noop, inputs: [long, long2]}
EOF
J=$("$G" submit "$T/cancel.yaml")
for _ in $(seq 100); do
  cond_py "$J" 'S["long"]["state"] == "running" and S["long2"]["state"] == "running"' && break
  sleep 0.1
done
check_py "$J" 'S["long"]["state"] == "running"' "long is running before the cancel"
t0=$(now_ms)
"$G" cancel "$J" | grep -q "^$J: " || fail "cancel output"
[ "$(wait_job "$J" 10)" = cancelled ] || fail "cancelled job: $(job_state "$J")"
for _ in $(seq 50); do
  busy=$("$G" workers --json | $PY -c 'import json,sys; print(sum(w["state"]=="busy" for w in json.load(sys.stdin)["workers"]))')
  [ "$busy" = 0 ] && break
  sleep 0.1
done
el=$(($(now_ms) - t0))
[ "$busy" = 0 ] || fail "workers still busy after cancel"
[ $el -lt 3000 ] || fail "cancel reached the workers after $el ms"
check_py "$J" 'S["long"]["state"] == "cancelled" and S["long2"]["state"] == "cancelled" and S["next"]["state"] in ("cancelled", "skipped")' \
  "stages cancelled"
echo "ok: retries, exhaustion, final errors, timeout, cancel"
