#!/usr/bin/env bash
# The evaluate op through `graft exec`: perplexity of the golden llama and
# gpt2 on .jsonl and .bin token data against transformers' golden.json,
# shards joined by task combine equal to the unsharded run bit for bit, the
# weights statistics of the LoRA delta against numpy, and bad input (token id
# >= vocab, unsupported model_type, missing tensor, empty data file, windows
# longer than max_position_embeddings) as one-line errors with exit status 2.
set -euo pipefail
G="${GRAFT_BIN:-build}/graft"
FX="${GRAFT_FIXTURES:-tests/fixtures}/golden"
PY=/usr/bin/python3
T=$(mktemp -d /tmp/graft-test-evaluate-XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
ok() { echo "ok   $*"; }

if ! "$PY" -c 'import numpy' 2>/dev/null; then
  echo "SKIP: $PY has no numpy (scripts/install-deps installs python3-numpy)"
  exit 0
fi

# token data from the golden input_ids: one sequence per line, and one
# uint16 stream of the same 4 x 48 ids
"$PY" - "$FX/llama-gqa/golden.json" "$T" <<'EOF'
import json, sys
import numpy as np
g = json.load(open(sys.argv[1]))
with open(sys.argv[2] + "/g.jsonl", "w") as f:
    for s in g["input_ids"]:
        f.write(json.dumps(s) + "\n")
np.asarray(g["input_ids"], dtype="<u2").tofile(sys.argv[2] + "/g.bin")
EOF

# 1. perplexity against golden.json (mean NLL within 1e-5)
check_mean() { # metrics.json golden.json what
  "$PY" - "$1" "$2" <<'EOF'
import json, math, sys
m, g = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert abs(m["mean_nll"] - g["mean_nll"]) < 1e-5, (m["mean_nll"], g["mean_nll"])
assert abs(m["ppl"] - math.exp(m["mean_nll"])) < 1e-9 * m["ppl"]
assert m["tokens"] == 4 * 47 and m["tokens_per_s"] > 0, m
EOF
}
"$G" exec evaluate task=perplexity --input model="$FX/llama-gqa" --input data="$T/g.jsonl" \
  seq_len=48 -o "$T/p1" >"$T/p1.json"
if check_mean "$T/p1.json" "$FX/llama-gqa/golden.json"; then ok "llama jsonl"; else fail "llama jsonl"; fi
[ -s "$T/p1/result.json" ] || fail "no result.json in the output tree"
"$G" exec evaluate task=perplexity --input model="$FX/llama-gqa" --input data="$T/g.bin" \
  token_dtype=uint16 seq_len=48 stride=48 >"$T/p2.json"
if check_mean "$T/p2.json" "$FX/llama-gqa/golden.json"; then ok "llama bin"; else fail "llama bin"; fi
"$PY" - "$FX/gpt2/golden.json" "$T" <<'EOF'
import json, sys
g = json.load(open(sys.argv[1]))
with open(sys.argv[2] + "/gpt2.jsonl", "w") as f:
    for s in g["input_ids"]:
        f.write(json.dumps(s) + "\n")
EOF
"$G" exec evaluate task=perplexity --input model="$FX/gpt2" --input data="$T/gpt2.jsonl" >"$T/p4.json"
if check_mean "$T/p4.json" "$FX/gpt2/golden.json"; then ok "gpt2 jsonl"; else fail "gpt2 jsonl"; fi

# 2. three shards of a strided evaluation joined by task combine
"$G" exec evaluate task=perplexity --input model="$FX/llama-gqa" --input data="$T/g.bin" \
  seq_len=40 stride=15 batch=2 >"$T/whole.json"
for i in 0 1 2; do
  "$G" exec evaluate task=perplexity --input model="$FX/llama-gqa" --input data="$T/g.bin" \
    seq_len=40 stride=15 batch=2 shard="$i/3" -o "$T/s$i" >/dev/null
done
"$G" exec evaluate task=combine --input inputs="$T/s2" --input inputs="$T/s0" \
  --input inputs="$T/s1" >"$T/comb.json"
if "$PY" - "$T/whole.json" "$T/comb.json" <<'EOF'; then ok "shards combine exactly"; else fail "combine"; fi
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert a["mean_nll"] == b["mean_nll"] and a["tokens"] == b["tokens"] == 191, (a, b)
assert b["shards"] == 3
EOF

# 3. weights of merged-minus-base against numpy
"$G" exec evaluate task=weights --input model="$FX/lora-llama/merged" --input base="$FX/llama-gqa" \
  >"$T/w.json"
if "$PY" - "$T/w.json" "$FX/lora-llama/merged/model.safetensors" "$FX/llama-gqa/model.safetensors" <<'EOF'; then ok "weights vs numpy"; else fail "weights"; fi
import json, struct, sys
import numpy as np
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], "<f4")
            for k, v in h.items() if k != "__metadata__"}
