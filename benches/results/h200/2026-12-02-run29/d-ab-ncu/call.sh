#!/usr/bin/env bash
# Device call D (session 21, run 29): (1) the kernel before persistence (cf47e6d, bin-old) against
# the committed one, interleaved, 2 rounds, on the shapes whose figures moved between runs 28 and
# 29 (D 256, non-causal D 128) and the causal targets; (2) decode: ncu's kernel time and DRAM bytes
# of moekit's decode kernel and of SDPA-cuDNN's kernels on the same shapes, to split each call
# into kernel and outside.
set -u
source .gpu/prelude.sh
(cd .gpu && tar xJf old.tar.xz)
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for round in 1 2; do
  for a in 4,32,8,4096,256,1 2,32,8,8192,256,0 2,32,8,8192,128,0 4,32,8,4096,128,1 4,16,16,4096,64,1; do
    run "$a old r$round" .gpu/bin-old $B --attn $a --json $R/b-$a-old-r$round.json
    run "$a new r$round" .gpu/bin/bin-moekit-bench $B --attn $a --json $R/b-$a-new-r$round.json
  done
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
el after ab
M="gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,launch__registers_per_thread"
for a in 8,32,8,8192,128 32,32,8,4096,128 1,32,8,65536,128 16,16,16,4096,64; do
  timeout 60 ncu --clock-control none --metrics $M -k regex:attention_decode --launch-skip 5 --launch-count 3 --csv .gpu/bin/bin-moekit-bench $B --iters 10 --attn $a,dec1 > $R/ncu-moekit-$a.csv 2> $R/ncu.err; echo "ncu moekit $a rc=$?" | tee -a $R/correct.log
  timeout 90 ncu --clock-control none --metrics $M --launch-skip 13 --launch-count 8 --csv python3 .gpu/cudnn_dec_ncu.py $a > $R/ncu-cudnn-$a.csv 2>> $R/ncu.err; echo "ncu cudnn $a rc=$?" | tee -a $R/correct.log
done
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json; tar czf ncu.tar.gz ncu-*.csv && rm -f ncu-*.csv)
el end
