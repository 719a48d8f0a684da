#!/usr/bin/env bash
# Device call C (session 14, run 24): the final build. Call B's routing lane counts in shared
# memory kept for EPL >= 4 only (route_r1/r2 back to their registers: PTX identical to call A's),
# its zeroing kernel dropped (memsets again). Correctness: the register-group test, the fused
# routing test, the property suite (permute, route), memcheck and racecheck on it, the graph tests.
# Then route and permute on qwen3 / ernie / deepseek (default, old = fixed grid + scatter + tokcs
# copy, default again), ncu kernel times, and the MoE layer on the three shapes, all against the
# peers of this command.
set -u
source .gpu/prelude.sh
( timeout 200 .gpu/bin/test-route_groups --test-threads 1 > $R/route-groups.log 2>&1; echo "route_groups rc=$?" >> $R/route-groups.log ) &
( timeout 200 .gpu/bin/test-route_fused --test-threads 1 > $R/route-fused.log 2>&1; echo "route_fused rc=$?" >> $R/route-fused.log ) &
( MOEKIT_PROPTEST_CASES=16 timeout 200 .gpu/bin/test-suite permute route --test-threads 4 > $R/suite.log 2>&1; echo "suite rc=$?" >> $R/suite.log ) &
( timeout 200 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "graph rc=$?" >> $R/graph.log ) &
wait
grep -hE "test result|panicked|FAILED|SKIPPED|rc=|cases checked" $R/route-groups.log $R/route-fused.log $R/suite.log $R/graph.log | tee -a $R/correct.log
el after tests
MOEKIT_PROPTEST_CASES=3 timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-suite permute route --test-threads 1 > $R/memcheck.log 2>&1; echo "memcheck rc=$?" | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=3 timeout 100 compute-sanitizer --tool racecheck --error-exitcode 9 .gpu/bin/test-suite permute route --test-threads 1 > $R/racecheck.log 2>&1; echo "racecheck rc=$?" | tee -a $R/correct.log
grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/memcheck.log $R/racecheck.log | tee -a $R/correct.log
el after sanitizers
timeout 80 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b,deepseek-v3 ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 16 --peers $R/peers.jsonl --shape qwen3-30b-a3b --shape ernie45-21b-a3b --shape deepseek-v3"
for v in new old new2; do
  case $v in new*) G=wave; C=rank;; *) G=fixed; C=tokcs;; esac
  MOEKIT_CUDA_ROUTE_GRID=$G MOEKIT_CUDA_PERMUTE_COPY=$C timeout 70 $B --op route,permute --json $R/bench-$v.json > $R/bench-$v.txt 2>&1
  echo "bench $v (route grid $G, permute copy $C) rc=$?" | tee -a $R/correct.log; grep -E "^route|^permute" $R/bench-$v.txt | tee -a $R/correct.log
done
el after bench
for s in qwen3-30b-a3b ernie45-21b-a3b deepseek-v3; do
  timeout 40 ncu --clock-control none -k regex:"route_|permute_" --launch-count 12 --metrics gpu__time_duration.sum \
    .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape $s --op route,permute > $R/ncu-$s.txt 2> $R/ncu-$s.err
  echo "ncu $s rc=$?" | tee -a $R/correct.log
  grep -E "^  [a-z_0-9]+ \(|gpu__time_duration" $R/ncu-$s.txt | paste - - | awk '{print $1, $(NF)}' | tee -a $R/correct.log
done
el after ncu times
timeout 170 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 10 --samples 8 --peers $R/peers.jsonl --shape qwen3-30b-a3b --shape ernie45-21b-a3b --shape deepseek-v3 \
  --op moe_layer --json $R/layer.json > $R/layer.txt 2>&1; echo "layer rc=$?" | tee -a $R/correct.log
grep -E "^moe_layer" $R/layer.txt | tee -a $R/correct.log
el end
