#!/usr/bin/env bash
# Side-by-side benchmarks: sealcast vs the Ignis reference peer (Bun + uWebSockets), same machine, same run.
#
#   bash bench/compare.sh [quick|full]        # results in bench/results/<stamp>/, summary on stdout
#
# Each server is pinned to SERVER_CPU (default 0) with taskset; the load generator runs on LOADGEN_CPU (1);
# redis floats. sealcast gets a one-worker runtime automatically (tokio sizes its pool from the affinity mask).
# Every scenario runs against both servers back to back, REPEAT times, alternating which goes first.
# Loopback only; every run is bounded (counts + timeouts).
#
# The reference peer is the Ignis WebSocket helper (the server sealcast re-implements) running on Bun, with its
# run.sh/server.ts harness. It is not part of this repository: the script takes it from PEER_SRC, by default
# ../shared/peers/ignis-bun next to the repository, then /work/shared/peers/ignis-bun. Without it only the
# sealcast runs happen (the reference columns of the summary stay empty); a PEER_SRC that is set but holds no
# run.sh is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PROFILE=${1:-full}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
REPEAT=${REPEAT:-3}
PEER_DEFAULTS=("$(cd "$ROOT/.." && pwd)/shared/peers/ignis-bun" /work/shared/peers/ignis-bun)

log() { echo "[compare] $*" >&2; }

# Where the reference peer is: PEER_SRC if set (it must exist), else the first default that does.
HAVE_PEER=1
if [ -n "${PEER_SRC:-}" ]; then
  if [ ! -f "$PEER_SRC/run.sh" ]; then
    log "PEER_SRC=$PEER_SRC is not the reference peer (no run.sh there)."
    log "Point PEER_SRC at a copy of the Ignis WebSocket helper's Bun peer (the directory holding run.sh and server.ts),"
    log "or unset it to run only the sealcast parts."
    exit 2
  fi
else
  PEER_SRC=
  for d in "${PEER_DEFAULTS[@]}"; do [ -f "$d/run.sh" ] && { PEER_SRC=$d; break; }; done
  if [ -z "$PEER_SRC" ]; then
    HAVE_PEER=0
    log "The reference peer was not found, so only sealcast is measured."
    log "  What it is: the Ignis WebSocket helper (the server sealcast re-implements) running on Bun with Redis,"
    log "  with the run.sh/server.ts harness the scenarios drive. It is not part of this repository."
    log "  Looked in: ${PEER_DEFAULTS[*]}"
    log "  To use a copy elsewhere: PEER_SRC=/path/to/ignis-bun bash bench/compare.sh ${PROFILE}"
    log "  The sealcast runs go ahead; the reference columns of the summary stay empty."
  fi
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/bench/results/$STAMP}
mkdir -p "$OUT"
WORK=$(mktemp -d)
SC_PORT=18080
PEER_PORT=18090
REDIS_PORT=${REDIS_PORT:-16379}
export SEALCAST_JWT_SECRET="bench-secret-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# The binaries are crates of the workspace (crates/): --workspace lets --bin find them.
cargo build --release --locked --workspace --bin sealcast --bin sealcast-bench >&2
BIN=$ROOT/target/release
BENCH=(timeout 900 taskset -c "$LOADGEN_CPU" "$BIN/sealcast-bench")
"$BIN/sealcast" keygen --out "$WORK/key.pem" >/dev/null

# The peer runs from a writable copy; its first run installs node_modules (npm ci).
if [ "$HAVE_PEER" = 1 ]; then
  log "reference peer: $PEER_SRC"
  cp -r "$PEER_SRC" "$WORK/peer"
  chmod -R u+w "$WORK/peer"
  (cd "$WORK/peer" && npm ci --no-audit --no-fund >&2)
fi

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")

