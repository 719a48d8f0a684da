#!/usr/bin/env bash
# Device call E (session 21, run 29): decode. SDPA-cuDNN with moekit's token-major K/V layout
# against its own head-major one; ncu's kernel time and DRAM figures of moekit's decode kernel
# (call D's moekit part, which failed on a doubled --iters).
set -u
source .gpu/prelude.sh
timeout 120 python3 .gpu/layout_peers.py > $R/layout.jsonl 2> $R/layout.err; echo "layout peers rc=$?" | tee -a $R/correct.log; cat $R/layout.jsonl | tee -a $R/correct.log
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 4"
M="gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,launch__registers_per_thread"
for a in 8,32,8,8192,128 32,32,8,4096,128 1,32,8,65536,128 16,16,16,4096,64; do
  timeout 60 ncu --clock-control none --metrics $M -k regex:attention_decode --launch-skip 5 --launch-count 3 --csv .gpu/bin/bin-moekit-bench $B --iters 10 --attn $a,dec1 > $R/ncu-moekit-$a.csv 2> $R/ncu.err; echo "ncu moekit $a rc=$?" | tee -a $R/correct.log
done
(cd $R && tar czf ncu.tar.gz ncu-*.csv && rm -f ncu-*.csv)
el end
