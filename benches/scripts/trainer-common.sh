# Shared by trainer-*.sh: builds the release trainer, makes a scratch directory removed on
# exit, and defines `stats` (a small Python reader of the trainer's JSON-line events).
# Source it; it defines ROOT, TRAINER, TMP.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cargo build --release -q -p trainer --manifest-path "$ROOT/Cargo.toml"
TRAINER="$ROOT/target/release/trainer"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# Waits (up to QUIET_WAIT_S, default 180) until the CPUs are ≥ 90 % idle for 2 s in a row, so
# other people's builds do not pollute the figures; says how idle it was either way.
wait_quiet() {
  python3 - "${QUIET_WAIT_S:-180}" <<'PY'
import sys, time
def idle():
    f = open("/proc/stat").readline().split()[1:]
    v = list(map(int, f)); return v[3] + v[4], sum(v)
deadline, ok, last = time.time() + float(sys.argv[1]), 0, 0.0
while time.time() < deadline and ok < 2:
    a = idle(); time.sleep(1); b = idle()
    last = (b[0] - a[0]) / max(1, b[1] - a[1])
    ok = ok + 1 if last >= 0.9 else 0
print(f"# cpu idle before run: {last:.0%}" + ("" if ok >= 2 else " (machine busy: figures are noisy)"))
PY
}
header() {
  wait_quiet
  echo "# $1 — $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$ROOT" rev-parse --short HEAD)," \
    "$(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
}
# stats FILE WARMUP: throughput (samples/s) and mean step parts of rank 0 over steady steps.
stats() {
  python3 - "$1" "$2" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
warm = int(sys.argv[2])
steps = [e for e in ev if e.get("event") == "step" and e["rank"] == 0 and e["step"] >= warm]
if len(steps) < 2:
    sys.exit("not enough steps")
span = steps[-1]["t_unix_s"] - steps[0]["t_unix_s"]
samples = sum(e["samples"] for e in steps[1:])
mean = lambda k: sum(e[k] for e in steps) / len(steps)
print(json.dumps({"steps": len(steps), "warmup_steps": warm, "world": steps[-1]["world"],
                  "throughput_samples_s": samples / span, "step_s": mean("step_s"),
                  "compute_s": mean("compute_s"), "comm_s": mean("comm_s"),
                  "wait_s": mean("wait_s"), "update_s": mean("update_s")}))
PY
}
