#!/usr/bin/env bash
# Device call B (session 16, run 26): the warp-specialised attention with the scale folded into
# the exponent and the three-consumer D = 64 kernel (sm90ws3): correctness on both, sanitizers,
# then the four peer shapes with each technique left out in turn (MOEKIT_CUDA_ATTN_PROBE), and
# ncu of the D 64 and D 128 causal kernels.
set -u
source .gpu/prelude.sh
timeout 100 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long-ws.log 2>&1; echo "long ws rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/long-ws.log | head -5 | tee -a $R/correct.log
MOEKIT_CUDA_ATTN=sm90ws3 timeout 100 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long-ws3.log 2>&1; echo "long ws3 rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/long-ws3.log | head -5 | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=24 timeout 100 .gpu/bin/test-suite attention --test-threads 4 > $R/suite-attn.log 2>&1; echo "suite attention rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/suite-attn.log | head -8 | tee -a $R/correct.log
MOEKIT_CUDA_ATTN=sm90ws3 MOEKIT_PROPTEST_CASES=24 timeout 100 .gpu/bin/test-suite attention --test-threads 4 > $R/suite-attn-ws3.log 2>&1; echo "suite attention ws3 rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/suite-attn-ws3.log | head -8 | tee -a $R/correct.log
el after tests
timeout 90 python3 .gpu/torch_peers.py attention > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --iters 20 --samples 16 --peers $R/peers.jsonl"
run() { # NAME ATTN [ENV...]
  local n=$1 a=$2; shift 2
  env "$@" timeout 40 $B --attn $a --json $R/b-$n-${a//,/_}.json >> $R/bench-$n.txt 2>&1; echo "bench $n $a rc=$?" >> $R/correct.log
}
for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1 2,32,8,8192,128,0; do
  run ws $a
  run nofold $a MOEKIT_CUDA_ATTN_PROBE=no-fold
  run nopp $a MOEKIT_CUDA_ATTN_PROBE=no-pingpong
  run eager $a MOEKIT_CUDA_ATTN_PROBE=eager-rescale
done
run ws3 4,16,16,4096,64,1 MOEKIT_CUDA_ATTN=sm90ws3
run ws3 4,32,8,4096,64,1 MOEKIT_CUDA_ATTN=sm90ws3
run ws 4,32,8,4096,64,1
for n in ws nofold nopp eager ws3; do echo "== $n"; grep -h "^attention" $R/bench-$n.txt; done | tee -a $R/correct.log
el after bench
timeout 70 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-cuda_backend attention_matches --test-threads 1 > $R/san-memcheck-long.log 2>&1
echo "sanitizer memcheck long rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-memcheck-long.log | tee -a $R/correct.log
for tool in racecheck synccheck; do
  MOEKIT_CUDA_ATTN=sm90ws3 MOEKIT_PROPTEST_CASES=2 timeout 40 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-suite attention --test-threads 1 > $R/san-$tool.log 2>&1
  echo "sanitizer $tool ws3 rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
el after sanitizers
for a in 4,32,8,4096,128,1 4,16,16,4096,64,1; do
  f=$R/ncu-${a//,/_}.txt
  timeout 70 ncu --clock-control none -k regex:attention --launch-skip 1 --launch-count 1 --section SpeedOfLight \
    --section ComputeWorkloadAnalysis --section WarpStateStats --section MemoryWorkloadAnalysis --metrics gpu__time_duration.sum \
    .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --attn $a --iters 1 --warmup 1 --samples 4 > $f 2>&1
  echo "ncu $a rc=$?" | tee -a $R/correct.log; grep -E "attention_|Duration|Throughput|Pipe|Issue|Stall|Warp Cycles|L2 Hit|Executed Ipc" $f | head -30 | tee -a $R/correct.log
done
el end
