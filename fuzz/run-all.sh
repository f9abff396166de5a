#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 60), one after the other, one process each (-jobs=1 style: the
# machine is shared). New inputs go to fuzz/corpus-work/<target> (not committed); the committed seeds in
# fuzz/corpus/<target> are read, not written. Crashes land in fuzz/artifacts/<target>/ and stop the run.
#
#   fuzz/run-all.sh 600                 # ten minutes per target, no sanitizer (stable toolchain)
#   ASAN=1 fuzz/run-all.sh 600          # AddressSanitizer (RUSTC_BOOTSTRAP=1 on stable)
#   TARGETS="record_open" fuzz/run-all.sh 60
#   FEATURES= fuzz/run-all.sh 600       # the portable (pure-Rust) crypto path instead of aws-lc (skip backends_agree)
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
targets="${TARGETS:-client_message authenticate record_open redis_envelope ignis_open auth_token config connection_core redis_presence ws_frame group_open group_binary backends_agree}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "run-all: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
if [ "${ASAN:-0}" = 1 ]; then
  export RUSTC_BOOTSTRAP=1
  san=()
else
  san=(--sanitizer none)
fi
# The production crypto backend by default; FEATURES= (empty) fuzzes the portable one.
features="${FEATURES-aws-lc}"
[ -n "$features" ] && san+=(--features "$features")
for t in $targets; do
  mkdir -p "corpus-work/$t" "corpus/$t"
  dict=()
  [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
  echo "=== $t: ${secs}s" >&2
  cargo fuzz run "${san[@]}" "$t" "corpus-work/$t" "corpus/$t" -- \
    -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}"
done
