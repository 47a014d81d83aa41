#!/usr/bin/env bash
# graft ops: the op table as text and JSON, one op's parameters, unknown op.
set -euo pipefail
G=${GRAFT_BIN:?}/graft
fail() { echo "FAIL: $*"; exit 1; }

out=$("$G" ops)
for op in noop fetch delta prune merge apply extract-lora evaluate train report nbody nbody-train; do
  grep -q "^$op " <<<"$out" || fail "graft ops does not list $op"
done
"$G" ops --json | /usr/bin/python3 -c '
import json, sys
ops = json.load(sys.stdin)
names = [o["name"] for o in ops]
assert len(names) == len(set(names)), "duplicate op names"
for o in ops:
    assert o["version"] >= 1 and isinstance(o["params"], list), o["name"]
m = next(o for o in ops if o["name"] == "merge")
p = {x["name"]: x for x in m["params"]}
assert p["method"]["required"] and p["models"]["type"] == "inputs", p
' || fail "graft ops --json"
"$G" ops prune | grep -q "density" || fail "graft ops prune does not list density"
set +e
err=$("$G" ops nosuch 2>&1 >/dev/null); rc=$?
set -e
[ "$rc" -eq 2 ] || fail "unknown op: exit $rc, expected 2"
[ "$(wc -l <<<"$err")" -eq 1 ] && grep -q "unknown op 'nosuch'" <<<"$err" || fail "unknown op message: $err"
echo "1 passed, 0 failed"
