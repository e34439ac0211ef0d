#!/usr/bin/env bash
# The whole test suite: unit, property, and whole-system tests against real processes
# and a real PostgreSQL. Finds PostgreSQL in this order:
#   1. $DATABASE_URL
#   2. a server on 127.0.0.1:5432 (user postgres, trust auth)
#   3. a throw-away postgres:16 container, where a Docker engine is available
# and fails with a clear message if there is none: the PostgreSQL tests never skip.
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS="${JOBS:-2}"
container=""
cleanup() {
  if [ -n "$container" ]; then docker rm -f "$container" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if [ -z "${DATABASE_URL:-}" ]; then
  if port_open 127.0.0.1 5432; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    container="topgun-test-pg-$$"
    docker run -d --rm --name "$container" -e POSTGRES_HOST_AUTH_METHOD=trust -p 127.0.0.1::5432 postgres:16 >/dev/null
    host_port="$(docker port "$container" 5432/tcp | head -n1 | sed 's/.*://')"
    for _ in $(seq 1 60); do
      if docker exec "$container" pg_isready -U postgres >/dev/null 2>&1; then break; fi
      sleep 1
    done
    export DATABASE_URL="postgres://postgres@127.0.0.1:${host_port}/postgres"
  else
    echo "error: no PostgreSQL found. Set DATABASE_URL, start a server on 127.0.0.1:5432," >&2
    echo "       or install Docker so a throw-away container can be started." >&2
    exit 1
  fi
fi
echo "using PostgreSQL at ${DATABASE_URL%%\?*}"

# Independent validators: the OpenAPI document and compose.yaml (Compose JSON schema).
if ! python3 -c "import openapi_spec_validator, jsonschema, yaml" >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator jsonschema pyyaml \
    || { echo "error: cannot install openapi-spec-validator (PyPI)" >&2; exit 1; }
fi

# The Compose CLI's own validation of compose.yaml (`config` needs no Docker engine).
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null; } \
    || { echo "error: cannot install docker-compose (Debian package)" >&2; exit 1; }
fi

# The whole-system tests start the real binaries, so build them first.
cargo build --workspace --bins --locked -j "$JOBS"
cargo test --workspace --locked -j "$JOBS" -- --test-threads="${TEST_THREADS:-2}"

# The admin dashboard in a real headless browser (Debian's chromium + playwright-core).
SCREENSHOT_PATH="$PWD/target/dashboard.png" admin-dashboard/e2e/run.sh
