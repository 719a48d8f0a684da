#!/usr/bin/env bash
# Device call J (session 17, run 27): the FlashMask plan kept on the device between calls with the
# same mask and lengths (the long test runs each shape in bf16 then f16: the second call reuses the
# plan). Correctness (long test, properties, memcheck on the long test), then the mask patterns at
# D 128 S 4096 and D 64 against causal and varlen, host-inclusive.
set -u
source .gpu/prelude.sh
timeout 120 .gpu/bin/test-cuda_backend attention_matches --test-threads 1 > $R/long.log 2>&1; echo "long rc=$?" | tee -a $R/correct.log
grep -hE "^test |test result|panicked|FAILED" $R/long.log | head -8 | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=24 timeout 100 .gpu/bin/test-suite attention --test-threads 4 > $R/suite-attn.log 2>&1; echo "suite attention rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/suite-attn.log | head -8 | tee -a $R/correct.log
el after tests
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
for base in 4,32,8,4096,128 4,16,16,4096,64; do
  for m in 1 ranges docs docs-varlen image; do
    timeout 60 $B --attn $base,$m --json $R/b-$base,$m.json >> $R/bench.txt 2>&1; echo "bench $base,$m rc=$?" | tee -a $R/correct.log
  done
done
grep -h "^attention" $R/bench.txt | tee -a $R/correct.log
el after bench
timeout 100 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-cuda_backend attention_matches --test-threads 1 > $R/san-memcheck.log 2>&1
echo "sanitizer memcheck rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-memcheck.log | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el end
