#!/usr/bin/env bash
# Device call B (session 13, run 23): the rest of the full run in the new (queued) timing: the
# decode layer (T = 1, 128; graph replays) against torch_decode.py, deepseek's small ops in the old
# (synced) timing, and the up GEMM on Zipf-skewed loads (1.0, 1.5) against balanced at qwen3 sizes.
# And the permute's index kernels as one cooperative launch (MOEKIT_CUDA_PERMUTE=coop, run 21: no
# gain while the host's launch time was in the figure) against the default, in the queued timing.
set -u
source .gpu/prelude.sh
timeout 90 python3 .gpu/peers_subset.py deepseek-v3 > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
timeout 80 python3 benches/peers/torch_decode.py 1 128 > $R/peers-decode.jsonl 2> $R/peers-decode.err
echo "peers decode rc=$?" | tee -a $R/correct.log
el after peers
ds() { echo "--shape custom:T=$1,H=7168,E=256,k=8,I=2048"; }
for m in queued synced; do
  S=; [ $m = synced ] && S=--synced
  timeout 100 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer --graph $S $(ds 1) $(ds 128) \
    --iters 20 --samples 4 --peers $R/peers-decode.jsonl --json $R/decode-graph-$m.json > $R/decode-graph-$m.txt 2>&1
  echo "decode graph $m rc=$?" | tee -a $R/correct.log; grep moe_layer $R/decode-graph-$m.txt | tee -a $R/correct.log
done
el after decode
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 12 --peers $R/peers.jsonl"
timeout 90 $B --synced --shape deepseek-v3 --op route,permute,unpermute_combine --json $R/deepseek-synced.json > $R/deepseek-synced.txt 2>&1
echo "deepseek synced rc=$?" | tee -a $R/correct.log; grep -E "^route|^permute|^unpermute" $R/deepseek-synced.txt | tee -a $R/correct.log
el after deepseek synced
P=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 30 --samples 12 --peers $R/peers-all.jsonl"
cat .gpu/peers-a.jsonl $R/peers.jsonl > $R/peers-all.jsonl
for rep in 1 2; do for v in default coop; do
  MOEKIT_CUDA_PERMUTE=$v timeout 60 $P --shape qwen3-30b-a3b --shape ernie45-21b-a3b --shape deepseek-v3 --op permute --json $R/permute-$v-$rep.json > $R/permute-$v-$rep.txt 2>&1
  echo "permute $v $rep rc=$?" | tee -a $R/correct.log; grep -E "^permute" $R/permute-$v-$rep.txt | tee -a $R/correct.log
done; done
for v in default coop; do
  MOEKIT_CUDA_PERMUTE=$v timeout 60 $P --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op moe_layer --json $R/layer-$v.json > $R/layer-$v.txt 2>&1
  echo "layer $v rc=$?" | tee -a $R/correct.log; grep -E "^moe_layer" $R/layer-$v.txt | tee -a $R/correct.log
done
el after permute coop
q() { echo "--shape custom:T=16384,H=2048,E=128,k=8,I=768,skew=$1"; }
timeout 90 $B --op grouped_gemm_up,grouped_gemm_down $(q 0) $(q 1.0) $(q 1.5) --json $R/skew.json > $R/skew.txt 2>&1
echo "skew rc=$?" | tee -a $R/correct.log; grep -E "^grouped" $R/skew.txt | tee -a $R/correct.log
el end
