# Shared by loadgen-*.sh: start nginx on loopback answering `return 200`, build the
# generator. Source it; it defines PORT, URL, LOAD (the generator binary; LOAD_BIN to
# override) and stops nginx on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PORT="${PORT:-18080}"
URL="http://127.0.0.1:${PORT}/"
NGINX_WORKERS="${NGINX_WORKERS:-1}"
command -v nginx >/dev/null || { echo "nginx not found: apt-get install -y nginx" >&2; exit 1; }
TMP="$(mktemp -d)"
cat >"$TMP/nginx.conf" <<CONF
worker_processes ${NGINX_WORKERS};
daemon off;
pid ${TMP}/nginx.pid;
error_log ${TMP}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:${PORT};
    location / { return 200 "ok"; }
  }
}
CONF
nginx -p "$TMP" -c "$TMP/nginx.conf" &
NGINX_PID=$!
cleanup() { kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
for _ in $(seq 50); do
  curl -fs "$URL" >/dev/null 2>&1 && break
  sleep 0.1
done
# LOAD_BIN=path runs a generator built elsewhere (e.g. an older commit, to compare).
if [ -n "${LOAD_BIN:-}" ]; then
  LOAD="$LOAD_BIN"
else
  (cd "$ROOT" && cargo build -q -p loadgen --release --example load)
  LOAD="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/load"
fi
json_field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
