#!/usr/bin/env bash
# Device call F (session 10): ncu sections of the default grouped GEMMs (SwiGLU up with the gather
# prologue, down with storer warps) on qwen3 and ernie, for the up GEMM's remaining 1.1x gap.
set -u
(cd .gpu && tar xJf bins.tar.xz)
cache=$PWD/.gpu/cache; mkdir -p $cache
[ -f .gpu/cache.tar.xz ] && tar xJf .gpu/cache.tar.xz -C "$cache"
export MOEKIT_CUDA_CACHE=$cache/moekit-cuda CUDA_CACHE_PATH=$cache/nv CUDA_CACHE_MAXSIZE=4294967296
R=$OUT/r; mkdir -p $R
bundle() { (cd $OUT && tar czf run.tar.gz r); }
trap bundle EXIT
for s in qwen3-30b-a3b ernie45-21b-a3b; do
  timeout 90 ncu --clock-control none -k regex:"grouped_gemm_wgmma" --launch-count 2 --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
    .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape $s --op grouped_gemm_up,grouped_gemm_down > $R/ncu-gemm-$s.txt 2> $R/ncu-gemm-$s.err
  echo "ncu $s rc=$?"
done
