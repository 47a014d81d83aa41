# jobs_lib.sh: sourced by tests/integration/test_jobs_*.sh. Starts real
# redis-server, graft-broker and graft-worker processes on free ports in a
# scratch directory, and always stops them (trap), even when a check fails.
# Heartbeats are fast (HB_MS x LIVENESS) so failure detection is quick.
set -euo pipefail
BIN=${GRAFT_BIN:?GRAFT_BIN must name the build directory}
G=$BIN/graft
HB_MS=${HB_MS:-200}
LIVENESS=${LIVENESS:-3}
PY=/usr/bin/python3
T=$(mktemp -d /tmp/graft-jobs-XXXXXX)
export GRAFT_STORE=$T/store GRAFT_STATE=$T/state GRAFT_LOG=${GRAFT_LOG:-info}
PIDS=()

cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null || true; done
  if [ $rc -ne 0 ]; then
    echo "--- logs of the failed test ($T) ---" >&2
    for f in "$T"/*.log; do [ -f "$f" ] && { echo "== $f" >&2; tail -n 40 "$f" >&2; }; done
  fi
  chmod -R u+w "$T" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }

free_port() {
  $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_redis: AOF everysec, noeviction, loopback, data in $T/redis
REDIS_PORT=
REDIS_PID=
start_redis() {
  [ -n "$REDIS_PORT" ] || REDIS_PORT=$(free_port)
  mkdir -p "$T/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$T/redis" --appendonly yes \
    --appendfsync everysec --maxmemory-policy noeviction --save "" >>"$T/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.05
  done
  fail "redis-server did not start"
}

BROKER_PORT=
BROKER_PID=
start_broker() {
  [ -n "$BROKER_PORT" ] || BROKER_PORT=$(free_port)
  export GRAFT_BROKER=tcp://127.0.0.1:$BROKER_PORT
  "$BIN/graft-broker" --bind "$GRAFT_BROKER" --redis "redis://127.0.0.1:$REDIS_PORT" \
    --store "$GRAFT_STORE" --heartbeat-ms "$HB_MS" --liveness "$LIVENESS" --backoff-ms 100 \
    "$@" >>"$T/broker.log" 2>&1 &
  BROKER_PID=$!
  PIDS+=("$BROKER_PID")
  for _ in $(seq 100); do
    "$G" workers >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "graft-broker did not answer"
}

# start_worker ID [--ops a,b]: its pid in WORKER_PID
WORKER_PID=
start_worker() {
  local id=$1
  shift
  "$BIN/graft-worker" --broker "$GRAFT_BROKER" --store "$GRAFT_STORE" --id "$id" --threads 1 \
    --heartbeat-ms "$HB_MS" --liveness "$LIVENESS" "$@" >>"$T/$id.log" 2>&1 &
  WORKER_PID=$!
  PIDS+=("$WORKER_PID")
}

# wait_workers N: until the broker lists N workers
wait_workers() {
  for _ in $(seq 100); do
    [ "$("$G" workers --json 2>/dev/null | jq_ '.workers|length' || echo 0)" -ge "$1" ] && return 0
    sleep 0.1
  done
  fail "fewer than $1 workers registered"
}

# jq_ EXPR: evaluates a small Python expression over the JSON on stdin, with
# `.a.b` paths written as in jq for the common cases used here.
jq_() {
  $PY -c '
import json, sys
doc = json.load(sys.stdin)
expr = sys.argv[1]
def get(d, path):
    for part in [p for p in path.split(".") if p]:
        d = d[int(part)] if isinstance(d, list) else d[part]
    return d
if expr.endswith("|length"):
    print(len(get(doc, expr[:-7])))
else:
    v = get(doc, expr)
    print(json.dumps(v) if isinstance(v, (dict, list)) else v)
' "$1"
}

# py SCRIPT: runs Python with the status JSON of job $1 as `st`
status_json() { "$G" status "$1" --json; }
job_state() { status_json "$1" | jq_ .state; }

# wait_job JOB SECONDS: until the job is done/failed/cancelled; prints the state
wait_job() {
  local end=$(($(date +%s) + $2)) s
  while :; do
    s=$(job_state "$1" 2>/dev/null || echo unknown)
    case $s in done | failed | cancelled) echo "$s"; return 0 ;; esac
    [ "$(date +%s)" -lt $end ] || { echo "timeout($s)"; return 0; }
    sleep 0.1
  done
}

# cond_py JOB 'python condition over st (the status object) and S (stages by
# id)': exit status 0 when it holds (no failure when it does not)
cond_py() {
  status_json "$1" >"$T/st.json" 2>/dev/null || return 1
  $PY - "$T/st.json" "$2" <<'EOF'
import json, sys
st = json.load(open(sys.argv[1]))
S = {s["id"]: s for s in st["stages"]}
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)
EOF
}

# check_py JOB COND [MESSAGE]: fails the test unless COND holds
check_py() {
  cond_py "$1" "$2" || fail "${3:-$2}: $(head -c 3000 "$T/st.json")"
}

# kill9 PID...: SIGKILL and reap quietly
kill9() {
  local p
  for p in "$@"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null || true; done
}
