#!/usr/bin/env bash
# Device call E (session 13, run 23): call D's ernie layer, queued, pool held against released,
# twice alternating (call D: 3.91 against 4.22 ms, one run each). Peers: call D's file (another
# machine), so only the times compare.
set -u
source .gpu/prelude.sh
cp .gpu/peers-d.jsonl $R/peers-d.jsonl
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 30 --samples 8 --peers $R/peers-d.jsonl --shape ernie45-21b-a3b --op moe_layer"
for rep in 1 2; do for pool in hold release; do
  P=; [ $pool = release ] && P=release
  MOEKIT_CUDA_POOL=$P timeout 40 $B --json $R/layer-$pool-$rep.json > $R/layer-$pool-$rep.txt 2>&1
  echo "layer pool=$pool $rep rc=$?" | tee -a $R/correct.log; grep -E "^moe_layer" $R/layer-$pool-$rep.txt | tee -a $R/correct.log
done; done
el end
