#!/usr/bin/env bash
# Device call E (session 16, run 26): after the Hopper helpers moved to kernels/hopper.cuh (the
# grouped GEMM's warp-specialised and ping-pong kernels now use them) and the Hopper attention
# kernels share one epilogue: the CUDA backend's tests, the long attention test on the earlier
# Hopper kernel too, the suite's GEMM / MoE / attention properties, memcheck on the GEMM
# properties, then the qwen3 grouped GEMMs and attention against the peers of this command.
set -u
source .gpu/prelude.sh
timeout 240 .gpu/bin/test-cuda_backend --test-threads 1 > $R/cuda-backend.log 2>&1; echo "cuda_backend rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/cuda-backend.log | head -8 | tee -a $R/correct.log
el after cuda_backend
MOEKIT_CUDA_ATTN=sm90 timeout 60 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long-sm90.log 2>&1; echo "long sm90 rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/long-sm90.log | head -3 | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=16 timeout 120 .gpu/bin/test-suite grouped_gemm moe attention --test-threads 4 > $R/suite.log 2>&1; echo "suite rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/suite.log | head -8 | tee -a $R/correct.log
el after suite
MOEKIT_PROPTEST_CASES=2 timeout 60 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-suite grouped_gemm --test-threads 1 > $R/san-memcheck-gemm.log 2>&1
echo "sanitizer memcheck gemm rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-memcheck-gemm.log | tee -a $R/correct.log
el after sanitizer
timeout 60 python3 .gpu/torch_peers.py attention > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --shape qwen3-30b-a3b --iters 20 --samples 8 --peers $R/peers.jsonl"
timeout 90 $B --op grouped_gemm_up,grouped_gemm_down --json $R/gemm.json > $R/gemm.txt 2>&1; echo "gemm rc=$?" | tee -a $R/correct.log
grep -h "^grouped" $R/gemm.txt | tee -a $R/correct.log
for a in 4,32,8,4096,128,1 4,16,16,4096,64,1; do
  timeout 40 $B --op attention --attn $a --json $R/attn-${a//,/_}.json >> $R/attn.txt 2>&1; echo "attn $a rc=$?" | tee -a $R/correct.log
done
grep -h "^attention" $R/attn.txt | tee -a $R/correct.log
el end
