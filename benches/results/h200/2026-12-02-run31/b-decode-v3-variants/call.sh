#!/usr/bin/env bash
# Device call B (session 23, run 31): decode v3 variants against v2 (all built from the same
# commit; the bench checks each against the CPU reference): stages and refill lag (s3l1: 3 stages,
# refill at t - 1, 2 CTAs per SM at D 128; s6l1; s2l1: 3 CTAs per SM), and the loads alone
# (DEC3_LDONLY: lds6, lds3l1) under ncu, against v2 and v3 as committed.
# Variants (built here by /tmp/buildvar.sh NAME STAGES DEFINES: the defines after the first #line
# of attention_decode.cu, V3_STAGES set to STAGES): s3l1 3 "DEC3_STAGES=3 DEC3_LAG=1",
# s6l1 6 "DEC3_LAG=1", s2l1 2 "DEC3_STAGES=2 DEC3_LAG=1", lds6 6 "DEC3_LDONLY=1",
# lds3l1 3 "DEC3_STAGES=3 DEC3_LAG=1 DEC3_LDONLY=1".
set -u
source .gpu/prelude.sh
(cd .gpu && tar xJf var.tar.xz)
S="8,32,8,8192,128 32,32,8,4096,128 1,32,8,65536,128 16,16,16,4096,64 64,32,8,2048,128 48,32,8,2048,128"
timeout 70 python3 .gpu/decode_peers.py $S > $R/peers.jsonl 2> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
el after peers
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 50"
run() { local label=$1; shift; [ $(( $(date +%s) - t0 )) -lt 400 ] || { echo "skipped $label (time)" >> $R/correct.log; return; }; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for a in $S; do
  run "$a v2" MOEKIT_CUDA_DECODE=v2 .gpu/bin/bin-moekit-bench $B --peers $R/peers.jsonl --attn $a,dec1 --json $R/b-$a-v2.json
  run "$a v3" MOEKIT_CUDA_DECODE=v3 .gpu/bin/bin-moekit-bench $B --peers $R/peers.jsonl --attn $a,dec1 --json $R/b-$a-v3.json
  for v in s3l1 s6l1 s2l1; do
    run "$a $v" MOEKIT_CUDA_DECODE=v3 .gpu/var/bin-$v $B --peers $R/peers.jsonl --attn $a,dec1 --json $R/b-$a-$v.json
  done
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el after bench
M="gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,launch__occupancy_limit_shared_mem"
N="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 4 --iters 10"
for a in 8,32,8,8192,128 32,32,8,4096,128; do for v in lds6 lds3l1 s3l1 s2l1; do
  [ $(( $(date +%s) - t0 )) -lt 540 ] || break 2
  MOEKIT_CUDA_DECODE=v3 timeout 30 ncu --clock-control none --metrics $M -k regex:attention_decode --launch-skip 5 --launch-count 3 --csv .gpu/var/bin-$v $N --attn $a,dec1 > $R/ncu-$v-$a.csv 2>> $R/ncu.err; echo "ncu $v $a rc=$?" >> $R/correct.log
  ncu_sum $R/ncu-$v-$a.csv | tee -a $R/correct.log
done; done
(cd $R && tar czf ncu.tar.gz ncu-*.csv && rm -f ncu-*.csv)
el end
