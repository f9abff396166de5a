#!/usr/bin/env bash
# Installs what a fresh machine lacks for the test suite. Idempotent and quick when everything is present.
set -euo pipefail
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
# Debian's Chromium for the demo page's browser test (driven by playwright-core; never a downloaded browser).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "install-deps: apt-get install nodejs npm"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
# The Python client's tests run in a venv (Debian's python3 needs python3-venv for that).
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
  echo "install-deps: apt-get install python3-venv python3-pip"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-venv python3-pip >/dev/null
fi
# mdbook for the documentation site (scripts/check-docs.sh): no Debian package, so from crates.io, pinned, with
# only the `search` feature (no `serve`/`watch`: a third of the build). About 3 CPU-minutes on a fresh machine.
MDBOOK_VERSION=0.5.4
if ! mdbook --version 2>/dev/null | grep -qx "mdbook v$MDBOOK_VERSION"; then
  echo "install-deps: cargo install mdbook $MDBOOK_VERSION"
  cargo install mdbook --locked --quiet --version "$MDBOOK_VERSION" --no-default-features --features search
fi
