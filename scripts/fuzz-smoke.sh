#!/usr/bin/env bash
# Short fuzz smoke run of every cargo-fuzz target (fuzz/), part of scripts/test.sh and so of CI.
#
# Installs cargo-fuzz if missing (about 1-2 minutes), builds the targets without a sanitizer (stable toolchain;
# 16 codegen units: a faster build, a slightly slower fuzzer; its own target dir fuzz/target/smoke so that
# fuzz/run-all.sh keeps its build) and runs each for FUZZ_SMOKE_SECS seconds (default 20) from its committed
# seeds, one process at a time. A crash or failed check fails the run.
# Install + build must fit in FUZZ_SMOKE_BUILD_BUDGET seconds (default 600); past it the smoke is skipped with a
# notice rather than failing CI: the corpora and crash inputs are still replayed by `cargo test`
# (tests/properties/fuzz_corpus.rs). FUZZ_SMOKE=0 skips it entirely (e.g. for a quick local run of test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${FUZZ_SMOKE:-1}" = 0 ]; then
  echo "fuzz-smoke: skipped (FUZZ_SMOKE=0)"
  exit 0
fi
secs="${FUZZ_SMOKE_SECS:-20}"
budget="${FUZZ_SMOKE_BUILD_BUDGET:-600}"
start=$SECONDS
skip() {
  echo "fuzz-smoke: SKIPPED: $1 within the ${budget}s budget; corpora and regressions were replayed by cargo test"
  exit 0
}
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz"
  rc=0
  timeout "$budget" cargo install cargo-fuzz --locked --quiet || rc=$?
  [ "$rc" = 124 ] && skip "cargo install cargo-fuzz did not finish"
  [ "$rc" = 0 ] || exit "$rc"
fi
cd fuzz
# The production crypto backend (aws-lc), as the server ships; `backends_agree` needs it.
flags=(--sanitizer none --codegen-units 16 --target-dir target/smoke --features aws-lc)
left=$((budget - (SECONDS - start)))
[ "$left" -gt 0 ] || skip "no time left to build the targets"
rc=0
timeout "$left" cargo fuzz build "${flags[@]}" || rc=$?
[ "$rc" = 124 ] && skip "the fuzz targets did not build"
[ "$rc" = 0 ] || exit "$rc"
echo "fuzz-smoke: install + build took $((SECONDS - start))s"
for t in $(cargo fuzz list); do
  mkdir -p "corpus-work/$t"
  dict=()
  [ -f "dict/$t.dict" ] && dict=("-dict=dict/$t.dict")
  echo "fuzz-smoke: $t for ${secs}s"
  log="corpus-work/$t.log"
  if ! cargo fuzz run "${flags[@]}" "$t" "corpus-work/$t" "corpus/$t" -- \
    -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
    >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz-smoke: $t FAILED (the input is in fuzz/artifacts/$t/)"
    exit 1
  fi
  grep -E "^#[0-9]+ +DONE|^stat::(number_of_executed_units|average_exec_per_sec)" "$log" || true
done
echo "fuzz-smoke: done in $((SECONDS - start))s"
