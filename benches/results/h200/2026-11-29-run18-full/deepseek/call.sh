#!/usr/bin/env bash
# Device call 3 (session 8): the deepseek-v3 rows of the full run and the decode targets, with
# the PyTorch peers (prefill layer + GEMMs, decode layer) in this same command.
set -u
(cd .gpu && tar xJf bins.tar.xz)
cache=$PWD/.gpu/cache; mkdir -p $cache
[ -f .gpu/cache.tar.xz ] && tar xJf .gpu/cache.tar.xz -C "$cache"
export MOEKIT_CUDA_CACHE=$cache/moekit-cuda CUDA_CACHE_PATH=$cache/nv CUDA_CACHE_MAXSIZE=4294967296
R=$OUT/r; mkdir -p $R
bundle() { (cd $OUT && tar czf run.tar.gz r); }
trap bundle EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee $R/gpu.txt
t0=$(date +%s); el() { echo "t=$(( $(date +%s) - t0 ))s $*" | tee -a $R/correct.log; }
python3 .gpu/peers_subset.py deepseek-v3 > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
python3 benches/peers/torch_decode.py 1 128 >> $R/peers.jsonl 2> $R/peers-decode.err; echo "peers decode rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --peers $R/peers.jsonl"
timeout 240 $B --samples 16 --shape deepseek-v3 --op route,permute,unpermute_combine,grouped_gemm_up,grouped_gemm_down,moe_layer \
  --json $R/bench.json > $R/bench.txt 2>&1; echo "bench rc=$?" | tee -a $R/correct.log
el after bench
grep -v "^\s*$" $R/bench.txt
ds() { echo "--shape custom:T=$1,H=7168,E=256,k=8,I=2048"; }
timeout 200 $B --samples 4 --op moe_layer --graph $(ds 1) $(ds 128) --json $R/decode-graph.json > $R/decode-graph.txt 2>&1
echo "decode graph rc=$?" | tee -a $R/correct.log; grep moe_layer $R/decode-graph.txt
el end
