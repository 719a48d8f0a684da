#!/usr/bin/env bash
# Device call D (session 24, run 32): (1) the committed decode kernel's tests (the source of calls B
# and C less an #if'd-out variant and comments): the decode test, v2 / v3 against v1, memcheck on
# the decode test; (2) 192-key tiles at D 64 in the warp-specialised prefill kernel (WS_D64_BN=192
# with the host's SM90WS_D64_BN; bin-bn192, suite-bn192): the attention property suite on it (16
# cases), then against the committed 128-key kernel, interleaved, 2 rounds, causal D 64 and its
# masks.
set -u
source .gpu/prelude.sh
(cd .gpu && tar xJf var.tar.xz)
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED|error" "$1" | head -${2:-12} | tee -a $R/correct.log; }
timeout 50 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/dec.log 2>&1; echo "decode rc=$?" | tee -a $R/correct.log; ok $R/dec.log 3
timeout 30 .gpu/bin/test-moekit_cuda v2_gives --test-threads 1 > $R/v2v1.log 2>&1; echo "v2 s3, s2, v3 against v1 rc=$?" | tee -a $R/correct.log; ok $R/v2v1.log 3
timeout 40 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/san-memcheck.log 2>&1; echo "memcheck decode rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-memcheck.log | tee -a $R/correct.log
el after decode tests
MOEKIT_PROPTEST_CASES=16 timeout 70 .gpu/suite-bn192 cuda::attention --test-threads 4 > $R/suite-bn192.log 2>&1; echo "suite attention (bn192) rc=$?" | tee -a $R/correct.log; grep -hE "test result|panicked|FAILED" $R/suite-bn192.log | head -5 | tee -a $R/correct.log
el after suite
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
run() { local label=$1; shift; [ $(( $(date +%s) - t0 )) -lt 200 ] || { echo "skipped $label (time)" >> $R/correct.log; return; }; echo "== $label" >> $R/bench.txt; timeout 30 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for r in 1 2; do for a in 4,16,16,4096,64,1 2,16,16,8192,64,0 4,16,16,4096,64,image 4,16,16,4096,64,docs-varlen; do for w in bin/bin-moekit-bench bin-bn192; do
  run "$a ${w##*-} r$r" .gpu/$w $B --attn $a --json $R/b-$a-${w##*-}-r$r.json
done; done; done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el end
