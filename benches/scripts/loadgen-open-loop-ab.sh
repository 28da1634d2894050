#!/usr/bin/env bash
# Two builds of the load generator's open loop against the same nginx, alternating
# binaries so the machine's drift falls on both: send lag p90/p95/p99 and the mean at each
# rate (the p99 is at the mercy of the machine's stalls; p90 shows the generator's own).
# Usage: A_BIN=old/examples/load B_BIN=target/release/examples/load benches/scripts/loadgen-open-loop-ab.sh
#   env: RATES="60000 75000" REPS=3 CONNS=50 THREADS=1 DURATION=4 WARMUP=1
# Build an older commit's generator with: git worktree add /tmp/old REV &&
#   (cd /tmp/old && cargo build --release -p loadgen --example load)
source "$(dirname "$0")/loadgen-common.sh"
A_BIN="${A_BIN:?set A_BIN to the first build of examples/load}"
B_BIN="${B_BIN:-$LOAD}"
RATES="${RATES:-60000 75000}"; REPS="${REPS:-3}"; CONNS="${CONNS:-50}"; THREADS="${THREADS:-1}"
DURATION="${DURATION:-4}"; WARMUP="${WARMUP:-1}"
echo "machine: $(nproc) cores, $(uname -sr); ${CONNS} connections, ${THREADS} threads; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-3s %10s %10s %10s %10s %10s\n' bin offered/s lag_p90 lag_p95 lag_p99 lag_mean
for rate in $RATES; do
  for _ in $(seq "$REPS"); do
    for which in A B; do
      bin=$A_BIN; [ "$which" = B ] && bin=$B_BIN
      "$bin" "$URL" --rate "$rate" -c "$CONNS" -t "$THREADS" --warmup "${WARMUP}s" --duration "${DURATION}s" --timeout 2s --json \
        | json_field "' '.join(str(x) for x in ['$which', $rate, d['measured']['send_lag']['p90_us'], d['measured']['send_lag']['p95_us'], d['measured']['send_lag']['p99_us'], round(d['measured']['send_lag']['mean_us'])])" \
        | awk '{printf "%-3s %10s %8sus %8sus %8sus %8sus\n", $1, $2, $3, $4, $5, $6}'
    done
  done
done
echo "load average now $(cut -d' ' -f1-3 /proc/loadavg)"
