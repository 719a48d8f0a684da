#!/usr/bin/env bash
# Device call A (session 26, run 34): one binary, the kernel variants by MOEKIT_CUDA_DEFINES.
# (1) each variant's PTX compiled in parallel (warm-up); (2) the CUDA property suite on the
# default build, the attention properties with every new switch on, racecheck / memcheck on those;
# (3) interleaved A/B, 3 rounds: WS_RANGED_FAST on the masks (D 64 and 128, ws3 and ws2 at D 64),
# WS_EARLY_UNIT (1, 2) and WS_EARLY_TICKET on the plain and docs-varlen shapes.
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test result|panicked|FAILED|SKIPPED|error\[" "$1" | head -${2:-12} | tee -a $R/correct.log; }
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
ALL=WS_RANGED_FAST=1,WS_EARLY_UNIT=1,WS_EARLY_TICKET=1
declare -A V=([def]= [rf]=WS_RANGED_FAST=1 [eu1]=WS_EARLY_UNIT=1 [eu2]=WS_EARLY_UNIT=2 [et]=WS_EARLY_TICKET=1 [eu1et]=WS_EARLY_UNIT=1,WS_EARLY_TICKET=1 [all]=$ALL)
for k in "${!V[@]}"; do
  (MOEKIT_CUDA_DEFINES=${V[$k]} timeout 120 .gpu/bin/bin-moekit-bench $B --samples 1 --iters 1 --attn 1,16,16,1024,64,ranges > $R/warm-$k.log 2>&1; echo "warm $k rc=$?" >> $R/correct.log) &
done
wait
el after warm
timeout 150 .gpu/bin/test-suite cuda:: --test-threads 4 > $R/suite.log 2>&1; echo "suite cuda:: default rc=$?" | tee -a $R/correct.log; ok $R/suite.log 8
MOEKIT_CUDA_DEFINES=$ALL timeout 90 .gpu/bin/test-suite cuda::attention --test-threads 4 > $R/suite-all.log 2>&1; echo "suite cuda::attention $ALL rc=$?" | tee -a $R/correct.log; ok $R/suite-all.log 8
MOEKIT_CUDA_DEFINES=WS_EARLY_UNIT=2 timeout 90 .gpu/bin/test-suite cuda::attention --test-threads 4 > $R/suite-eu2.log 2>&1; echo "suite cuda::attention eu2 rc=$?" | tee -a $R/correct.log; ok $R/suite-eu2.log 8
timeout 30 .gpu/bin/test-moekit_cuda defines > $R/unit.log 2>&1; echo "unit defines rc=$?" | tee -a $R/correct.log; ok $R/unit.log 3
el after suites
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for r in 1 2 3; do
  for a in 4,16,16,4096,64,ranges 4,16,16,4096,64,image 4,16,16,4096,64,docs 4,32,8,4096,128,ranges 4,32,8,4096,128,image 4,32,8,4096,128,docs; do
    for k in def rf; do run "$a $k r$r" MOEKIT_CUDA_DEFINES=${V[$k]} .gpu/bin/bin-moekit-bench $B --attn $a --json $R/ab-$a-$k-r$r.json; done
  done
  for a in 4,16,16,4096,64,docs 4,16,16,4096,64,ranges; do
    for k in def rf; do run "$a $k ws2 r$r" MOEKIT_CUDA_ATTN=ws2 MOEKIT_CUDA_DEFINES=${V[$k]} .gpu/bin/bin-moekit-bench $B --attn $a --json $R/ab-$a-$k-ws2-r$r.json; done
  done
  for a in 4,16,16,4096,64,1 4,32,8,4096,128,1 2,16,16,8192,64,0 4,16,16,4096,64,docs-varlen 4,32,8,4096,128,docs-varlen; do
    for k in def eu1 eu2 et eu1et; do run "$a $k r$r" MOEKIT_CUDA_DEFINES=${V[$k]} .gpu/bin/bin-moekit-bench $B --attn $a --json $R/ab-$a-$k-r$r.json; done
  done
  el after round $r
done
grep -hE "^== |^attention" $R/bench.txt | paste - - > $R/ab.txt
for t in bf16 f16; do
MOEKIT_CUDA_DEFINES=$ALL MOEKIT_PROPTEST_CASES=32 timeout 60 compute-sanitizer --tool racecheck --print-limit 5 .gpu/bin/test-suite cuda::attention::$t --exact --test-threads 1 > $R/san-race-$t.log 2>&1; echo "racecheck attention $t all rc=$?" | tee -a $R/correct.log; grep -hE "RACECHECK SUMMARY|test result" $R/san-race-$t.log | tail -2 | tee -a $R/correct.log
done
MOEKIT_CUDA_DEFINES=$ALL MOEKIT_PROPTEST_CASES=32 timeout 50 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-suite cuda::attention::bf16 --exact --test-threads 1 > $R/san-mem.log 2>&1; echo "memcheck attention bf16 all rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-mem.log | tail -2 | tee -a $R/correct.log
el after sanitizers
(cd $R && tar czf json.tar.gz *.json && rm -f *.json)
el end
