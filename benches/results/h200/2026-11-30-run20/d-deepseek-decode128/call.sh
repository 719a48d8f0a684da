#!/usr/bin/env bash
# Device call D (session 10): the rows call C's time limits cut: the deepseek-v3 MoE layer
# (with its PyTorch peer from call C's peers.jsonl, same session, same code) and decode T = 128
# under a graph (peers from call C).
set -u
(cd .gpu && tar xJf bins.tar.xz)
export MOEKIT_NO_SKIP=1
cache=$PWD/.gpu/cache; mkdir -p $cache
[ -f .gpu/cache.tar.xz ] && tar xJf .gpu/cache.tar.xz -C "$cache"
export MOEKIT_CUDA_CACHE=$cache/moekit-cuda CUDA_CACHE_PATH=$cache/nv CUDA_CACHE_MAXSIZE=4294967296
R=$OUT/r; mkdir -p $R
bundle() { (cd $OUT && tar czf run.tar.gz r); }
trap bundle EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee $R/gpu.txt
t0=$(date +%s); el() { echo "t=$(( $(date +%s) - t0 ))s $*" | tee -a $R/correct.log; }
timeout 230 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 10 --samples 8 --peers .gpu/peers.jsonl --shape deepseek-v3 --op moe_layer --json $R/deepseek.json > $R/deepseek.txt 2>&1
echo "deepseek rc=$?" | tee -a $R/correct.log; grep -E "moe_layer" $R/deepseek.txt | tee -a $R/correct.log
el after deepseek
ds() { echo "--shape custom:T=$1,H=7168,E=256,k=8,I=2048"; }
timeout 120 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer --graph $(ds 128) \
  --iters 20 --samples 4 --peers .gpu/peers-decode.jsonl --json $R/decode-graph.json > $R/decode-graph.txt 2>&1
echo "decode graph rc=$?" | tee -a $R/correct.log; grep moe_layer $R/decode-graph.txt | tee -a $R/correct.log
el end
