#!/usr/bin/env bash
# A full disk during writes: put into a store, exec delta/apply -o, merge
# OUT_DIR and get -o, each with its output on a file system too small for it
# (inputs elsewhere). Each must exit 1 with one line naming the file and the
# cause, leave no temporary and nothing under a final name, keep the store
# valid, and succeed once there is room.
#
# Mode "tmpfs" (root with mount rights): a real small tmpfs, writes fail with
# ENOSPC. Mode "ulimit" (fallback, or GRAFT_DISK_FULL_MODE=ulimit): a file-size
# limit, writes fail with EFBIG. Either way a last case checks that graft
# itself survives SIGXFSZ.
set -euo pipefail
G=${GRAFT_BIN:?}/graft
FIX=${GRAFT_FIXTURES:?}/golden
T=$(mktemp -d "${TMPDIR:-/tmp}/graft-disk-full.XXXXXX")
SMALL=$T/small
MODE=ulimit
LIMIT_KB=
mkdir "$SMALL"

cleanup() {
  if mountpoint -q "$SMALL" 2>/dev/null; then
    umount "$SMALL" 2>/dev/null || umount -l "$SMALL" 2>/dev/null || true
  fi
  # never rm -rf through a mount that would not go away
  if mountpoint -q "$SMALL" 2>/dev/null; then
    echo "test_disk_full: could not unmount $SMALL" >&2
  else
    rm -rf "$T"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "FAIL: $*" >&2; exit 1; }

if [ "${GRAFT_DISK_FULL_MODE:-}" != ulimit ] && [ "$(id -u)" = 0 ] &&
  mount -t tmpfs -o size=64k,mode=0755 graft-disk-full "$SMALL" 2>/dev/null; then
  MODE=tmpfs
  CAUSE="No space left on device"
else
  CAUSE="File too large"
fi
echo "test_disk_full: mode $MODE ($CAUSE)"

# small_fs TMPFS_KB ULIMIT_KB: an empty small file system. tmpfs: a fresh
# mount of that size. ulimit: a per-file limit, so cases about the total
# (several shards) give a limit below one shard.
small_fs() {
  if [ "$MODE" = tmpfs ]; then
    umount "$SMALL"
    mount -t tmpfs -o "size=$1k,mode=0755" graft-disk-full "$SMALL"
  else
    rm -rf "$SMALL" && mkdir "$SMALL"
    LIMIT_KB=$2
  fi
}
# Makes room on the small file system, keeping what is on it.
grow_fs() {
  if [ "$MODE" = tmpfs ]; then mount -o remount,size=8m "$SMALL"; else LIMIT_KB=; fi
}
# Runs a command under the small file system's limit (ulimit mode: SIGXFSZ
# ignored, as the mode's writes are meant to fail with EFBIG).
limited() {
  if [ -n "$LIMIT_KB" ]; then
    (trap '' XFSZ; ulimit -f "$LIMIT_KB"; exec "$@")
  else
    "$@"
  fi
}
# What is on the small file system: names, sizes and (tmpfs) free blocks, so
# a temporary unlinked but still held, or left anywhere, shows.
snapshot() {
  find "$SMALL" -mindepth 1 -printf '%P %y %s\n' | sort
  if [ "$MODE" = tmpfs ]; then stat -f -c 'free %f' "$SMALL"; fi
}

# expect_fail LABEL NEEDLE CMD...: CMD (run limited) exits 1 with one line on
# stderr naming NEEDLE and the cause of a failed write (not of a failed
# create: the data did not fit), and the small file system is as before.
expect_fail() {
  local label=$1 needle=$2 before st
  shift 2
  before=$(snapshot)
  set +e
  limited "$@" >"$T/out" 2>"$T/err"
  st=$?
  set -e
  [ "$st" = 1 ] || fail "$label: exit status $st, want 1: $(cat "$T/err")"
  [ "$(wc -l <"$T/err")" = 1 ] || fail "$label: not one line: $(cat "$T/err")"
  grep -q '^graft: ' "$T/err" || fail "$label: $(cat "$T/err")"
  grep -qF "$CAUSE" "$T/err" || fail "$label: no '$CAUSE' in: $(cat "$T/err")"
  grep -qF -- "$needle" "$T/err" || fail "$label: does not name $needle: $(cat "$T/err")"
  grep -qE 'write|copy to' "$T/err" || fail "$label: did not fail writing data: $(cat "$T/err")"
  [ ! -s "$T/out" ] || fail "$label: printed a result: $(cat "$T/out")"
  [ "$(snapshot)" = "$before" ] ||
    fail "$label: left behind: $(diff <(echo "$before") <(snapshot) | tr '\n' ' ')"
  echo "  $label: $(cat "$T/err")"
}
store_ok() { # STORE LABEL: verify passes, no temporaries
  "$G" store verify --store "$1" >"$T/verify" 2>&1 || fail "$2: store verify: $(cat "$T/verify")"
  [ -z "$(ls -A "$1/tmp")" ] || fail "$2: temporaries left in the store: $(ls -A "$1/tmp")"
}

