#!/usr/bin/env bash
# Weak-scaling efficiency E(N) = thr(N) / (N · thr(1)) for a compute-bound MLP
# (256 → 1024 → 1024 → 10, 512 samples per worker per step, 1 compute thread per worker,
# workers pinned to their own core by `launch`, so N = 2 uses both cores of a 2-core
# machine). ROUNDS interleaved rounds (N=1, N=2, ceiling, …) and the median E, because other
# load on a shared machine moves single runs by more than the effect. The "ceiling" is the
# same step compute alone and as two concurrent processes without communication: how much
# two cores of this machine deliver together for this GEMM load at that moment.
source "$(dirname "${BASH_SOURCE[0]}")/trainer-common.sh"
STEPS="${STEPS:-40}"; WARMUP="${WARMUP:-5}"; ROUNDS="${ROUNDS:-3}"
header "trainer scaling"
ARGS=(--mlp-input 256 --mlp-hidden 1024,1024 --batch 512 --steps "$STEPS" --checkpoint-every 0)
BC=(bench-compute --threads 1 --width 1024 --batch 512 --steps 30)
for round in $(seq "$ROUNDS"); do
  for n in 1 2; do
    "$TRAINER" launch --nproc "$n" --threads-per-worker 1 -- --run-dir "$TMP/s$n-$round" \
      "${ARGS[@]}" > "$TMP/s$n-$round.jsonl" 2>/dev/null
    echo "round $round N=$n $(stats "$TMP/s$n-$round.jsonl" "$WARMUP")"
  done
  "$TRAINER" "${BC[@]}" > "$TMP/solo-$round.json"
  "$TRAINER" "${BC[@]}" > "$TMP/pair1-$round.json" &
  "$TRAINER" "${BC[@]}" > "$TMP/pair2-$round.json"
  wait
done
python3 - "$TMP" "$WARMUP" "$ROUNDS" <<'PY'
import json, statistics, sys
tmp, warm, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def thr(n, r):
    ev = [json.loads(l) for l in open(f"{tmp}/s{n}-{r}.jsonl") if l.startswith("{")]
    st = [e for e in ev if e.get("event") == "step" and e["rank"] == 0 and e["step"] >= warm]
    return sum(e["samples"] for e in st[1:]) / (st[-1]["t_unix_s"] - st[0]["t_unix_s"])
rate = lambda f: json.load(open(f"{tmp}/{f}.json"))["step_gflops"]
es, cs = [], []
for r in range(1, rounds + 1):
    es.append(thr(2, r) / (2 * thr(1, r)))
    cs.append((rate(f"pair1-{r}") + rate(f"pair2-{r}")) / (2 * rate(f"solo-{r}")))
print(json.dumps({"scaling_efficiency_N2_median": statistics.median(es), "each_round": es,
                  "hardware_ceiling_median": statistics.median(cs), "ceiling_each_round": cs}))
PY
