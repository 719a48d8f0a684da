#!/usr/bin/env bash
# Device call C (session 13, run 23): the decode layer (deepseek-v3 sizes, T = 1 and 128, graph
# replays) in the new (queued) timing against torch_decode.py in this command (call B's bench
# ran past its 100 s limit: generating 22.5 GB of expert weights for T = 128 takes most of it).
set -u
source .gpu/prelude.sh
timeout 80 python3 benches/peers/torch_decode.py 1 128 > $R/peers-decode.jsonl 2> $R/peers-decode.err
echo "peers decode rc=$?" | tee -a $R/correct.log
el after peers
ds() { echo "--shape custom:T=$1,H=7168,E=256,k=8,I=2048"; }
timeout 400 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer --graph $(ds 1) $(ds 128) \
  --iters 20 --samples 4 --peers $R/peers-decode.jsonl --json $R/decode-graph.json > $R/decode-graph.txt 2>&1
echo "decode graph rc=$?" | tee -a $R/correct.log; grep moe_layer $R/decode-graph.txt | tee -a $R/correct.log
el end
