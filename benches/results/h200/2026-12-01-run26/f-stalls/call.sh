#!/usr/bin/env bash
# Device call F (session 16, run 26): where the warp-specialised attention's warps stall, per SASS
# instruction (ncu source counters: warp stall samples), causal S4096 at D 64 and D 128.
set -u
source .gpu/prelude.sh
timeout 120 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long-ws.log 2>&1; echo "long ws rc=$?" | tee -a $R/correct.log
el after warm compile
for a in 4,16,16,4096,64,1 4,32,8,4096,128,1; do
  n=${a//,/_}
  timeout 120 ncu --clock-control none -k regex:attention_sm90ws --launch-skip 1 --launch-count 1 --section SourceCounters \
    --section WarpStateStats --import-source no -o $R/rep-$n \
    .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --attn $a --iters 1 --warmup 1 --samples 4 > $R/ncu-$n.log 2>&1
  echo "ncu $a rc=$?" | tee -a $R/correct.log
  timeout 60 ncu -i $R/rep-$n.ncu-rep --page source --csv --print-source sass > $R/sass-$n.csv 2> $R/sass-$n.err; echo "sass $a rc=$? $(wc -l < $R/sass-$n.csv) lines" | tee -a $R/correct.log
  timeout 60 ncu -i $R/rep-$n.ncu-rep --page details --print-details all > $R/details-$n.txt 2>&1; echo "details rc=$?" | tee -a $R/correct.log
  grep -iE "stall|sampl" $R/details-$n.txt | head -30 | tee -a $R/correct.log
done
el end
