#!/usr/bin/env bash
# Device call C (session 10): the final defaults of this session: streaming-store permute copy
# (tokcs), the combine with a separate sliced kernel for few tokens (the one-block kernel back
# to its 32 registers), uninitialised layer intermediates, the function cache, the
# shared-memory scatter. Correctness (whole CUDA suite, graph tests, memcheck on permute and
# combine), then qwen3 / ernie / deepseek-v3 rows with the PyTorch peers of this command and
# the deepseek decode series T = 1, 128 under a graph with its peers.
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
( MOEKIT_PROPTEST_CASES=8 timeout 240 .gpu/bin/test-suite --test-threads 6 > $R/suite.log 2>&1; echo "suite rc=$?" >> $R/suite.log ) &
( timeout 120 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "graph rc=$?" >> $R/graph.log ) &
wait
grep -hE "test result|panicked|FAILED|rc=" $R/suite.log $R/graph.log | tee -a $R/correct.log
el after tests
MOEKIT_PROPTEST_CASES=3 timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-suite permute --test-threads 1 > $R/memcheck-permute.log 2>&1
echo "memcheck permute+combine rc=$?" | tee -a $R/correct.log; grep -E "ERROR SUMMARY|test result" $R/memcheck-permute.log | tee -a $R/correct.log
el after memcheck
timeout 60 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b,deepseek-v3 ceilings > $R/peers.jsonl 2> $R/peers.err
echo "peers rc=$?" | tee -a $R/correct.log
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 16 --peers $R/peers.jsonl"
timeout 130 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op route,permute,unpermute_combine,grouped_gemm_up,grouped_gemm_down,moe_layer \
  --json $R/bench.json > $R/bench.txt 2>&1; echo "bench rc=$?" | tee -a $R/correct.log
grep -vE "^\s*$" $R/bench.txt | tail -14
el after bench
timeout 150 $B --shape deepseek-v3 --op route,permute,unpermute_combine,moe_layer --json $R/deepseek.json > $R/deepseek.txt 2>&1
echo "deepseek rc=$?" | tee -a $R/correct.log; grep -E "route|permute|combine|moe_layer" $R/deepseek.txt | tee -a $R/correct.log
el after deepseek
timeout 70 python3 benches/peers/torch_decode.py 1 128 > $R/peers-decode.jsonl 2> $R/peers-decode.err
echo "peers decode rc=$?" | tee -a $R/correct.log
ds() { echo "--shape custom:T=$1,H=7168,E=256,k=8,I=2048"; }
timeout 130 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer --graph $(ds 1) $(ds 128) \
  --iters 20 --samples 4 --peers $R/peers-decode.jsonl --json $R/decode-graph.json > $R/decode-graph.txt 2>&1
echo "decode graph rc=$?" | tee -a $R/correct.log; grep moe_layer $R/decode-graph.txt | tee -a $R/correct.log
el end
