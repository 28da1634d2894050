#!/usr/bin/env bash
# Rough figure: max classifier throughput at p99 <= 100 ms, dynamic batching (defaults:
# --max-batch-size 32 --max-queue-delay-ms 2) vs --max-batch-size 1, one sample per request.
#
# Load: wrk (closed loop, 1 thread, keep-alive) swept over connection counts; a run counts
# only if it had no non-2xx answers and no socket errors. Closed-loop wrk under-reports tail
# latency under overload (coordinated omission), so this is a rough comparison, not the
# metrics.md "max throughput at SLO" figure; faultline's own open-loop loadgen gives that.
# Client and server share the machine's cores.
#
# Usage: benches/scripts/server-batching.sh [DURATION_S] [CONNECTIONS...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DURATION="${1:-5}"
shift || true
CONNS=("$@")
[ ${#CONNS[@]} -gt 0 ] || CONNS=(1 2 4 8 16 32 64 128)
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
(cd "$ROOT" && cargo build -q -p server --release)
SERVER="${CARGO_TARGET_DIR:-$ROOT/target}/release/server"
TMP="$(mktemp -d)"
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

python3 - "$TMP/post.lua" <<'PY'
import json, sys
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 256], "datatype": "FP32",
                               "data": [round((i % 7) * 0.1, 1) for i in range(256)]}]})
open(sys.argv[1], "w").write(
    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    f"wrk.body = [[{body}]]\n")
PY

to_ms() { # wrk latency like 1.23ms / 456.00us / 1.20s -> milliseconds
  python3 -c "import sys,re; v,u=re.match(r'([\d.]+)(us|ms|s)',sys.argv[1]).groups(); print(float(v)*{'us':1e-3,'ms':1,'s':1e3}[u])" "$1"
}

run_mode() {
  local label="$1"; shift
  "$SERVER" --listen 127.0.0.1:0 --model mlp=mlp --max-queue 4096 "$@" >"$TMP/out" 2>"$TMP/err" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q '^listening on ' "$TMP/out" 2>/dev/null && break; sleep 0.1; done
  local addr; addr="$(sed -n 's/^listening on //p' "$TMP/out")"
  local url="http://$addr/v2/models/mlp/infer"
  wrk -t1 -c4 -d1s -s "$TMP/post.lua" "$url" >/dev/null # warm-up
  local best_rps=0 best_c=0
  printf '%-10s %6s %10s %10s %s\n' "$label" conns req/s p99_ms ok >&2
  for c in "${CONNS[@]}"; do
    local out; out="$(wrk -t1 -c"$c" -d"${DURATION}s" --latency -s "$TMP/post.lua" "$url")"
    local rps p99 ok=yes
    rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
    p99="$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")"
    grep -qE 'Non-2xx|Socket errors' <<<"$out" && ok=no
    printf '%-10s %6s %10s %10s %s\n' "$label" "$c" "$rps" "$p99" "$ok" >&2
    if [ "$ok" = yes ] && python3 -c "import sys; sys.exit(0 if float(sys.argv[1])<=100 and float(sys.argv[2])>float(sys.argv[3]) else 1)" "$p99" "$rps" "$best_rps"; then
      best_rps="$rps"; best_c="$c"
    fi
  done
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  echo "$best_rps $best_c"
}

read -r batched batched_c < <(run_mode batching)
read -r single single_c < <(run_mode batch1 --max-batch-size 1)
python3 - "$batched" "$batched_c" "$single" "$single_c" <<'PY'
import sys
b, bc, s, sc = float(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
print(f"max req/s at p99<=100ms: batching {b:.0f} (c={bc}), --max-batch-size 1 {s:.0f} (c={sc}), ratio {b/s if s else float('inf'):.2f}x")
PY
