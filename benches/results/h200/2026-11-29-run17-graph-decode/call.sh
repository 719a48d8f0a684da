#!/usr/bin/env bash
# Device call 1 (session 8): CUDA graphs + decode. Correctness first (graph tests, the GEMM/MoE
# suite properties with the decode-skip kernel change, autotune test, memcheck over the graph
# tests), then the decode benchmark (deepseek-v3 experts, T = 1..256) under a graph and eagerly,
# with the PyTorch decode peers in the same call.
set -u
(cd .gpu && tar xJf bins.tar.xz)
export MOEKIT_NO_SKIP=1
cache=$PWD/.gpu/cache; mkdir -p $cache
[ -f .gpu/cache.tar.xz ] && tar xJf .gpu/cache.tar.xz -C "$cache"
export MOEKIT_CUDA_CACHE=$cache/moekit-cuda CUDA_CACHE_PATH=$cache/nv CUDA_CACHE_MAXSIZE=4294967296
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee $OUT/gpu.txt
t0=$(date +%s)
# Peers first in the background? No: one GPU; run them serially after the tests.
timeout 150 .gpu/bin/test-cuda_graph --test-threads 1 > $OUT/graph.log 2>&1; echo "graph rc=$?" | tee -a $OUT/correct.log
grep -E "^test |test result|panicked" $OUT/graph.log | tee -a $OUT/correct.log
( MOEKIT_PROPTEST_CASES=8 timeout 200 .gpu/bin/test-suite grouped_gemm moe_layer --test-threads 4 > $OUT/suite.log 2>&1; echo "suite rc=$?" >> $OUT/suite.log ) &
( timeout 200 .gpu/bin/test-cuda_backend --test-threads 2 > $OUT/dev.log 2>&1; echo "dev rc=$?" >> $OUT/dev.log ) &
wait
grep -E "test result|panicked|FAILED|rc=" $OUT/suite.log $OUT/dev.log | tee -a $OUT/correct.log
echo "t=$(( $(date +%s) - t0 ))s after tests" | tee -a $OUT/correct.log
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-cuda_graph --test-threads 1 > $OUT/memcheck.log 2>&1
echo "memcheck rc=$?" | tee -a $OUT/correct.log; grep -E "ERROR SUMMARY|test result" $OUT/memcheck.log | tee -a $OUT/correct.log
echo "t=$(( $(date +%s) - t0 ))s after memcheck" | tee -a $OUT/correct.log
timeout 150 python3 benches/peers/torch_decode.py 1 8 32 128 256 > $OUT/peers-decode.jsonl 2> $OUT/peers-decode.err
echo "peers rc=$?" | tee -a $OUT/correct.log
echo "t=$(( $(date +%s) - t0 ))s after peers" | tee -a $OUT/correct.log
ds() { echo "--shape custom:T=$1,H=7168,E=256,k=8,I=2048"; }
timeout 200 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer --graph $(ds 1) $(ds 8) $(ds 32) $(ds 128) $(ds 256) \
  --iters 20 --samples 4 --peers $OUT/peers-decode.jsonl --json $OUT/decode-graph.json > $OUT/decode-graph.txt 2>&1
echo "decode graph rc=$?" | tee -a $OUT/correct.log
echo "t=$(( $(date +%s) - t0 ))s after decode graph" | tee -a $OUT/correct.log
timeout 100 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer $(ds 1) $(ds 128) \
  --iters 20 --samples 4 --peers $OUT/peers-decode.jsonl --json $OUT/decode-eager.json > $OUT/decode-eager.txt 2>&1
echo "decode eager rc=$?" | tee -a $OUT/correct.log
echo "t=$(( $(date +%s) - t0 ))s end" | tee -a $OUT/correct.log
# Probes: what each stage of the TMA kernel costs (qwen3 and ernie up/down GEMMs).
for probe in none no-a no-epilogue no-mma; do
  MOEKIT_CUDA_GEMM_PROBE=$probe timeout 90 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 \
    --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op grouped_gemm_up,grouped_gemm_down --iters 20 --samples 16 \
    --json $OUT/probe-$probe.json > $OUT/probe-$probe.txt 2>&1
  echo "probe $probe rc=$?" | tee -a $OUT/correct.log
  grep -E "grouped" $OUT/probe-$probe.txt | tee -a $OUT/correct.log
done
echo "t=$(( $(date +%s) - t0 ))s after probes" | tee -a $OUT/correct.log
cat $OUT/decode-graph.txt $OUT/decode-eager.txt | grep -v "^\s*$" | tail -20
(cd $cache && tar cJf $OUT/cache.tar.xz .)
