#!/usr/bin/env bash
# Device call H (session 16, run 26): the warp-specialised attention in a module of its own (the
# first call compiles its 4 kernels, not all 27 of the attention module): the time of the first
# call (an empty kernel cache), the long test on it and on the earlier Hopper kernel (the other
# module), the attention properties, causal S4096 against the peers.
set -u
source .gpu/prelude.sh
rm -rf "$MOEKIT_CUDA_CACHE" "$CUDA_CACHE_PATH"
t0=$(date +%s.%N)
timeout 100 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape tiny --iters 1 --warmup 0 --samples 1 > $R/first.txt 2>&1
echo "first attention call (empty caches) rc=$? $(echo "$(date +%s.%N) - $t0" | bc) s" | tee -a $R/correct.log
timeout 90 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long-ws.log 2>&1; echo "long ws rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/long-ws.log | head -3 | tee -a $R/correct.log
MOEKIT_CUDA_ATTN=sm90 timeout 90 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long-sm90.log 2>&1; echo "long sm90 rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/long-sm90.log | head -3 | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=12 timeout 40 .gpu/bin/test-suite attention --test-threads 4 > $R/suite.log 2>&1; echo "suite rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/suite.log | head -3 | tee -a $R/correct.log
el end
