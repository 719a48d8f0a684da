#!/usr/bin/env bash
# Device call H (session 11): first GPU run of MOEKIT_CUDA_PERMUTE=coop (one cooperative launch
# for hist, scan and scatter) and of the routing totals kept on the device (no memsets; default).
# Correctness (whole suite and graph tests under coop, memcheck and racecheck on permute and
# route), then route and permute rows of qwen3 / ernie / deepseek, new vs old (coop + device
# totals against fast + memsets, twice) with the peers of this command; ncu kernel times of the
# coop permute, of route on the three shapes and of one deepseek-v3 layer call.
set -u
source .gpu/prelude.sh
export MOEKIT_CUDA_PERMUTE=coop
( MOEKIT_PROPTEST_CASES=12 timeout 240 .gpu/bin/test-suite --test-threads 6 > $R/suite-coop.log 2>&1; echo "suite coop rc=$?" >> $R/suite-coop.log ) &
( timeout 120 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph-coop.log 2>&1; echo "graph coop rc=$?" >> $R/graph-coop.log ) &
wait
grep -hE "test result|panicked|FAILED|rc=" $R/suite-coop.log $R/graph-coop.log | tee -a $R/correct.log
el after tests
MOEKIT_PROPTEST_CASES=3 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-suite permute route --test-threads 1 > $R/memcheck-coop.log 2>&1; echo "memcheck coop rc=$?" | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=3 timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 .gpu/bin/test-suite permute route --test-threads 1 > $R/racecheck-coop.log 2>&1; echo "racecheck coop rc=$?" | tee -a $R/correct.log
grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/memcheck-coop.log $R/racecheck-coop.log | tee -a $R/correct.log
el after sanitizers
unset MOEKIT_CUDA_PERMUTE
timeout 80 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b,deepseek-v3 ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 16 --peers $R/peers.jsonl --shape qwen3-30b-a3b --shape ernie45-21b-a3b --shape deepseek-v3"
for v in new old new2 old2; do
  case $v in new*) P=coop; T=device;; *) P=fast; T=memset;; esac
  MOEKIT_CUDA_PERMUTE=$P MOEKIT_CUDA_ROUTE_TOTALS=$T timeout 100 $B --op route,permute --json $R/bench-$v.json > $R/bench-$v.txt 2>&1
  echo "bench $v (permute $P, totals $T) rc=$?" | tee -a $R/correct.log; grep -E "^route|^permute" $R/bench-$v.txt | tee -a $R/correct.log
done
el after bench
# The epilogue's share of the TMA2 GEMMs (is a ping-pong schedule worth it?): no-epilogue probe.
G=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 8 --peers $R/peers.jsonl --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op grouped_gemm_up,grouped_gemm_down"
for pr in full no-epilogue full2 no-epilogue2; do
  MOEKIT_CUDA_GEMM_PROBE=${pr%2} timeout 60 $G --json $R/gemm-$pr.json > $R/gemm-$pr.txt 2>&1
  echo "gemm probe $pr rc=$?" | tee -a $R/correct.log; grep -E "^grouped" $R/gemm-$pr.txt | tee -a $R/correct.log
done
el after gemm probes
MOEKIT_CUDA_PERMUTE=coop timeout 60 ncu --clock-control none -k regex:"permute_" --launch-count 6 --metrics gpu__time_duration.sum \
  .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape qwen3-30b-a3b --op permute > $R/ncu-coop.txt 2> $R/ncu-coop.err
echo "ncu coop rc=$?" | tee -a $R/correct.log
for s in qwen3-30b-a3b ernie45-21b-a3b deepseek-v3; do
  timeout 60 ncu --clock-control none --launch-count 9 --metrics gpu__time_duration.sum \
    .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape $s --op route > $R/ncu-route-$s.txt 2> $R/ncu-route-$s.err
  echo "ncu route $s rc=$?" | tee -a $R/correct.log
done
el after ncu route
timeout 200 ncu --clock-control none --launch-count 13 --metrics gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,dram__throughput.avg.pct_of_peak_sustained_elapsed \
  .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape deepseek-v3 --op moe_layer > $R/ncu-layer-deepseek.txt 2> $R/ncu-layer-deepseek.err
echo "ncu layer deepseek rc=$?" | tee -a $R/correct.log
el end
