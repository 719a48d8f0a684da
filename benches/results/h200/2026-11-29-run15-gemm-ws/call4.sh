#!/usr/bin/env bash
# Device call 4 (session 7): speed. PyTorch peers (ceilings, MoE) and moekit's CUDA backend with
# the default GEMM and the warp-specialised one (MOEKIT_CUDA_GEMM=wgmma-ws), public shapes plus
# Zipf-skewed qwen3 loads, in one command.
set -u
[ -d .gpu/bin ] || (cd .gpu && tar xJf bins.tar.xz)
cache=$PWD/.gpu/cache; mkdir -p $cache
export MOEKIT_CUDA_CACHE=$cache/moekit-cuda CUDA_CACHE_PATH=$cache/nv CUDA_CACHE_MAXSIZE=4294967296
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > $OUT/gpu.txt
echo "== peers"
PYTHONUNBUFFERED=1 timeout 200 python3 .gpu/torch_peers.py ceilings moe > $OUT/peers.jsonl 2> $OUT/peers.err; echo "peers rc=$?"
tail -2 $OUT/peers.err
q=T=16384,H=2048,E=128,k=8,I=768
for v in wgmma wgmma-ws; do
  echo "== $v"
  MOEKIT_CUDA_GEMM=$v timeout 150 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --shape public-set \
    --shape custom:$q,skew=1.0 --shape custom:$q,skew=1.5 \
    --op grouped_gemm_up,grouped_gemm_down,moe_layer,gemm --ceiling --iters 20 \
    --peers $OUT/peers.jsonl --json $OUT/bench-$v.json 2>&1 | tee $OUT/bench-$v.txt
done
