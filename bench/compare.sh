#!/usr/bin/env bash
# Side-by-side benchmarks: sealcast vs the Ignis reference peer (Bun + uWebSockets), same machine, same run.
#
#   bash bench/compare.sh [quick|full|setup|history]  # results in bench/results/<stamp>/, summary on stdout
#
# `history` is sealcast alone (issue 16): fan-out into a room with history against the same fan-out without,
# embedded and through Redis, and the server CPU of clients recovering missed messages against the same clients
# joining and receiving them live.
#
# `setup` is what users meet when connections come and go (issue 21): wsenc/1 and the reference's encrypted mode
# set up and torn down (TCP connect, upgrade, authenticate, handshake, Close frame, TCP close) 1, 100 and 1,000
# at a time; a reconnect storm (STORM_N sessions, default 19,900: the 20,000-descriptor limit of every process
# here, the server holding one socket per session too) after a SIGTERM and restart; and cross-instance latency
# through Redis at 100, 1,000 and 10,000 msg/s with both instances, Redis and the load generator unpinned on the
# same two cores, as in a small deployment.
#
# Each server is pinned to SERVER_CPU (default 0) with taskset; the load generator runs on LOADGEN_CPU (1);
# redis floats. sealcast gets a one-worker runtime automatically (tokio sizes its pool from the affinity mask).
# Every scenario runs against both servers back to back, REPEAT times, alternating which goes first.
# Loopback only; every run is bounded (counts + timeouts).
#
# A/B against an earlier build of sealcast: BASE_BIN=/path/to/old/target/release (holding its sealcast-bench) runs
# every sealcast scenario against that build's server too, right after the current one; the summary then has a
# baseline column and the ratio current/baseline. NO_PEER=1 skips the reference (an A/B run of sealcast alone).
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

if [ "${NO_PEER:-0}" = 1 ]; then HAVE_PEER=0; log "NO_PEER=1: the reference is not measured"; fi
BASE_BIN=${BASE_BIN:-}
if [ -n "$BASE_BIN" ] && [ ! -x "$BASE_BIN/sealcast-bench" ]; then
  log "BASE_BIN=$BASE_BIN holds no sealcast-bench (build the baseline with: cargo build --release --bin sealcast-bench)"
  exit 2
fi

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/bench/results/$STAMP}
mkdir -p "$OUT"
WORK=$(mktemp -d)
SC_PORT=${SC_PORT:-18080}
PEER_PORT=${PEER_PORT:-18090}
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
# Extra environment for every sealcast server `run` starts (the history profile sets it).
SC_ENV=()
# start_sealcast [ENV=VAL ...]: `sealcast-bench serve` is the server `sealcast serve` builds, with the shipped
# defaults, plaintext allowed alongside wsenc/1, client publish on, and the per-connection message rate and
# sessions-per-user caps lifted (the reference has neither; one publisher sends whole bursts).
# SERVE_BIN (default: this build) picks the build whose server runs.
# Every server start logs to a file of its own, kept in $OUT/logs (a run that loses messages can be read after).
LOGN=0
start_sealcast() {
  LOGN=$((LOGN + 1))
  local lf="$OUT/logs/sealcast-$LOGN.log"
  mkdir -p "$OUT/logs"
  env SEALCAST_BIND=127.0.0.1:$SC_PORT SEALCAST_SERVER_KEY_FILE="$WORK/key.pem" SEALCAST_REQUIRE_ENCRYPTION=false \
    SEALCAST_LOG=warn "$@" \
    taskset -c "$SERVER_CPU" "${SERVE_BIN:-$BIN}/sealcast-bench" serve >"$lf" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q "listening on" "$lf" && return 0; sleep 0.1; done
  log "sealcast did not start"; cat "$lf" >&2; return 1
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
  if [ "$which" = sealcast ]; then start_sealcast "${SC_ENV[@]}"; else start_peer "$pmode"; fi
  local target=("${SC[@]}"); [ "$which" = ignis ] && target=("${PEER[@]}")
  log "$name $which $* (sealcast log: logs/sealcast-$LOGN.log)"
  local line
  line=$("${BENCH[@]}" "${target[@]}" --server-pid "$SERVER_PID" "$@" || true)
  stop_server
  echo "{\"name\":\"$name\",\"result\":${line:-null}}" >>"$OUT/results.jsonl"
  if [ "$which" = sealcast ] && [ -n "$BASE_BIN" ]; then
    SERVE_BIN=$BASE_BIN start_sealcast
    log "$name sealcast-baseline $*"
    line=$("${BENCH[@]}" "${target[@]}" --server-pid "$SERVER_PID" "$@" || true)
    stop_server
    echo "{\"name\":\"$name\",\"baseline\":true,\"result\":${line:-null}}" >>"$OUT/results.jsonl"
  fi
}

