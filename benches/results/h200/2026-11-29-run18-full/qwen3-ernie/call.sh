#!/usr/bin/env bash
# Device call 2 (session 8): TMA2 (A and B through TMA) grouped GEMM default. Correctness (the
# whole CUDA suite, device tests, graph + autotune tests, memcheck on the graph tests and the
# GEMM/MoE suite properties), then the qwen3 and ernie rows of the full run with the PyTorch
# peers in this same command, the permuted-layer variant, the wgmma-ws-tma-b kernel and skew.
set -u
(cd .gpu && tar xJf bins.tar.xz)
export MOEKIT_NO_SKIP=1
cache=$PWD/.gpu/cache; mkdir -p $cache
[ -f .gpu/cache.tar.xz ] && tar xJf .gpu/cache.tar.xz -C "$cache"
export MOEKIT_CUDA_CACHE=$cache/moekit-cuda CUDA_CACHE_PATH=$cache/nv CUDA_CACHE_MAXSIZE=4294967296
R=$OUT/r; mkdir -p $R
bundle() { (cd $OUT && tar czf run.tar.gz r); (cd $cache && tar cJf $OUT/cache.tar.xz .); }
trap bundle EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee $R/gpu.txt
t0=$(date +%s); el() { echo "t=$(( $(date +%s) - t0 ))s $*" | tee -a $R/correct.log; }
( MOEKIT_PROPTEST_CASES=8 timeout 240 .gpu/bin/test-suite --test-threads 4 > $R/suite.log 2>&1; echo "suite rc=$?" >> $R/suite.log ) &
( timeout 240 .gpu/bin/test-cuda_backend --test-threads 2 > $R/dev.log 2>&1; echo "dev rc=$?" >> $R/dev.log
  timeout 120 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "graph rc=$?" >> $R/graph.log
  timeout 120 .gpu/bin/test-autotune --test-threads 1 > $R/autotune.log 2>&1; echo "autotune rc=$?" >> $R/autotune.log
  MOEKIT_CUDA_MOE=permuted MOEKIT_PROPTEST_CASES=8 timeout 100 .gpu/bin/test-suite moe_layer > $R/suite-permuted.log 2>&1; echo "permuted rc=$?" >> $R/suite-permuted.log ) &
wait
grep -hE "test result|panicked|FAILED|rc=" $R/suite.log $R/dev.log $R/graph.log $R/autotune.log $R/suite-permuted.log | tee -a $R/correct.log
el after tests
timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-cuda_graph --test-threads 1 > $R/memcheck-graph.log 2>&1
echo "memcheck graph rc=$?" | tee -a $R/correct.log; grep -E "ERROR SUMMARY|test result" $R/memcheck-graph.log | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=3 timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-suite grouped_gemm moe_layer > $R/memcheck-suite.log 2>&1
echo "memcheck suite rc=$?" | tee -a $R/correct.log; grep -E "ERROR SUMMARY|test result" $R/memcheck-suite.log | tee -a $R/correct.log
el after memcheck
python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b ceilings > $R/peers.jsonl 2> $R/peers.err
echo "peers rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 16 --peers $R/peers.jsonl"
timeout 150 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op route,permute,unpermute_combine,grouped_gemm_up,grouped_gemm_down,moe_layer \
  --json $R/bench.json > $R/bench.txt 2>&1; echo "bench rc=$?" | tee -a $R/correct.log
el after bench
cat $R/bench.txt | grep -v "^\s*$"
for v in "MOEKIT_CUDA_MOE=permuted:moe_layer" "MOEKIT_CUDA_GEMM=wgmma-ws-tma-b:grouped_gemm_up,grouped_gemm_down,moe_layer"; do
  IFS=: read -r e ops <<<"$v"; n=${e#*=}
  env $e timeout 80 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op $ops --json $R/bench-$n.json > $R/bench-$n.txt 2>&1
  echo "$e rc=$?" | tee -a $R/correct.log; grep -E "grouped|moe_layer" $R/bench-$n.txt | tee -a $R/correct.log
done
for sk in 1.0 1.5; do
  timeout 60 $B --shape custom:T=16384,H=2048,E=128,k=8,I=768,skew=$sk --op grouped_gemm_up,grouped_gemm_down --json $R/skew-$sk.json > $R/skew-$sk.txt 2>&1
  echo "skew $sk rc=$?" | tee -a $R/correct.log; grep -E "grouped" $R/skew-$sk.txt | tee -a $R/correct.log
done
el end
