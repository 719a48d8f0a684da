#!/usr/bin/env bash
# Device call D (session 13, run 23): the backend keeps freed memory in the device's memory pool
# across syncs (release threshold set to the maximum; MOEKIT_CUDA_POOL=release: the driver's
# default). The cuda_backend tests (the pool test among them); then the layer and the small ops
# synced and queued, with the pool held and released, against the peers of this command.
set -u
source .gpu/prelude.sh
timeout 150 .gpu/bin/test-cuda_backend --test-threads 2 > $R/cuda-backend.log 2>&1; echo "cuda_backend rc=$?" >> $R/cuda-backend.log
grep -hE "test result|panicked|FAILED|SKIPPED|rc=" $R/cuda-backend.log | tee -a $R/correct.log
el after tests
timeout 60 python3 .gpu/peers_subset.py qwen3-30b-a3b,ernie45-21b-a3b > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --iters 20 --samples 12 --peers $R/peers.jsonl --shape qwen3-30b-a3b --shape ernie45-21b-a3b --op route,permute,moe_layer"
for pool in hold release; do for m in synced queued; do
  P=; [ $pool = release ] && P=release; S=; [ $m = synced ] && S=--synced
  MOEKIT_CUDA_POOL=$P timeout 60 $B $S --json $R/bench-$pool-$m.json > $R/bench-$pool-$m.txt 2>&1
  echo "bench pool=$pool $m rc=$?" | tee -a $R/correct.log; grep -E "^route|^permute|^moe_layer" $R/bench-$pool-$m.txt | tee -a $R/correct.log
done; done
el end
