#!/usr/bin/env bash
# Device call C (session 9): the thread routing path (route_t_*, new default for E <= 256).
# Correctness (suite route/MoE properties, fused-routing and graph tests, memcheck and racecheck
# on the route properties), then with the PyTorch peers of this command: route on the three
# public shapes (thread path, and the register path for comparison), the deepseek-v3 rows
# (GEMMs, layer) and the decode series T = 1..256 under a graph.
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
( MOEKIT_PROPTEST_CASES=64 timeout 100 .gpu/bin/test-suite route moe_layer --test-threads 4 > $R/suite.log 2>&1; echo "suite rc=$?" >> $R/suite.log ) &
( timeout 100 .gpu/bin/test-route_fused --test-threads 2 > $R/route_fused.log 2>&1; echo "route_fused rc=$?" >> $R/route_fused.log ) &
( timeout 100 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "graph rc=$?" >> $R/graph.log ) &
wait
grep -hE "test result|panicked|FAILED|rc=|cases checked" $R/suite.log $R/route_fused.log $R/graph.log | tee -a $R/correct.log
el after tests
MOEKIT_PROPTEST_CASES=4 timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-suite route > $R/memcheck-route.log 2>&1
echo "memcheck route rc=$?" | tee -a $R/correct.log; grep -E "ERROR SUMMARY|test result" $R/memcheck-route.log | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=4 timeout 60 compute-sanitizer --tool racecheck --error-exitcode 9 .gpu/bin/test-suite route > $R/racecheck-route.log 2>&1
echo "racecheck route rc=$?" | tee -a $R/correct.log; grep -E "RACECHECK SUMMARY|ERROR SUMMARY|test result" $R/racecheck-route.log | tee -a $R/correct.log
el after sanitizers
timeout 60 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b,deepseek-v3 ceilings > $R/peers.jsonl 2> $R/peers.err
echo "peers rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 16 --peers $R/peers.jsonl"
for v in thread reg; do
  env MOEKIT_CUDA_ROUTE=$v timeout 50 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --shape deepseek-v3 --op route \
    --json $R/route-$v.json > $R/route-$v.txt 2>&1; echo "route $v rc=$?" | tee -a $R/correct.log
  grep -E "^route" $R/route-$v.txt | tee -a $R/correct.log
done
el after route bench
timeout 200 $B --shape deepseek-v3 --op grouped_gemm_up,grouped_gemm_down,moe_layer --json $R/deepseek.json > $R/deepseek.txt 2>&1
echo "deepseek rc=$?" | tee -a $R/correct.log; grep -E "grouped|moe_layer" $R/deepseek.txt | tee -a $R/correct.log
el after deepseek
timeout 60 python3 benches/peers/torch_decode.py 1 8 32 128 256 > $R/peers-decode.jsonl 2> $R/peers-decode.err
echo "peers decode rc=$?" | tee -a $R/correct.log
ds() { echo "--shape custom:T=$1,H=7168,E=256,k=8,I=2048"; }
timeout 200 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer --graph $(ds 1) $(ds 8) $(ds 32) $(ds 128) $(ds 256) \
  --iters 20 --samples 4 --peers $R/peers-decode.jsonl --json $R/decode-graph.json > $R/decode-graph.txt 2>&1
echo "decode graph rc=$?" | tee -a $R/correct.log; grep moe_layer $R/decode-graph.txt | tee -a $R/correct.log
el end
