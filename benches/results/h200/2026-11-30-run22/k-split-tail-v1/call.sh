#!/usr/bin/env bash
# Device call K (session 12): split tail tiles (GWS_SPLIT_TAIL, the default; MOEKIT_CUDA_GEMM_TAIL=full
# for the whole-tile path) of the persistent GEMM kernels. Correctness under it (grouped_gemm + moe_layer
# properties, the large-shape GEMM test, the autotune check mode, memcheck, racecheck); then the
# deepseek layer and the qwen3 / ernie GEMM and layer rows with split and full tails against the peers of
# this command; ncu kernel times of the deepseek layer under split.
set -u
source .gpu/prelude.sh
# The GEMM module changed: compile it once (NVRTC, then the driver's JIT) before the parallel runs.
timeout 280 .gpu/bin/test-cuda_backend grouped_gemm --test-threads 1 > $R/large-split.log 2>&1; echo "large split rc=$?" >> $R/large-split.log
el after large
( MOEKIT_PROPTEST_CASES=24 timeout 150 .gpu/bin/test-suite grouped_gemm moe_layer --test-threads 4 > $R/suite-split.log 2>&1; echo "suite split rc=$?" >> $R/suite-split.log ) &
( MOEKIT_CUDA_AUTOTUNE=check timeout 100 .gpu/bin/test-autotune --test-threads 1 > $R/autotune-split.log 2>&1; echo "autotune split rc=$?" >> $R/autotune-split.log ) &
wait
grep -hE "test result|panicked|FAILED|SKIPPED|rc=" $R/suite-split.log $R/large-split.log $R/autotune-split.log | tee -a $R/correct.log
el after tests
MOEKIT_PROPTEST_CASES=3 timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-suite grouped_gemm --test-threads 1 > $R/memcheck-split.log 2>&1; echo "memcheck split rc=$?" | tee -a $R/correct.log
grep -hE "ERROR SUMMARY|test result" $R/memcheck-split.log | tee -a $R/correct.log
el after sanitizers
timeout 80 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b,deepseek-v3 ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 12 --peers $R/peers.jsonl"
for v in split full; do
  case $v in full) TL=full;; *) TL=;; esac
  MOEKIT_CUDA_GEMM_TAIL=$TL timeout 100 $B --shape deepseek-v3 --op moe_layer --json $R/deepseek-$v.json > $R/deepseek-$v.txt 2>&1
  echo "deepseek $v rc=$?" | tee -a $R/correct.log; grep -E "^moe_layer" $R/deepseek-$v.txt | tee -a $R/correct.log
done
el after deepseek
for v in split full; do
  case $v in full) TL=full;; *) TL=;; esac
  MOEKIT_CUDA_GEMM_TAIL=$TL timeout 80 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op grouped_gemm_up,grouped_gemm_down,moe_layer --json $R/bench-$v.json > $R/bench-$v.txt 2>&1
  echo "bench $v rc=$?" | tee -a $R/correct.log; grep -E "^grouped|^moe_layer" $R/bench-$v.txt | tee -a $R/correct.log
done
el after bench
[ $(( $(date +%s) - t0 )) -lt 500 ] && MOEKIT_PROPTEST_CASES=1 timeout 50 compute-sanitizer --tool racecheck --error-exitcode 9 .gpu/bin/test-suite grouped_gemm --test-threads 1 > $R/racecheck-split.log 2>&1; echo "racecheck split rc=$?" | tee -a $R/correct.log
grep -hE "RACECHECK SUMMARY|ERROR SUMMARY|test result" $R/racecheck-split.log | tee -a $R/correct.log
[ $(( $(date +%s) - t0 )) -lt 520 ] && timeout 60 ncu --clock-control none -k regex:"grouped_gemm_wgmma_ws" --launch-count 2 \
  --metrics dram__bytes_read.sum,gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,smsp__cycles_active.avg.per_second \
  .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape deepseek-v3 --op moe_layer > $R/ncu-ds-split.txt 2> $R/ncu-ds-split.err
echo "ncu deepseek split rc=$?" | tee -a $R/correct.log
el end