m = json.load(open(sys.argv[1]))
a, b = load(sys.argv[2]), load(sys.argv[3])
d = np.concatenate([(a[k].astype(np.float64) - b[k]) for k in sorted(a)])
assert abs(m["l2"] - np.sqrt((d * d).sum())) < 1e-9 * m["l2"], m["l2"]
assert abs(m["mean"] - d.mean()) < 1e-12 and abs(m["var"] - d.var()) < 1e-9 * d.var()
assert abs(m["sparsity"] - np.mean(d == 0)) < 1e-12 and m["numel"] == d.size
assert abs(m["abs_max"] - np.abs(d).max()) < 1e-7
EOF

# 4. bad input: one line on stderr naming the file and rule, exit status 2
expect_err() { # what pattern cmd...
  local what=$1 pat=$2
  shift 2
  set +e
  "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  set -e
  if [ $rc -ne 2 ]; then fail "$what: exit status $rc, not 2"; return; fi
  if [ "$(wc -l <"$T/err")" -ne 1 ]; then fail "$what: not one line: $(cat "$T/err")"; return; fi
  if ! grep -q -- "$pat" "$T/err"; then fail "$what: '$(cat "$T/err")' lacks '$pat'"; return; fi
  ok "$what: $(cat "$T/err")"
}
printf '[1, 2, 3]\n[4, 200, 5]\n' >"$T/bad.jsonl"
: >"$T/empty.bin"
mkdir -p "$T/falcon" "$T/deep"
sed 's/"model_type": "llama"/"model_type": "falcon"/' "$FX/llama-gqa/config.json" >"$T/falcon/config.json"
sed 's/"num_hidden_layers": 2/"num_hidden_layers": 3/' "$FX/llama-gqa/config.json" >"$T/deep/config.json"
ln -s "$(cd "$FX/llama-gqa" && pwd)/model.safetensors" "$T/falcon/model.safetensors"
ln -s "$(cd "$FX/llama-gqa" && pwd)/model.safetensors" "$T/deep/model.safetensors"
M="$FX/llama-gqa"
expect_err "token id >= vocab" "bad.jsonl:2: sequence item 1: token id 200 is >= the vocabulary size 160" \
  "$G" exec evaluate task=perplexity --input model="$M" --input data="$T/bad.jsonl"
expect_err "unsupported model_type" "model_type 'falcon' is not supported" \
  "$G" exec evaluate task=perplexity --input model="$T/falcon" --input data="$T/g.jsonl"
expect_err "missing tensor" "missing tensor 'model.layers.2.input_layernorm.weight'" \
  "$G" exec evaluate task=perplexity --input model="$T/deep" --input data="$T/g.jsonl"
expect_err "empty data file" "empty.bin: empty data file" \
  "$G" exec evaluate task=perplexity --input model="$M" --input data="$T/empty.bin"
expect_err "window too long" "seq_len 300 is longer than max_position_embeddings 256" \
  "$G" exec evaluate task=perplexity --input model="$M" --input data="$T/g.bin" seq_len=300

[ $fails -eq 0 ] || { echo "$fails check(s) failed" >&2; exit 1; }
echo "all evaluate exec checks passed"
