#!/usr/bin/env bash
# Device call A (session 13, run 23): the bench times runs as triton.testing.do_bench times the
# PyTorch peers (each run after a 256 MiB cache-clearing write, runs queued without a sync between
# them; `--synced` is the method of runs 1-22). No kernel changed since run 21 (292e5c1).
# Tests: cuda_backend (the new timing test, the large GEMM shapes) and the graph tests. Then the
# peers, and every MoE op on qwen3 / ernie / deepseek in the new (queued) timing, with the small
# ops and the layer also in the old (synced) timing, all against the peers of this command.
set -u
source .gpu/prelude.sh
( timeout 200 .gpu/bin/test-cuda_backend --test-threads 2 > $R/cuda-backend.log 2>&1; echo "cuda_backend rc=$?" >> $R/cuda-backend.log ) &
( timeout 200 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "graph rc=$?" >> $R/graph.log ) &
wait
grep -hE "test result|panicked|FAILED|SKIPPED|rc=" $R/cuda-backend.log $R/graph.log | tee -a $R/correct.log
el after tests
timeout 90 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b,deepseek-v3 ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 12 --peers $R/peers.jsonl"
timeout 120 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op route,permute,unpermute_combine,grouped_gemm_up,grouped_gemm_down,moe_layer \
  --json $R/bench.json > $R/bench.txt 2>&1; echo "bench queued rc=$?" | tee -a $R/correct.log
grep -E "^route|^permute|^unpermute|^grouped|^moe_layer" $R/bench.txt | tee -a $R/correct.log
el after bench queued
timeout 90 $B --synced --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op route,permute,unpermute_combine,moe_layer \
  --json $R/bench-synced.json > $R/bench-synced.txt 2>&1; echo "bench synced rc=$?" | tee -a $R/correct.log
grep -E "^route|^permute|^unpermute|^moe_layer" $R/bench-synced.txt | tee -a $R/correct.log
el after bench synced
timeout 150 $B --shape deepseek-v3 --op route,permute,unpermute_combine,moe_layer --json $R/deepseek.json > $R/deepseek.txt 2>&1
echo "deepseek queued rc=$?" | tee -a $R/correct.log; grep -E "^route|^permute|^unpermute|^moe_layer" $R/deepseek.txt | tee -a $R/correct.log
el end
