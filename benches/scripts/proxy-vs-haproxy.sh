#!/usr/bin/env bash
# `faultline proxy` (no toxics) against haproxy in TCP mode and against no proxy at all, side
# by side in one run, rounds interleaved (the order rotates each round) so drift from other
# load hits every path alike; then the accuracy of a latency and a bandwidth toxic.
#
#  1. HTTP through each path: wrk -t1 -c50 against nginx serving a small static file;
#     req/s, mean/p50/p99 latency, the proxy's CPU time per request.
#  2. Added latency at low load: wrk -t1 -c1, p50 of each proxy minus p50 direct.
#  3. Bulk: one iperf3 stream each way (-R: server to client) through each path, GB/s.
#  4. Toxics on a separate faultline proxy: latency LAT_MS downstream (offsets of p50/p99 from
#     LAT_MS + the path's own p50 without the toxic), then bandwidth RATE_KBPS (a BULK_MB
#     download with curl; achieved rate / configured).
# Ends with one markdown table. Every process started here is stopped on exit.
# Usage: benches/scripts/proxy-vs-haproxy.sh
#   PROXY_THREADS=N runs faultline proxy with --threads N (default 1, its own default, as haproxy's nbthread 1).
#   env: ROUNDS=3 DURATION=10 LOW_DURATION=5 IPERF_S=3 LAT_MS=50 LAT_S=10 RATE_KBPS=10000
#        BULK_MB=50 BASE_PORT=18600 QUIET_WAIT_S=60 FAULTLINE_BIN=path (skip the build)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-10}"; LOW_DURATION="${LOW_DURATION:-5}"
IPERF_S="${IPERF_S:-3}"; LAT_MS="${LAT_MS:-50}"; LAT_S="${LAT_S:-10}"
RATE_KBPS="${RATE_KBPS:-10000}"; BULK_MB="${BULK_MB:-50}"; BASE_PORT="${BASE_PORT:-18600}"
NGINX_PORT=$BASE_PORT; HAP_HTTP_PORT=$((BASE_PORT + 1)); HAP_IPERF_PORT=$((BASE_PORT + 2))
IPERF_PORT=$((BASE_PORT + 3)); API_PORT=$((BASE_PORT + 4))
SEED=1

# --- tools ---------------------------------------------------------------------------------
missing=()
for tool in nginx haproxy wrk iperf3 curl python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${missing[*]}; install them: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "# installing ${missing[*]} with apt-get"
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
fi
if [ -n "${FAULTLINE_BIN:-}" ]; then
  FAULTLINE="$FAULTLINE_BIN"
else
  cargo build --release -q -p faultline --manifest-path "$ROOT/Cargo.toml"
  FAULTLINE="${CARGO_TARGET_DIR:-$ROOT/target}/release/faultline"
fi

# --- processes: every one started is stopped on exit ---------------------------------------
TMP="$(mktemp -d)"
PIDS=()
cleanup() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[$i]}" 2>/dev/null || true
  done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    wait "${PIDS[$i]}" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in $(seq "$BASE_PORT" $((BASE_PORT + 4))); do
  if port_open "$port"; then
    echo "127.0.0.1:$port is taken; choose free ports with BASE_PORT (5 in a row)" >&2
    exit 1
  fi
done
wait_port() { # PORT PID LOG: until PID accepts on PORT (5 s at most); else show LOG
  local _
  for _ in $(seq 100); do
    kill -0 "$2" 2>/dev/null || break
    port_open "$1" && return 0
    sleep 0.05
  done
  echo "nothing listens on 127.0.0.1:$1 (pid $2) after 5 s; $3:" >&2
  cat "$3" >&2
  exit 1
}

# nginx, one worker: a 612-byte page (nginx's own index size) and a BULK_MB file.
mkdir -p "$TMP/www" "$TMP/logs"
chmod a+rx "$TMP" "$TMP/www" # nginx's worker runs as another user when started by root
head -c 612 /dev/zero | tr '\0' 'x' >"$TMP/www/small.html"
head -c $((BULK_MB * 1000 * 1000)) /dev/zero >"$TMP/www/bulk.bin"
cat >"$TMP/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid ${TMP}/nginx.pid;
error_log ${TMP}/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:${NGINX_PORT};
    root ${TMP}/www;
  }
}
CONF
nginx -p "$TMP" -c "$TMP/nginx.conf" 2>>"$TMP/logs/error.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

iperf3 -s -p "$IPERF_PORT" >"$TMP/iperf3-server.log" 2>&1 &
IPERF_PID=$!
PIDS+=("$IPERF_PID")

