#!/usr/bin/env bash
# Closed-loop request rate of loadgen vs wrk against nginx `return 200` on loopback, same
# connections, threads and duration. loadgen records every latency in HdrHistograms.
# Usage: benches/scripts/loadgen-vs-wrk.sh   (env: CONNS=50 DURATION=10 THREADS=2 ROUNDS=3)
source "$(dirname "$0")/loadgen-common.sh"
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
CONNS="${CONNS:-50}"; DURATION="${DURATION:-10}"; THREADS="${THREADS:-2}"; ROUNDS="${ROUNDS:-3}"
echo "machine: $(nproc) cores, $(uname -sr); nginx workers ${NGINX_WORKERS}; ${CONNS} connections, ${THREADS} threads, ${DURATION}s, ${ROUNDS} rounds"
for round in $(seq "$ROUNDS"); do
  wrk_rps=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" "$URL" | awk '/Requests\/sec/ {print $2}')
  ours=$("$LOAD" "$URL" --closed-loop -t "$THREADS" -c "$CONNS" --duration "${DURATION}s" --json)
  ours_rps=$(echo "$ours" | json_field 'd["measured"]["throughput_per_s"]')
  balanced=$(echo "$ours" | json_field 'd["balanced"]')
  p99=$(echo "$ours" | json_field 'd["measured"]["latency"]["p99_us"]')
  ratio=$(python3 -c "print(f'{$ours_rps/$wrk_rps:.3f}')")
  printf 'round %s: wrk %10.0f req/s   loadgen %10.0f req/s (p99 %s us, balanced %s)   ratio %s\n' \
    "$round" "$wrk_rps" "$ours_rps" "$p99" "$balanced" "$ratio"
done
