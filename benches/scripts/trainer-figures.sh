#!/usr/bin/env bash
# Every trainer figure of issue 3 §6, one after the other. Run on a quiet machine.
set -euo pipefail
DIR="$(dirname "${BASH_SOURCE[0]}")"
for s in allreduce compute scaling checkpoint recovery; do "$DIR/trainer-$s.sh"; done
