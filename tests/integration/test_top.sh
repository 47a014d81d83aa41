#!/usr/bin/env bash
# test_top: `graft top` against a real redis-server, broker and workers.
# While stages wait, its queue depths, in-flight count, workers (with their
# current task) and job progress must equal what `graft status --json`,
# `graft workers --json` and redis-cli report; failures and retries are
# counted; latency percentiles equal ones computed here from the stage
# hashes; rates equal the change of the counters over the window; every query
# of deploy/grafana/graft-dashboard.json, run against the same Redis, gives
# the same numbers; only read commands reach Redis (MONITOR). Bad input:
# unreachable Redis -> one line, exit 1; bad URL or option -> exit 2; a
# wrong prefix -> empty but valid output.
source "$(dirname "$0")/jobs_lib.sh"
SRC=${GRAFT_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
DASH=$SRC/deploy/grafana/graft-dashboard.json

start_redis
start_broker
start_worker w1 --ops sleep,noop
W1=$WORKER_PID
start_worker w2 --ops fail,echo,noop
W2=$WORKER_PID
wait_workers 2
R=redis://127.0.0.1:$REDIS_PORT
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
top() { "$G" top --redis "$R" "$@"; }

# ---- bad input
set +e
out=$("$G" top --redis "redis://127.0.0.1:$(free_port)" --once 2>"$T/err")
rc=$?
set -e
[ $rc -eq 1 ] || fail "unreachable Redis: exit $rc, not 1"
[ -z "$out" ] || fail "unreachable Redis printed on stdout: $out"
[ "$(wc -l <"$T/err")" -eq 1 ] || fail "unreachable Redis: not one line: $(cat "$T/err")"
grep -q "^graft: redis redis://127.0.0.1:[0-9]* is not reachable: " "$T/err" || fail "message: $(cat "$T/err")"
for bad in "--redis redis://h:0" "--redis http://h" "--interval -1" "--jobs 0" "--bogus" "--prefix="; do
  set +e
  # shellcheck disable=SC2086
  "$G" top $bad --once >/dev/null 2>"$T/err"
  rc=$?
  set -e
  [ $rc -eq 2 ] || fail "graft top $bad: exit $rc, not 2"
  [ "$(wc -l <"$T/err")" -le 2 ] && grep -q "^graft: " "$T/err" || fail "graft top $bad: $(cat "$T/err")"
done
top --prefix nothing-here: --once --json --interval 0 >"$T/empty.json"
$PY - "$T/empty.json" <<'EOF' || fail "wrong prefix: $(cat "$T/empty.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["prefix"] == "nothing-here:"
assert d["queues"] == [] and d["workers"] == [] and d["jobs"] == [], d
assert d["ready"] == d["in_flight"] == d["jobs_total"] == d["workers_total"] == d["dead"] == 0
assert all(v == 0 for v in d["counters"].values()) and d["counters"]["done"] == 0
assert d["latency"]["wait_ms"]["n"] == 0 and d["latency"]["wait_ms"]["p50"] is None
assert d["window_s"] is None and d["throughput"] is None
EOF
top --prefix 'odd*[pre]fix?' --once --interval 0 | grep -q "(no worker registered)" || fail "glob prefix"

# ---- the comparison helpers (Python: a small RESP client for the raw keys)
cat >"$T/check.py" <<'EOF'
import json, shlex, socket, sys

def resp(port):
    s = socket.create_connection(("127.0.0.1", int(port)))
    f = s.makefile("rb")
    def read():
        line = f.readline()[:-2]
        t, rest = line[:1], line[1:]
        if t == b"+": return rest.decode()
        if t == b"-": raise RuntimeError(rest.decode())
        if t == b":": return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0: return None
            data = f.read(n + 2)[:-2]
            return data.decode("utf-8", "replace")
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [read() for _ in range(n)]
        raise RuntimeError("bad reply %r" % line)
    def call(*args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        return read()
    return call

def pct(v, p):
    v = sorted(v)
    if not v: return None
    pos = p / 100 * (len(v) - 1)
    lo = int(pos)
    if lo >= len(v) - 1: return v[-1]
    return v[lo] + (v[lo + 1] - v[lo]) * (pos - lo)

def latency(r, P, jobs=20, stages=2000):
    """The sample of gr_dash.h, computed independently from the stage hashes."""
    w, run, left = [], [], stages
    for j in r("ZREVRANGE", P + "jobs", 0, jobs - 1):
        if left <= 0: break
        for sid in r("LRANGE", P + "job:" + j + ":stages", 0, left - 1):
            left -= 1
            st, ru, a, fin = r("HMGET", P + "stage:" + j + ":" + sid, "state", "ready_us", "attempt_started", "finished")
            if a is not None and ru is not None and int(ru) / 1000 <= int(a):
                w.append(int(a) - int(ru) / 1000)
            if st == "done" and a is not None and fin is not None and int(fin) >= int(a):
                run.append(int(fin) - int(a))
    return w, run

def close(a, b, tol):
    if a is None or b is None: return a is None and b is None
    return abs(a - b) <= tol * max(1.0, abs(b))
EOF

# ---- queue depth while stages wait: w1 alone serves sleep, one runs, two wait
cat >"$T/wait.yaml" <<'EOF'
stages:
  s1: {op: sleep, seconds: 4}
  s2: {op: sleep, seconds: 4}
  s3: {op: sleep, seconds: 4}
  join: {op: noop, inputs: [s1, s2, s3]}
EOF
J=$("$G" submit "$T/wait.yaml")
for _ in $(seq 100); do
  cond_py "$J" 'sum(s["state"] == "running" for s in st["stages"]) == 1 and sum(s["state"] == "ready" for s in st["stages"]) == 2' && break
  sleep 0.1
done
check_py "$J" 'sum(s["state"] == "running" for s in st["stages"]) == 1' "one sleep runs"

# one consistent view: status and workers before and after the dashboard and
# redis-cli reads must agree (a stage lasts 4 s, so one retry is plenty)
compare_waiting() {
  status_json "$J" >"$T/st0.json"
  "$G" workers --json >"$T/wk.json"
  top --once --json --interval 0.3 >"$T/top.json"
  top --once --interval 0 >"$T/top.txt"
  echo "$(rcli zcard graft:ready:sleep) $(rcli zcard graft:leases) $(rcli zcard graft:ready:fail)" >"$T/cli.txt"
  status_json "$J" >"$T/st1.json"
  $PY - "$T" "$J" "$REDIS_PORT" "$W1" <<'EOF'
import json, sys
sys.path.insert(0, sys.argv[1])
from check import resp
T, J, port, w1pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
st0, st1 = json.load(open(T + "/st0.json")), json.load(open(T + "/st1.json"))
key = lambda st: [(s["id"], s["state"]) for s in st["stages"]]
if key(st0) != key(st1):
    sys.exit(3)  # a transition in between: try again
d = json.load(open(T + "/top.json"))
wk = json.load(open(T + "/wk.json"))["workers"]
zready, zleases, zfail = map(int, open(T + "/cli.txt").read().split())
S = st0["stages"]
q = {x["op"]: x for x in d["queues"]}
waiting = sum(s["state"] == "ready" and s["op"] == "sleep" for s in S)
running = [s for s in S if s["state"] == "running"]
assert waiting == 2 and len(running) == 1, S
assert q["sleep"]["ready"] == zready == waiting, (q, zready, waiting)
assert q["fail"]["ready"] == zfail == 0 and q["fail"]["served"] and q["echo"]["served"], q
assert d["ready"] == sum(x["ready"] for x in d["queues"]) == 2
assert d["in_flight"] == zleases == len(running) == 1, (d["in_flight"], zleases)
assert d["jobs_active"] == 1 and d["jobs_total"] == 1 and d["workers_total"] == 2
assert d["workers_busy"] == 1 and d["window_s"] is not None and 0.25 < d["window_s"] < 5
# workers: the same set as the broker's, each with its current task
W = {w["worker"]: w for w in d["workers"]}
B = {w["worker"]: w for w in wk}
assert set(W) == set(B) == {"w1", "w2"}, (W.keys(), B.keys())
r = running[0]
assert W["w1"]["state"] == "busy" and W["w1"]["task"] == J + ":" + r["id"] == B["w1"]["task"], (W["w1"], r)
assert W["w1"]["op"] == "sleep" and W["w1"]["attempt"] == r["attempts"] == 1
assert W["w1"]["pid"] == w1pid == B["w1"]["pid"] and W["w1"]["host"] == B["w1"]["host"]
assert W["w1"]["ops"] == B["w1"]["ops"] == ["sleep", "noop"]
assert W["w2"]["state"] == "idle" and W["w2"]["task"] is None
for w in W.values():
    assert 0 <= w["heartbeat_age_ms"] <= 200 * 3 + 500, w  # HB_MS x LIVENESS + slack
assert W["w1"]["task_ms"] is not None and 0 <= W["w1"]["task_ms"] < 4500
# the job's progress: counts per state as in the status
jobs = {j["job"]: j for j in d["jobs"]}
jr = jobs[J]
assert jr["active"] and jr["state"] == st0["state"] == "running" and jr["nstages"] == len(S) == 4
for state, n in jr["counts"].items():
    assert n == sum(s["state"] == state for s in S), (state, n, S)
assert jr["finished_stages"] == 0
# the plain text says the same
txt = open(T + "/top.txt").read()
assert "in flight 1" in txt and "ready 2" in txt, txt
assert any(l.split()[:2] == ["sleep", "2"] for l in txt.splitlines()), txt
assert any(l.startswith("w1 ") and (J + ":" + r["id"]) in l and " busy " in l for l in txt.splitlines()), txt
assert any(l.startswith(J) and " 0/4 " in l and "running 1" in l and "ready 2" in l for l in txt.splitlines()), txt
EOF
}
ok=0
for _ in 1 2 3; do
  set +e
  compare_waiting
  rc=$?
  set -e
  [ $rc -eq 0 ] && { ok=1; break; }
  [ $rc -eq 3 ] || fail "graft top while stages wait (rc $rc): $(cat "$T/top.json")"
done
[ $ok = 1 ] || fail "no stable view while stages wait"

# the Grafana dashboard's queries, run against the same Redis, agree with top
cat >"$T/grafana.py" <<'EOF'
import json, re, shlex, sys
sys.path.insert(0, sys.argv[1])
from check import resp, close
T, dash_path, port, P = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
r = resp(port)
d = json.load(open(T + "/top.json"))
dash = json.load(open(dash_path))
ops_var = [v for v in dash["templating"]["list"] if v["name"] == "op"][0]["query"].split(",")
counters = d["counters"]
W = {w["worker"]: w for w in d["workers"]}
JOBS = {j["job"]: j for j in d["jobs"]}
Q = {x["op"]: x["ready"] for x in d["queues"]}
checked = set()

def subst(text, **vals):
    text = text.replace("${prefix}", P).replace("$prefix", P)
    for k, v in vals.items():
        text = text.replace("${%s}" % k, v).replace("$" + k, v)
    assert "$" not in text, text
    return text

def run_target(t, **vals):
    if t.get("type") == "cli":
        argv = shlex.split(subst(t["query"], **vals))
    else:
        argv = [t["command"].upper(), subst(t["keyName"], **vals)]
        if "field" in t:
            argv += shlex.split(subst(t["field"], **vals))
    return argv, r(*argv)

scalar = {"leases": ("ZCARD", d["in_flight"]), "delayed": ("ZCARD", d["delayed"]),
          "resolve": ("SCARD", d["resolving"]), "dead": ("ZCARD", d["dead"]),
          "active": ("SCARD", d["jobs_active"]), "jobs": ("ZCARD", d["jobs_total"]),
          "workers": ("ZCARD", d["workers_total"])}
for v in dash["templating"]["list"]:
    if v["type"] != "query": continue
    vals = r(*shlex.split(subst(v["query"])))
    if v["name"] == "worker":
        assert sorted(vals) == sorted(W), (vals, W.keys())
    elif v["name"] == "job":
        assert set(JOBS) <= set(vals) or set(vals) <= set(JOBS), (vals, JOBS.keys())
    else:
        raise AssertionError("unchecked variable " + v["name"])
for p in dash["panels"]:
    for t in p.get("targets", []):
        rep = p.get("repeat")
        values = {"op": ops_var, "worker": sorted(W), "job": sorted(JOBS)}.get(rep, [None])
        for val in values:
            argv, got = run_target(t, **({rep: val} if rep else {}))
            cmd, key = argv[0].upper(), argv[1] if len(argv) > 1 else ""
            suffix = key[len(P):] if key.startswith(P) else None
            if cmd in ("ZCARD", "SCARD") and suffix in scalar:
                assert scalar[suffix][0] == cmd and got == scalar[suffix][1], (p["title"], got, scalar[suffix])
            elif cmd == "ZCARD" and suffix.startswith("ready:"):
                assert got == Q.get(suffix[6:], 0), (p["title"], got)
            elif cmd == "HGET" and suffix == "metrics":
                assert int(got or 0) == counters[argv[2]], (argv, got)
            elif cmd == "HMGET" and suffix == "metrics":
                assert [int(x or 0) for x in got] == [counters[f] for f in argv[2:]], (argv, got)
            elif cmd == "HGETALL" and suffix == "metrics":
                h = dict(zip(got[::2], got[1::2]))
                gauge = lambda k: k.startswith("wire_") or k == "workers_connected"  # rewritten every second
                assert all(int(h.get(k, 0)) == n for k, n in counters.items() if not gauge(k)), (h, counters)
                assert set(h) <= set(counters), (h, counters)
            elif cmd == "HMGET" and suffix.startswith("worker:"):
                w = W[suffix[7:]]
                h = dict(zip(argv[2:], got))
                assert h["host"] == w["host"] and int(h["pid"]) == w["pid"] and h["state"] == w["state"], (h, w)
                assert (h["task"] or None) == w["task"] and json.loads(h["ops"]) == w["ops"], (h, w)
            elif cmd == "HMGET" and suffix.startswith("job:"):
                j = JOBS[suffix[4:]]
                h = dict(zip(argv[2:], got))
                assert int(h["nstages"]) == j["nstages"], (h, j)
                for f in argv[3:]:
                    assert int(h[f] or 0) == j["counts"][f[2:]], (f, h, j)
            elif cmd == "EVAL_RO":
                lat = d["latency"]
                for line in got:
                    name, *kv = line.split()
                    kv = dict(x.split("=") for x in kv)
                    mine = lat[name]
                    assert int(kv["n"]) == mine["n"], (line, mine)
                    for k in ("p50", "p95", "p99", "max"):
                        if mine["n"]:
                            assert close(float(kv[k]), mine[k], 1e-6) or abs(float(kv[k]) - mine[k]) < 6e-4, (line, mine)
            else:
                raise AssertionError("unchecked query %r in panel %r" % (argv, p["title"]))
            checked.add(cmd)
assert {"ZCARD", "SCARD", "HMGET", "HGETALL", "EVAL_RO"} <= checked, checked
print("grafana queries checked:", " ".join(sorted(checked)))
EOF
$PY "$T/grafana.py" "$T" "$DASH" "$REDIS_PORT" graft: || fail "the Grafana dashboard's queries disagree with graft top"

[ "$(wait_job "$J" 30)" = done ] || fail "sleep job: $(job_state "$J")"

# ---- failures and retries: one stage fails for good after two retries
cat >"$T/fail.yaml" <<'EOF'
stages:
  f: {op: fail, retries: 2, message: always}
  child: {op: noop, inputs: [f]}
  other: {op: echo, x: 1}
EOF
JF=$("$G" submit "$T/fail.yaml")
[ "$(wait_job "$JF" 30)" = failed ] || fail "failing job: $(job_state "$JF")"
top --once --json --interval 0 >"$T/top.json"
status_json "$JF" >"$T/stf.json"
echo "$(rcli zcard graft:dead) $(rcli hget graft:metrics failed) $(rcli hget graft:metrics retried)" >"$T/cli.txt"
$PY - "$T" "$JF" "$REDIS_PORT" <<'EOF' || fail "failures: $(cat "$T/top.json")"
import json, sys
sys.path.insert(0, sys.argv[1])
from check import resp, latency, pct, close
T, JF, port = sys.argv[1], sys.argv[2], sys.argv[3]
d = json.load(open(T + "/top.json"))
st = json.load(open(T + "/stf.json"))
dead, failed, retried = map(int, open(T + "/cli.txt").read().split())
f = d["failures"]
assert f["failed"] == failed == 1 and f["retried"] == retried == 2 and f["dead"] == dead == 1, (f, dead, failed, retried)
assert d["counters"]["skipped"] == 1 and d["counters"]["jobs_failed"] == 1 and d["counters"]["jobs_done"] == 1
S = {s["id"]: s for s in st["stages"]}
assert S["f"]["attempts"] == 3
j = {x["job"]: x for x in d["jobs"]}[JF]
assert not j["active"] and j["state"] == "failed" and j["finished"] is not None
for state, n in j["counts"].items():
    assert n == sum(s["state"] == state for s in st["stages"]), (state, j)
assert j["finished_stages"] == j["nstages"] == 3
assert d["ready"] == d["in_flight"] == d["delayed"] == d["jobs_active"] == 0
# latency over both jobs: the same sample and percentiles, computed here
r = resp(port)
w, run = latency(r, "graft:")
lat = d["latency"]
assert lat["jobs"] == 2 and lat["stages"] == 7, lat
assert lat["wait_ms"]["n"] == len(w) and lat["run_ms"]["n"] == len(run) == 5, (lat, len(w), len(run))
try:
    import numpy as np
    ref = lambda v, p: float(np.percentile(v, p))
except ImportError:
    ref = pct
for name, v in (("wait_ms", w), ("run_ms", run)):
    for p in (50, 95, 99):
        assert close(lat[name]["p%d" % p], ref(v, p), 1e-9), (name, p, lat[name], v)
    assert lat[name]["max"] == max(v)
# the three sleeps ran ~4 s each, one after another on w1
assert 3900 <= lat["run_ms"]["max"] < 6000 and lat["wait_ms"]["max"] > 3500, lat
EOF
$PY "$T/grafana.py" "$T" "$DASH" "$REDIS_PORT" graft: || fail "Grafana queries after the failures"

# ---- rates: consecutive JSON samples; rate = change of a counter / window
# twenty sleeps of 0.10 .. 0.29 s on w1: about 4 s of stages finishing
printf 'stages:\n  n: {op: sleep, matrix: {seconds: [%s]}}\n' "$(seq -s ', ' 0.10 0.01 0.29)" >"$T/many.yaml"
JM=$("$G" submit "$T/many.yaml")
set +e
timeout 10 "$G" top --redis "$R" --json --interval 0.4 2>"$T/err" | head -n 4 >"$T/stream.jsonl"
set -e
[ "$(wait_job "$JM" 30)" = done ] || fail "matrix job: $(job_state "$JM")"
$PY - "$T/stream.jsonl" <<'EOF' || fail "rates: $(cat "$T/stream.jsonl")"
import json, sys
S = [json.loads(l) for l in open(sys.argv[1])]
assert len(S) == 4, len(S)
assert S[0]["window_s"] is None and S[0]["throughput"] is None
moved = False
for a, b in zip(S, S[1:]):
    win = (b["time_ms"] - a["time_ms"]) / 1000
    assert abs(b["window_s"] - win) < 1e-9 and 0.3 < win < 2, (win, b["window_s"])
    for k, v in b["counters"].items():
        want = (v - a["counters"].get(k, 0)) / win
        assert abs(b["rates"][k] - want) < 1e-9, (k, b["rates"][k], want)
    assert b["throughput"] == b["rates"]["done"]
    moved |= b["counters"]["done"] > a["counters"]["done"]
assert moved, "no stage finished while sampling"
EOF

# ---- full screen on a terminal (script(1) gives a pty): draws, q quits
if command -v script >/dev/null; then
  set +e
  (sleep 1.5; printf q) | timeout 10 script -qfc "stty cols 100 rows 30; '$G' top --redis '$R' --interval 0.3" /dev/null >"$T/screen.out"
  rc=$?
  set -e
  [ $rc -eq 0 ] || fail "full-screen top: exit $rc"
  grep -q $'\e\[?1049h' "$T/screen.out" && grep -q $'\e\[?1049l' "$T/screen.out" || fail "no alternate screen"
  [ "$(grep -c 'WORKER ' "$T/screen.out")" -ge 2 ] || fail "fewer than two frames: $(head -c 2000 "$T/screen.out")"
else
  echo "SKIP full-screen check: no script(1)"
fi

# ---- every op a worker can serve is in the dashboard's op list
start_worker w3
wait_workers 3
$PY - "$DASH" "$(rcli hget graft:worker:w3 ops)" <<'EOF' || fail "the dashboard's op variable misses ops"
import json, sys
dash = json.load(open(sys.argv[1]))
ops = [v for v in dash["templating"]["list"] if v["name"] == "op"][0]["query"].split(",")
served = json.loads(sys.argv[2])
assert served and set(served) <= set(ops), sorted(set(served) - set(ops))
EOF

# ---- read-only: with the broker and workers stopped, everything top sends
kill9 "$W1" "$W2" "$WORKER_PID" "$BROKER_PID"
redis-cli -p "$REDIS_PORT" monitor >"$T/monitor.txt" 2>&1 &
MON=$!
PIDS+=("$MON")
sleep 0.3
top --once --json --interval 0.2 >/dev/null
sleep 0.3
kill9 "$MON"
$PY - "$T/monitor.txt" <<'EOF' || fail "graft top sent a command that is not a read"
import re, sys
ok = {"AUTH", "SELECT", "PING", "TIME", "SCAN", "ZCARD", "SCARD", "ZREVRANGE", "SMEMBERS",
      "LLEN", "LRANGE", "HMGET", "HGETALL"}
cmds = [m.group(1).upper() for m in (re.search(r'\] "([^"]+)"', l) for l in open(sys.argv[1])) if m]
seen = set(cmds) - {"MONITOR"}
assert {"TIME", "HMGET", "ZCARD", "SCAN"} <= seen, seen
assert seen <= ok, seen - ok
print("commands sent by graft top:", " ".join(sorted(seen)))
EOF
echo "test_top: ok"
