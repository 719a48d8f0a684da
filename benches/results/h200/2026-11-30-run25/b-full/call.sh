#!/usr/bin/env bash
# Device call B (session 15, run 25): the full run of issue 7's targets in one command, all against
# the PyTorch peers of this command (torch_peers.py's MoE shapes, torch_decode.py): every MoE op on
# qwen3 / ernie / deepseek (route, permute, combine, the grouped GEMMs, the layer), the grouped
# GEMMs on Zipf-skewed loads against balanced, the decode layer (T = 1, 128) as graph replays, the
# graph tests; then ncu kernel times of one decode T = 1 layer (what limits it).
set -u
source .gpu/prelude.sh
timeout 120 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "graph rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/graph.log | tee -a $R/correct.log
el after tests
timeout 80 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b,deepseek-v3 ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
timeout 80 python3 benches/peers/torch_decode.py 1 128 > $R/peers-decode.jsonl 2> $R/peers-decode.err; echo "peers decode rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 12 --peers $R/peers.jsonl"
timeout 260 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --shape deepseek-v3 \
  --op route,permute,unpermute_combine,grouped_gemm_up,grouped_gemm_down,moe_layer --json $R/bench.json > $R/bench.txt 2>&1
echo "bench rc=$?" | tee -a $R/correct.log
grep -E "^route|^permute|^unpermute|^grouped|^moe_layer" $R/bench.txt | tee -a $R/correct.log
el after bench
q() { echo "--shape custom:T=16384,H=2048,E=128,k=8,I=768,skew=$1"; }
timeout 90 $B --op grouped_gemm_up,grouped_gemm_down $(q 0) $(q 1.0) $(q 1.5) --json $R/skew.json > $R/skew.txt 2>&1
echo "skew rc=$?" | tee -a $R/correct.log; grep -E "^grouped" $R/skew.txt | tee -a $R/correct.log
el after skew
ds() { echo "--shape custom:T=$1,H=7168,E=256,k=8,I=2048"; }
timeout 110 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer --graph $(ds 1) $(ds 128) \
  --iters 20 --samples 4 --peers $R/peers-decode.jsonl --json $R/decode-graph.json > $R/decode-graph.txt 2>&1
echo "decode graph rc=$?" | tee -a $R/correct.log; grep moe_layer $R/decode-graph.txt | tee -a $R/correct.log
el after decode
timeout 60 ncu --clock-control none --launch-count 40 --metrics gpu__time_duration.sum \
  .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer --graph $(ds 1) --iters 1 --samples 1 > $R/ncu-decode1.txt 2> $R/ncu-decode1.err
echo "ncu decode rc=$?" | tee -a $R/correct.log
grep -E "^  [A-Za-z_0-9]+.*\(|gpu__time_duration" $R/ncu-decode1.txt | paste - - | awk '{print substr($1,1,60), $(NF)}' | tee -a $R/correct.log
el end
