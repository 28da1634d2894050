#!/usr/bin/env bash
# How often `faultline compare` raises a false alarm (A/A: one build against itself) and
# how often it catches a 10 % slowdown (the server's --fault-slowdown 0.1 fault hook: every
# decode step takes 1.1 x its compute), with interleaved runs made by compare itself.
# Usage: benches/scripts/compare-power.sh
#   env: SCENARIO=benches/scenarios/compare-llm-engine.toml RUNS=4 (per side) ROUNDS=3 SLOWDOWN=0.1
#        FIGURE="steady itl p50_ms" (the figure the slowdown must move)
#        AA=0 skips the A/A comparisons (half the time)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SCENARIO="${SCENARIO:-benches/scenarios/compare-llm-engine.toml}"
RUNS="${RUNS:-4}"; ROUNDS="${ROUNDS:-3}"; SLOWDOWN="${SLOWDOWN:-0.1}"
FIGURE="${FIGURE:-steady itl p50_ms}"
cargo build -q --release --workspace
BIN=target/release/faultline
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
echo "machine: $(nproc) cores, $(uname -sr); load average $(cut -d' ' -f1-3 /proc/loadavg); $SCENARIO, $RUNS runs per side interleaved, $ROUNDS rounds, slowdown $SLOWDOWN"
AA="${AA:-1}"
for r in $(seq "$ROUNDS"); do
  if [ "$AA" = 1 ]; then
    "$BIN" compare --run "$SCENARIO" --runs "$RUNS" --quiet --json --seed "$r" --reports "$OUT/reports" >"$OUT/aa-$r.json" || true
  fi
  "$BIN" compare --run "$SCENARIO" --runs "$RUNS" --quiet --json --seed "$r" --reports "$OUT/reports" \
    --candidate-arg "server=--fault-slowdown=$SLOWDOWN" >"$OUT/ab-$r.json" || true
  echo "round $r done; load average $(cut -d' ' -f1-3 /proc/loadavg)"
done
python3 - "$OUT" "$ROUNDS" "$FIGURE" "$AA" <<'PY'
import json, sys
out, rounds, figure, aa = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
def load(kind, r):
    return json.load(open(f"{out}/{kind}-{r}.json"))
def verdict(f):
    v = f["verdict"]
    return v["verdict"] if isinstance(v, dict) else v
judged = alarms = 0
for r in range(1, rounds + 1 if aa else 1):
    for f in load("aa", r)["figures"]:
        v = verdict(f)
        if v != "not-comparable":
            judged += 1
            alarms += v in ("worse", "better")
if aa: print(f"A/A: {alarms} false alarms (worse or better) in {judged} judged figures over {rounds} comparisons = {alarms / max(judged, 1):.1%}")
caught = 0
for r in range(1, rounds + 1):
    figs = {f["name"]: f for f in load("ab", r)["figures"]}
    f = figs.get(figure)
    v = verdict(f) if f else "missing"
    change = f.get("change") if f else None
    caught += v == "worse"
    worse = [n for n, g in figs.items() if verdict(g) == "worse"]
    print(f"slowdown round {r}: {figure!r} {v} (change {change}); worse figures: {worse}")
print(f"slowdown caught in {caught} of {rounds} comparisons on {figure!r}")
PY
