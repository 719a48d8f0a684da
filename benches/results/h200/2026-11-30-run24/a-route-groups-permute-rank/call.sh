#!/usr/bin/env bash
# Device call A (session 14, run 24): the register routing kernel's group limit in registers
# (deepseek-v3's 8 groups of 32 experts: no shared memory, no serial loops) and its one-wave grid
# (MOEKIT_CUDA_ROUTE_GRID=fixed: the 1,024 blocks before); the permute op's scatter folded into
# the token-major copy (`permute_copy_rank_*`, MOEKIT_CUDA_PERMUTE_COPY=tokcs: scatter + copy as
# before). Correctness: the new register-group test, the fused routing test, the property suite
# (permute, route), memcheck and racecheck on it, the graph tests. Then route and permute on
# qwen3 / ernie / deepseek, new against old twice alternated, against the peers of this command;
# ncu kernel times of route and permute (new and old) and ncu sections of the routing kernels.
set -u
source .gpu/prelude.sh
( timeout 200 .gpu/bin/test-route_groups --test-threads 1 > $R/route-groups.log 2>&1; echo "route_groups rc=$?" >> $R/route-groups.log ) &
( timeout 200 .gpu/bin/test-route_fused --test-threads 1 > $R/route-fused.log 2>&1; echo "route_fused rc=$?" >> $R/route-fused.log ) &
( MOEKIT_PROPTEST_CASES=16 timeout 240 .gpu/bin/test-suite permute route --test-threads 4 > $R/suite.log 2>&1; echo "suite rc=$?" >> $R/suite.log ) &
( timeout 200 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "graph rc=$?" >> $R/graph.log ) &
wait
grep -hE "test result|panicked|FAILED|SKIPPED|rc=|cases checked" $R/route-groups.log $R/route-fused.log $R/suite.log $R/graph.log | tee -a $R/correct.log
el after tests
MOEKIT_PROPTEST_CASES=3 timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-suite permute route --test-threads 1 > $R/memcheck.log 2>&1; echo "memcheck rc=$?" | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=3 timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 .gpu/bin/test-suite permute route --test-threads 1 > $R/racecheck.log 2>&1; echo "racecheck rc=$?" | tee -a $R/correct.log
grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/memcheck.log $R/racecheck.log | tee -a $R/correct.log
el after sanitizers
timeout 80 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b,deepseek-v3 ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 16 --peers $R/peers.jsonl --shape qwen3-30b-a3b --shape ernie45-21b-a3b --shape deepseek-v3"
for v in new old new2 old2; do
  case $v in new*) G=wave; C=rank;; *) G=fixed; C=tokcs;; esac
  MOEKIT_CUDA_ROUTE_GRID=$G MOEKIT_CUDA_PERMUTE_COPY=$C timeout 80 $B --op route,permute --json $R/bench-$v.json > $R/bench-$v.txt 2>&1
  echo "bench $v (route grid $G, permute copy $C) rc=$?" | tee -a $R/correct.log; grep -E "^route|^permute" $R/bench-$v.txt | tee -a $R/correct.log
done
el after bench
for v in new old; do
  case $v in new*) G=wave; C=rank;; *) G=fixed; C=tokcs;; esac
  for s in qwen3-30b-a3b ernie45-21b-a3b deepseek-v3; do
    MOEKIT_CUDA_ROUTE_GRID=$G MOEKIT_CUDA_PERMUTE_COPY=$C timeout 40 ncu --clock-control none -k regex:"route_|permute_" --launch-count 12 --metrics gpu__time_duration.sum \
      .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape $s --op route,permute > $R/ncu-$v-$s.txt 2> $R/ncu-$v-$s.err
    echo "ncu $v $s rc=$?" | tee -a $R/correct.log
    grep -E "^  [a-z_0-9]+ \(|gpu__time_duration" $R/ncu-$v-$s.txt | paste - - | awk '{print $1, $(NF)}' | tee -a $R/correct.log
  done
done
el after ncu times
for s in ernie45-21b-a3b deepseek-v3; do
  timeout 60 ncu --clock-control none -k regex:"route_r" --launch-count 1 --section SpeedOfLight --section WarpStateStats --section LaunchStats --section Occupancy --section SchedulerStats --section InstructionStats \
    .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape $s --op route > $R/ncu-sections-$s.txt 2> $R/ncu-sections-$s.err
  echo "ncu sections $s rc=$?" | tee -a $R/correct.log
done
el end
