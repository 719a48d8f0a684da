#!/usr/bin/env bash
# Device call C (session 26, run 34): (1) the archives and the crate's unit tests (call B's
# `test-moekit_cuda flashmask` died with SIGSEGV before any output, after an xz error while
# unpacking); (2) the attention properties and racecheck with WS_FM_AHEAD=1; (3) interleaved,
# 3 rounds: WS_FM_AHEAD 0 / 1 on the masks and the plain causal shapes.
set -u
for f in .gpu/*.xz; do xz -t $f; echo "xz -t $f rc=$?"; done
source .gpu/prelude.sh
ok() { grep -hE "^test result|panicked|FAILED|SKIPPED|error\[" "$1" | head -${2:-12} | tee -a $R/correct.log; }
ls -la .gpu/bin > $R/bin-ls.txt
timeout 60 .gpu/bin/test-moekit_cuda --test-threads 1 > $R/unit.log 2>&1; echo "unit all rc=$?" | tee -a $R/correct.log; ok $R/unit.log 3
timeout 60 .gpu/bin/test-moekit_cuda flashmask > $R/unit-fm.log 2>&1; echo "unit flashmask rc=$?" | tee -a $R/correct.log; ok $R/unit-fm.log 3
A=WS_FM_AHEAD=1
MOEKIT_CUDA_DEFINES=$A timeout 100 .gpu/bin/test-suite cuda::attention --test-threads 4 > $R/suite-ahead.log 2>&1; echo "suite cuda::attention $A rc=$?" | tee -a $R/correct.log; ok $R/suite-ahead.log 8
el after suites
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for r in 1 2 3; do
  for a in 4,16,16,4096,64,image 4,16,16,4096,64,docs 4,16,16,4096,64,ranges 4,16,16,4096,64,1 4,32,8,4096,128,image 4,32,8,4096,128,docs 4,32,8,4096,128,ranges 4,32,8,4096,128,1; do
    run "$a def r$r" .gpu/bin/bin-moekit-bench $B --attn $a --json $R/ab-$a-def-r$r.json
    run "$a ahead r$r" MOEKIT_CUDA_DEFINES=$A .gpu/bin/bin-moekit-bench $B --attn $a --json $R/ab-$a-ahead-r$r.json
  done
  el after round $r
done
grep -hE "^== [0-9]|^attention" $R/bench.txt >> $R/correct.log
MOEKIT_CUDA_DEFINES=$A MOEKIT_PROPTEST_CASES=32 timeout 60 compute-sanitizer --tool racecheck --print-limit 5 .gpu/bin/test-suite cuda::attention::bf16 --exact --test-threads 1 > $R/san-race.log 2>&1; echo "racecheck attention bf16 $A rc=$?" | tee -a $R/correct.log; grep -hE "RACECHECK SUMMARY|test result" $R/san-race.log | tail -2 | tee -a $R/correct.log
el after sanitizers
(cd $R && tar czf json.tar.gz *.json && rm -f *.json)
el end
