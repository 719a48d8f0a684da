#!/usr/bin/env bash
# Device call B (session 9): the new defaults (storer-warp GEMM where there is no SwiGLU; routing
# through cuBLASLt + the redux routing kernel; the fused routing kernel opt-in). Correctness
# (suite GEMM/MoE/route properties, graph, autotune and fused-routing tests; racecheck on the
# storer-warp GEMM), then the qwen3 and ernie rows of the full run with the PyTorch peers in this
# command, the decode series T = 1..256 under a graph with its peers, and ncu sections of the
# routing kernels.
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
( MOEKIT_PROPTEST_CASES=12 timeout 200 .gpu/bin/test-suite grouped_gemm moe_layer route --test-threads 4 > $R/suite.log 2>&1; echo "suite rc=$?" >> $R/suite.log ) &
( timeout 120 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "graph rc=$?" >> $R/graph.log
  timeout 100 .gpu/bin/test-autotune --test-threads 1 > $R/autotune.log 2>&1; echo "autotune rc=$?" >> $R/autotune.log ) &
( timeout 150 .gpu/bin/test-route_fused --test-threads 2 > $R/route_fused.log 2>&1; echo "route_fused rc=$?" >> $R/route_fused.log ) &
wait
grep -hE "test result|panicked|FAILED|rc=|cases checked|autotune choice" $R/suite.log $R/graph.log $R/autotune.log $R/route_fused.log | tee -a $R/correct.log
el after tests
MOEKIT_PROPTEST_CASES=2 timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 .gpu/bin/test-suite grouped_gemm > $R/racecheck-epi.log 2>&1
echo "racecheck gemm (storer warps by default) rc=$?" | tee -a $R/correct.log; grep -E "RACECHECK SUMMARY|ERROR SUMMARY|test result" $R/racecheck-epi.log | tee -a $R/correct.log
el after racecheck
timeout 60 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b ceilings > $R/peers.jsonl 2> $R/peers.err
echo "peers rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 16 --peers $R/peers.jsonl"
timeout 130 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op route,permute,unpermute_combine,grouped_gemm_up,grouped_gemm_down,moe_layer \
  --json $R/bench.json > $R/bench.txt 2>&1; echo "bench rc=$?" | tee -a $R/correct.log
grep -vE "^\s*$" $R/bench.txt | tail -14
el after bench
timeout 100 python3 benches/peers/torch_decode.py 1 8 32 128 256 > $R/peers-decode.jsonl 2> $R/peers-decode.err
echo "peers decode rc=$?" | tee -a $R/correct.log
ds() { echo "--shape custom:T=$1,H=7168,E=256,k=8,I=2048"; }
timeout 120 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer --graph $(ds 1) $(ds 8) $(ds 32) $(ds 128) $(ds 256) \
  --iters 20 --samples 4 --peers $R/peers-decode.jsonl --json $R/decode-graph.json > $R/decode-graph.txt 2>&1
echo "decode graph rc=$?" | tee -a $R/correct.log; grep moe_layer $R/decode-graph.txt | tee -a $R/correct.log
el after decode
timeout 60 ncu --clock-control none -k regex:"route_r|route_fused" --launch-count 4 --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats \
  .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape qwen3-30b-a3b --op route > $R/ncu-route-sections.txt 2> $R/ncu-route-sections.err
echo "ncu route sections rc=$?" | tee -a $R/correct.log
MOEKIT_CUDA_ROUTE_GATE=fused timeout 60 ncu --clock-control none -k regex:"route_fused" --launch-count 2 --section SpeedOfLight --section WarpStateStats \
  .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape qwen3-30b-a3b --op route > $R/ncu-fused-sections.txt 2> $R/ncu-fused-sections.err
echo "ncu fused sections rc=$?" | tee -a $R/correct.log
el end
