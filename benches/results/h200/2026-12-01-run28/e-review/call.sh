#!/usr/bin/env bash
# Device call E (session 18, run 28): after the review refactor (one softmax-tile helper for the
# mma.sync attention and both decode kernels; one occupancy cache helper): the decode test on v1
# and v2, the mma v1 kernel's long test, the properties.
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test |test result|panicked|FAILED" "$1" | head -${2:-4} | tee -a $R/correct.log; }
for v in v2 v1; do MOEKIT_CUDA_DECODE=$v timeout 40 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/dec.log 2>&1; echo "decode $v rc=$?" | tee -a $R/correct.log; ok $R/dec.log 2; done
MOEKIT_CUDA_ATTN=v1 timeout 80 .gpu/bin/test-cuda_backend attention_matches --test-threads 1 > $R/long.log 2>&1; echo "long v1 rc=$?" | tee -a $R/correct.log; ok $R/long.log 2
MOEKIT_PROPTEST_CASES=32 timeout 60 .gpu/bin/test-suite --test-threads 4 attention route > $R/suite.log 2>&1; echo "suite rc=$?" | tee -a $R/correct.log; grep -hE "test result|panicked" $R/suite.log | tee -a $R/correct.log
el end