# pair NAME PEER_MODE ARGS... : both servers, order alternating per repetition.
pair() {
  local name=$1 pmode=$2; shift 2
  for r in $(seq "$REPEAT"); do
    if [ $((r % 2)) = 1 ]; then run "$name" sealcast "$pmode" "$@"; run "$name" ignis "$pmode" "$@"
    else run "$name" ignis "$pmode" "$@"; run "$name" sealcast "$pmode" "$@"; fi
  done
}

# storm NAME SERVER PEER_MODE N: N sessions, the load generator sends the server SIGTERM once they are up, the
# server is started again and its PID handed over through a file, every client reconnects with the shipped
# clients' backoff.
storm() {
  local name=$1 which=$2 pmode=$3 n=$4
  want "$name" || return 0
  [ "$which" = ignis ] && [ "$HAVE_PEER" = 0 ] && return 0
  local pidf=$WORK/storm.pid
  rm -f "$pidf"
  if [ "$which" = sealcast ]; then start_sealcast; else start_peer "$pmode"; fi
  local old=$SERVER_PID target=("${SC[@]}")
  [ "$which" = ignis ] && target=("${PEER[@]}")
  log "$name $which $n"
  "${BENCH[@]}" "${target[@]}" --server-pid "$old" --mode encrypted --concurrency 200 storm --connections "$n" \
    --pid-file "$pidf" >"$WORK/storm.out" || true &
  local lg=$!
  while kill -0 "$old" 2>/dev/null && kill -0 "$lg" 2>/dev/null; do sleep 0.05; done
  if kill -0 "$lg" 2>/dev/null; then
    wait "$old" 2>/dev/null || true
    if [ "$which" = sealcast ]; then start_sealcast; else start_peer "$pmode"; fi
    echo "$SERVER_PID" >"$pidf"
  fi
  wait "$lg" || true
  stop_server
  echo "{\"name\":\"$name\",\"result\":$(cat "$WORK/storm.out" 2>/dev/null || echo null)}" >>"$OUT/results.jsonl"
}

