#!/usr/bin/env bash
# Closed-loop request rate of loadgen vs wrk against nginx `return 200` on loopback, same
# connections, threads and duration, rounds interleaved. loadgen records every latency in
# HdrHistograms. Also prints each generator's CPU time per request (user+sys), which is
# less sensitive than req/s to other load on a shared machine.
# Usage: benches/scripts/loadgen-vs-wrk.sh   (env: CONNS=50 DURATION=10 THREADS=2 ROUNDS=3)
source "$(dirname "$0")/loadgen-common.sh"
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time not found: apt-get install -y time" >&2; exit 1; }
CONNS="${CONNS:-50}"; DURATION="${DURATION:-10}"; THREADS="${THREADS:-2}"; ROUNDS="${ROUNDS:-3}"
echo "machine: $(nproc) cores, $(uname -sr); nginx workers ${NGINX_WORKERS}; ${CONNS} connections, ${THREADS} threads, ${DURATION}s, ${ROUNDS} rounds; load average $(cut -d' ' -f1-3 /proc/loadavg)"
cpu_us_per_req() { python3 -c "u,s=open('$1').read().split(); print(f'{(float(u)+float(s))*1e6/$2:.2f}')"; }
for round in $(seq "$ROUNDS"); do
  wrk_out=$(/usr/bin/time -f "%U %S" -o "$TMP/wrk.time" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" "$URL")
  wrk_rps=$(echo "$wrk_out" | awk '/Requests\/sec/ {print $2}')
  wrk_n=$(echo "$wrk_out" | awk '/requests in/ {print $1}')
  ours=$(/usr/bin/time -f "%U %S" -o "$TMP/ours.time" "$LOAD" "$URL" --closed-loop -t "$THREADS" -c "$CONNS" --duration "${DURATION}s" --json)
  ours_rps=$(echo "$ours" | json_field 'd["measured"]["throughput_per_s"]')
  ours_n=$(echo "$ours" | json_field 'd["accounting"]["sent"]')
  balanced=$(echo "$ours" | json_field 'd["balanced"]')
  p99=$(echo "$ours" | json_field 'd["measured"]["latency"]["p99_us"]')
  ratio=$(python3 -c "print(f'{$ours_rps/$wrk_rps:.3f}')")
  printf 'round %s: wrk %8.0f req/s (%s cpu-us/req)   loadgen %8.0f req/s (%s cpu-us/req, p99 %s us, balanced %s)   ratio %s\n' \
    "$round" "$wrk_rps" "$(cpu_us_per_req "$TMP/wrk.time" "$wrk_n")" "$ours_rps" \
    "$(cpu_us_per_req "$TMP/ours.time" "$ours_n")" "$p99" "$balanced" "$ratio"
done
