#!/usr/bin/env bash
# test_jobs_dag: real redis-server, graft-broker, two graft-workers and the
# graft CLI. DAG order (every stage starts after all it depends on finished),
# matrix fan-out and map, fan-in of all variants (checked through the data
# the echo op passes along), after:, a second identical submission all
# `cached`, --no-cache running again, --set changing one branch, and
# `graft get JOB/STAGE`. Then `graft run` with its own embedded cluster, twice
# on one state directory: exit 0, --json prints the status object, the second
# run is all cached.
source "$(dirname "$0")/jobs_lib.sh"

start_redis
start_broker
start_worker w1
start_worker w2
wait_workers 2

cat >"$T/dag.yaml" <<'EOF'
name: dag
stages:
  root: {op: echo, tag: root}
  fan:
    op: echo
    input: root
    matrix: {k: [1, 2, 3]}
  slow: {op: sleep, seconds: 0.3, input: fan}
  mid: {op: echo, input: fan, inputs: [slow]}
  join: {op: echo, inputs: [mid, root]}
  last: {op: noop, after: [join, slow]}
EOF

J=$("$G" submit "$T/dag.yaml")
[[ $J =~ ^j[0-9a-f]{16}$ ]] || fail "job id '$J'"
[ "$(wait_job "$J" 60)" = done ] || fail "job $J: $(job_state "$J")"

# 1 root + 3 fan + 3 slow + 3 mid + join + last
check_py "$J" 'len(st["stages"]) == 12' "stage count"
check_py "$J" 'set(S) >= {"fan[k=1]","fan[k=2]","fan[k=3]","slow[k=2]","mid[k=3]","join","last"}' \
  "matrix variant ids"
check_py "$J" 'all(s["state"] == "done" and s["attempts"] == 1 for s in st["stages"])' "all done once"
# order: map wiring and start >= finish of every dependency
check_py "$J" '
all(S[f"mid[k={k}]"]["started"] >= S[f"slow[k={k}]"]["finished"] and
    S[f"slow[k={k}]"]["started"] >= S[f"fan[k={k}]"]["finished"] and
    S[f"fan[k={k}]"]["started"] >= S["root"]["finished"] for k in (1, 2, 3)) and
all(S["join"]["started"] >= S[f"mid[k={k}]"]["finished"] for k in (1, 2, 3)) and
S["last"]["started"] >= max(S["join"]["finished"], *(S[f"slow[k={k}]"]["finished"] for k in (1,2,3)))
' "DAG order"
# work was spread over both workers
check_py "$J" 'len({s["worker"] for s in st["stages"]}) == 2' "both workers used"

# data flow: join's output holds every mid variant in variant order, each with
# its own fan value, and root last
"$G" get "$J/join" -o "$T/join"
$PY - "$T/join/params.json" <<'EOF' || fail "fan-in data: $(cat "$T/join/params.json")"
import json, sys
p = json.load(open(sys.argv[1]))
ins = p["inputs"]
assert len(ins) == 4, ins
for k, m in zip((1, 2, 3), ins[:3]):
    assert m["input"]["k"] == k and m["input"]["input"]["tag"] == "root", m
    assert m["inputs"] == [{"files": []}], m  # the sleep stage wrote nothing
assert ins[3] == {"tag": "root"}, ins[3]
EOF

# the same pipeline again: every stage cached, nothing dispatched
J2=$("$G" submit "$T/dag.yaml")
[ "$(wait_job "$J2" 30)" = done ] || fail "second job"
check_py "$J2" 'all(s["state"] == "cached" and s["attempts"] == 0 for s in st["stages"])' "all cached"
FIRST_JOIN=$(status_json "$J" | $PY -c '
import json, sys
print([s for s in json.load(sys.stdin)["stages"] if s["id"] == "join"][0]["outputs"]["out"])')
check_py "$J2" 'S["join"]["outputs"]["out"] == "'"$FIRST_JOIN"'"' "cached output is the first run's"

# --no-cache runs everything again, with the same output ids (deterministic ops)
J3=$("$G" submit --no-cache "$T/dag.yaml")
[ "$(wait_job "$J3" 60)" = done ] || fail "no-cache job"
check_py "$J3" 'all(s["state"] == "done" and s["attempts"] == 1 for s in st["stages"])' "no-cache ran"

# --set changes one matrix value: only that branch and what follows run
J4=$("$G" submit "$T/dag.yaml" --set fan.matrix.k=[1,2,4])
[ "$(wait_job "$J4" 60)" = done ] || fail "--set job"
check_py "$J4" 'S["fan[k=1]"]["state"] == "cached" and S["mid[k=2]"]["state"] == "cached" and
S["fan[k=4]"]["state"] == "done" and S["join"]["state"] == "done" and S["root"]["state"] == "cached"' \
  "partial cache after --set"

# human-readable status and watch of a finished job
"$G" status "$J" | grep -q "^job $J  dag  done" || fail "status table"
"$G" watch "$J" >"$T/watch.out" || fail "watch of a done job exits 0"
grep -q "job $J: done" "$T/watch.out" || fail "watch output: $(cat "$T/watch.out")"
"$G" status | grep -q "$J" || fail "job list"

# bad pipelines are refused with the stage and line, exit 2, nothing submitted
printf 'stages:\n  a: {op: echo}\n  b: {op: nope, inputs: [a]}\n' >"$T/bad.yaml"
set +e
"$G" submit "$T/bad.yaml" 2>"$T/err"
rc=$?
set -e
[ $rc -eq 2 ] || fail "bad pipeline exit $rc"
grep -q "bad.yaml:3: stage 'b': unknown op 'nope'" "$T/err" || fail "bad pipeline: $(cat "$T/err")"

# ---- graft run: its own Redis, broker and workers, twice on one state dir
kill9 "$BROKER_PID" "$REDIS_PID"
unset GRAFT_BROKER
export GRAFT_STORE=$T/store-run
"$G" run "$T/dag.yaml" --workers 2 --state "$T/runstate" --json >"$T/run1.json" 2>"$T/run1.err" ||
  fail "graft run exit $?: $(tail -5 "$T/run1.err")"
$PY - "$T/run1.json" <<'EOF' || fail "graft run --json: $(cat "$T/run1.json")"
import json, sys
lines = open(sys.argv[1]).read().strip().splitlines()
st = json.loads(lines[-1])
assert st["state"] == "done" and len(st["stages"]) == 12
assert all(s["state"] == "done" for s in st["stages"])
EOF
"$G" run "$T/dag.yaml" --workers 1 --state "$T/runstate" --json >"$T/run2.json" 2>"$T/run2.err" ||
  fail "second graft run exit $?: $(tail -5 "$T/run2.err")"
$PY -c '
import json, sys
st = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
assert all(s["state"] == "cached" for s in st["stages"]), st
' "$T/run2.json" || fail "second run not cached: $(cat "$T/run2.json")"
# it stopped what it started: no redis-server or broker left on its state dir
sleep 0.5
! pgrep -f "$T/runstate/redis.conf" >/dev/null || fail "graft run left redis-server running"
# a failing pipeline: graft run exits 1
printf 'stages:\n  f: {op: fail, retryable: false}\n' >"$T/f.yaml"
set +e
"$G" run "$T/f.yaml" --state "$T/runstate" >"$T/run3.out" 2>&1
rc=$?
set -e
[ $rc -eq 1 ] || fail "failed job: graft run exit $rc"
echo "ok: DAG order, matrix, fan-in, cache, --set, get, run"
