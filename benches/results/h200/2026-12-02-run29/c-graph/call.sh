#!/usr/bin/env bash
# Device call C (session 21, run 29): the CUDA graph suite, which ran past its limit in call B
# compiling the MoE layer's kernels into a cold cache (this call starts from call B's cache).
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED" "$1" | head -${2:-12} | tee -a $R/correct.log; }
timeout 450 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "cuda_graph rc=$?" | tee -a $R/correct.log; ok $R/graph.log 8
el end
