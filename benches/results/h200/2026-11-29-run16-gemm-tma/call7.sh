#!/usr/bin/env bash
# Device call 7 (session 7): the wide (m64n256k16) and TMA variants of the wgmma grouped GEMM.
# Correctness first (the suite's GEMM and MoE properties and the large-shape device test, each
# variant in its own process, concurrently), then the qwen3 up GEMM and MoE layer per variant.
set -u
(cd .gpu && tar xJf bins.tar.xz)
export MOEKIT_NO_SKIP=1
cache=$PWD/.gpu/cache; mkdir -p $cache
export MOEKIT_CUDA_CACHE=$cache/moekit-cuda CUDA_CACHE_PATH=$cache/nv CUDA_CACHE_MAXSIZE=4294967296
# name GEMM-env WIDE
variants="wide:wgmma:1 ws-wide:wgmma-ws:1 ws-tma:wgmma-ws-tma:0 ws-tma-wide:wgmma-ws-tma:1"
for v in $variants; do
  IFS=: read -r name gemm wide <<<"$v"
  ( MOEKIT_CUDA_GEMM=$gemm MOEKIT_CUDA_WGMMA_WIDE=$wide MOEKIT_PROPTEST_CASES=32 timeout 100 \
      .gpu/bin/test-suite grouped_gemm moe_layer --test-threads 3 > /tmp/suite-$name.log 2>&1; echo "rc=$?" >> /tmp/suite-$name.log
    MOEKIT_CUDA_GEMM=$gemm MOEKIT_CUDA_WGMMA_WIDE=$wide timeout 60 .gpu/bin/test-cuda_backend grouped_gemm \
      > /tmp/dev-$name.log 2>&1; echo "rc=$?" >> /tmp/dev-$name.log ) &
done
wait
for v in $variants; do
  name=${v%%:*}
  { echo "== $name"; grep -E "test result|panicked|FAILED|rc=" /tmp/suite-$name.log /tmp/dev-$name.log | head -20; } | tee -a $OUT/correct.log
done
for v in default:wgmma:0 $variants; do
  IFS=: read -r name gemm wide <<<"$v"
  echo "== bench $name"
  MOEKIT_CUDA_GEMM=$gemm MOEKIT_CUDA_WGMMA_WIDE=$wide timeout 60 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 \
    --shape qwen3-30b-a3b --op grouped_gemm_up,grouped_gemm_down --iters 20 --samples 32 \
    --json $OUT/bench-$name.json 2>&1 | tee $OUT/bench-$name.txt | grep -E "grouped|error|Error"
done
