#!/usr/bin/env bash
# Device call A (session 9): the fused gate+routing kernel (route_fused_r*, new) and the
# storer-warp GEMM (wgmma-ws-tma-epi, opt-in, first GPU run). Correctness first (route_fused
# test, the route/GEMM/MoE suite properties with and without the EPI kernel, memcheck on the
# fused routing), then the PyTorch peers and the benchmark in this same command: route on the
# three public shapes, fused (default) vs the cuBLASLt two-kernel path, GEMMs and the layer
# default vs EPI; ncu kernel times of both route paths.
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
EPI="MOEKIT_CUDA_GEMM=wgmma-ws-tma-epi"
( timeout 200 .gpu/bin/test-route_fused --test-threads 2 > $R/route_fused.log 2>&1; echo "route_fused rc=$?" >> $R/route_fused.log
  MOEKIT_PROPTEST_CASES=32 timeout 100 .gpu/bin/test-suite route > $R/suite-route.log 2>&1; echo "suite-route rc=$?" >> $R/suite-route.log ) &
( env $EPI MOEKIT_PROPTEST_CASES=12 timeout 220 .gpu/bin/test-suite grouped_gemm moe_layer --test-threads 4 > $R/suite-epi.log 2>&1; echo "suite-epi rc=$?" >> $R/suite-epi.log ) &
( timeout 150 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "graph rc=$?" >> $R/graph.log ) &
wait
grep -hE "test result|panicked|FAILED|rc=|cases checked" $R/route_fused.log $R/suite-route.log $R/suite-epi.log $R/graph.log | tee -a $R/correct.log
el after tests
timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-route_fused fused_routing_replays > $R/memcheck-route.log 2>&1
echo "memcheck route rc=$?" | tee -a $R/correct.log; grep -E "ERROR SUMMARY|test result" $R/memcheck-route.log | tee -a $R/correct.log
el after memcheck
timeout 150 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b,deepseek-v3 > $R/peers.jsonl 2> $R/peers.err
echo "peers rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 16 --peers $R/peers.jsonl"
for v in fused cublaslt; do
  env MOEKIT_CUDA_ROUTE_GATE=$v timeout 60 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --shape deepseek-v3 --op route \
    --json $R/route-$v.json > $R/route-$v.txt 2>&1; echo "route $v rc=$?" | tee -a $R/correct.log
  grep -E "^route" $R/route-$v.txt | tee -a $R/correct.log
done
el after route bench
for v in default wgmma-ws-tma-epi; do
  env MOEKIT_CUDA_GEMM=$v timeout 80 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op grouped_gemm_up,grouped_gemm_down,moe_layer \
    --json $R/gemm-$v.json > $R/gemm-$v.txt 2>&1; echo "gemm $v rc=$?" | tee -a $R/correct.log
  grep -E "grouped|moe_layer" $R/gemm-$v.txt | tee -a $R/correct.log
done
el after gemm bench
N="ncu --clock-control none --csv --metrics gpu__time_duration.sum"
for v in fused cublaslt; do
  env MOEKIT_CUDA_ROUTE_GATE=$v timeout 60 $N .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 2 --samples 1 --shape qwen3-30b-a3b --shape deepseek-v3 --op route > $R/ncu-route-$v.csv 2> $R/ncu-route-$v.err
  echo "ncu route $v rc=$?" | tee -a $R/correct.log
done
timeout 60 $N .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 2 --samples 1 --shape qwen3-30b-a3b --op permute,unpermute_combine > $R/ncu-permute.csv 2> $R/ncu-permute.err
echo "ncu permute rc=$?" | tee -a $R/correct.log
el end
