#!/usr/bin/env bash
# Device call C (session 15, run 25): the decode layer of the full run (call B's ran out of its
# time limit after T = 1): T = 1 and 128 as graph replays against torch_decode.py of this command,
# then ncu kernel times of the layer at T = 1 (its kernels: what the replay is made of).
set -u
source .gpu/prelude.sh
timeout 80 python3 benches/peers/torch_decode.py 1 128 > $R/peers-decode.jsonl 2> $R/peers-decode.err; echo "peers decode rc=$?" | tee -a $R/correct.log
el after peers
ds() { echo "--shape custom:T=$1,H=7168,E=256,k=8,I=2048"; }
timeout 220 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer --graph $(ds 1) $(ds 128) \
  --iters 20 --samples 4 --peers $R/peers-decode.jsonl --json $R/decode-graph.json > $R/decode-graph.txt 2>&1
echo "decode graph rc=$?" | tee -a $R/correct.log; grep moe_layer $R/decode-graph.txt | tee -a $R/correct.log
el after decode
timeout 150 ncu --clock-control none --launch-count 14 --metrics gpu__time_duration.sum \
  .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer $(ds 1) --iters 1 --samples 1 > $R/ncu-decode1.txt 2> $R/ncu-decode1.err
echo "ncu decode rc=$?" | tee -a $R/correct.log
grep -E "^  [A-Za-z_0-9]+.*\(|gpu__time_duration" $R/ncu-decode1.txt | paste - - | awk '{print substr($1,1,50), $(NF)}' | tee -a $R/correct.log
el end
