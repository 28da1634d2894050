#!/usr/bin/env bash
# Asynchronous checkpointing slowdown: mean step time with a checkpoint every 10 or 50 steps
# (weights + AdamW state of a 256 → 1024 → 1024 → 10 MLP, ≈ 16 MB per checkpoint, fsynced)
# against no checkpoints; two workers with one compute thread each, so the writer thread
# competes for the cores.
source "$(dirname "${BASH_SOURCE[0]}")/trainer-common.sh"
STEPS="${STEPS:-150}"; WARMUP="${WARMUP:-5}"
header "trainer async checkpoint overhead"
ARGS=(--mlp-input 256 --mlp-hidden 1024,1024 --batch 256 --steps "$STEPS" --keep 2)
for every in 0 10 50; do
  "$TRAINER" launch --nproc 2 --threads-per-worker 1 -- --run-dir "$TMP/c$every" \
    --checkpoint-every "$every" "${ARGS[@]}" > "$TMP/c$every.jsonl" 2>/dev/null
  echo "checkpoint_every=$every $(stats "$TMP/c$every.jsonl" "$WARMUP")"
  echo "checkpoints written: $(grep -c '"event":"checkpoint"' "$TMP/c$every.jsonl" || true)"
done
python3 - "$TMP" "$WARMUP" <<'PY'
import json, sys
tmp, warm = sys.argv[1], int(sys.argv[2])
def step_s(every):
    ev = [json.loads(l) for l in open(f"{tmp}/c{every}.jsonl") if l.startswith("{")]
    st = [e for e in ev if e.get("event") == "step" and e["rank"] == 0 and e["step"] >= warm]
    return (st[-1]["t_unix_s"] - st[0]["t_unix_s"]) / (len(st) - 1)
base = step_s(0)
for every in (10, 50):
    ck = step_s(every)
    cks = [json.loads(l) for l in open(f"{tmp}/c{every}.jsonl") if '"event":"checkpoint"' in l]
    print(json.dumps({"checkpoint_every": every, "step_s_none": base, "step_s_async": ck,
                      "slowdown": ck / base - 1, "checkpoint_bytes": cks[0]["bytes"],
                      "checkpoint_write_s_mean": sum(c["write_s"] for c in cks) / len(cks)}))
PY
