#!/usr/bin/env bash
# Device call A (session 10): the shared-memory permute scatter (default on the fast path) and
# four token-major copy variants (MOEKIT_CUDA_PERMUTE_COPY = tok | tokcs | tok2 | tok2cs).
# Correctness of each (suite permute properties + moe_layer; memcheck and racecheck on the new
# scatter), the permute/combine rows of qwen3 and ernie per variant with the PyTorch peers of
# this command, the layer rows with the defaults, ncu times of the permute kernels per variant,
# and a per-kernel ncu summary of the deepseek decode layer at T = 1 (eager).
set -u
(cd .gpu && tar xJf bins.tar.xz)
export MOEKIT_NO_SKIP=1
cache=$PWD/.gpu/cache; mkdir -p $cache
[ -f .gpu/cache.tar.xz ] && tar xJf .gpu/cache.tar.xz -C "$cache"
export MOEKIT_CUDA_CACHE=$cache/moekit-cuda CUDA_CACHE_PATH=$cache/nv CUDA_CACHE_MAXSIZE=4294967296
R=$OUT/r; mkdir -p $R
bundle() { (cd $OUT && tar czf run.tar.gz r); (cd $cache && tar cJf $OUT/cache.tar.xz .); }
trap bundle EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee $R/gpu.txt
t0=$(date +%s); el() { echo "t=$(( $(date +%s) - t0 ))s $*" | tee -a $R/correct.log; }
for v in tok tokcs tok2 tok2cs; do
  ( MOEKIT_CUDA_PERMUTE_COPY=$v MOEKIT_PROPTEST_CASES=16 timeout 150 .gpu/bin/test-suite permute --test-threads 4 > $R/suite-$v.log 2>&1; echo "suite $v rc=$?" >> $R/suite-$v.log ) &
done
( MOEKIT_PROPTEST_CASES=12 timeout 150 .gpu/bin/test-suite moe_layer --test-threads 4 > $R/suite-moe.log 2>&1; echo "suite moe rc=$?" >> $R/suite-moe.log ) &
wait
grep -hE "test result|panicked|FAILED|rc=" $R/suite-*.log | tee -a $R/correct.log
el after tests
MOEKIT_PROPTEST_CASES=3 timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/bin/test-suite permute --test-threads 1 > $R/memcheck-permute.log 2>&1
echo "memcheck permute rc=$?" | tee -a $R/correct.log; grep -E "ERROR SUMMARY|test result" $R/memcheck-permute.log | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=3 timeout 100 compute-sanitizer --tool racecheck --error-exitcode 9 .gpu/bin/test-suite permute --test-threads 1 > $R/racecheck-permute.log 2>&1
echo "racecheck permute rc=$?" | tee -a $R/correct.log; grep -E "RACECHECK SUMMARY|ERROR SUMMARY|test result" $R/racecheck-permute.log | tee -a $R/correct.log
el after sanitizers
timeout 60 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b ceilings > $R/peers.jsonl 2> $R/peers.err
echo "peers rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 16 --peers $R/peers.jsonl"
timeout 130 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op route,permute,unpermute_combine,grouped_gemm_up,grouped_gemm_down,moe_layer \
  --json $R/bench.json > $R/bench.txt 2>&1; echo "bench rc=$?" | tee -a $R/correct.log
grep -vE "^\s*$" $R/bench.txt | tail -14
el after bench
for v in tokcs tok2 tok2cs tok; do
  MOEKIT_CUDA_PERMUTE_COPY=$v timeout 60 $B --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op permute --json $R/bench-permute-$v.json > $R/bench-permute-$v.txt 2>&1
  echo "bench permute $v rc=$?" | tee -a $R/correct.log; grep "^permute" $R/bench-permute-$v.txt | tee -a $R/correct.log
done
el after variants
for v in tok tokcs tok2 tok2cs; do
  MOEKIT_CUDA_PERMUTE_COPY=$v timeout 60 ncu --clock-control none -k regex:"permute_" --launch-count 12 --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum --print-summary per-kernel \
    .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 1 --samples 1 --shape qwen3-30b-a3b --op permute > $R/ncu-permute-$v.txt 2> $R/ncu-permute-$v.err
  echo "ncu permute $v rc=$?" | tee -a $R/correct.log
done
el after ncu permute
ds() { echo "--shape custom:T=$1,H=7168,E=256,k=8,I=2048"; }
timeout 150 ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
  .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op moe_layer $(ds 1) --iters 3 --samples 1 > $R/ncu-decode1.txt 2> $R/ncu-decode1.err
echo "ncu decode T=1 rc=$?" | tee -a $R/correct.log
el end
