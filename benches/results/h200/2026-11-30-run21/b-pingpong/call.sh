#!/usr/bin/env bash
# Device call I (session 11): first GPU run of the ping-pong grouped GEMM (MOEKIT_CUDA_GEMM=
# wgmma-pp). Correctness under it (grouped_gemm + moe_layer properties, autotune check mode,
# which compares every candidate, graph tests, memcheck), then the GEMM and layer rows of qwen3 /
# ernie (default vs pp, twice) and the deepseek-v3 layer with the peers of this command, and ncu
# of the pp up GEMM (qwen3).
set -u
source .gpu/prelude.sh
export MOEKIT_CUDA_GEMM=wgmma-pp
( MOEKIT_PROPTEST_CASES=24 timeout 200 .gpu/bin/test-suite grouped_gemm moe_layer --test-threads 4 > $R/suite-pp.log 2>&1; echo "suite pp rc=$?" >> $R/suite-pp.log ) &
( MOEKIT_CUDA_GEMM= timeout 200 .gpu/bin/test-autotune --test-threads 1 > $R/autotune.log 2>&1; echo "autotune rc=$?" >> $R/autotune.log
  timeout 120 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph-pp.log 2>&1; echo "graph pp rc=$?" >> $R/graph-pp.log ) &
wait
grep -hE "test result|panicked|FAILED|rc=" $R/suite-pp.log $R/autotune.log $R/graph-pp.log | tee -a $R/correct.log
el after tests
MOEKIT_PROPTEST_CASES=3 timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-suite grouped_gemm --test-threads 1 > $R/memcheck-pp.log 2>&1; echo "memcheck pp rc=$?" | tee -a $R/correct.log
grep -hE "ERROR SUMMARY|test result" $R/memcheck-pp.log | tee -a $R/correct.log
el after memcheck
unset MOEKIT_CUDA_GEMM
timeout 80 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b,deepseek-v3 ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 12 --peers $R/peers.jsonl"
for v in pp default pp2 default2; do
  case $v in pp*) G=wgmma-pp;; *) G=;; esac
  MOEKIT_CUDA_GEMM=$G timeout 70 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op grouped_gemm_up,grouped_gemm_down,moe_layer --json $R/bench-$v.json > $R/bench-$v.txt 2>&1
  echo "bench $v rc=$?" | tee -a $R/correct.log; grep -E "^grouped|^moe_layer" $R/bench-$v.txt | tee -a $R/correct.log
done
el after bench
MOEKIT_CUDA_GEMM=wgmma-pp timeout 40 ncu --clock-control none -k regex:"grouped_gemm_wgmma_pp" --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats \
  .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape qwen3-30b-a3b --op grouped_gemm_up > $R/ncu-pp-up.txt 2> $R/ncu-pp-up.err
echo "ncu pp rc=$?" | tee -a $R/correct.log
el after ncu
# Where the deepseek up GEMM's DRAM bytes come from (default kernel, one call).
timeout 60 ncu --clock-control none -k regex:"grouped_gemm_wgmma_ws_tma_kn" --launch-count 1 \
  --metrics dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,lts__t_sectors_srcunit_tex_op_read.sum,gpu__time_duration.sum \
  .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape deepseek-v3 --op moe_layer > $R/ncu-ds-up.txt 2> $R/ncu-ds-up.err
echo "ncu deepseek up rc=$?" | tee -a $R/correct.log
el after ncu deepseek
for v in pp default; do
  case $v in pp*) G=wgmma-pp;; *) G=;; esac
  [ $(( $(date +%s) - t0 )) -lt 400 ] || { echo "skip deepseek $v (time)" | tee -a $R/correct.log; continue; }
  MOEKIT_CUDA_GEMM=$G timeout 100 $B --shape deepseek-v3 --op moe_layer --json $R/deepseek-$v.json > $R/deepseek-$v.txt 2>&1
  echo "deepseek $v rc=$?" | tee -a $R/correct.log; grep -E "^moe_layer" $R/deepseek-$v.txt | tee -a $R/correct.log
done
el end