# haproxy, TCP mode, one thread.
cat >"$TMP/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend http
  bind 127.0.0.1:${HAP_HTTP_PORT}
  default_backend nginx
backend nginx
  server nginx 127.0.0.1:${NGINX_PORT}
frontend iperf
  bind 127.0.0.1:${HAP_IPERF_PORT}
  default_backend iperf
backend iperf
  server iperf 127.0.0.1:${IPERF_PORT}
CONF
haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
HAP_PID=$!
PIDS+=("$HAP_PID")

"$FAULTLINE" proxy --listen "127.0.0.1:${API_PORT}" --seed "$SEED" --threads "${PROXY_THREADS:-1}" >"$TMP/faultline.log" 2>&1 &
FL_PID=$!
PIDS+=("$FL_PID")

wait_port "$NGINX_PORT" "$NGINX_PID" "$TMP/logs/error.log"
wait_port "$IPERF_PORT" "$IPERF_PID" "$TMP/iperf3-server.log"
wait_port "$HAP_HTTP_PORT" "$HAP_PID" "$TMP/haproxy.log"
wait_port "$API_PORT" "$FL_PID" "$TMP/faultline.log"
API="http://127.0.0.1:${API_PORT}"
api() { # METHOD PATH [JSON]: the answer's body; fails on a status other than 2xx
  curl -fsS -X "$1" "$API$2" ${3:+-H 'Content-Type: application/json' -d "$3"}
}
json_field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
new_proxy() { # NAME UPSTREAM_PORT: the port faultline listens on for it
  api POST /proxies "{\"name\":\"$1\",\"listen\":\"127.0.0.1:0\",\"upstream\":\"127.0.0.1:$2\"}" \
    | json_field 'd["listen"].rsplit(":", 1)[1]'
}
FL_HTTP_PORT=$(new_proxy http "$NGINX_PORT")
FL_IPERF_PORT=$(new_proxy iperf "$IPERF_PORT")
FL_TOXIC_PORT=$(new_proxy toxic "$NGINX_PORT")

declare -A HTTP_PORT=([direct]=$NGINX_PORT [haproxy]=$HAP_HTTP_PORT [faultline]=$FL_HTTP_PORT)
declare -A BULK_PORT=([direct]=$IPERF_PORT [haproxy]=$HAP_IPERF_PORT [faultline]=$FL_IPERF_PORT)
declare -A PATH_PID=([haproxy]=$HAP_PID [faultline]=$FL_PID)
for p in direct haproxy faultline; do
  curl -fsS -o /dev/null "http://127.0.0.1:${HTTP_PORT[$p]}/small.html"
done

# wrk prints one RESULT line: req/s, mean, p50, p99 (µs), requests, errors.
cat >"$TMP/result.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.1f %d %d %d %d\n",
    summary.requests / (summary.duration / 1e6), latency.mean,
    latency:percentile(50), latency:percentile(99), summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout))
end
LUA
RESULTS="$TMP/results.tsv"
: >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; } # TEST PATH METRIC VALUE
cpu_ticks() { # PID: user and system clock ticks so far
  awk '{print $14, $15}' "/proc/$1/stat"
}
TICK_HZ=$(getconf CLK_TCK)

run_wrk() { # TEST PATH CONNS SECONDS [PORT]
  local test=$1 path=$2 conns=$3 secs=$4 port=${5:-${HTTP_PORT[$2]}} out pid rest
  local rps mean p50 p99 n errors u0=0 s0=0 u1 s1 user sys
  pid=${PATH_PID[$path]:-}
  [ -n "$pid" ] && read -r u0 s0 < <(cpu_ticks "$pid")
  out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$TMP/result.lua" \
    "http://127.0.0.1:${port}/small.html" | awk '/^RESULT/ {print $2, $3, $4, $5, $6, $7}')
  read -r rps mean p50 p99 n errors <<<"$out"
  [ "$errors" = 0 ] || echo "  warning: $test $path: $errors wrk errors" >&2
  record "$test" "$path" rps "$rps"; record "$test" "$path" mean_us "$mean"
  record "$test" "$path" p50_us "$p50"; record "$test" "$path" p99_us "$p99"
  record "$test" "$path" requests "$n"
  rest=""
  if [ -n "$pid" ]; then
    read -r u1 s1 < <(cpu_ticks "$pid")
    user=$(python3 -c "print(f'{($u1 - $u0) / $TICK_HZ * 1e6 / max(1, $n):.2f}')")
    sys=$(python3 -c "print(f'{($s1 - $s0) / $TICK_HZ * 1e6 / max(1, $n):.2f}')")
    record "$test" "$path" cpu_user_us_per_req "$user"
    record "$test" "$path" cpu_sys_us_per_req "$sys"
    rest=", proxy CPU user ${user} + sys ${sys} µs/req"
  fi
  printf '  %-6s %-9s %9.0f req/s  mean %7.0f µs  p50 %6d µs  p99 %6d µs%s\n' \
    "$test" "$path" "$rps" "$mean" "$p50" "$p99" "$rest"
}
run_iperf() { # PATH: GB/s client→server and server→client (-R)
  local path=$1 dir flag gbs
  for dir in up down; do
    flag=""; [ "$dir" = down ] && flag="-R"
    gbs=$(timeout $((IPERF_S + 15)) iperf3 -c 127.0.0.1 -p "${BULK_PORT[$path]}" -t "$IPERF_S" \
      $flag -J | json_field '"%.3f" % (d["end"]["sum_received"]["bits_per_second"] / 8e9)')
    record iperf "$path" "${dir}_gb_s" "$gbs"
    printf '  iperf3 %-9s %-4s %6s GB/s\n' "$path" "$dir" "$gbs"
  done
}

