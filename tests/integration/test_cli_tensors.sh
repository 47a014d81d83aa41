#!/usr/bin/env bash
# graft tensors inspect|diff|stats on the golden checkpoints, on a sharded copy
# and on corrupt files. Expected values come from an independent reader: Python
# (json + struct + numpy) parsing the safetensors bytes itself.
set -euo pipefail
G="${GRAFT_BIN:-build}/graft"
F="${GRAFT_FIXTURES:-tests/fixtures}/golden"
PY=/usr/bin/python3
T=$(mktemp -d /tmp/graft-test-cli-tensors-XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
ok() { echo "ok   $*"; }

if ! "$PY" -c 'import numpy' 2>/dev/null; then
  echo "SKIP: $PY has no numpy (scripts/install-deps installs python3-numpy)"
  exit 0
fi

# Python helpers: read a safetensors file or checkpoint directory without graft.
cat >"$T/ref.py" <<'EOF'
import json, os, struct, sys
import numpy as np

NP = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "U8": "u1", "I8": "i1", "I16": "<i2",
      "U16": "<u2", "I32": "<i4", "U32": "<u4", "I64": "<i8", "U64": "<u8", "BOOL": "u1"}

def read_file(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", None) or {}
    out = {}
    for k, v in h.items():
        s, e = v["data_offsets"]
        out[k] = dict(dtype=v["dtype"], shape=v["shape"], raw=b[8 + n + s:8 + n + e],
                      file=os.path.basename(path))
    return out, meta

def read_ckpt(path):
    if os.path.isfile(path):
        return read_file(path)
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return read_file(os.path.join(path, "model.safetensors"))
    ip = os.path.join(path, "model.safetensors.index.json")
    if not os.path.exists(ip):  # a directory holding one other .safetensors (an adapter)
        (only,) = [f for f in os.listdir(path) if f.endswith(".safetensors")]
        return read_file(os.path.join(path, only))
    idx = json.load(open(ip))
    out, meta = {}, None
    for f in sorted(set(idx["weight_map"].values())):
        t, m = read_file(os.path.join(path, f))
        out.update(t)
        meta = m if meta is None else meta
    return out, meta

def values(t):
    if t["dtype"] == "BF16":
        u = np.frombuffer(t["raw"], "<u2").astype(np.uint32) << 16
        return u.view(np.float32).astype(np.float64)
    return np.frombuffer(t["raw"], NP[t["dtype"]]).astype(np.float64)

def close(a, b, rel=1e-9, abs_=1e-12):
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= abs_ + rel * abs(b)

cmd = sys.argv[1]
if cmd == "inspect":                      # ref.py inspect PATH < graft-json
    got = json.load(sys.stdin)
    ts, meta = read_ckpt(sys.argv[2])
    assert [t["name"] for t in got["tensors"]] == sorted(ts), "names or order"
    for t in got["tensors"]:
        r = ts[t["name"]]
        assert t["dtype"] == r["dtype"] and t["shape"] == r["shape"], t["name"]
        assert t["bytes"] == len(r["raw"]) and t["file"] == r["file"], t["name"]
    assert got["metadata"] == meta, (got["metadata"], meta)
    assert got["parameters"] == sum(int(np.prod(r["shape"])) for r in ts.values())
    assert got["total_bytes"] == sum(len(r["raw"]) for r in ts.values())
    print(len(ts))
elif cmd == "params":                     # ref.py params PATH
    ts, _ = read_ckpt(sys.argv[2])
    print(sum(int(np.prod(t["shape"])) for t in ts.values()))
elif cmd == "stats":                      # ref.py stats PATH < graft-json
    got = json.load(sys.stdin)
    ts, _ = read_ckpt(sys.argv[2])
    assert sorted(t["name"] for t in got["tensors"]) == sorted(ts)
    for t in got["tensors"]:
        v = values(ts[t["name"]])
        fin = v[np.isfinite(v)]
        want = dict(count=v.size, nan=int(np.isnan(v).sum()), inf=int(np.isinf(v).sum()),
                    zero_fraction=float((v == 0).mean()) if v.size else None,
                    mean=float(fin.mean()) if fin.size else None,
                    std=float(fin.std()) if fin.size else None,
                    min=float(fin.min()) if fin.size else None,
                    max=float(fin.max()) if fin.size else None,
                    l2=float(np.sqrt((fin * fin).sum())))
        scale = float(np.abs(fin).max()) if fin.size else 0.0
        for k, w in want.items():
            assert close(t[k], w, rel=1e-9, abs_=1e-12 * (1 + scale)), (t["name"], k, t[k], w)
    print(len(ts))
elif cmd == "diff":                       # ref.py diff A B < graft-json
    got = json.load(sys.stdin)
    a, _ = read_ckpt(sys.argv[2])
    b, _ = read_ckpt(sys.argv[3])
    for t in got["tensors"]:
        x, y = a.get(t["name"]), b.get(t["name"])
        if x is None or y is None:
            assert t["status"] == ("only_b" if x is None else "only_a"), t
            continue
        d = float(np.abs(values(x) - values(y)).max()) if x["raw"] else 0.0
        assert close(t["max_abs_diff"], d), (t, d)
        assert (t["status"] == "equal") == (d <= got["atol"]), t
    print(",".join(sorted(t["name"] for t in got["tensors"] if t["status"] != "equal")))
elif cmd == "shard":                      # ref.py shard SRC.safetensors OUTDIR: two shards + index
    ts, meta = read_file(sys.argv[2])
    names = sorted(ts)
    os.makedirs(sys.argv[3], exist_ok=True)
    wm = {}
    for i, part in enumerate([names[:len(names) // 2], names[len(names) // 2:]]):
        fn = "model-%05d-of-00002.safetensors" % (i + 1)
        hdr, off = {"__metadata__": meta}, 0
        for k in part:
            hdr[k] = dict(dtype=ts[k]["dtype"], shape=ts[k]["shape"],
                          data_offsets=[off, off + len(ts[k]["raw"])])
            off += len(ts[k]["raw"])
            wm[k] = fn
        h = json.dumps(hdr).encode()
        h += b" " * (-len(h) % 8)
        with open(os.path.join(sys.argv[3], fn), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + b"".join(ts[k]["raw"] for k in part))
    json.dump({"metadata": {"total_size": sum(len(t["raw"]) for t in ts.values())},
               "weight_map": wm}, open(os.path.join(sys.argv[3], "model.safetensors.index.json"), "w"))
elif cmd == "special":                    # ref.py special OUT: F16 + BF16 + I32 with zeros, NaN, Inf
    rng = np.random.default_rng(5)
    a = (rng.standard_normal(3000) * 40 + 1000).astype(np.float16)
    a[::7] = 0; a[3] = np.nan; a[10] = np.inf; a[11] = -np.inf
    bf = (rng.standard_normal(1000).astype(np.float32).view(np.uint32) >> 16).astype("<u2")
    i32 = rng.integers(-5, 5, 777).astype("<i4")
    parts = [("a", "F16", [3000], a.astype("<f2").tobytes()), ("b", "BF16", [10, 100], bf.tobytes()),
             ("c", "I32", [777], i32.tobytes()), ("e", "F32", [0, 4], b"")]
    hdr, off = {}, 0
    for k, dt, sh, raw in parts:
        hdr[k] = dict(dtype=dt, shape=sh, data_offsets=[off, off + len(raw)]); off += len(raw)
    h = json.dumps(hdr).encode()
    open(sys.argv[2], "wb").write(struct.pack("<Q", len(h)) + h + b"".join(p[3] for p in parts))
EOF

# ---- inspect ----
for m in llama-gqa gpt2 lora-llama/merged lora-llama/adapter; do
  if n=$("$G" tensors inspect "$F/$m" --json | "$PY" "$T/ref.py" inspect "$F/$m"); then
    ok "inspect --json $m ($n tensors)"
  else
    fail "inspect --json $m"
  fi
done
out=$("$G" tensors inspect "$F/llama-gqa")
params=$("$PY" "$T/ref.py" params "$F/llama-gqa")
if grep -q "^parameters: $params\$" <<<"$out" && grep -q "21 tensors in 1 file" <<<"$out" &&
  grep -q "model.layers.1.self_attn.k_proj.weight *F32 *\[32, 64\] *8192 *model.safetensors" <<<"$out" &&
  grep -q "format = pt" <<<"$out"; then
  ok "inspect text ($params parameters)"
else
  fail "inspect text: $out"
fi

# ---- stats ----
"$PY" "$T/ref.py" special "$T/special.safetensors"
for m in "$F/llama-gqa" "$F/gpt2" "$T/special.safetensors"; do
  if n=$("$G" tensors stats "$m" --json | "$PY" "$T/ref.py" stats "$m"); then
    ok "stats --json $(basename "$m") ($n tensors, against numpy)"
  else
    fail "stats --json $m"
  fi
done
"$G" tensors stats "$T/special.safetensors" | grep -q "^a  *F16 .* 1  2\$" || fail "stats text NaN/Inf counts"

# ---- diff ----
# the tensors that differ between the base and the LoRA-merged model are
# exactly the adapter's target modules (adapter_config.json), in every layer
set +e
js=$("$G" tensors diff "$F/llama-gqa" "$F/lora-llama/merged" --json)
rc=$?
set -e
[ $rc -eq 1 ] || fail "diff base merged: exit $rc, want 1"
differ=$("$PY" "$T/ref.py" diff "$F/llama-gqa" "$F/lora-llama/merged" <<<"$js") || fail "diff values"
want=$("$PY" -c "
import json
c = json.load(open('$F/lora-llama/adapter/adapter_config.json'))
mods = c['target_modules']
names = []
for l in range(2):
    for m in mods:
        kind = 'mlp' if m in ('gate_proj', 'up_proj', 'down_proj') else 'self_attn'
        names.append('model.layers.%d.%s.%s.weight' % (l, kind, m))
print(','.join(sorted(names)))")
[ "$differ" = "$want" ] && ok "diff base vs merged: differing = LoRA targets" || fail "diff: $differ != $want"
"$G" tensors diff "$F/llama-gqa" "$F/lora-llama/merged" --atol 1 >/dev/null && ok "diff --atol 1 passes" ||
  fail "diff --atol 1"
"$G" tensors diff "$F/llama-gqa" "$F/llama-gqa/model.safetensors" >/dev/null && ok "diff with itself" ||
  fail "diff self"
set +e
"$G" tensors diff "$F/llama-gqa" "$F/gpt2" >"$T/d.txt"
rc=$?
set -e
[ $rc -eq 1 ] && grep -q "^transformer.wte.weight: only in $F/gpt2\$" "$T/d.txt" &&
  grep -q "^lm_head.weight: only in $F/llama-gqa\$" "$T/d.txt" && ok "diff: missing on one side" ||
  fail "diff llama gpt2 (rc $rc)"

# ---- a sharded copy written by Python ----
"$PY" "$T/ref.py" shard "$F/llama-gqa/model.safetensors" "$T/sharded"
if n=$("$G" tensors inspect "$T/sharded" --json | "$PY" "$T/ref.py" inspect "$T/sharded"); then
  ok "inspect sharded ($n tensors)"
else
  fail "inspect sharded"
fi
"$G" tensors diff "$T/sharded" "$F/llama-gqa" >/dev/null && ok "diff sharded vs single" || fail "diff sharded"

# ---- invalid input: exit 2, one line on stderr naming file (tensor) and rule ----
expect_bad() { # label, expected substring, command...
  local label=$1 want=$2
  shift 2
  set +e
  "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  set -e
  local lines
  lines=$(wc -l <"$T/err")
  if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -qF -- "$want" "$T/err" && [ ! -s "$T/out" ]; then
    ok "$label: $(cat "$T/err")"
  else
    fail "$label: rc $rc, $lines stderr lines: $(cat "$T/err")"
  fi
}
src="$F/llama-gqa/model.safetensors"
size=$(stat -c %s "$src")
head -c $((size - 1)) "$src" >"$T/trunc.safetensors"
expect_bad "truncated" "$T/trunc.safetensors: the tensors end at data offset" "$G" tensors inspect "$T/trunc.safetensors"
{ cat "$src"; printf 'x'; } >"$T/trail.safetensors"
expect_bad "trailing" "trailing bytes" "$G" tensors stats "$T/trail.safetensors"
printf '\x05\x00\x00\x00' >"$T/short.safetensors"
expect_bad "short" "$T/short.safetensors: file is 4 bytes" "$G" tensors inspect "$T/short.safetensors"
"$PY" -c "
import struct
h = b'{\"w.weight\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 10]}}'
open('$T/size.safetensors', 'wb').write(struct.pack('<Q', len(h)) + h + bytes(10))
h = b'{\"w\": {\"dtype\": \"Q8\", \"shape\": [1], \"data_offsets\": [0, 1]}}'
open('$T/dtype.safetensors', 'wb').write(struct.pack('<Q', len(h)) + h + bytes(1))
open('$T/huge.safetensors', 'wb').write(struct.pack('<Q', 10**12) + b'{}')"
expect_bad "size" "tensor 'w.weight': data_offsets [0, 10] span 10 bytes but shape [3] of F32 needs 12" \
  "$G" tensors diff "$F/llama-gqa" "$T/size.safetensors"
expect_bad "dtype" "tensor 'w': unknown dtype \"Q8\"" "$G" tensors stats "$T/dtype.safetensors"
expect_bad "header" "header length 1000000000000 exceeds" "$G" tensors inspect "$T/huge.safetensors" --json
mkdir "$T/badshard" && cp -r "$T/sharded/." "$T/badshard/" && rm "$T/badshard/model-00002-of-00002.safetensors"
expect_bad "missing shard" "model-00002-of-00002.safetensors" "$G" tensors inspect "$T/badshard"
expect_bad "missing path" "$T/nope" "$G" tensors inspect "$T/nope"
expect_bad "usage: no path" "takes 2 paths" "$G" tensors diff "$F/gpt2"
expect_bad "usage: atol" "--atol 'x'" "$G" tensors diff "$F/gpt2" "$F/gpt2" --atol x
expect_bad "usage: subcommand" "unknown subcommand" "$G" tensors frobnicate

[ $fails -eq 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all passed"
