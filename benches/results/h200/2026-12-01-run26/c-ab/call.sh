#!/usr/bin/env bash
# Device call C (session 16, run 26): interleaved A/B of the warp-specialised attention's
# techniques (3 rounds of ws / no-pingpong / eager-rescale per shape, against the peers of this
# command), then ncu stall reasons and pipe use of the D 128 and D 64 causal kernels.
set -u
source .gpu/prelude.sh
timeout 90 python3 .gpu/torch_peers.py attention > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --iters 30 --samples 8 --peers $R/peers.jsonl"
run() { # NAME ROUND ATTN [ENV...]
  local n=$1 r=$2 a=$3; shift 3
  env "$@" timeout 40 $B --attn $a --json $R/ab-$n-$r-${a//,/_}.json >> $R/ab-$n.txt 2>&1; echo "ab $n $r $a rc=$?" >> $R/correct.log
}
for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1; do
  for r in 1 2 3; do
    run ws $r $a
    run nopp $r $a MOEKIT_CUDA_ATTN_PROBE=no-pingpong
    run eager $r $a MOEKIT_CUDA_ATTN_PROBE=eager-rescale
  done
done
for n in ws nopp eager; do echo "== $n"; grep -h "^attention" $R/ab-$n.txt | awk '{print $4, $5, $6, $(NF-4)}'; done | tee -a $R/correct.log
el after ab
for a in 4,32,8,4096,128,1 4,16,16,4096,64,1; do
  f=$R/ncu-stalls-${a//,/_}.txt
  timeout 80 ncu --clock-control none -k regex:attention --launch-skip 1 --launch-count 1 \
    --metrics "gpu__time_duration.sum,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active" \
    .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --attn $a --iters 1 --warmup 1 --samples 4 > $f 2>&1
  echo "ncu $a rc=$?" | tee -a $R/correct.log
  grep -E "gpu__time|stalled|pipe" $f | awk '$NF+0 > 0.05' | sort -k3 -g -r | head -40 | tee -a $R/correct.log
done
el end