SERVER_PID=
# start_sealcast [ENV=VAL ...]: `sealcast-bench serve` is the server `sealcast serve` builds, with the shipped
# defaults, plaintext allowed alongside wsenc/1, client publish on, and the per-connection message rate and
# sessions-per-user caps lifted (the reference has neither; one publisher sends whole bursts).
start_sealcast() {
  rm -f "$WORK/sealcast.log"
  env SEALCAST_BIND=127.0.0.1:$SC_PORT SEALCAST_SERVER_KEY_FILE="$WORK/key.pem" SEALCAST_REQUIRE_ENCRYPTION=false \
    SEALCAST_LOG=warn "$@" \
    taskset -c "$SERVER_CPU" "$BIN/sealcast-bench" serve >"$WORK/sealcast.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q "listening on" "$WORK/sealcast.log" && return 0; sleep 0.1; done
  log "sealcast did not start"; cat "$WORK/sealcast.log" >&2; return 1
}
# start_peer plain|encrypted [PORT]
start_peer() {
  local port=${2:-$PEER_PORT}
  rm -f "$WORK/peer-$port.log"
  (cd "$WORK/peer" && PEER_MODE=$1 PORT=$port REDIS_URL=redis://127.0.0.1:$REDIS_PORT PEER_CPUS=$SERVER_CPU \
    PEER_LOG_LEVEL=warn exec ./run.sh >"$WORK/peer-$port.log" 2>&1) &
  SERVER_PID=$!
  for _ in $(seq 150); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && return 0; sleep 0.2; done
  log "peer did not start"; tail "$WORK/peer-$port.log" >&2; return 1
}
stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  sleep 0.5
}

