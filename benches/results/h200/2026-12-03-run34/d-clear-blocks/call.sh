#!/usr/bin/env bash
# Device call D (session 26, run 34): blocks the ranges leave whole and clear run without the tile
# stats (the table's first stat -1). (1) the CUDA property suite, the crate's unit tests, racecheck
# and memcheck on the attention properties; (2) interleaved, 3 rounds: this build against call B's
# (`bin-old`) on the masks and the plain problems they are measured against.
set -u
source .gpu/prelude.sh
(cd .gpu && tar xJf var.tar.xz)
ok() { grep -hE "^test result|panicked|FAILED|SKIPPED|error\[" "$1" | head -${2:-12} | tee -a $R/correct.log; }
timeout 100 .gpu/bin/test-suite cuda:: --test-threads 4 > $R/suite.log 2>&1; echo "suite cuda:: rc=$?" | tee -a $R/correct.log; ok $R/suite.log 8
timeout 30 .gpu/bin/test-moekit_cuda > $R/unit.log 2>&1; echo "unit rc=$?" | tee -a $R/correct.log; ok $R/unit.log 3
el after suite
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for r in 1 2 3; do
  for a in 4,16,16,4096,64,docs 4,16,16,4096,64,image 4,16,16,4096,64,ranges 4,16,16,4096,64,docs-varlen 4,16,16,4096,64,1 4,32,8,4096,128,docs 4,32,8,4096,128,image 4,32,8,4096,128,ranges 4,32,8,4096,128,docs-varlen 4,32,8,4096,128,1; do
    run "$a new r$r" .gpu/bin/bin-moekit-bench $B --attn $a --json $R/ab-$a-new-r$r.json
    run "$a old r$r" .gpu/bin-old $B --attn $a --json $R/ab-$a-old-r$r.json
  done
  el after round $r
done
grep -hE "^== [0-9]|^attention" $R/bench.txt >> $R/correct.log
MOEKIT_PROPTEST_CASES=32 timeout 45 compute-sanitizer --tool racecheck --print-limit 5 .gpu/bin/test-suite cuda::attention::bf16 --exact --test-threads 1 > $R/san-race.log 2>&1; echo "racecheck attention bf16 rc=$?" | tee -a $R/correct.log; grep -hE "RACECHECK SUMMARY|test result" $R/san-race.log | tail -2 | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=32 timeout 40 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-suite cuda::attention::bf16 --exact --test-threads 1 > $R/san-mem.log 2>&1; echo "memcheck attention bf16 rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-mem.log | tail -2 | tee -a $R/correct.log
el after sanitizers
(cd $R && tar czf json.tar.gz *.json && rm -f *.json)
el end