# Short idle wait so a build that is just finishing does not land in round 1.
idle_before=$(python3 - "${QUIET_WAIT_S:-60}" <<'PY'
import sys, time
def idle():
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    return v[3] + v[4], sum(v)
deadline, ok, last = time.time() + float(sys.argv[1]), 0, 0.0
while time.time() < deadline and ok < 2:
    a = idle(); time.sleep(1); b = idle()
    last = (b[0] - a[0]) / max(1, b[1] - a[1])
    ok = ok + 1 if last >= 0.9 else 0
print(f"{last:.0%}" + ("" if ok >= 2 else " (busy)"))
PY
)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# proxy-vs-haproxy — $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$ROOT" rev-parse --short HEAD), seed $SEED"
echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
echo "# $(nginx -v 2>&1 | cut -d' ' -f3), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(iperf3 --version | head -1 | cut -d' ' -f1-2)"
echo "# cpu idle before: ${idle_before}; load average before: ${LOAD_BEFORE}"

# Warm-up: connections, caches, the proxies' first allocations.
for p in direct haproxy faultline; do
  wrk -t1 -c50 -d1s "http://127.0.0.1:${HTTP_PORT[$p]}/small.html" >/dev/null
done

order=(direct haproxy faultline)
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS (order: ${order[*]})"
  for p in "${order[@]}"; do run_wrk c50 "$p" 50 "$DURATION"; done
  for p in "${order[@]}"; do run_wrk c1 "$p" 1 "$LOW_DURATION"; done
  for p in "${order[@]}"; do run_iperf "$p"; done
  order=("${order[@]:1}" "${order[0]}")
done

echo "toxics (proxy 'toxic', upstream nginx)"
run_wrk c1 toxic-none 1 "$LOW_DURATION" "$FL_TOXIC_PORT"
api POST /proxies/toxic/toxics \
  "{\"name\":\"lat\",\"type\":\"latency\",\"stream\":\"downstream\",\"attributes\":{\"latency\":${LAT_MS},\"jitter\":0}}" >/dev/null
run_wrk c1 toxic-latency 1 "$LAT_S" "$FL_TOXIC_PORT"
api DELETE /proxies/toxic/toxics/lat >/dev/null
api POST /proxies/toxic/toxics \
  "{\"name\":\"bw\",\"type\":\"bandwidth\",\"stream\":\"downstream\",\"attributes\":{\"rate\":${RATE_KBPS}}}" >/dev/null
read -r bytes secs < <(curl -fsS -o /dev/null -w '%{size_download} %{time_total}\n' \
  "http://127.0.0.1:${FL_TOXIC_PORT}/bulk.bin")
record toxic bandwidth bytes "$bytes"; record toxic bandwidth secs "$secs"
printf '  bandwidth %s KB/s: %s bytes in %s s\n' "$RATE_KBPS" "$bytes" "$secs"
api POST /reset >/dev/null
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# load average after: ${LOAD_AFTER}"

# --- summary -------------------------------------------------------------------------------
python3 - "$RESULTS" "$LAT_MS" "$RATE_KBPS" "$DURATION" "$LOW_DURATION" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import statistics as st, sys
path, lat_ms, rate_kbps, dur, low, before, after = sys.argv[1:]
lat_ms, rate_kbps = float(lat_ms), float(rate_kbps)
r = {}
for line in open(path):
    test, p, metric, value = line.rstrip("\n").split("\t")
    r.setdefault((test, p, metric), []).append(float(value))
