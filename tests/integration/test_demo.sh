#!/usr/bin/env bash
# test_demo: the demo pipeline (examples/demo.yaml) end to end on the
# embedded default — `graft run` starts Redis, the broker and workers and
# stops them — with fewer epochs. Checks: every stage finishes; the report's
# tables hold exactly the evaluated stages' metrics (rounded as shown); the
# plot data equal them too and the plots are well-formed SVG; fine-tuning
# learns its task; a second run is served from the store; all of it in well
# under the 3 minutes the full demo may take.
set -euo pipefail
BIN=${GRAFT_BIN:?GRAFT_BIN must name the build directory}
SRC=${GRAFT_SRC:?GRAFT_SRC must name the source directory}
G=$BIN/graft
PY=/usr/bin/python3
T=$(mktemp -d /tmp/graft-demo-XXXXXX)
export GRAFT_STORE=$T/store GRAFT_STATE=$T/state
unset GRAFT_BROKER GRAFT_REDIS
cleanup() {
  local rc=$?
  [ $rc -ne 0 ] && [ -f "$T/progress.log" ] && tail -n 30 "$T/progress.log" >&2
  chmod -R u+w "$T" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

SETS=(--set epochs=4 --set ft_epochs=3)
t0=$(date +%s)
"$G" run "$SRC/examples/demo.yaml" --json "${SETS[@]}" >"$T/status.json" 2>"$T/progress.log" ||
  fail "graft run exited with $?"
elapsed=$(($(date +%s) - t0))
echo "demo pipeline (short epochs): ${elapsed}s"
[ "$elapsed" -lt 120 ] || fail "the short demo took ${elapsed}s"

report=$($PY -c '
import json, sys
s = json.load(open(sys.argv[1]))
print([x for x in s["stages"] if x["id"] == "report"][0]["outputs"]["out"])' "$T/status.json")
"$G" get "$report" -o "$T/report" --copy >/dev/null

$PY - "$T/status.json" "$T/report" <<'EOF'
import csv, json, re, sys
import xml.etree.ElementTree as ET

status, rep = json.load(open(sys.argv[1])), sys.argv[2]
assert status["state"] == "done", status["state"]
stages = {s["id"]: s for s in status["stages"]}
bad = [i for i, s in stages.items() if s["state"] not in ("done", "cached")]
assert not bad, bad
methods = ["task_arithmetic", "ties", "dare_ties", "breadcrumbs", "pcb"]
tasks = ["identity", "rot90", "flip", "invert"]


def bindings(sid):
    m = re.match(r"^([^\[]+)\[(.*)\]$", sid)
    return (m.group(1), dict(kv.split("=", 1) for kv in m.group(2).split(","))) if m else (sid, {})


def acc(name, **want):
    hits = [s for i, s in stages.items()
            if bindings(i)[0] == name and all(bindings(i)[1].get(k) == v for k, v in want.items())]
    assert len(hits) == 1, (name, want, len(hits))
    return hits[0]["metrics"]["acc"]


md = open(rep + "/report.md").read()
rows = {}
for line in md.splitlines():
    cells = [c.strip() for c in line.strip("|").split("|")]
    if line.startswith("|") and not set(line) <= set("|:- "):
        rows.setdefault(tuple(cells[:2]), cells)

# merged models: every (method, lambda), each task's cell and the mean
lambdas = sorted({bindings(i)[1]["lambda"] for i in stages if i.startswith("merged[")})
assert lambdas, "no merged stages"
for m in methods:
    for lam in lambdas:
        cells = rows[(m, lam)]
        accs = [acc("ev_merged", method=m, transform=t, **{"lambda": lam}) for t in tasks]
        assert cells[2:6] == ["%.3f" % a for a in accs], (m, lam, cells, accs)
        assert cells[6] == "%.3f" % (sum(accs) / 4), (cells, accs)
# single models
for model in ["base", "ft_rot90", "ft_flip", "ft_invert"]:
    cells = [c.strip() for c in re.search(r"^\| %s +\|(.*)\|$" % model, md, re.M).group(1).split("|")]
    assert cells[:4] == ["%.3f" % acc("ev_single", model=model, transform=t) for t in tasks], cells
# fine-tuning learns its task (the base cannot read rotated digits)
for t in ["rot90", "flip", "invert"]:
    a_ft, a_base = acc("ev_single", model="ft_" + t, transform=t), acc("ev_single", model="base", transform=t)
    assert a_ft > a_base + 0.3, (t, a_ft, a_base)
assert acc("ev_single", model="base", transform="identity") > 0.8

# pruning: the table and the plot's numbers are the stages' accuracies
densities = sorted({bindings(i)[1]["density"] for i in stages if i.startswith("ev_pruned[")}, key=float)
assert len(densities) == 7, densities
pts = list(csv.reader(open(rep + "/pruning.csv")))
assert pts[0] == ["series", "x", "y"]
series = [r for r in pts[1:] if not r[0].startswith("ref ")]
assert len(series) == 14, len(series)
for name, x, y in series:
    a = acc("ev_pruned", method=name, density=[d for d in densities if float(d) == float(x)][0])
    assert float(y) == a, (name, x, y, a)
refs = {r[0]: float(r[2]) for r in pts[1:] if r[0].startswith("ref ")}
assert refs == {"ref base": acc("ev_single", model="base", transform="rot90"),
                "ref ft_rot90": acc("ev_single", model="ft_rot90", transform="rot90")}, refs
for d in densities:
    m = re.search(r"^\| %s +\| +(\S+) \| +(\S+) \|$" % re.escape(d), md, re.M)
    assert m and list(m.groups()) == ["%.3f" % acc("ev_pruned", method=k, density=d)
                                      for k in ("dare", "magnitude")], (d, m and m.groups())

# plots: plain, well-formed SVG with direct labels
for name in ["pruning", "merging", "tradeoff"]:
    root = ET.parse("%s/%s.svg" % (rep, name)).getroot()
    assert root.tag.endswith("svg"), root.tag
    text = open("%s/%s.svg" % (rep, name)).read()
    for label in (["dare", "magnitude"] if name == "pruning" else methods):
        assert ">%s<" % label in text, (name, label)
# report.csv: one line per gathered stage
lines = list(csv.reader(open(rep + "/report.csv")))
assert len(lines) - 1 == sum(1 for i in stages if i.startswith(("ev_single[", "ev_merged[", "ev_pruned["))), len(lines)
print("report checks passed: %d merged rows, %d pruning points" % (len(methods) * len(lambdas), len(series)))
EOF

# the same run again: every stage comes from the store
t0=$(date +%s)
"$G" run "$SRC/examples/demo.yaml" --json "${SETS[@]}" >"$T/status2.json" 2>"$T/progress.log" ||
  fail "second graft run exited with $?"
$PY -c '
import json, sys
s = json.load(open(sys.argv[1]))
states = {x["state"] for x in s["stages"]}
assert states == {"cached"}, states' "$T/status2.json" || fail "second run recomputed stages"
echo "second run (cached): $(($(date +%s) - t0))s"
echo "test_demo: ok"
