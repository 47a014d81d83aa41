#!/usr/bin/env bash
# test_jobs_up: `graft up` starts its own redis-server (generated config:
# AOF everysec, noeviction, loopback), a broker and N workers, records the
# broker in the state directory so plain `graft submit/status` find it,
# restarts a process that dies, refuses a second `graft up` on the same state
# directory, and on SIGINT stops everything and removes its record. Also
# `graft exec` (no broker) and usage errors.
source "$(dirname "$0")/jobs_lib.sh"
unset GRAFT_BROKER
ST=$T/state

"$G" up --workers 2 --state "$ST" --heartbeat-ms "$HB_MS" >"$T/up.out" 2>"$T/up.log" &
UP=$!
PIDS+=("$UP")
for _ in $(seq 150); do [ -f "$ST/up.json" ] && break; sleep 0.1; done
[ -f "$ST/up.json" ] || fail "graft up wrote no up.json"
EP=$(jq_ .broker <"$ST/up.json")
[ "$(head -1 "$T/up.out")" = "$EP" ] || fail "graft up should print the broker endpoint"
grep -q "^appendonly yes" "$ST/redis.conf" && grep -q "^appendfsync everysec" "$ST/redis.conf" &&
  grep -q "^maxmemory-policy noeviction" "$ST/redis.conf" && grep -q "^bind 127.0.0.1" "$ST/redis.conf" ||
  fail "redis.conf: $(cat "$ST/redis.conf")"
RPORT=$(sed -n 's/^port //p' "$ST/redis.conf")
[ "$(redis-cli -p "$RPORT" config get appendonly | tail -1)" = yes ] || fail "redis is not using AOF"
[ "$(redis-cli -p "$RPORT" config get maxmemory-policy | tail -1)" = noeviction ] || fail "eviction"

# commands find the broker through the state directory (GRAFT_STATE)
for _ in $(seq 100); do
  n=$("$G" workers --json 2>/dev/null | jq_ '.workers|length' || echo 0)
  [ "$n" -ge 2 ] && break
  sleep 0.1
done
[ "$n" -eq 2 ] || fail "graft up: $n workers"
printf 'stages:\n  a: {op: echo, v: 1}\n  b: {op: sleep, seconds: 0.2, input: a}\n' >"$T/p.yaml"
J=$("$G" submit "$T/p.yaml")
[ "$(wait_job "$J" 30)" = done ] || fail "job under graft up"

# graft run uses the running cluster (and leaves it running); its --json
# output ends with exactly what `graft status JOB --json` prints
"$G" run "$T/p.yaml" --json >"$T/run.json" 2>"$T/run.err" || fail "graft run on graft up: $(cat "$T/run.err")"
RJ=$(tail -1 "$T/run.json" | jq_ .job)
[ "$(tail -1 "$T/run.json")" = "$("$G" status "$RJ" --json)" ] || fail "run --json differs from status --json"
kill -0 "$UP" || fail "graft run stopped graft up"

# a second graft up on the same state directory is refused
set +e
"$G" up --state "$ST" >/dev/null 2>"$T/up2.err"
rc=$?
set -e
[ $rc -ne 0 ] && grep -q "already running" "$T/up2.err" || fail "second graft up ($rc): $(cat "$T/up2.err")"

# a worker that dies is restarted
WPID=$(pgrep -f -- "--id .*-up-$UP-1 " | head -1)
[ -n "$WPID" ] || fail "no worker process of graft up"
kill -9 "$WPID"
for _ in $(seq 100); do
  NEW=$(pgrep -f -- "--id .*-up-$UP-1 " | head -1 || true)
  [ -n "$NEW" ] && [ "$NEW" != "$WPID" ] && break
  sleep 0.1
done
[ -n "$NEW" ] && [ "$NEW" != "$WPID" ] || fail "worker not restarted"
grep -q "worker-1 was killed by signal 9; restarting" "$T/up.log" || fail "restart not reported"

# SIGINT: everything stops, the record goes away
CHILDREN=$(pgrep -P "$UP" | tr '\n' ' ')
kill -INT "$UP"
for _ in $(seq 200); do kill -0 "$UP" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$UP" 2>/dev/null || fail "graft up did not exit on SIGINT"
wait "$UP" || fail "graft up exit status $?"
for c in $CHILDREN; do ! kill -0 "$c" 2>/dev/null || fail "child $c still running"; done
[ ! -f "$ST/up.json" ] || fail "up.json left behind"

# graft exec: one op in-process, no broker
"$G" exec echo a=1 b='[1, 2]' s=text --input input="$T/p.yaml" -o "$T/exec-out" >"$T/exec.json"
[ "$(cat "$T/exec.json")" = '{"bytes":'"$(stat -c %s "$T/exec-out/params.json")"'}' ] || fail "exec metrics"
$PY - "$T/exec-out/params.json" "$T/p.yaml" <<'PY' || fail "exec output: $(cat "$T/exec-out/params.json")"
import hashlib, json, sys
p = json.load(open(sys.argv[1]))
h = hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest()
assert p == {"a": 1, "b": [1, 2], "s": "text", "input": {"sha256": "sha256:" + h, "size": len(open(sys.argv[2], "rb").read())}}, p
PY
[ "$("$G" exec fail times=1 --attempt 2)" = '{"succeeded_at":2}' ] || fail "exec --attempt"
set +e
"$G" exec fail retryable=false 2>"$T/e1"; r1=$?
"$G" exec sleep seconds=soon 2>"$T/e2"; r2=$?
"$G" exec nosuch 2>"$T/e3"; r3=$?
"$G" exec echo --input input=/nonexistent 2>"$T/e4"; r4=$?
"$G" exec echo a=1 -o "$T/exec-out" 2>"$T/e5"; r5=$?
"$G" submit 2>/dev/null; r6=$?
GRAFT_BROKER=tcp://127.0.0.1:1 timeout 30 "$G" status j0000000000000000 2>"$T/e7"; r7=$?
set -e
[ $r1 -eq 2 ] && grep -q "fail: deliberate failure (attempt 1, not retryable)" "$T/e1" || fail "exec fail: $r1 $(cat "$T/e1")"
[ $r2 -eq 2 ] && grep -q "parameter 'seconds' must be a number" "$T/e2" || fail "exec type: $r2 $(cat "$T/e2")"
[ $r3 -eq 2 ] && grep -q "unknown op 'nosuch'" "$T/e3" || fail "exec op: $r3"
[ $r4 -ne 0 ] && grep -q "/nonexistent" "$T/e4" || fail "exec input: $r4"
[ $r5 -eq 2 ] && grep -q "not an empty directory" "$T/e5" || fail "exec -o existing: $r5 $(cat "$T/e5")"
[ $r6 -eq 2 ] || fail "submit without a file: $r6"
[ $r7 -eq 1 ] && grep -q "did not answer" "$T/e7" || fail "no broker: $r7 $(cat "$T/e7")"
for f in e1 e2 e3 e5 e7; do [ "$(wc -l <"$T/$f")" -eq 1 ] || fail "$f: not one line: $(cat "$T/$f")"; done
echo "ok: graft up, supervision, shutdown, exec"