BIG=$FIX/llama-gqa/model.safetensors # 454 KB, over every limit below
BIG_ID=sha256:$(sha256sum "$BIG" | cut -d' ' -f1)
[ "$(stat -c %s "$BIG")" -gt $((128 * 1024)) ] || fail "fixture $BIG is too small for this test"

# ---- graft put into a store on the small file system ----
small_fs 64 64
S=$SMALL/store
"$G" store verify --store "$S" >/dev/null # creates the layout
expect_fail "put file" "$BIG: cannot copy into the store" "$G" put --store "$S" "$BIG"
store_ok "$S" "put file"
[ -z "$(find "$S/sha256" -type f)" ] || fail "put file: a blob under a final name: $(find "$S/sha256" -type f)"
# a tree: whichever files fit are valid blobs; the big one and the manifest are not there
set +e
limited "$G" put --store "$S" "$FIX/llama-gqa" >/dev/null 2>"$T/err"
st=$?
set -e
[ "$st" = 1 ] && grep -qF "$CAUSE" "$T/err" && [ "$(wc -l <"$T/err")" = 1 ] ||
  fail "put tree: exit $st: $(cat "$T/err")"
echo "  put tree: $(cat "$T/err")"
store_ok "$S" "put tree"
grow_fs
id=$("$G" put --store "$S" "$BIG")
[ "$id" = "$BIG_ID" ] || fail "put after freeing space: id $id, the file hashes to $BIG_ID"
tid=$("$G" put --store "$S" "$FIX/llama-gqa")
store_ok "$S" "put after freeing space"
grep -q ': [0-9]* blobs .*, 1 trees; 0 corrupt' "$T/verify" || fail "verify: $(cat "$T/verify")"
cmp "$BIG" "$("$G" store path --store "$S" "$id")" || fail "stored blob differs from $BIG"

# ---- graft exec delta / apply -o on the small file system ----
"$G" exec delta --input base="$FIX/llama-gqa" --input model="$FIX/lora-llama/adapter" \
  -o "$T/delta" >/dev/null # 173 KB, made where there is room
small_fs 64 64
expect_fail "exec delta" "-o $SMALL/delta" "$G" exec delta --input base="$FIX/llama-gqa" \
  --input model="$FIX/lora-llama/adapter" -o "$SMALL/delta"
[ ! -e "$SMALL/delta" ] || fail "exec delta: -o created"
# sharded: earlier shards complete (tmpfs) when a later one runs out
small_fs 100 16
expect_fail "exec delta sharded" "-o $SMALL/delta" "$G" exec delta \
  --input base="$FIX/llama-gqa" --input model="$FIX/lora-llama/adapter" shard_size=20000 \
  -o "$SMALL/delta"
small_fs 64 64
expect_fail "exec apply" "-o $SMALL/ft" "$G" exec apply --input base="$FIX/llama-gqa" \
  --input delta="$T/delta" scale=-0.5 -o "$SMALL/ft"
grow_fs
"$G" exec apply --input base="$FIX/llama-gqa" --input delta="$T/delta" scale=-0.5 \
  -o "$SMALL/ft" >/dev/null
"$G" exec apply --input base="$FIX/llama-gqa" --input delta="$T/delta" scale=-0.5 \
  -o "$T/ft" >/dev/null
cmp "$SMALL/ft/model.safetensors" "$T/ft/model.safetensors" || fail "apply after freeing space"

# ---- graft merge CONFIG OUT_DIR on the small file system ----
cat >"$T/merge.yml" <<EOF
merge_method: task_arithmetic
base_model: $FIX/llama-gqa
models:
  - model: $FIX/lora-llama/merged
    parameters: {weight: 1.0}
