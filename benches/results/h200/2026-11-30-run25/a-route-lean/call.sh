#!/usr/bin/env bash
# Device call A (session 15, run 25): the register routing kernel's leaner token loop (each lane's
# best two candidates, the owner's second moved up without a branch and a rescan only when a lane
# is picked a third time; the pick's score from the key when there is no bias; the counts as one
# warp atomic per token; a one-slice logit load), the occupancy cached per kernel, no shared group
# area when the group limit runs in registers. Correctness: the register-group test, the fused
# routing test, the property suite (route, permute), memcheck and racecheck, the graph tests. Then
# route on qwen3 / ernie / deepseek twice, the route probes (gate-only, no-gate), and ncu kernel
# times of the routing op's kernels (all kernels, so cuBLASLt's gate is in).
set -u
source .gpu/prelude.sh
( timeout 200 .gpu/bin/test-route_groups --test-threads 1 > $R/route-groups.log 2>&1; echo "route_groups rc=$?" >> $R/route-groups.log ) &
( timeout 200 .gpu/bin/test-route_fused --test-threads 1 > $R/route-fused.log 2>&1; echo "route_fused rc=$?" >> $R/route-fused.log ) &
( MOEKIT_PROPTEST_CASES=32 timeout 200 .gpu/bin/test-suite permute route --test-threads 4 > $R/suite.log 2>&1; echo "suite rc=$?" >> $R/suite.log ) &
( timeout 200 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "graph rc=$?" >> $R/graph.log ) &
wait
grep -hE "test result|panicked|FAILED|SKIPPED|rc=|cases checked" $R/route-groups.log $R/route-fused.log $R/suite.log $R/graph.log | tee -a $R/correct.log
el after tests
MOEKIT_PROPTEST_CASES=3 timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-suite route --test-threads 1 > $R/memcheck.log 2>&1; echo "memcheck rc=$?" | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=3 timeout 100 compute-sanitizer --tool racecheck --error-exitcode 9 .gpu/bin/test-suite route --test-threads 1 > $R/racecheck.log 2>&1; echo "racecheck rc=$?" | tee -a $R/correct.log
grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/memcheck.log $R/racecheck.log | tee -a $R/correct.log
el after sanitizers
timeout 80 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b,deepseek-v3 ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 16 --peers $R/peers.jsonl --shape qwen3-30b-a3b --shape ernie45-21b-a3b --shape deepseek-v3"
for v in new gate-only no-gate new2; do
  case $v in new*) P=;; *) P=$v;; esac
  MOEKIT_CUDA_ROUTE_PROBE=$P timeout 60 $B --op route --json $R/route-$v.json > $R/route-$v.txt 2>&1
  echo "route $v rc=$?" | tee -a $R/correct.log; grep -E "^route" $R/route-$v.txt | tee -a $R/correct.log
done
el after bench
for s in qwen3-30b-a3b ernie45-21b-a3b deepseek-v3; do
  timeout 40 ncu --clock-control none --launch-count 6 --metrics gpu__time_duration.sum \
    .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape $s --op route > $R/ncu-$s.txt 2> $R/ncu-$s.err
  echo "ncu $s rc=$?" | tee -a $R/correct.log
  grep -E "^  [A-Za-z_0-9]+.*\(|gpu__time_duration" $R/ncu-$s.txt | paste - - | awk '{print substr($1,1,60), $(NF)}' | tee -a $R/correct.log
done
el after ncu times
timeout 60 ncu --clock-control none -k regex:"route_r" --launch-count 1 --section SpeedOfLight --section WarpStateStats --section LaunchStats --section Occupancy --section SchedulerStats --section InstructionStats \
  .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape ernie45-21b-a3b --op route > $R/ncu-sections-ernie.txt 2> $R/ncu-sections-ernie.err
echo "ncu sections rc=$?" | tee -a $R/correct.log
grep -E "Executed Ipc|Issue Slots Busy|Executed Instructions |Duration|Registers Per|Achieved Occupancy|No Eligible" $R/ncu-sections-ernie.txt | tee -a $R/correct.log
el end
