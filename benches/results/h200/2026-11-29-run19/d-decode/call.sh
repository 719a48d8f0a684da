#!/usr/bin/env bash
# Device call D (session 9): the final defaults at decode sizes (storer warps only from 128 rows
# per expert): decode T = 1 and 128 under a graph with the PyTorch decode peers of this command.
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
timeout 50 python3 benches/peers/torch_decode.py 1 128 > $R/peers-decode.jsonl 2> $R/peers-decode.err
echo "peers decode rc=$?" | tee -a $R/correct.log
ds() { echo "--shape custom:T=$1,H=7168,E=256,k=8,I=2048"; }
timeout 200 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer --graph $(ds 1) $(ds 128) \
  --iters 20 --samples 4 --peers $R/peers-decode.jsonl --json $R/decode-graph.json > $R/decode-graph.txt 2>&1
echo "decode graph rc=$?" | tee -a $R/correct.log; grep moe_layer $R/decode-graph.txt | tee -a $R/correct.log
el end