# latency_cross NAME RATE: two instances of each server on one Redis (the setup profile runs it unpinned).
latency_cross() {
  local name=$1 rate=$2 line
  want "$name" || return 0
  if [ "$HAVE_PEER" = 1 ]; then
    start_peer plain $PEER_PORT; A=$SERVER_PID; start_peer plain $((PEER_PORT + 1)); B=$SERVER_PID
    line=$("${BENCH[@]}" "${PEER[@]}" latency --pub-url ws://127.0.0.1:$((PEER_PORT + 1))/ws --rate "$rate" --seconds 10 --subscribers 10 || true)
    echo "{\"name\":\"$name\",\"result\":${line:-null}}" >>"$OUT/results.jsonl"
    SERVER_PID=$A; stop_server; SERVER_PID=$B; stop_server
  fi
  start_sealcast SEALCAST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT; A=$SERVER_PID
  start_sealcast SEALCAST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT SEALCAST_BIND=127.0.0.1:$((SC_PORT + 1)); B=$SERVER_PID
  line=$("${BENCH[@]}" "${SC[@]}" latency --pub-url ws://127.0.0.1:$((SC_PORT + 1))/ws --rate "$rate" --seconds 10 --subscribers 10 || true)
  echo "{\"name\":\"$name\",\"result\":${line:-null}}" >>"$OUT/results.jsonl"
  SERVER_PID=$A; stop_server; SERVER_PID=$B; stop_server
}

if [ "$PROFILE" = history ]; then
  HIST=(SEALCAST_HISTORY_ROOMS=bench SEALCAST_HISTORY_SIZE=1000)
  REDIS=(SEALCAST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT)
  for r in $(seq "$REPEAT"); do
    for bus in embedded redis; do
      extra=(); [ "$bus" = redis ] && extra=("${REDIS[@]}")
      for h in off on; do
        SC_ENV=("${extra[@]}"); [ "$h" = on ] && SC_ENV+=("${HIST[@]}")
        run "fanout_history_${h}_${bus}" sealcast plain --mode plain fanout --receivers 1000 --messages 500 --runs 5
      done
      SC_ENV=("${extra[@]}" "${HIST[@]}")
      run "recover_${bus}" sealcast encrypted --mode encrypted recover --clients 1000 --missed 100
    done
  done
  SC_ENV=()
  python3 bench/report.py "$OUT/results.jsonl" | tee "$OUT/summary.md"
  log "results in $OUT"
  exit 0
fi

if [ "$PROFILE" = setup ]; then
  for r in $(seq "$REPEAT"); do
    for c in 1 100 1000; do
      n=$((c == 1 ? 1000 : c == 100 ? 5000 : 10000))
      if [ $((r % 2)) = 1 ]; then order="sealcast ignis"; else order="ignis sealcast"; fi
      for w in $order; do run "connect_encrypted_c$c" "$w" encrypted --mode encrypted --concurrency "$c" connect --connections "$n"; done
    done
    if [ $((r % 2)) = 1 ]; then order="sealcast ignis"; else order="ignis sealcast"; fi
    for w in $order; do storm storm_encrypted "$w" encrypted "${STORM_N:-19900}"; done
  done
  saved=("$SERVER_CPU" "$LOADGEN_CPU"); SERVER_CPU=0,1; LOADGEN_CPU=0,1
  BENCH=(timeout 900 taskset -c "$LOADGEN_CPU" "$BIN/sealcast-bench")
  for r in $(seq "$REPEAT"); do
    for rate in 100 1000 10000; do latency_cross "latency_cross_$rate" "$rate"; done
  done
  SERVER_CPU=${saved[0]}; LOADGEN_CPU=${saved[1]}
  python3 bench/report.py "$OUT/results.jsonl" | tee "$OUT/summary.md"
  log "results in $OUT"
  exit 0
fi

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
# (3b) group records (wsenc/1 §11, sealcast only): encrypted receivers that advertise roomKeys; the body is sealed
# once per message, each receiver gets a header of its own.
for r in $(seq "$REPEAT"); do
  run fanout_group_1000 sealcast encrypted --mode group fanout --receivers 1000 --messages 500 --runs 5
done
# (3c) batched group records (§11.4): receivers advertise roomKeys 2; a writer's run of queued room messages goes
# out as one record with one header, each body counted as a delivery.
for r in $(seq "$REPEAT"); do
  run fanout_batch_1000 sealcast encrypted --mode batch fanout --receivers 1000 --messages 500 --runs 5
done
# (3d) binary batched group records (§11.5): receivers advertise roomKeys 3; the same runs go out as binary frames
# with the bodies raw, each body counted as a delivery.
for r in $(seq "$REPEAT"); do
  run fanout_binbatch_1000 sealcast encrypted --mode binbatch fanout --receivers 1000 --messages 500 --runs 5
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
for r in $(seq "$REPEAT_SWEEP"); do
  run idle_group sealcast encrypted --mode group --concurrency 64 idle --connections "$MEMN" --steps "$MEMSTEPS"
done
# (6) latency at 1,000 msg/s: single instance (both), and across two reference instances through Redis.
REPEAT=$REPEAT_SWEEP pair latency_single plain latency --rate 1000 --seconds 10 --subscribers 10
if [ "$PROFILE" = full ]; then
  for r in $(seq "$REPEAT_SWEEP"); do latency_cross latency_cross 1000; done
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
