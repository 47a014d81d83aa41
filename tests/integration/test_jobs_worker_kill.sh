#!/usr/bin/env bash
# test_jobs_worker_kill: a worker SIGKILLed in the middle of a long stage.
# Its lease lapses after heartbeat x liveness, the stage is requeued to the
# other worker within that time plus a small margin, and the job finishes.
source "$(dirname "$0")/jobs_lib.sh"
MARGIN_MS=1000

start_redis
start_broker
start_worker w1
W1=$WORKER_PID
wait_workers 1

printf 'stages:\n  long: {op: sleep, seconds: 3}\n  after: {op: echo, inputs: [long]}\n' >"$T/p.yaml"
J=$("$G" submit "$T/p.yaml")
for _ in $(seq 100); do
  cond_py "$J" 'S["long"]["state"] == "running" and S["long"]["progress"]["done"] > 0.3' && break
  sleep 0.05
done
check_py "$J" 'S["long"]["state"] == "running" and S["long"]["worker"] == "w1"' "long runs on w1"
start_worker w2
wait_workers 2

kill9 "$W1"
t0=$(now_ms)
while :; do
  if cond_py "$J" 'S["long"]["attempts"] == 2 and S["long"]["state"] == "running" and S["long"]["worker"] == "w2"'; then
    break
  fi
  [ $(($(now_ms) - t0)) -lt 10000 ] || fail "stage not requeued 10 s after the worker died"
  sleep 0.05
done
requeue=$(($(now_ms) - t0))
limit=$((HB_MS * LIVENESS + MARGIN_MS))
echo "requeued after ${requeue} ms (heartbeat ${HB_MS} ms x liveness ${LIVENESS} + ${MARGIN_MS} ms = ${limit} ms)"
[ $requeue -le $limit ] || fail "requeue took ${requeue} ms > ${limit} ms"
[ "$(wait_job "$J" 20)" = done ] || fail "job after requeue: $(job_state "$J")"
check_py "$J" 'S["long"]["attempts"] == 2 and S["long"]["worker"] == "w2" and S["after"]["state"] == "done"' \
  "finished on w2"
# the dead worker is gone from the list
"$G" workers --json | $PY -c '
import json, sys
ws = [w["worker"] for w in json.load(sys.stdin)["workers"]]
assert ws == ["w2"], ws' || fail "dead worker still listed: $("$G" workers)"
echo "ok: worker SIGKILL -> requeue in ${requeue} ms, job done"
