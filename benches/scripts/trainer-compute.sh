#!/usr/bin/env bash
# GEMM-heavy step compute against candle's matmul rate, same process, 1 and 2 threads.
source "$(dirname "${BASH_SOURCE[0]}")/trainer-common.sh"
header "trainer compute vs candle matmul"
for t in 1 2; do "$TRAINER" bench-compute --threads "$t" --width 1024 --batch 256 --steps 20; done
