#!/usr/bin/env bash
# The cheap packaging checks of the suite (the static release build itself is scripts/release.sh):
# - the library crate packages (`cargo package`): metadata present, only its own sources in the tarball;
# - the systemd unit verifies (`systemd-analyze verify`, when systemd is there) and keeps its hardening.
# Needs SEALCAST_BIN (a built `sealcast`) for the unit's ExecStart.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "check-packaging: FAILED: $*" >&2; exit 1; }

# `--no-verify`: verifying rebuilds the library from the tarball (minutes of CPU) and only repeats what the rest
# of the suite compiles; `--allow-dirty`: CI is a fresh clone anyway, a developer's checkout need not be clean.
cargo package --locked -p sealcast --no-verify --allow-dirty --quiet
list="$(cargo package --locked -p sealcast --list --allow-dirty)"
for f in Cargo.toml src/lib.rs README.md; do
  grep -qx "$f" <<<"$list" || fail "$f is not in the package"
done
if grep -E '^(clients|crates|fuzz|docs|bench|scripts|packaging|target)/' <<<"$list"; then
  fail "the package carries files that are not the library's (above)"
fi
meta="$(cargo metadata --locked --no-deps --format-version 1)"
python3 - "$meta" <<'PY' || fail "library metadata"
import json, sys
pkg = next(p for p in json.loads(sys.argv[1])["packages"] if p["name"] == "sealcast")
missing = [k for k in ("description", "license", "repository", "readme", "keywords", "categories") if not pkg.get(k)]
assert not missing, f"Cargo.toml of sealcast lacks {missing}"
PY
echo "check-packaging: cargo package ok ($(wc -l <<<"$list") files)"

unit=packaging/systemd/sealcast.service
for directive in "User=sealcast" "NoNewPrivileges=yes" "ProtectSystem=strict" "LimitNOFILE=" "ExecReload=/bin/kill -HUP \$MAINPID" "CapabilityBoundingSet="; do
  grep -qF "$directive" "$unit" || fail "$unit lacks $directive"
done
if command -v systemd-analyze >/dev/null 2>&1; then
  [ -n "${SEALCAST_BIN:-}" ] || fail "SEALCAST_BIN is not set"
  dir="$(mktemp -d)"
  trap 'rm -rf "$dir"' EXIT
  # The unit as installed, with ExecStart pointing at the binary built here (verify checks it is executable).
  sed "s#/usr/local/bin/sealcast#$SEALCAST_BIN#g" "$unit" > "$dir/sealcast.service"
  out="$(systemd-analyze verify --man=no "$dir/sealcast.service" 2>&1)" || fail "systemd-analyze verify: $out"
  # verify exits 0 on some warnings: none are acceptable here.
  if grep -v "Failed to \(connect to bus\|put bus name\)\|sealcast.service: Unit has no" <<<"$out" | grep -q .; then
    fail "systemd-analyze verify: $out"
  fi
  echo "check-packaging: systemd-analyze verify ok"
else
  echo "check-packaging: systemd-analyze not found; the unit's directives were checked, not verified"
fi
