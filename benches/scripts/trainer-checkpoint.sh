#!/usr/bin/env bash
# Asynchronous checkpointing slowdown: mean step time with a checkpoint every 10 or 50 steps
# (weights + AdamW state of a 256 → 1024 → 1024 → 10 MLP, ≈ 16 MB per checkpoint, fsynced)
# against no checkpoints; two workers with one compute thread each, so the writer thread
# competes for the cores. ROUNDS interleaved rounds (none, 10, 50, none, 10, 50, …); the
# median slowdown over rounds is reported, because other load on a shared machine moves
# single runs by more than the effect; each round first waits for a quiet machine (wait_quiet)
# and says how idle it was. Checkpoint events that carry the writer's `cpu_s` and the training
# thread's `snapshot_s` add their means (ms per checkpoint) to the figures.
source "$(dirname "${BASH_SOURCE[0]}")/trainer-common.sh"
STEPS="${STEPS:-150}"; WARMUP="${WARMUP:-5}"; ROUNDS="${ROUNDS:-3}"
header "trainer async checkpoint overhead"
ARGS=(--mlp-input 256 --mlp-hidden 1024,1024 --batch 256 --steps "$STEPS" --keep 2)
for round in $(seq "$ROUNDS"); do
  [ "$round" = 1 ] || wait_quiet
  for every in 0 10 50; do
    "$TRAINER" launch --nproc 2 --threads-per-worker 1 -- --run-dir "$TMP/c$every-$round" \
      --checkpoint-every "$every" "${ARGS[@]}" > "$TMP/c$every-$round.jsonl" 2>/dev/null
  done
done
python3 - "$TMP" "$WARMUP" "$ROUNDS" <<'PY'
import json, statistics, sys
tmp, warm, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def load(every, r):
    return [json.loads(l) for l in open(f"{tmp}/c{every}-{r}.jsonl") if l.startswith("{")]
def step_s(ev):
    st = [e for e in ev if e.get("event") == "step" and e["rank"] == 0 and e["step"] >= warm]
    return (st[-1]["t_unix_s"] - st[0]["t_unix_s"]) / (len(st) - 1)
for every in (10, 50):
    slow, base_s, ck_s, write_s, parts = [], [], [], [], {"cpu_s": [], "snapshot_s": []}
    for r in range(1, rounds + 1):
        b, c = step_s(load(0, r)), step_s(load(every, r))
        slow.append(c / b - 1); base_s.append(b); ck_s.append(c)
        done = [e for e in load(every, r) if e.get("event") == "checkpoint" and "error" not in e]
        write_s += [e["write_s"] for e in done]
        for k, v in parts.items():
            v += [e[k] for e in done if k in e]
    figures = {"checkpoint_every": every, "rounds": rounds,
               "slowdown_median": statistics.median(slow), "slowdown_each": slow,
               "step_s_none_median": statistics.median(base_s),
               "step_s_async_median": statistics.median(ck_s),
               "checkpoint_write_s_mean": sum(write_s) / len(write_s)}
    for k, v in parts.items():
        if v:
            figures[f"checkpoint_{k[:-2]}_ms_mean"] = 1e3 * sum(v) / len(v)
    print(json.dumps(figures))
PY