EOF
small_fs 64 64
expect_fail "merge" "$SMALL/merged: " "$G" merge "$T/merge.yml" "$SMALL/merged"
[ ! -e "$SMALL/merged" ] || fail "merge: OUT_DIR created"
small_fs 200 64
expect_fail "merge sharded" "$SMALL/merged: " "$G" merge "$T/merge.yml" "$SMALL/merged" \
  --shard-size 100000
[ ! -e "$SMALL/merged" ] || fail "merge sharded: OUT_DIR created"
grow_fs
"$G" merge "$T/merge.yml" "$SMALL/merged" --shard-size 100000 >/dev/null
[ -f "$SMALL/merged/model.safetensors.index.json" ] || fail "merge after freeing space"

# ---- graft get -o on the small file system (store elsewhere) ----
S2=$T/store
"$G" put --store "$S2" "$BIG" >/dev/null
"$G" put --store "$S2" "$FIX/llama-gqa" >/dev/null
# tmpfs: another file system, so get copies; ulimit: same one, --copy makes it
COPY=()
[ "$MODE" = ulimit ] && COPY=(--copy)
small_fs 64 64
expect_fail "get blob" "$SMALL/model.safetensors" "$G" get --store "$S2" "$BIG_ID" \
  -o "$SMALL/model.safetensors" "${COPY[@]}"
[ ! -e "$SMALL/model.safetensors" ] || fail "get blob: dest created"
expect_fail "get tree" "$SMALL/tree" "$G" get --store "$S2" "$tid" -o "$SMALL/tree" "${COPY[@]}"
[ ! -e "$SMALL/tree" ] || fail "get tree: dest created"
store_ok "$S2" "get"
grow_fs
"$G" get --store "$S2" "$tid" -o "$SMALL/tree" "${COPY[@]}"
for f in "$FIX"/llama-gqa/*; do
  cmp "$f" "$SMALL/tree/$(basename "$f")" || fail "get after freeing space: $f"
done

# ---- tmpfs: no inodes left (ENOSPC from mkdir/open, not write) ----
# the message still carries the cause and names where; nothing is left
if [ "$MODE" = tmpfs ]; then
  no_inodes() { # LABEL NEEDLE CMD...
    local label=$1 needle=$2 st
    shift 2
    umount "$SMALL"
    mount -t tmpfs -o size=8m,nr_inodes=3,mode=0755 graft-disk-full "$SMALL"
    set +e
    "$@" >/dev/null 2>"$T/err"
    st=$?
    set -e
    [ "$st" = 1 ] && [ "$(wc -l <"$T/err")" = 1 ] || fail "$label: exit $st: $(cat "$T/err")"
    grep -qF "$CAUSE" "$T/err" || fail "$label: no '$CAUSE' in: $(cat "$T/err")"
    grep -qF -- "$needle" "$T/err" || fail "$label: does not name $needle: $(cat "$T/err")"
    [ -z "$(ls -A "$SMALL")" ] || fail "$label: left behind: $(ls -A "$SMALL")"
    echo "  $label: $(cat "$T/err")"
  }
  no_inodes "exec, no inodes" "$SMALL/" "$G" exec delta --input base="$FIX/llama-gqa" \
    --input model="$FIX/lora-llama/adapter" -o "$SMALL/delta"
  no_inodes "merge, no inodes" "$SMALL/" "$G" merge "$T/merge.yml" "$SMALL/merged"
fi

# ---- SIGXFSZ: a file-size limit must not kill graft mid-write ----
# (default disposition, whatever this shell inherited: python resets it)
mkdir "$T/lim"
xfsz_default() {
  if [ -x /usr/bin/python3 ]; then
    /usr/bin/python3 -c 'import os, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
os.execv(sys.argv[1], sys.argv[1:])' "$@"
  else
    "$@"
  fi
}
set +e
(ulimit -f 64; xfsz_default "$G" exec delta --input base="$FIX/llama-gqa" \
  --input model="$FIX/lora-llama/adapter" -o "$T/lim/delta") >/dev/null 2>"$T/err"
st=$?
set -e
[ "$st" = 1 ] || fail "ulimit -f without ignoring SIGXFSZ: exit status $st: $(cat "$T/err")"
grep -qF "File too large" "$T/err" || fail "SIGXFSZ case: $(cat "$T/err")"
[ -z "$(ls -A "$T/lim")" ] || fail "SIGXFSZ case: left behind: $(ls -A "$T/lim")"
echo "  SIGXFSZ: $(cat "$T/err")"
echo "test_disk_full: ok ($MODE)"
