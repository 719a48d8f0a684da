#!/usr/bin/env bash
# Device call C (session 28, run 36): the commit. The causal-block kernels of their own
# (attention_sm90wsc_*, attention_sm90ws3sc_d64_*; the plain problems' kernels PTX-identical to
# 10dd566's): tests, the image mask against `nocb` (probe no-causal-blocks), 2 rounds, the
# FlashMask rows with their plain causal problems, racecheck / memcheck.
# (This call's build held all 16 warp-specialised kernels in one module; the commit moves the six
# causal-block ones to a module of their own, their PTX unchanged (compared per function). Here
# kernels_compile timed out at 60 s (every module for two archs); with the split it passed on the
# 2-core host with NVRTC in 154 s.)
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test result|panicked|FAILED|SKIPPED|error\[" "$1" | head -${2:-12} | tee -a $R/correct.log; }
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
timeout 60 .gpu/bin/test-kernels_compile > $R/compile.log 2>&1; echo "kernels_compile rc=$?" | tee -a $R/correct.log; ok $R/compile.log 3
timeout 170 .gpu/bin/test-cuda_backend attention --test-threads 2 > $R/long.log 2>&1; echo "cuda_backend attention rc=$?" | tee -a $R/correct.log; ok $R/long.log 6
timeout 60 .gpu/bin/test-suite cuda::attention --test-threads 4 > $R/suite.log 2>&1; echo "suite cuda::attention rc=$?" | tee -a $R/correct.log; ok $R/suite.log 4
timeout 30 .gpu/bin/test-moekit_cuda > $R/unit.log 2>&1; echo "unit rc=$?" | tee -a $R/correct.log; ok $R/unit.log 3
el after tests
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 50 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for r in 1 2; do
  for a in 4,16,16,4096,64,image 4,32,8,4096,128,image; do
    for n in new nocb; do
      pr=; [ $n = nocb ] && pr=no-causal-blocks
      run "$a $n r$r" MOEKIT_CUDA_ATTN_PROBE=$pr .gpu/bin/bin-moekit-bench $B --attn $a --json $R/ab-$a-$n-r$r.json
    done
  done
  el after round $r
done
for a in 4,16,16,4096,64,1 4,16,16,4096,64,ranges 4,16,16,4096,64,docs 4,16,16,4096,64,docs-varlen 4,16,16,4096,64,image 4,32,8,4096,128,1 4,32,8,4096,128,ranges 4,32,8,4096,128,docs 4,32,8,4096,128,docs-varlen 4,32,8,4096,128,image; do
  run "record $a" .gpu/bin/bin-moekit-bench $B --attn $a --json $R/rec-$a.json
done
grep -hE "^== |^attention" $R/bench.txt | paste - - | tr -s ' ' > $R/summary.txt; cat $R/summary.txt >> $R/correct.log
el after bench
MOEKIT_PROPTEST_CASES=32 timeout 60 compute-sanitizer --tool racecheck --print-limit 5 .gpu/bin/test-suite cuda::attention::bf16 --exact --test-threads 1 > $R/san-race.log 2>&1; echo "racecheck attention bf16 rc=$?" | tee -a $R/correct.log; grep -hE "RACECHECK SUMMARY|test result" $R/san-race.log | tail -2 | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=32 timeout 50 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-suite cuda::attention::bf16 --exact --test-threads 1 > $R/san-mem.log 2>&1; echo "memcheck attention bf16 rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-mem.log | tail -2 | tee -a $R/correct.log
el after sanitizers
(cd $R && tar czf json.tar.gz *.json && rm -f *.json)
el end
