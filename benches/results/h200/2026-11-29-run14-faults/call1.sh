#!/usr/bin/env bash
# Device call 1 (session 7): the CUDA suite, the changed properties on cubecl-CUDA, the faults tests.
# Caches under .gpu/cache so that call 2 (sanitize) on the same warm machine finds them.
set -u
(cd .gpu && tar xJf bins.tar.xz)
export MOEKIT_NO_SKIP=1
cache=$PWD/.gpu/cache; mkdir -p $cache
export MOEKIT_CUDA_CACHE=$cache/moekit-cuda CUDA_CACHE_PATH=$cache/nv CUDA_CACHE_MAXSIZE=4294967296
printf '[compilation]\ncache = { file = "%s" }\n' "$cache/cubecl" > cubecl.toml
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $OUT/gpu.txt
s=$(date +%s)
MOEKIT_PROPTEST_CASES=${CUDA_CASES:-48} timeout 170 .gpu/bin/test-suite --test-threads 4 > /tmp/suite-cuda.log 2>&1; echo "rc=$? secs=$(( $(date +%s) - s ))" >> /tmp/suite-cuda.log
{ grep -E "^test |test result|panicked|FAILED|failures" /tmp/suite-cuda.log | grep -v " ok$" | tail -150; echo "ok lines: $(grep -c ' ok$' /tmp/suite-cuda.log)"; tail -40 /tmp/suite-cuda.log; } > $OUT/suite-cuda.log
s=$(date +%s)
MOEKIT_PROPTEST_CASES=${CUBE_CASES:-24} timeout 200 .gpu/bin/test-suite_cuda nonfinite invalid route grouped_gemm attention moe_layer --test-threads 4 > /tmp/suite-cubecl.log 2>&1; echo "rc=$? secs=$(( $(date +%s) - s ))" >> /tmp/suite-cubecl.log
{ grep -E "^test |test result|panicked|FAILED|failures" /tmp/suite-cubecl.log | grep -v " ok$" | tail -150; echo "ok lines: $(grep -c ' ok$' /tmp/suite-cubecl.log)"; tail -40 /tmp/suite-cubecl.log; } > $OUT/suite-cubecl.log
BUDGET=${FAULT_BUDGET:-200} FAULT_TIMEOUT=${FAULT_TIMEOUT:-100} bash scripts/gpu-faults.sh faults
