#!/usr/bin/env bash
# Device call A (session 23, run 31): decode v3 (TMA tiles, 6 stages, FULL/EMPTY mbarriers) on the
# GPU for the first time: the decode test on v3, v3 and v2 against v1, memcheck and racecheck on
# v3; then v3 against v2 interleaved (2 rounds) on the decode shapes with the SDPA peers from the
# same call; ncu of both on B8 and B32 (kernel time, DRAM throughput).
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED|error" "$1" | head -${2:-12} | tee -a $R/correct.log; }
MOEKIT_CUDA_DECODE=v3 timeout 90 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/dec-v3.log 2>&1; echo "decode v3 rc=$?" | tee -a $R/correct.log; ok $R/dec-v3.log 6
MOEKIT_NO_SKIP=1 timeout 60 .gpu/bin/test-moekit_cuda v2_gives --test-threads 1 > $R/v3v1.log 2>&1; echo "v2, v3 against v1 rc=$?" | tee -a $R/correct.log; ok $R/v3v1.log 6
for tool in memcheck racecheck; do
  MOEKIT_CUDA_DECODE=v3 timeout 80 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/san-$tool.log 2>&1
  echo "sanitizer $tool (decode v3) rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
el after tests
S="8,32,8,8192,128 32,32,8,4096,128 1,32,8,65536,128 16,16,16,4096,64 64,32,8,2048,128 48,32,8,2048,128"
timeout 60 python3 .gpu/torch_peers.py ceilings > $R/peers.jsonl 2> $R/peers.err; echo "ceilings rc=$?" | tee -a $R/correct.log
timeout 70 python3 .gpu/decode_peers.py $S >> $R/peers.jsonl 2>> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
grep -h '"copy"\|cudnn' $R/peers.jsonl | cut -c1-150 | tee -a $R/correct.log
el after peers
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 50"
run() { local label=$1; shift; [ $(( $(date +%s) - t0 )) -lt 440 ] || { echo "skipped $label (time)" >> $R/correct.log; return; }; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for r in 1 2; do for a in $S; do for v in v3 v2; do
  run "$a $v r$r" MOEKIT_CUDA_DECODE=$v .gpu/bin/bin-moekit-bench $B --peers $R/peers.jsonl --attn $a,dec1 --json $R/b-$a-$v-r$r.json
done; done; done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el after bench
M="gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,launch__occupancy_limit_shared_mem"
N="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 4 --iters 10"
for a in 8,32,8,8192,128 32,32,8,4096,128; do for v in v3 v2; do
  [ $(( $(date +%s) - t0 )) -lt 540 ] || break 2
  MOEKIT_CUDA_DECODE=$v timeout 30 ncu --clock-control none --metrics $M -k regex:attention_decode --launch-skip 5 --launch-count 3 --csv .gpu/bin/bin-moekit-bench $N --attn $a,dec1 > $R/ncu-$v-$a.csv 2>> $R/ncu.err; echo "ncu $v $a rc=$?" >> $R/correct.log
  ncu_sum $R/ncu-$v-$a.csv | tee -a $R/correct.log
done; done
(cd $R && tar czf ncu.tar.gz ncu-*.csv && rm -f ncu-*.csv)
el end
