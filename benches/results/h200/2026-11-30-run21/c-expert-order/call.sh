#!/usr/bin/env bash
# Device call J (session 11): the expert-major tile order (MOEKIT_CUDA_GEMM_ORDER=expert) of the
# persistent GEMM kernels, for the deepseek-v3 up GEMM's DRAM traffic. Correctness under it
# (grouped_gemm + moe_layer properties, memcheck) and of the default path (the kernels changed);
# then the deepseek layer and the qwen3 / ernie GEMM and layer rows with and without it against
# the peers of this command; ncu DRAM bytes of the deepseek up GEMM under it.
set -u
source .gpu/prelude.sh
( MOEKIT_CUDA_GEMM_ORDER=expert MOEKIT_PROPTEST_CASES=24 timeout 150 .gpu/bin/test-suite grouped_gemm moe_layer --test-threads 4 > $R/suite-order.log 2>&1; echo "suite order rc=$?" >> $R/suite-order.log ) &
( MOEKIT_PROPTEST_CASES=12 timeout 150 .gpu/bin/test-suite grouped_gemm moe_layer permute route --test-threads 4 > $R/suite-default.log 2>&1; echo "suite default rc=$?" >> $R/suite-default.log ) &
wait
grep -hE "test result|panicked|FAILED|rc=" $R/suite-order.log $R/suite-default.log | tee -a $R/correct.log
MOEKIT_CUDA_GEMM_ORDER=expert MOEKIT_PROPTEST_CASES=3 timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-suite grouped_gemm --test-threads 1 > $R/memcheck-order.log 2>&1; echo "memcheck order rc=$?" | tee -a $R/correct.log
grep -hE "ERROR SUMMARY|test result" $R/memcheck-order.log | tee -a $R/correct.log
el after tests
timeout 80 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b,deepseek-v3 ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 12 --peers $R/peers.jsonl"
for v in expert default; do
  case $v in expert) O=expert;; *) O=;; esac
  MOEKIT_CUDA_GEMM_ORDER=$O timeout 100 $B --shape deepseek-v3 --op moe_layer --json $R/deepseek-$v.json > $R/deepseek-$v.txt 2>&1
  echo "deepseek $v rc=$?" | tee -a $R/correct.log; grep -E "^moe_layer" $R/deepseek-$v.txt | tee -a $R/correct.log
done
el after deepseek
for v in expert default; do
  case $v in expert) O=expert;; *) O=;; esac
  MOEKIT_CUDA_GEMM_ORDER=$O timeout 90 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op route,permute,unpermute_combine,grouped_gemm_up,grouped_gemm_down,moe_layer --json $R/bench-$v.json > $R/bench-$v.txt 2>&1
  echo "bench $v rc=$?" | tee -a $R/correct.log; grep -E "^route|^permute|^unpermute|^grouped|^moe_layer" $R/bench-$v.txt | tee -a $R/correct.log
done
el after bench
[ $(( $(date +%s) - t0 )) -lt 420 ] && MOEKIT_CUDA_GEMM_ORDER=expert timeout 60 ncu --clock-control none -k regex:"grouped_gemm_wgmma_ws" --launch-count 2 \
  --metrics dram__bytes_read.sum,lts__t_sector_hit_rate.pct,gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed \
  .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape deepseek-v3 --op moe_layer > $R/ncu-ds-order.txt 2> $R/ncu-ds-order.err
echo "ncu deepseek order rc=$?" | tee -a $R/correct.log
el end
