#!/usr/bin/env bash
# Integrity of the fault proxy under random toxic schedules, at scale: the cargo test
# `random_toxic_schedules_never_corrupt_reorder_or_duplicate_bytes` (harness/proxy/tests/
# integrity.rs) with 1,000 schedules instead of 50. Each schedule echoes up to 300 kB of
# seeded random bytes through a proxy while up to 12 toxics are added, changed and
# removed at random moments, then resets; it fails unless every connection received a
# prefix of what it sent (whole, or cut short visibly) and no toxic or listener is left.
# Usage: benches/scripts/proxy-integrity.sh [SCHEDULES] [FIRST_SEED]
set -euo pipefail
cd "$(dirname "$0")/../.."
schedules=${1:-1000}
first=${2:-1}
echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
FAULTLINE_PROXY_SCHEDULES=$schedules FAULTLINE_TEST_SEED=$first \
    cargo test -p proxy --test integrity -- --nocapture 2>&1 |
    grep -E '^(seeds|[0-9]+ whole|test |error|thread)' 