SC=(--server sealcast --url ws://127.0.0.1:$SC_PORT/ws --pin-pem "$WORK/key.pem")
PEER=(--server ignis --url ws://127.0.0.1:$PEER_PORT/ws)

# ONLY="fanout_plain_1000 latency_single ...": run just these scenarios (default: all).
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }

# run NAME SERVER(sealcast|ignis) PEER_MODE ARGS... : one bounded load-generator run against a fresh server.
run() {
  local name=$1 which=$2 pmode=$3; shift 3
  want "$name" || return 0
  [ "$which" = ignis ] && [ "$HAVE_PEER" = 0 ] && return 0
  if [ "$which" = sealcast ]; then start_sealcast; else start_peer "$pmode"; fi
  local target=("${SC[@]}"); [ "$which" = ignis ] && target=("${PEER[@]}")
  log "$name $which $*"
  local line
  line=$("${BENCH[@]}" "${target[@]}" --server-pid "$SERVER_PID" "$@" || true)
  stop_server
  echo "{\"name\":\"$name\",\"result\":${line:-null}}" >>"$OUT/results.jsonl"
}

# pair NAME PEER_MODE ARGS... : both servers, order alternating per repetition.
pair() {
  local name=$1 pmode=$2; shift 2
  for r in $(seq "$REPEAT"); do
    if [ $((r % 2)) = 1 ]; then run "$name" sealcast "$pmode" "$@"; run "$name" ignis "$pmode" "$@"
    else run "$name" ignis "$pmode" "$@"; run "$name" sealcast "$pmode" "$@"; fi
  done
}

if [ "$PROFILE" = quick ]; then SIZES="100 1000"; MEMSTEPS=1000,2000; MEMN=3000; else SIZES="100 300 1000 3000 10000"; MEMSTEPS=1000,2000,4000; MEMN=8000; fi
REPEAT_SWEEP=${REPEAT_SWEEP:-2}

# (1) plaintext fan-out, 1,000 receivers x 256 B, client publish.
pair fanout_plain_1000 plain --mode plain fanout --receivers 1000 --messages 500 --runs 5
# (2) encrypted fan-out (the reference's encrypted mode is ~30 k/s: fewer messages keep its runs bounded).
for r in $(seq "$REPEAT"); do
  run fanout_encrypted_1000 sealcast encrypted --mode encrypted fanout --receivers 1000 --messages 500 --runs 5
  run fanout_encrypted_1000 ignis encrypted --mode encrypted fanout --receivers 1000 --messages 40 --runs 3
done
# (3) mixed room (sealcast only: the reference runs one mode per process).
for r in $(seq "$REPEAT"); do
  run fanout_mixed_1000 sealcast plain --mode mixed fanout --receivers 1000 --messages 500 --runs 5
done
# Throughput vs room size (plot), plaintext, ~200 k deliveries per burst.
for n in $SIZES; do
  m=$((200000 / n)); [ $m -gt 1000 ] && m=1000
  REPEAT=$REPEAT_SWEEP pair "fanout_size_$n" plain --mode plain --concurrency 128 fanout --receivers "$n" --messages "$m" --runs 3
done
# (4) connect + authenticate (+ handshake) rate, and the bare crypto limit on the server's core.
pair connect_plain plain --mode plain --concurrency 32 connect --connections 3000
pair connect_encrypted encrypted --mode encrypted --concurrency 32 connect --connections 2000
want crypto_limit && for r in $(seq "$REPEAT"); do
  echo "{\"name\":\"crypto_limit\",\"result\":$(taskset -c "$SERVER_CPU" "$BIN/sealcast-bench" crypto-limit --seconds 5)}" >>"$OUT/results.jsonl"
done
# (5) idle memory per connection.
REPEAT=$REPEAT_SWEEP pair idle_plain plain --mode plain --concurrency 64 idle --connections "$MEMN" --steps "$MEMSTEPS"
REPEAT=$REPEAT_SWEEP pair idle_encrypted encrypted --mode encrypted --concurrency 64 idle --connections "$MEMN" --steps "$MEMSTEPS"
# (6) latency at 1,000 msg/s: single instance (both), and across two reference instances through Redis.
REPEAT=$REPEAT_SWEEP pair latency_single plain latency --rate 1000 --seconds 10 --subscribers 10
if [ "$PROFILE" = full ] && want latency_cross; then
  for r in $(seq "$REPEAT_SWEEP"); do
    if [ "$HAVE_PEER" = 1 ]; then
      start_peer plain $PEER_PORT; A=$SERVER_PID; start_peer plain $((PEER_PORT + 1)); B=$SERVER_PID
      line=$("${BENCH[@]}" "${PEER[@]}" latency --pub-url ws://127.0.0.1:$((PEER_PORT + 1))/ws --rate 1000 --seconds 10 --subscribers 10 || true)
      echo "{\"name\":\"latency_cross\",\"result\":${line:-null}}" >>"$OUT/results.jsonl"
      SERVER_PID=$A; stop_server; SERVER_PID=$B; stop_server
    fi
    start_sealcast SEALCAST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT; A=$SERVER_PID
    start_sealcast SEALCAST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT SEALCAST_BIND=127.0.0.1:$((SC_PORT + 1)); B=$SERVER_PID
    line=$("${BENCH[@]}" "${SC[@]}" latency --pub-url ws://127.0.0.1:$((SC_PORT + 1))/ws --rate 1000 --seconds 10 --subscribers 10 || true)
    echo "{\"name\":\"latency_cross\",\"result\":${line:-null}}" >>"$OUT/results.jsonl"
    SERVER_PID=$A; stop_server; SERVER_PID=$B; stop_server
  done
fi

# The connection-count target: encrypted sessions held 60 s with heartbeats (HOLD=1; ~3 min). `ulimit -n` caps
# each process near 20,000 descriptors, so 19,900 is what fits next to the server's own.
if [ "${HOLD:-0}" = 1 ]; then
  run hold_encrypted sealcast encrypted --mode encrypted --concurrency 64 idle --connections 19900 \
    --steps 5000,10000,15000 --hold 60 --heartbeat 25 --timeout 400
  # (5) in the steady state: measured after 65 s held with heartbeats, once each allocator (mimalloc, Bun's
  # GC) has had time to return what the setup's bursts freed.
  for mode in plain encrypted; do
    REPEAT=$REPEAT_SWEEP pair "idleheld_$mode" "$mode" --mode "$mode" --concurrency 64 idle --connections "$MEMN" \
      --steps "$MEMSTEPS" --hold 65 --heartbeat 25 --timeout 400
  done
fi

python3 bench/report.py "$OUT/results.jsonl" | tee "$OUT/summary.md"
python3 bench/plots.py "$OUT/results.jsonl" "$OUT"
log "results in $OUT"
