#!/usr/bin/env bash
# End-to-end test of the admin dashboard: starts target/debug/test-server on an ephemeral port
# with the dashboard directory, writes one record so a map exists, runs the browser test
# (node --test dashboard.test.mjs) and exits with its status.
#
# Env (all optional): TOPGUN_ADMIN_PASSWORD, EXPECT_MAP (default dashboard-demo),
# SCREENSHOT_PATH (default <repo>/docs/dashboard.png), TOPGUN_SERVER_BIN (default
# <repo>/target/debug/test-server, built with cargo when missing).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
cd "$HERE"

log() { printf '[dashboard-e2e] %s\n' "$*" >&2; }

# --- prerequisites -------------------------------------------------------------------------
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian's chromium"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    log "/usr/bin/chromium is missing: apt-get update && apt-get install -y chromium"
    exit 1
  fi
fi
if [ ! -d node_modules ]; then
  log "npm ci"
  npm ci --no-audit --no-fund
fi
BIN="${TOPGUN_SERVER_BIN:-$REPO/target/debug/test-server}"
if [ ! -x "$BIN" ]; then
  log "building test-server"
  (cd "$REPO" && cargo build -j "${CARGO_BUILD_JOBS:-2}" --bin test-server)
fi

export TOPGUN_ADMIN_USERNAME="${TOPGUN_ADMIN_USERNAME:-admin}"
export TOPGUN_ADMIN_PASSWORD="${TOPGUN_ADMIN_PASSWORD:-e2e-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')}"
export EXPECT_MAP="${EXPECT_MAP:-dashboard-demo}"
export SCREENSHOT_PATH="${SCREENSHOT_PATH:-$REPO/docs/dashboard.png}"

# --- server --------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dashboard-e2e.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  log "$*"
  log "server log (tail):"
  tail -n 40 "$WORK/server.err" >&2 || true
  exit 1
}

log "starting $BIN --port 0"
# setsid: the server gets its own process group, so cleanup can signal all of it.
(cd "$REPO" && TOPGUN_ADMIN_DIR="$REPO/admin-dashboard" STORAGE_BACKEND=null RUST_LOG="${RUST_LOG:-warn}" \
  exec setsid "$BIN" --port 0 >"$WORK/server.out" 2>"$WORK/server.err") &
SERVER_PID=$!

PORT=""
for _ in $(seq 600); do
  PORT="$(sed -n 's/^PORT=\([0-9][0-9]*\)[[:space:]]*$/\1/p' "$WORK/server.out" | head -n1)"
  [ -n "$PORT" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || fail "test-server exited before printing PORT="
  sleep 0.1
done
[ -n "$PORT" ] || fail "test-server printed no PORT= line within 60 s"
export TOPGUN_URL="http://127.0.0.1:$PORT"
log "server at $TOPGUN_URL"

for _ in $(seq 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$TOPGUN_URL/health/ready")" = 200 ] && break
  sleep 0.1
done
code="$(curl -s -o /dev/null -w '%{http_code}' "$TOPGUN_URL/admin/")"
[ "$code" = 200 ] || fail "GET /admin/ answered $code: this test-server does not serve the dashboard (rebuild it?)"

# --- data and test -------------------------------------------------------------------------
node seed.mjs "$EXPECT_MAP" || fail "could not write a record into $EXPECT_MAP"

set +e
node --test dashboard.test.mjs
status=$?
set -e
if [ "$status" = 0 ]; then
  log "passed; screenshot at $SCREENSHOT_PATH"
else
  log "dashboard test failed (exit $status); server log (tail):"
  tail -n 40 "$WORK/server.err" >&2 || true
fi
exit "$status"
