#!/usr/bin/env bash
# Highest open-loop rate at which loadgen holds its schedule against nginx `return 200` on
# loopback (achieved >= 0.98 x offered, send lag p99 < 100 us over the measured phase), as
# a ratio of wrk's closed-loop rate measured in the same run (same connections and
# threads): the peer's ceiling on this machine at this moment. Rates tried are fractions of
# that wrk rate. Prints send lag p50/p99/p99.9 for each rate.
# Usage: benches/scripts/loadgen-open-loop.sh
#   env: CONNS=50 THREADS=<half the cores, loadgen's open-loop default> DURATION=5 WARMUP=1 WRK_DURATION=10
#        MAX_CONNS=<unset: loadgen's pool stays at CONNS, as wrk's; N: it may grow to N when every
#        connection is busy (--max-connections); wrk keeps CONNS either way>
#        FRACTIONS="0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8" (or RATES="10000 20000" to give rates)
source "$(dirname "$0")/loadgen-common.sh"
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
CONNS="${CONNS:-50}"; THREADS="${THREADS:-$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))}"; DURATION="${DURATION:-5}"; WARMUP="${WARMUP:-1}"
WRK_DURATION="${WRK_DURATION:-10}"
FRACTIONS="${FRACTIONS:-0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8}"
LAG_MAX_US="${LAG_MAX_US:-100}"
MAX_CONNS="${MAX_CONNS:-}"
GROW=(); [ -n "$MAX_CONNS" ] && GROW=(--max-connections "$MAX_CONNS")
echo "machine: $(nproc) cores, $(uname -sr); nginx workers ${NGINX_WORKERS}; ${CONNS} connections${MAX_CONNS:+ (loadgen may grow to ${MAX_CONNS})}, ${THREADS} threads; load average $(cut -d' ' -f1-3 /proc/loadavg)"
wrk_rps=$(wrk -t"$THREADS" -c"$CONNS" -d"${WRK_DURATION}s" "$URL" | awk '/Requests\/sec/ {print $2}')
echo "wrk closed loop: ${wrk_rps} req/s (${WRK_DURATION}s)"
if [ -z "${RATES:-}" ]; then
  RATES=$(python3 -c "print(' '.join(str(int(float(f)*$wrk_rps)) for f in '$FRACTIONS'.split()))")
fi
printf '%10s %8s %12s %8s %12s %12s %14s %12s %6s  %s\n' offered/s x_wrk achieved/s ratio lag_p50 lag_p99 lag_p99.9 latency_p99 added verdict
best=none; best_ratio=0; best_lag999=-
for rate in $RATES; do
  out=$("$LOAD" "$URL" --rate "$rate" -c "$CONNS" -t "$THREADS" --warmup "${WARMUP}s" --duration "${DURATION}s" --timeout 2s "${GROW[@]}" --json)
  read -r achieved lag50 lag99 lag999 p99 balanced added < <(echo "$out" | json_field \
    '" ".join(str(x) for x in [round(d["measured"]["throughput_per_s"],1), d["measured"]["send_lag"]["p50_us"], d["measured"]["send_lag"]["p99_us"], d["measured"]["send_lag"]["p999_us"], d["measured"]["latency"]["p99_us"], d["balanced"], d["connections"]["added"]])')
  verdict=$(python3 -c "print('hold' if $achieved >= 0.98*$rate and $lag99 < $LAG_MAX_US and '$balanced'=='True' else 'miss')")
  ratio=$(python3 -c "print(f'{$achieved/$rate:.3f}')")
  x_wrk=$(python3 -c "print(f'{$rate/$wrk_rps:.2f}')")
  printf '%10s %8s %12s %8s %10sus %10sus %12sus %10sus %6s  %s\n' "$rate" "$x_wrk" "$achieved" "$ratio" "$lag50" "$lag99" "$lag999" "$p99" "$added" "$verdict"
  if [ "$verdict" = hold ]; then best=$rate; best_ratio=$x_wrk; best_lag999=$lag999; fi
done
echo "highest rate holding the schedule (achieved >= 0.98x, send lag p99 < ${LAG_MAX_US}us): ${best}/s = ${best_ratio} x wrk's closed loop (send lag p99.9 ${best_lag999}us); load average now $(cut -d' ' -f1-3 /proc/loadavg)"
