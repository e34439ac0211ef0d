#!/usr/bin/env bash
# Runs the standard topgun-bench scenarios against a freshly started release-build server and
# records the results: bench/results/<scenario>.json and a section appended to
# bench/results/README.md (with the machine it ran on).
#
#   bench/run.sh                      # every scenario against target/release/test-server
#   SCENARIOS="write-ack fan-out" bench/run.sh
#   BENCH_SERVER=topgun bench/run.sh  # the durable single-process binary (SQLite in a temp dir)
#   BENCH_SERVER=distributed SEARCH_REPLICAS=2 bench/run.sh
#                                     # the distributed suite as separate processes: storage-service
#                                     # (null store, or PostgreSQL with DATABASE_URL), SYNC_SHARDS [2]
#                                     # sync shards, SEARCH_REPLICAS [1] search replicas, one gateway
#   BENCH_URL=ws://host:8080/ws BENCH_PIDS=123 bench/run.sh   # an already running server
#   BENCH_PROFILE=debug BENCH_RESULTS=/tmp/r bench/run.sh      # try the script itself quickly
#   BENCH_SKIP_BUILD=1 bench/run.sh   # use the binaries already in target/
#
# Sizes can be changed through the environment (defaults in brackets): BENCH_DURATION [10 s],
# WRITE_CONNECTIONS [200], WRITE_INTERVAL_MS [50], FLOOD_CONNECTIONS [20],
# FANOUT_SUBSCRIBERS [50], SYNC_RECORDS ["10000 100000"], SEARCH_CONNECTIONS [10],
# SEARCH_RECORDS [1000], BENCH_WARMUP [3 s of paced write-ack on a map of its own before the
# first scenario, not recorded; 0 measures the freshly started process cold].
#
# Exit status: 0 when every scenario passed, 1 when any reported failures (write-flood is
# exempt: overloading the server is its purpose, and what happened is in its table),
# 2 when the server could not be built or started.
set -uo pipefail
cd "$(dirname "$0")/.."

SCENARIOS="${SCENARIOS:-write-ack write-ack-persisted fan-out initial-sync search write-flood}"
BENCH_SERVER="${BENCH_SERVER:-test-server}"
BENCH_DURATION="${BENCH_DURATION:-10}"
BENCH_WARMUP="${BENCH_WARMUP:-3}"
WRITE_CONNECTIONS="${WRITE_CONNECTIONS:-200}"
WRITE_INTERVAL_MS="${WRITE_INTERVAL_MS:-50}"
FLOOD_CONNECTIONS="${FLOOD_CONNECTIONS:-20}"
FANOUT_SUBSCRIBERS="${FANOUT_SUBSCRIBERS:-50}"
SYNC_RECORDS="${SYNC_RECORDS:-10000 100000}"
SEARCH_CONNECTIONS="${SEARCH_CONNECTIONS:-10}"
SEARCH_RECORDS="${SEARCH_RECORDS:-1000}"
BENCH_PROFILE="${BENCH_PROFILE:-release}"
RESULTS="${BENCH_RESULTS:-bench/results}"
case "$BENCH_PROFILE" in
  release) profile_flag=(--release) ;;
  debug) profile_flag=() ;;
  *) echo "error: BENCH_PROFILE must be release or debug" >&2; exit 2 ;;
esac
BENCH="target/$BENCH_PROFILE/topgun-bench"

mkdir -p "$RESULTS"
work="$(mktemp -d)"
server_pid=""
stop_server() {
  local pid
  for pid in $server_pid; do
    kill "$pid" 2>/dev/null || true
  done
  # Every process drains gracefully; give them a moment, then make sure they are gone.
  for pid in $server_pid; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  done
  server_pid=""
}
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT

bins=(--bin topgun-bench)
if [ -z "${BENCH_URL:-}" ]; then
  if [ "$BENCH_SERVER" = distributed ]; then
    bins+=(--bin storage-service --bin sync-service --bin search-service --bin gateway)
  else
    bins+=(--bin "$BENCH_SERVER")
  fi
