#!/usr/bin/env bash
# Device call D (session 27, run 35): the committed kernels (the banded three-consumer form
# `attention_sm90ws3s_*` chosen for causal or windowed problems at D 64; its PTX is call C's
# WS_SPLIT=8 build's, and `attention_sm90ws3_*` is f04a2cd's). The attention properties, then one
# bench each: causal D 64 (banded), with `whole-tiles`, non-causal and the image mask (not banded).
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test result|panicked|FAILED|SKIPPED|error\[" "$1" | head -${2:-12} | tee -a $R/correct.log; }
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
timeout 90 .gpu/bin/test-suite cuda::attention --test-threads 4 > $R/suite.log 2>&1; echo "suite cuda::attention rc=$?" | tee -a $R/correct.log; ok $R/suite.log 8
el after suite
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 30 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
run "4,16,16,4096,64,1 banded" .gpu/bin/bin-moekit-bench $B --attn 4,16,16,4096,64,1 --json $R/d-causal.json
run "4,16,16,4096,64,1 whole-tiles" MOEKIT_CUDA_ATTN_PROBE=whole-tiles .gpu/bin/bin-moekit-bench $B --attn 4,16,16,4096,64,1 --json $R/d-causal-whole.json
run "2,16,16,8192,64,0" .gpu/bin/bin-moekit-bench $B --attn 2,16,16,8192,64,0 --json $R/d-noncausal.json
run "4,16,16,4096,64,image" .gpu/bin/bin-moekit-bench $B --attn 4,16,16,4096,64,image --json $R/d-image.json
grep -hE "^== |^attention" $R/bench.txt | tee -a $R/correct.log
el after bench
MOEKIT_PROPTEST_CASES=16 timeout 30 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-suite cuda::attention::bf16 --exact --test-threads 1 > $R/san-mem.log 2>&1; echo "memcheck attention bf16 rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-mem.log | tail -2 | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz *.json && rm -f *.json)
el end
