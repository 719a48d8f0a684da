#!/usr/bin/env bash
# Device call 3 (session 7): correctness. The warp-specialised GEMM (MOEKIT_CUDA_GEMM=wgmma-ws)
# through the CUDA suite's GEMM properties and the device tests, under memcheck and racecheck;
# the cubecl fixes (out-of-memory page check, zeroed scratch) through the faults tests and
# initcheck/memcheck over the cubecl-CUDA suite.
set -u
(cd .gpu && tar xJf bins.tar.xz)
export MOEKIT_NO_SKIP=1
cache=$PWD/.gpu/cache; mkdir -p $cache
export MOEKIT_CUDA_CACHE=$cache/moekit-cuda CUDA_CACHE_PATH=$cache/nv CUDA_CACHE_MAXSIZE=4294967296
printf '[compilation]\ncache = { file = "%s" }\n' "$cache/cubecl" > cubecl.toml
cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
sumlog() { # RAW OUTNAME
  { grep -E "^test |test result|panicked|FAILED|failures|ERROR SUMMARY|RACECHECK SUMMARY|^=========     at|Uninitialized|Invalid" "$1" | grep -v " ok$" | head -120; echo "ok lines: $(grep -c ' ok$' "$1")"; tail -25 "$1"; } >> "$OUT/$2"
}
s=$(date +%s)
echo "== ws suite" | tee -a $OUT/ws.log
MOEKIT_CUDA_GEMM=wgmma-ws MOEKIT_PROPTEST_CASES=96 timeout 120 .gpu/bin/test-suite grouped_gemm moe_layer nonfinite_ops invalid --test-threads 4 > /tmp/ws-suite.log 2>&1; echo "rc=$? secs=$(( $(date +%s) - s ))" >> /tmp/ws-suite.log
sumlog /tmp/ws-suite.log ws.log; tail -3 /tmp/ws-suite.log
s=$(date +%s)
echo "== ws device tests" | tee -a $OUT/ws.log
MOEKIT_CUDA_GEMM=wgmma-ws timeout 60 .gpu/bin/test-cuda_backend --test-threads 2 > /tmp/ws-dev.log 2>&1; echo "rc=$? secs=$(( $(date +%s) - s ))" >> /tmp/ws-dev.log
sumlog /tmp/ws-dev.log ws.log; tail -3 /tmp/ws-dev.log
for tool in memcheck racecheck; do
  s=$(date +%s)
  echo "== ws $tool" | tee -a $OUT/ws.log
  MOEKIT_CUDA_GEMM=wgmma-ws MOEKIT_PROPTEST_CASES=4 timeout 45 $cs --tool $tool --error-exitcode 9 .gpu/bin/test-suite grouped_gemm::bf16 moe_layer::bf16 --test-threads 1 > /tmp/ws-$tool.log 2>&1; echo "rc=$? secs=$(( $(date +%s) - s ))" >> /tmp/ws-$tool.log
  sumlog /tmp/ws-$tool.log ws.log; tail -2 /tmp/ws-$tool.log
done
s=$(date +%s)
echo "== cubecl faults + sanitizers" | tee -a $OUT/ws.log
BUDGET=${FAULT_BUDGET:-200} FAULT_TIMEOUT=100 SANITIZE_SUITES=test-suite_cuda SANITIZE_TOOLS="initcheck memcheck" bash scripts/gpu-faults.sh faults sanitize 2>&1 | tail -30
