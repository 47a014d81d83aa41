#!/usr/bin/env bash
# test_jobs_redis_restart: Redis SIGKILLed in the middle of a job and started
# again on the same port and AOF directory (appendfsync everysec: at most
# about a second of writes is lost). The broker reconnects, stages whose
# transitions were lost are re-run (at-least-once, idempotent outputs), and
# the job finishes with every stage done.
source "$(dirname "$0")/jobs_lib.sh"

start_redis
start_broker
start_worker w1
start_worker w2
wait_workers 2

{
  echo "stages:"
  echo "  a1: {op: sleep, seconds: 0.51}"
  for i in 2 3 4 5 6 7 8; do echo "  a$i: {op: sleep, seconds: 0.5$i, input: a$((i - 1))}"; done
  echo "  b: {op: echo, matrix: {k: [1, 2, 3, 4]}}"
  echo "  join: {op: echo, inputs: [a8, b]}"
} >"$T/p.yaml"
J=$("$G" submit "$T/p.yaml")
sleep 2 # the submission and the first stages are on disk (everysec)
kill9 "$REDIS_PID"
sleep 1
start_redis
[ "$(wait_job "$J" 45)" = done ] || fail "job after the Redis restart: $(job_state "$J")"
check_py "$J" 'len(st["stages"]) == 13 and all(s["state"] in ("done", "cached") for s in st["stages"])' \
  "every stage done"
echo "ok: Redis SIGKILL + restart from AOF, job done"
