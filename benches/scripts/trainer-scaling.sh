#!/usr/bin/env bash
# Weak-scaling efficiency E(N) = thr(N) / (N · thr(1)) for a compute-bound MLP
# (256 → 1024 → 1024 → 10, 512 samples per worker per step, 1 compute thread per worker,
# so N = 2 uses both cores of a 2-core machine), both runs in one invocation.
source "$(dirname "${BASH_SOURCE[0]}")/trainer-common.sh"
STEPS="${STEPS:-40}"; WARMUP="${WARMUP:-5}"
header "trainer scaling"
ARGS=(--mlp-input 256 --mlp-hidden 1024,1024 --batch 512 --steps "$STEPS" --checkpoint-every 0)
for n in 1 2; do
  "$TRAINER" launch --nproc "$n" --threads-per-worker 1 -- --run-dir "$TMP/s$n" "${ARGS[@]}" \
    > "$TMP/s$n.jsonl" 2>/dev/null
  echo "N=$n $(stats "$TMP/s$n.jsonl" "$WARMUP")"
done
# Hardware ceiling: the same step compute alone and as two concurrent processes (no
# communication): how much two cores of this machine deliver together for this GEMM load.
"$TRAINER" bench-compute --threads 1 --width 1024 --batch 512 --steps 30 > "$TMP/solo.json"
for i in 1 2; do
  "$TRAINER" bench-compute --threads 1 --width 1024 --batch 512 --steps 30 > "$TMP/pair$i.json" &
done
wait
python3 - "$TMP" "$WARMUP" <<'PY'
import json, sys
tmp, warm = sys.argv[1], int(sys.argv[2])
def thr(n):
    ev = [json.loads(l) for l in open(f"{tmp}/s{n}.jsonl") if l.startswith("{")]
    st = [e for e in ev if e.get("event") == "step" and e["rank"] == 0 and e["step"] >= warm]
    return sum(e["samples"] for e in st[1:]) / (st[-1]["t_unix_s"] - st[0]["t_unix_s"])
rate = lambda f: json.load(open(f"{tmp}/{f}.json"))["step_gflops"]
ceiling = (rate("pair1") + rate("pair2")) / (2 * rate("solo"))
e2 = thr(2) / (2 * thr(1))
print(json.dumps({"scaling_efficiency_N2": e2,
                  "hardware_ceiling_two_concurrent_steps": ceiling,
                  "efficiency_vs_ceiling": e2 / ceiling}))
PY
