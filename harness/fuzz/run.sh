#!/usr/bin/env bash
# Runs every cargo-fuzz target in harness/fuzz for a fixed time each and reports crashes.
#
#   harness/fuzz/run.sh [SECONDS] [TARGET ...]
#
# SECONDS (default 60) is the fuzzing time per target, after its build. TARGET defaults to
# all of them: scenario_parse, http1_response, trainer_control, rendezvous. Each target
# fuzzes in one process on one core, one target at a time, starting from its committed seeds
# (seeds/TARGET) and what earlier runs found (corpus/TARGET, git-ignored), with the
# libFuzzer dictionary dicts/TARGET.dict where there is one. A crash (panic,
# overflow, out of memory above 2 GiB, an input running over 20 s) is written to
# artifacts/TARGET/; replay one with
#
#   cargo +nightly fuzz run --fuzz-dir harness/fuzz -s none TARGET harness/fuzz/artifacts/TARGET/crash-…
#
# and turn it into a unit or integration test in the crate that owns the code before fixing
# it. FUZZ_SANITIZER=address (or leak, …) builds with a sanitizer; the default is none, as
# every target is safe Rust and a sanitizer halves the executions.
#
# Needs a nightly toolchain and cargo-fuzz (libFuzzer builds with nightly-only flags):
#   rustup toolchain install nightly && cargo install cargo-fuzz
# Not run in CI: fuzzing is open-ended, and CI has stable only.
#
# Exit status: 0 when no target crashed, 1 when one did, 2 when the tools are missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

seconds="${1:-60}"
if [[ $# -gt 0 ]]; then shift; fi
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: SECONDS must be a whole number of seconds above 0, not '$seconds'" >&2
    echo "usage: harness/fuzz/run.sh [SECONDS] [TARGET ...]" >&2
    exit 2
fi
all_targets=(scenario_parse http1_response trainer_control rendezvous)
if [[ $# -gt 0 ]]; then targets=("$@"); else targets=("${all_targets[@]}"); fi
for t in "${targets[@]}"; do
    if [[ ! -f "fuzz_targets/$t.rs" ]]; then
        echo "run.sh: no target '$t'; the targets are: ${all_targets[*]}" >&2
        exit 2
    fi
done

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "run.sh: cargo-fuzz needs a nightly toolchain and 'cargo +nightly' does not run here." >&2
    echo "        Install one with: rustup toolchain install nightly" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "run.sh: 'cargo fuzz' is not installed. Install it with: cargo install cargo-fuzz" >&2
    exit 2
fi

sanitizer="${FUZZ_SANITIZER:-none}"
logs="$here/target/run-logs"
mkdir -p "$logs"
crashed=()
summary=()
for t in "${targets[@]}"; do
    echo "== $t: building (sanitizer: $sanitizer)"
    cargo +nightly fuzz build --fuzz-dir "$here" -s "$sanitizer" "$t"
    mkdir -p "corpus/$t"
    echo "== $t: fuzzing for ${seconds} s (log: $logs/$t.log)"
    set +e
    # -close_fd_mask=1: the trainer's event lines on stdout stay out of the log.
    dict=()
    if [[ -f "dicts/$t.dict" ]]; then dict=(-dict="dicts/$t.dict"); fi
    cargo +nightly fuzz run --fuzz-dir "$here" -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 "${dict[@]}" \
        -close_fd_mask=1 -print_final_stats=1 2>&1 | tee "$logs/$t.log" | awk '
            after { print; after = 0 }
            /panicked at/ { print; after = 1; next }
            /^#[0-9]+[[:space:]]+(INITED|DONE|pulse)|ERROR|Test unit written|SUMMARY/ { print }'
    status="${PIPESTATUS[0]}"
    set -e
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' || true)"
    if [[ "$status" -eq 0 ]]; then
        summary+=("$t: ok, ${execs:-?} executions in ${seconds} s")
    else
        artifact="$(grep -o 'Test unit written to [^ ]*' "$logs/$t.log" | tail -1 | cut -d' ' -f5- || true)"
        summary+=("$t: CRASHED (exit $status) after ${execs:-?} executions: ${artifact:-see $logs/$t.log}")
        crashed+=("$t")
    fi
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
if [[ ${#crashed[@]} -gt 0 ]]; then
    echo "crashes in: ${crashed[*]} (inputs under harness/fuzz/artifacts/, logs under $logs/)"
    exit 1
fi
