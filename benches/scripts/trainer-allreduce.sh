#!/usr/bin/env bash
# Ring all-reduce algbw/busbw for 64 MiB at N = 2 and 4 against single-stream loopback TCP.
source "$(dirname "${BASH_SOURCE[0]}")/trainer-common.sh"
cargo bench -q -p benches --bench allreduce --manifest-path "$ROOT/Cargo.toml" --no-run 2>/dev/null
header "trainer all-reduce"
cargo bench -q -p benches --bench allreduce --manifest-path "$ROOT/Cargo.toml" 2>/dev/null \
  | grep -E "allreduce_figures|link_figures|time:|thrpt:"
