#!/usr/bin/env bash
# graft merge CONFIG.yml OUT_DIR against the equivalent `graft exec merge`
# stage on the golden llama fixtures: same bytes, config and generation
# files copied, bad configs named by file and line with exit status 2 and no
# OUT_DIR left behind.
set -euo pipefail
G=${GRAFT_BIN:?}/graft
FIX=${GRAFT_FIXTURES:?}/golden
T=$(mktemp -d "${TMPDIR:-/tmp}/graft-merge-cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# Two fine-tunes of llama-gqa: peft's merged LoRA model, and the base moved
# by -0.5 of that LoRA's delta (delta + apply through graft exec).
"$G" exec delta --input base="$FIX/llama-gqa" --input model="$FIX/lora-llama/adapter" \
  -o "$T/lora-delta" >/dev/null
"$G" exec apply --input base="$FIX/llama-gqa" --input delta="$T/lora-delta" scale=-0.5 \
  -o "$T/ft2" >/dev/null

cat >"$T/ties.yml" <<EOF
merge_method: ties
base_model: $FIX/llama-gqa
models:
  - model: $FIX/llama-gqa
  - model: $FIX/lora-llama/merged
    parameters:
      weight: 1.0
      density: 0.5
  - model: $T/ft2
    parameters:
      weight: 0.5
      density: [0.3, 0.7]
parameters:
  normalize: true
  int8_mask: true
dtype: bfloat16
tokenizer_source: base
EOF
"$G" merge "$T/ties.yml" "$T/out-cli" --threads 2 >"$T/merge.log"
grep -q "merged 2 models with ties" "$T/merge.log" || fail "summary line: $(cat "$T/merge.log")"
"$G" exec merge method=ties --input base="$FIX/llama-gqa" \
  --input models="$FIX/lora-llama/merged" --input models="$T/ft2" \
  'per_model=[{"weight":1.0,"density":0.5},{"weight":0.5,"density":[0.3,0.7]}]' \
  normalize=true dtype=bfloat16 --threads 1 -o "$T/out-exec" >/dev/null
cmp "$T/out-cli/model.safetensors" "$T/out-exec/model.safetensors" ||
  fail "graft merge and graft exec merge differ"
if "$G" tensors diff "$T/out-cli" "$T/out-exec" >"$T/diff.log" 2>&1; then :; else
  # tensors diff is optional in this build; cmp above already compared the bytes
  grep -q "unknown command" "$T/diff.log" || fail "tensors diff: $(cat "$T/diff.log")"
fi
for f in config.json generation_config.json; do
  cmp "$FIX/llama-gqa/$f" "$T/out-cli/$f" || fail "$f not copied from the base"
done
"$G" merge "$T/ties.yml" --print-params | grep -q '"method":"ties"' || fail "--print-params"

# OUT_DIR must be empty; it is left untouched
mkdir -p "$T/busy" && touch "$T/busy/x"
set +e
"$G" merge "$T/ties.yml" "$T/busy" 2>"$T/err"; st=$?
set -e
[ "$st" = 2 ] || fail "busy OUT_DIR: exit $st"
grep -q "not an empty directory" "$T/err" || fail "busy OUT_DIR message: $(cat "$T/err")"

# bad configs: one line naming file and line, exit 2, no OUT_DIR
check_bad() { # yaml-text expected-substring
  printf '%s\n' "$1" >"$T/bad.yml"
  set +e
  "$G" merge "$T/bad.yml" "$T/out-bad" 2>"$T/err"; st=$?
  set -e
  [ "$st" = 2 ] || fail "exit $st for: $1"
  grep -qF "$2" "$T/err" || fail "message '$(cat "$T/err")' lacks '$2'"
  [ "$(wc -l <"$T/err")" = 1 ] || fail "more than one line: $(cat "$T/err")"
  [ ! -e "$T/out-bad" ] || fail "OUT_DIR created on failure"
  ls -a "$T" | grep -q '^\.graft-merge-' && fail "work directory left behind"
  return 0
}
check_bad "merge_method: frankenmerge
models: [{model: x}]" "bad.yml:1: merge_method 'frankenmerge'"
check_bad "merge_method: ties
base_model: $FIX/llama-gqa
models:
  - model: $FIX/gpt2
    parameters: {weight: 1}" "is missing in base"
check_bad "merge_method: ties
base_model: $FIX/llama-gqa
models:
  - model: $FIX/lora-llama/merged
    parameters: {weight: 1, density: 0}" "density"
check_bad "merge_method: ties
base_model: $FIX/llama-gqa
models:
  - model: $T/no-such-model
    parameters: {weight: 1}" "no-such-model"
# hub models go through the fetch op (a scripted Hub on loopback): a missing
# repository is named, and a fetched file that is no safetensors is too
if [ -x /usr/bin/python3 ] && [ -n "${GRAFT_SRC:-}" ]; then
  coproc SRV { exec /usr/bin/python3 "$GRAFT_SRC/tests/integration/fetch_server.py" "$T/hub"; }
  read -r _ HUBPORT _ <&"${SRV[0]}"
  export HF_ENDPOINT=http://127.0.0.1:$HUBPORT HF_TOKEN=secret-token
  check_bad "merge_method: task_arithmetic
base_model: hf://org/no-such-repo
models:
  - model: $FIX/lora-llama/merged
    parameters: {weight: 1}" "RepoNotFound"
  grep -q "hf://org/no-such-repo" "$T/err" || fail "hub error does not name the model: $(cat "$T/err")"
  check_bad "merge_method: task_arithmetic
base_model: $FIX/llama-gqa
models:
  - model: org/model
    parameters: {weight: 1}" "model.safetensors"
  exec {SRV[1]}>&-
  wait "$SRV_PID" 2>/dev/null || true
fi
echo "test_merge_cli: ok"
