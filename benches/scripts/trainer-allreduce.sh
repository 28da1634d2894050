#!/usr/bin/env bash
# Ring all-reduce algbw/busbw for 64 MiB at N = 2 and 4 against single-stream loopback TCP.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
echo "# trainer all-reduce — $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench -q -p benches --bench allreduce --manifest-path "$ROOT/Cargo.toml" 2>/dev/null \
  | grep -E 'allreduce_figures|time:|thrpt:'
