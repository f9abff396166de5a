#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust unit/integration/doc tests, the JavaScript client's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets
cargo test --locked --doc
(cd clients/js && npm ci --no-audit --no-fund && npm test)
