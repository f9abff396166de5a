#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit/integration/doc tests, the JavaScript and Python clients' tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The whole workspace: the library (root), crates/sealcast-server (the `sealcast` binary), crates/sealcast-bench.
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace --all-targets
cargo test --locked --workspace --doc
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --lib -p sealcast -p sealcast-server
# The documentation site (docs/, mdBook): it builds and no internal link is broken.
bash scripts/check-docs.sh
# The library carries none of the binaries' dependencies (ARCHITECTURE.md, "Crates").
binary_only=' (clap|toml|tracing-subscriber|metrics-exporter-prometheus|mimalloc) v'
if cargo tree --locked -p sealcast -e normal | grep -E "$binary_only"; then
  echo "test.sh: the library depends on a crate only the binaries need (above)" >&2
  exit 1
fi
# The portable (pure-Rust) P-256 path that `--no-default-features` builds: the library's crypto unit tests and
# vectors (the known answers, the spec's own vectors, the public vectors and the handshake suites of the `crypto`
# test binary).
cargo test --locked -p sealcast --no-default-features --lib crypto::
cargo test --locked -p sealcast --no-default-features --test crypto -- kat:: spec:: vectors:: handshake::
# The binary the packaging check and the clients' live tests run.
cargo build --locked --bin sealcast --example chat_peer
export SEALCAST_BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/sealcast" SEALCAST_LIVE_REQUIRED=1
# Packaging: the library crate packages, the systemd unit verifies (the static release build is
# scripts/release.sh, too slow for every run).
bash scripts/check-packaging.sh
# The JS client's unit tests, its live tests against this binary, the browser test of the demo page, and its
# packed tarball installed into a fresh project (test/package.test.mjs).
(cd clients/js && npm ci --no-audit --no-fund && npm test)
# The Python client, installed from its pyproject.toml into a fresh venv: the wsenc/1 known answers (read from the
# spec) and its live tests against this binary.
py_venv="$(mktemp -d)/venv"
python3 -m venv "$py_venv"
"$py_venv/bin/pip" install -q --disable-pip-version-check 'clients/python[test]'
(cd clients/python && "$py_venv/bin/python" -m pytest -q -p no:cacheprovider)
rm -rf "$(dirname "$py_venv")"
# A short run of every fuzz target (cargo-fuzz, stable, no sanitizer); FUZZ_SMOKE=0 skips it.
bash scripts/fuzz-smoke.sh
