#!/usr/bin/env bash
# The server's release artefact: a fully static Linux binary of `sealcast` (x86_64-unknown-linux-musl, the
# default features: aws-lc and mimalloc), built by `cargo install --locked --path crates/sealcast-server` (so that
# command is exercised too), then checked: statically linked, `config check`, `serve` with a key file and a
# secret (readiness, SIGHUP reload, graceful SIGTERM), and live client sessions (the Python client's live tests).
#
#   bash scripts/release.sh            # → target/release-artifacts/sealcast-<version>-x86_64-linux-musl{,.sha256}
#
# A release build from scratch takes several CPU-minutes, so this is not part of scripts/test.sh (which runs the
# cheap packaging checks: scripts/check-packaging.sh). Needs rustup (for the musl target) and musl-gcc
# (Debian's musl-tools), which it installs when missing; the C parts (aws-lc, ring, mimalloc) are compiled with
# musl-gcc against musl's libc.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
target=x86_64-unknown-linux-musl
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="$target_dir/release-artifacts"

if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
  echo "release: apt-get install musl-tools"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
fi
# The C code (aws-lc, ring, mimalloc) compiles against musl; Rust links the result statically itself (its
# self-contained musl startup objects; musl-gcc as the linker would make a dynamic PIE).
export CC_x86_64_unknown_linux_musl=musl-gcc

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' crates/sealcast-server/Cargo.toml | head -1)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
start=$(date +%s)
cargo install --locked --path crates/sealcast-server --bin sealcast --target "$target" \
  --target-dir "$target_dir" --root "$stage/root" --force
echo "release: built in $(( $(date +%s) - start )) s"
mkdir -p "$out"
artefact="$out/sealcast-$version-x86_64-linux-musl"
cp "$stage/root/bin/sealcast" "$artefact"
# Without its debug info (the release profile keeps line tables; the unstripped binary stays in
# $target_dir/$target/release/sealcast for symbolising a crash).
strip "$artefact"
(cd "$out" && sha256sum "$(basename "$artefact")" > "$(basename "$artefact").sha256")
bin="$artefact"

fail() { echo "release: FAILED: $*" >&2; exit 1; }

# 1. Fully static: no interpreter, no shared libraries.
# (Rust's musl target links a static PIE: `file` says "static-pie linked"; either way, no interpreter.)
info="$(file "$bin")"
grep -Eq "statically linked|static-pie linked" <<<"$info" || fail "not statically linked: $info"
if grep -q "interpreter" <<<"$info"; then fail "has a dynamic loader: $info"; fi
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q "not a dynamic executable\|statically linked"; then
  fail "ldd lists libraries: $(ldd "$bin")"
fi
"$bin" --version

# 2. `config check` on a production-shaped config (key file, secret, non-loopback bind).
"$bin" keygen --out "$stage/key.pem" > "$stage/keygen.txt"
chmod 600 "$stage/key.pem"
secret="release-check-secret-0123456789abcdef0123"
cat > "$stage/sealcast.toml" <<TOML
[server]
bind = "0.0.0.0:8080"
[auth]
jwt_secret = "$secret"
[encryption]
server_key_files = ["$stage/key.pem"]
TOML
"$bin" config check --config "$stage/sealcast.toml" > "$stage/check.txt" || fail "config check: $(cat "$stage/check.txt")"
grep -q '<redacted>' "$stage/check.txt" || fail "config check did not redact the secret"

# 3. `serve` with that key and secret on loopback: ready, reloads keys on SIGHUP, stops gracefully on SIGTERM.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); admin=$(free_port)
SEALCAST_BIND="127.0.0.1:$port" SEALCAST_ADMIN_BIND="127.0.0.1:$admin" SEALCAST_JWT_SECRET="$secret" \
  SEALCAST_SERVER_KEY_FILE="$stage/key.pem" "$bin" serve > "$stage/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$stage/serve.log" && break; sleep 0.1; done
grep -q "listening on" "$stage/serve.log" || fail "serve did not start: $(cat "$stage/serve.log")"
python3 - "$admin" "$port" <<'PY' || fail "probes"
import json, sys, urllib.request
admin, port = sys.argv[1:]
assert urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5).status == 200
doc = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/.well-known/sealcast.json", timeout=5))
assert doc["protocol"] == "wsenc/1" and len(doc["keys"]) == 1, doc
PY
kill -HUP "$pid"
for _ in $(seq 50); do grep -q "SIGHUP: " "$stage/serve.log" && break; sleep 0.1; done
grep -q "SIGHUP: " "$stage/serve.log" || fail "no reload logged after SIGHUP"
kill -0 "$pid" || fail "SIGHUP stopped the server: $(cat "$stage/serve.log")"
kill -TERM "$pid"
wait "$pid" || fail "serve exited $? on SIGTERM: $(cat "$stage/serve.log")"

# 4. Live client sessions against the static binary: the Python client's live tests (authenticate, wsenc/1 with
#    the pinned key, joins, publish acks, recovery after a dropped connection, key updates).
python3 -m venv "$stage/venv"
"$stage/venv/bin/pip" install -q --disable-pip-version-check 'clients/python[test]'
(cd clients/python && SEALCAST_BIN="$bin" SEALCAST_LIVE_REQUIRED=1 \
  "$stage/venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_live.py)

echo "release: OK $artefact ($(stat -c %s "$artefact") bytes)"
cat "$artefact.sha256"
