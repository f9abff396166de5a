#!/usr/bin/env bash
# Builds the documentation site (mdBook, docs/book.toml → target/book) and checks that no internal link is
# broken (scripts/check-docs.py). scripts/install-deps.sh installs mdbook.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${CARGO_TARGET_DIR:-target}/book"
mdbook build docs --dest-dir "$(pwd)/$out"
python3 scripts/check-docs.py "$out"
