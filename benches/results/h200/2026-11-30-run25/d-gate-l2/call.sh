#!/usr/bin/env bash
# Device call D (session 15, run 25): is the gate GEMM slower in the route op because the timing's
# 256 MiB cache-clearing write leaves L2 dirty? ncu times of the gate kernel (cuBLASLt nvjet) of the
# first timed run (no warm-up, so it follows the clearing write) with ncu's own cache flush (all: a
# clean L2) and without it (none: L2 as the clearing write left it), for the three shapes.
set -u
source .gpu/prelude.sh
for s in qwen3-30b-a3b ernie45-21b-a3b deepseek-v3; do
  for c in all none; do
    timeout 60 ncu --clock-control none --cache-control $c -k regex:nvjet --launch-count 2 --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
      .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --warmup 0 --iters 1 --samples 1 --shape $s --op route > $R/ncu-gate-$c-$s.txt 2> $R/ncu-gate-$c-$s.err
    echo "ncu gate cache=$c $s rc=$?" | tee -a $R/correct.log
    grep -E "gpu__time_duration|dram__bytes" $R/ncu-gate-$c-$s.txt | awk '{print $1, $(NF-1), $NF}' | tee -a $R/correct.log
  done
done
el end
