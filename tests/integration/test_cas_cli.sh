#!/usr/bin/env bash
# test_cas_cli: `graft put / get / store verify` end to end on a scratch store:
# ids agree with sha256sum, trees round trip byte for byte, overwrite needs
# --force, a flipped byte is found (exit 1) and quarantined, bad ids exit 2.
set -euo pipefail
G=${GRAFT_BIN:?}/graft
W=$(mktemp -d /tmp/graft-cas-cli-XXXXXX)
trap 'chmod -R u+w "$W" 2>/dev/null; rm -rf "$W"' EXIT
export GRAFT_STORE=$W/store
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir -p "$W/src/sub/deeper"
printf '{"model_type": "gpt2"}\n' >"$W/src/config.json"
head -c 3000000 /dev/urandom >"$W/src/model.safetensors"
printf 'tok' >"$W/src/sub/deeper/tokenizer.model"
: >"$W/src/sub/empty.txt"

# a blob: the id is sha256sum's
id=$("$G" put "$W/src/config.json")
[ "$id" = "sha256:$(sha256sum "$W/src/config.json" | cut -c1-64)" ] || fail "blob id $id"
"$G" get "$id" -o "$W/out.json"
cmp "$W/src/config.json" "$W/out.json" || fail "blob round trip"

# a tree: round trip, and its id is the sha256 of the manifest it exports raw
tid=$("$G" put "$W/src")
[[ $tid =~ ^sha256:[0-9a-f]{64}$ ]] || fail "tree id '$tid'"
"$G" get "$tid" -o "$W/out"
diff -r "$W/src" "$W/out" || fail "tree round trip"
"$G" get "$tid" -o "$W/manifest.json" --raw
[ "sha256:$(sha256sum "$W/manifest.json" | cut -c1-64)" = "$tid" ] || fail "tree id is not the manifest hash"
grep -q '"path":"sub/deeper/tokenizer.model"' "$W/manifest.json" || fail "manifest lacks a nested path"
# --store overrides GRAFT_STORE
GRAFT_STORE=/nonexistent/x "$G" get --store "$W/store" "$tid" -o "$W/out-store"
diff -r "$W/src" "$W/out-store" || fail "--store"

# no overwrite without --force
set +e
"$G" get "$tid" -o "$W/out" 2>"$W/err"; rc=$?
set -e
[ $rc -eq 2 ] || fail "overwrite exit $rc"
grep -q "already exists" "$W/err" || fail "overwrite message: $(cat "$W/err")"
echo extra >"$W/out/extra"
"$G" get "$tid" -o "$W/out" --force
[ ! -e "$W/out/extra" ] || fail "--force did not replace"
diff -r "$W/src" "$W/out" || fail "--force contents"

# bad ids and missing artifacts: one line, exit 2
for bad in sha256:abc "sha256:$(printf 'A%.0s' {1..64})" not-an-id; do
  set +e
  "$G" get "$bad" -o "$W/x" 2>"$W/err"; rc=$?
  set -e
  [ $rc -eq 2 ] || fail "bad id $bad exit $rc"
  [ "$(wc -l <"$W/err")" -eq 1 ] || fail "bad id message not one line"
done
set +e
"$G" get "sha256:$(printf '0%.0s' {1..64})" -o "$W/x" 2>"$W/err"; rc=$?
set -e
[ $rc -eq 2 ] && grep -q "not in the store" "$W/err" || fail "missing id ($rc): $(cat "$W/err")"
[ ! -e "$W/x" ] || fail "missing id left a file"

# verify: clean, then a flipped byte is found and quarantined
"$G" store verify >"$W/v" || fail "verify of a clean store"
grep -q " 0 corrupt" "$W/v" || fail "verify output: $(cat "$W/v")"
mid=$(grep -o '"path":"model.safetensors","id":"sha256:[0-9a-f]*' "$W/manifest.json" | sed 's/.*"id":"//')
blob="$W/store/sha256/${mid:7:2}/${mid:9:2}/${mid:7}"
[ -f "$blob" ] || fail "blob layout: $blob"
chmod u+w "$blob"
printf '\x5a' | dd of="$blob" bs=1 seek=1234567 conv=notrunc status=none
set +e
"$G" store verify >"$W/v" 2>"$W/err"; rc=$?
set -e
[ $rc -eq 1 ] || fail "verify exit $rc after corruption"
grep -q "$mid: corrupt" "$W/err" || fail "verify did not name the blob: $(cat "$W/err")"
grep -q "model.safetensors" "$W/err" || fail "verify did not name the tree entry"
set +e
"$G" store verify --quarantine >"$W/v" 2>"$W/err"; rc=$?
set -e
[ -f "$W/store/quarantine/${mid:7}" ] && [ ! -e "$blob" ] || fail "not quarantined"
set +e
"$G" get "$tid" -o "$W/out2" 2>"$W/err"; rc=$?
set -e
[ $rc -ne 0 ] && [ ! -e "$W/out2" ] || fail "export of a tree with a missing blob"
grep -q "model.safetensors" "$W/err" || fail "missing-blob message: $(cat "$W/err")"
# putting the source again repairs the store
"$G" put "$W/src" >/dev/null
"$G" store verify >/dev/null || fail "verify after repair"

# usage errors
set +e
"$G" get "$tid" 2>/dev/null; [ $? -eq 2 ] || fail "get without -o"
"$G" store frobnicate 2>/dev/null; [ $? -eq 2 ] || fail "unknown store subcommand"
"$G" put "$W/nonexistent" 2>"$W/err"; rc=$?
set -e
[ $rc -eq 2 ] && grep -q nonexistent "$W/err" || fail "put of a missing path"
echo "test_cas_cli: ok"
