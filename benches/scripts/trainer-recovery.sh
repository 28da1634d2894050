#!/usr/bin/env bash
# Recovery after a worker kill: 3 workers (policy: wait 2 s for a replacement, then continue
# with ≥ 2), SIGKILL rank 1 after step 300; splits from the events: kill → detection
# (coordinator), detection → ring re-formed, restore, first full step at world 2; lost steps.
source "$(dirname "${BASH_SOURCE[0]}")/trainer-common.sh"
REPLACE_S="${REPLACE_S:-2}"
header "trainer recovery after SIGKILL (replace timeout ${REPLACE_S} s)"
OUT="$TMP/r.jsonl"
"$TRAINER" launch --nproc 3 --min-workers 2 --replace-timeout-s "$REPLACE_S" -- \
  --run-dir "$TMP/r" --mlp-input 64 --mlp-hidden 256 --batch 64 --steps 1500 \
  --checkpoint-every 50 > "$OUT" 2>/dev/null &
LAUNCH=$!
for _ in $(seq 600); do
  grep -q '"event":"step".*"step":300,' "$OUT" 2>/dev/null && break
  sleep 0.05
done
PID=$(python3 -c 'import json,sys; print([e["pid"] for e in map(json.loads, open(sys.argv[1])) if e.get("event")=="start" and e["rank"]==1][0])' "$OUT")
KILL_T=$(python3 -c 'import time; print(time.time())')
kill -KILL "$PID"
wait "$LAUNCH"
python3 - "$OUT" "$KILL_T" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
kill_t = float(sys.argv[2])
det = next(e for e in ev if e.get("event") == "fault" and e.get("kind") == "worker_lost")
rdv = next(e for e in ev if e.get("event") == "rendezvous" and e.get("epoch") == 2 and "rank" in e)
rst = [e for e in ev if e.get("event") == "restore" and e.get("epoch") == 2]
rec = min((e for e in ev if e.get("event") == "recovered"), key=lambda e: e["t_unix_s"])
d = det["detected_unix_s"]
print(json.dumps({
  "kill_to_detect_s": d - kill_t,
  "detect_to_rendezvous_s": rdv["t_unix_s"] - d,
  "restore_s": max(e["restore_s"] for e in rst),
  "detect_to_first_full_step_s": rec["t_unix_s"] - d,
  "kill_to_first_full_step_s": rec["t_unix_s"] - kill_t,
  "lost_steps": max(e["lost_steps"] for e in rst),
  "restored_step": rst[0]["step"], "world_after": rec["world"],
}))
PY
