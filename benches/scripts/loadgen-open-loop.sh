#!/usr/bin/env bash
# Highest open-loop rate at which loadgen holds its schedule against nginx `return 200` on
# loopback: achieved >= 0.98 x offered and send lag p99 < 100 us (measured phase).
# Usage: benches/scripts/loadgen-open-loop.sh   (env: CONNS=50 DURATION=5 WARMUP=1
#        RATES="1000 2000 5000 10000 20000 30000 40000 50000 60000")
source "$(dirname "$0")/loadgen-common.sh"
CONNS="${CONNS:-50}"; DURATION="${DURATION:-5}"; WARMUP="${WARMUP:-1}"
RATES="${RATES:-1000 2000 5000 10000 20000 30000 40000 50000 60000}"
LAG_MAX_US="${LAG_MAX_US:-100}"
echo "machine: $(nproc) cores, $(uname -sr); nginx workers ${NGINX_WORKERS}; ${CONNS} connections, warm-up ${WARMUP}s, ${DURATION}s per rate"
printf '%10s %12s %8s %14s %14s %12s  %s\n' offered/s achieved/s ratio send_lag_p50 send_lag_p99 latency_p99 verdict
best=none
for rate in $RATES; do
  out=$("$LOAD" "$URL" --rate "$rate" -c "$CONNS" --warmup "${WARMUP}s" --duration "${DURATION}s" --timeout 2s --json)
  read -r achieved lag50 lag99 p99 balanced < <(echo "$out" | json_field \
    '" ".join(str(x) for x in [round(d["measured"]["throughput_per_s"],1), d["measured"]["send_lag"]["p50_us"], d["measured"]["send_lag"]["p99_us"], d["measured"]["latency"]["p99_us"], d["balanced"]])')
  verdict=$(python3 -c "print('hold' if $achieved >= 0.98*$rate and $lag99 < $LAG_MAX_US and '$balanced'=='True' else 'miss')")
  ratio=$(python3 -c "print(f'{$achieved/$rate:.3f}')")
  printf '%10s %12s %8s %12sus %12sus %10sus  %s\n' "$rate" "$achieved" "$ratio" "$lag50" "$lag99" "$p99" "$verdict"
  [ "$verdict" = hold ] && best=$rate
done
echo "highest rate holding the schedule (achieved >= 0.98x, send lag p99 < ${LAG_MAX_US}us): ${best}/s"
