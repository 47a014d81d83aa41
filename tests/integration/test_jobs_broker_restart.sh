#!/usr/bin/env bash
# test_jobs_broker_restart: the broker SIGKILLed in the middle of a job and
# started again on the same port. It rebuilds its view from Redis, the
# workers re-register (naming the task they still run, which it re-adopts),
# and the job finishes with every stage done: none lost, none run more than
# twice.
source "$(dirname "$0")/jobs_lib.sh"

start_redis
start_broker
for w in w1 w2 w3; do start_worker $w; done
wait_workers 3

{
  echo "stages:"
  echo "  a1: {op: sleep, seconds: 0.41}"
  for i in 2 3 4 5 6; do echo "  a$i: {op: sleep, seconds: 0.4$i, input: a$((i - 1))}"; done
  echo "  b: {op: sleep, matrix: {seconds: [0.4, 0.45, 0.5, 0.55, 0.6, 0.65]}}"
  echo "  long: {op: sleep, seconds: 2.5}"
  echo "  join: {op: echo, inputs: [a6, b, long]}"
} >"$T/p.yaml"
J=$("$G" submit "$T/p.yaml")
# a watcher that has to live through the restart
"$G" watch "$J" >"$T/watch.out" 2>&1 &
WATCH=$!
PIDS+=("$WATCH")
sleep 1.2
check_py "$J" 'st["state"] == "running" and any(s["state"] == "running" for s in st["stages"])' \
  "job mid-way before the kill"
kill9 "$BROKER_PID"
sleep 1
start_broker
[ "$(wait_job "$J" 40)" = done ] || fail "job after the broker restart: $(job_state "$J")"
check_py "$J" 'len(st["stages"]) == 14 and all(s["state"] == "done" for s in st["stages"])' "every stage done"
check_py "$J" 'all(1 <= s["attempts"] <= 2 for s in st["stages"])' "no stage ran more than twice"
# the stage that ran across the restart was re-adopted, not run again
check_py "$J" 'S["long"]["attempts"] == 1' "the long stage was re-adopted"
"$G" get "$J/join" -o "$T/join"
$PY -c '
import json, sys
p = json.load(open(sys.argv[1]))
assert len(p["inputs"]) == 8, p' "$T/join/params.json" || fail "join inputs"
for _ in $(seq 150); do kill -0 "$WATCH" 2>/dev/null || break; sleep 0.1; done
wait "$WATCH" || fail "graft watch across the restart exited $?: $(tail -5 "$T/watch.out")"
tail -1 "$T/watch.out" | grep -q "job $J: done" || fail "watch output: $(tail -5 "$T/watch.out")"
echo "ok: broker SIGKILL + restart, job done, no stage lost, watch followed it"