def vals(t, p, m): return r.get((t, p, m), [])
def med(t, p, m): return st.median(vals(t, p, m))
def fmt(xs, f):
    if not xs: return "–"
    m = st.median(xs)
    return f"{f(m)} ({f(min(xs))}–{f(max(xs))})" if len(xs) > 1 else f(m)
n0 = lambda x: f"{x:,.0f}"
us = lambda x: f"{x:,.0f} µs"
g3 = lambda x: f"{x:.2f}"
def ok(good): return "**yes**" if good else "**no**"
print(f"\n## summary (median of rounds, range in brackets; load average {before} → {after})\n")
print("| figure | direct | haproxy (tcp, 1 thread) | faultline | faultline / haproxy | target | met |")
print("|---|---|---|---|---|---|---|")
def line(label, test, metric, f, ratio=True, target="", met=""):
    cells = [fmt(vals(test, p, metric), f) for p in ("direct", "haproxy", "faultline")]
    rat = "–"
    if ratio and vals(test, "haproxy", metric) and vals(test, "faultline", metric):
        per = [a / b for a, b in zip(vals(test, "faultline", metric), vals(test, "haproxy", metric))]
        rat = fmt(per, lambda x: f"{x:.2f}×")
    print(f"| {label} | {' | '.join(cells)} | {rat} | {target} | {met} |")
    return rat
rps_ratio = st.median(a / b for a, b in zip(vals("c50", "faultline", "rps"), vals("c50", "haproxy", "rps")))
line(f"HTTP req/s, wrk -t1 -c50 -d{dur}s", "c50", "rps", n0, target="≥ 1.0× haproxy", met=ok(rps_ratio >= 1.0))
line("  mean latency", "c50", "mean_us", us)
line("  p50 latency", "c50", "p50_us", us)
line("  p99 latency", "c50", "p99_us", us)
for t, p in [("c50", "haproxy"), ("c50", "faultline")]:
    r[(t, p, "cpu_us_per_req")] = [a + b for a, b in zip(vals(t, p, "cpu_user_us_per_req"), vals(t, p, "cpu_sys_us_per_req"))]
line("  proxy CPU per request (user + sys)", "c50", "cpu_us_per_req", lambda x: f"{x:.1f} µs")
line("  of which user", "c50", "cpu_user_us_per_req", lambda x: f"{x:.1f} µs")
line(f"p50 latency, wrk -t1 -c1 -d{low}s", "c1", "p50_us", us)
added = {p: [a - b for a, b in zip(vals("c1", p, "p50_us"), vals("c1", "direct", "p50_us"))] for p in ("haproxy", "faultline")}
fl_added = st.median(added["faultline"])
print(f"| added p50 over direct, -c1 | – | {fmt(added['haproxy'], us)} | {fmt(added['faultline'], us)} | – | ≤ 50 µs | {ok(fl_added <= 50)} |")
for m, label in (("up_gb_s", "client→server"), ("down_gb_s", "server→client (-R)")):
    line(f"iperf3, 1 stream {label}, GB/s", "iperf", m, g3, target="≥ 1 GB/s", met=ok(med("iperf", "faultline", m) >= 1.0))
base = med("c1", "toxic-none", "p50_us")
p50_off = (med("c1", "toxic-latency", "p50_us") - base) / 1000 - lat_ms
p99_off = (med("c1", "toxic-latency", "p99_us") - base) / 1000 - lat_ms
n_lat = med("c1", "toxic-latency", "requests")
print(f"| latency toxic {lat_ms:.0f} ms: p50 offset | – | – | {p50_off:+.2f} ms | – | ±1 ms | {ok(abs(p50_off) <= 1)} |")
print(f"| latency toxic {lat_ms:.0f} ms: p99 offset | – | – | {p99_off:+.2f} ms | – | ±3 ms | {ok(abs(p99_off) <= 3)} |")
b, s = med("toxic", "bandwidth", "bytes"), med("toxic", "bandwidth", "secs")
frac = b / s / (rate_kbps * 1000)
print(f"| bandwidth toxic {rate_kbps:,.0f} KB/s: achieved / configured | – | – | {frac:.3f} ({b / 1e6:.0f} MB in {s:.2f} s) | – | 0.95–1.05 | {ok(abs(frac - 1) <= 0.05)} |")
print(f"\nLatency offsets: measured − {lat_ms:.0f} ms − p50 of the same faultline path without the toxic ({base:.0f} µs); {n_lat:.0f} requests, wrk -t1 -c1.")
PY