fi
if [ -n "${BENCH_SKIP_BUILD:-}" ]; then
  echo "BENCH_SKIP_BUILD set: using the $BENCH_PROFILE binaries as they are"
else
  echo "building $BENCH_PROFILE binaries: ${bins[*]}"
  if ! cargo build "${profile_flag[@]}" -j 2 "${bins[@]}"; then
    echo "error: $BENCH_PROFILE build failed" >&2
    exit 2
  fi
fi

if [ -n "${BENCH_URL:-}" ]; then
  url="$BENCH_URL"
  pids="${BENCH_PIDS:-}"
  server_desc="external server at $url"
elif [ "$BENCH_SERVER" = distributed ]; then
  SYNC_SHARDS="${SYNC_SHARDS:-2}"
  SEARCH_REPLICAS="${SEARCH_REPLICAS:-1}"
  free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  bin="target/$BENCH_PROFILE"
  token="$(python3 -c 'import uuid; print(uuid.uuid4().hex)')"
  spawn() {  # name, then env assignments
    local name="$1"; shift
    env "$@" TOPGUN_INTERNAL_TOKEN="$token" RUST_LOG="${RUST_LOG:-warn}" "$bin/$name" \
      >>"$work/$name.out" 2>>"$work/$name.err" &
    server_pid="$server_pid $!"
  }
  storage_port="$(free_port)"
  if [ -n "${DATABASE_URL:-}" ]; then
    store=(STORAGE_BACKEND=postgres "DATABASE_URL=$DATABASE_URL" "STORAGE_TABLE=bench_$token")
  else
    store=(STORAGE_BACKEND=null)
  fi
  spawn storage-service "STORAGE_GRPC_ADDR=127.0.0.1:$storage_port" "STORAGE_HTTP_ADDR=127.0.0.1:$(free_port)" "${store[@]}"
  sync_addrs=()
  for i in $(seq 0 $((SYNC_SHARDS - 1))); do
    p="$(free_port)"
    sync_addrs+=("http://127.0.0.1:$p")
    spawn sync-service "SYNC_GRPC_ADDR=127.0.0.1:$p" "SYNC_HTTP_ADDR=127.0.0.1:$(free_port)" \
      "SHARD_INDEX=$i" "SHARD_COUNT=$SYNC_SHARDS" "NODE_ID=sync-$i" "STORAGE_ADDR=http://127.0.0.1:$storage_port"
  done
  sync_list="$(IFS=,; echo "${sync_addrs[*]}")"
  search_addrs=()
  for i in $(seq 0 $((SEARCH_REPLICAS - 1))); do
    p="$(free_port)"
    search_addrs+=("http://127.0.0.1:$p")
    spawn search-service "SEARCH_GRPC_ADDR=127.0.0.1:$p" "SEARCH_HTTP_ADDR=127.0.0.1:$(free_port)" \
      "SYNC_ADDRS=$sync_list" "NODE_ID=search-$i"
  done
  port="$(free_port)"
  spawn gateway "PORT=$port" TOPGUN_BIND_ADDR=127.0.0.1 NODE_ID=gateway-0 "SYNC_ADDRS=$sync_list" \
    "SEARCH_ADDRS=$(IFS=,; echo "${search_addrs[*]}")" JWT_SECRET=test-e2e-secret
  ready=""
  for _ in $(seq 1 300); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/health/ready', timeout=1)" 2>/dev/null; then
      ready=1; break
    fi
    sleep 0.2
  done
  if [ -z "$ready" ]; then
    echo "error: the distributed suite did not become ready; logs:" >&2
    tail -n 5 "$work"/*.err >&2
    exit 2
  fi
  url="ws://127.0.0.1:$port/ws"
  pids="$(echo $server_pid | tr ' ' ',')"
  server_desc="distributed suite ($SYNC_SHARDS sync shards, $SEARCH_REPLICAS search replicas, ${store[0]#STORAGE_BACKEND=} store), $BENCH_PROFILE build"
else
  case "$BENCH_SERVER" in
    test-server) env_args=() ;;
    topgun) env_args=(JWT_SECRET=test-e2e-secret "TOPGUN_DATA_DIR=$work/data") ;;
    *) echo "error: BENCH_SERVER must be test-server, topgun or distributed" >&2; exit 2 ;;
  esac
  env "${env_args[@]}" RUST_LOG="${RUST_LOG:-warn}" "target/$BENCH_PROFILE/$BENCH_SERVER" --port 0 \
    >"$work/server.out" 2>"$work/server.err" &
  server_pid=$!
  port=""
  for _ in $(seq 1 300); do
    port="$(sed -n 's/^PORT=//p' "$work/server.out" | head -n1)"
    [ -n "$port" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    sleep 0.2
  done
  if [ -z "$port" ]; then
    echo "error: $BENCH_SERVER did not announce PORT=; its log:" >&2
    tail -n 30 "$work/server.err" >&2
    exit 2
  fi
  url="ws://127.0.0.1:$port/ws"
  pids="$server_pid"
  server_desc="$BENCH_SERVER, $BENCH_PROFILE build"
fi
echo "server: $server_desc"

{
  echo
  echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — $server_desc, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
  echo "Machine: $(nproc) CPUs, kernel $(uname -r). Memory (\`free -g\`):"
  echo
  echo '```'
  free -g
  echo '```'
  echo
  echo "Load generator and server share this machine, so client CPU is part of every number."
  echo "Warm-up before the first scenario: ${BENCH_WARMUP} s of paced write-ack (not recorded)."
  echo
} >>"$RESULTS/README.md"

common=(--url "$url" --duration "$BENCH_DURATION" --markdown "$RESULTS/README.md")
[ -n "$pids" ] && common+=(--pids "$pids")

if [ "$BENCH_WARMUP" -gt 0 ]; then
  echo "=== warm-up (${BENCH_WARMUP} s, not recorded)"
  warmup=(--url "$url" --duration "$BENCH_WARMUP")
  [ -n "$pids" ] && warmup+=(--pids "$pids")
  "$BENCH" write-ack --connections "$WRITE_CONNECTIONS" --interval-ms "$WRITE_INTERVAL_MS" \
    --map bench-warmup "${warmup[@]}" >/dev/null || echo "warm-up reported failures (ignored)" >&2
fi

failed=()
run() {
  local name="$1"; shift
  echo "=== $name"
  "$BENCH" "$@" "${common[@]}" --label "$name" --json "$RESULTS/$name.json"
  local rc=$?
  if [ "$rc" -ne 0 ]; then failed+=("$name (exit $rc)"); fi
}

for scenario in $SCENARIOS; do
  case "$scenario" in
    write-ack)
      run write-ack write-ack --connections "$WRITE_CONNECTIONS" --interval-ms "$WRITE_INTERVAL_MS" ;;
    write-ack-persisted)
      run write-ack-persisted write-ack --connections "$WRITE_CONNECTIONS" --interval-ms "$WRITE_INTERVAL_MS" \
        --write-concern PERSISTED ;;
    fan-out)
      run fan-out fan-out --subscribers "$FANOUT_SUBSCRIBERS" ;;
    initial-sync)
      for n in $SYNC_RECORDS; do run "initial-sync-$n" initial-sync --records "$n"; done ;;
    search)
      run search search --connections "$SEARCH_CONNECTIONS" --records "$SEARCH_RECORDS" ;;
    write-flood)
      # Last on purpose: a flood can leave a backlog the server works through for a while.
      run write-flood write-flood --connections "$FLOOD_CONNECTIONS" --allow-errors ;;
    *)
      echo "unknown scenario: $scenario" >&2
      failed+=("$scenario (unknown)") ;;
  esac
done

stop_server
echo
echo "results: $RESULTS/README.md and $RESULTS/*.json"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "scenarios with failures: ${failed[*]}" >&2
  exit 1
fi
echo "every scenario passed"
