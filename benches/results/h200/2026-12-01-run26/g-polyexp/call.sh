#!/usr/bin/env bash
# Device call G (session 16, run 26): the poly-exp experiment (a quarter of the unmasked tiles'
# exponentials on the FMA pipe, MOEKIT_CUDA_ATTN_PROBE=poly-exp): correctness with it on, then an
# interleaved A/B against the default on causal S4096 at D 64 and D 128, with the peers.
set -u
source .gpu/prelude.sh
MOEKIT_CUDA_ATTN_PROBE=poly-exp timeout 130 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long-poly.log 2>&1; echo "long poly rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/long-poly.log | head -3 | tee -a $R/correct.log
MOEKIT_CUDA_ATTN_PROBE=poly-exp MOEKIT_PROPTEST_CASES=24 timeout 60 .gpu/bin/test-suite attention --test-threads 4 > $R/suite-poly.log 2>&1; echo "suite poly rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/suite-poly.log | head -3 | tee -a $R/correct.log
el after tests
timeout 40 python3 .gpu/torch_peers.py attention > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --iters 30 --samples 8 --peers $R/peers.jsonl"
for r in 1 2 3; do
  for a in 4,16,16,4096,64,1 4,32,8,4096,128,1; do
    timeout 30 $B --attn $a --json $R/ab-ws-$r-${a//,/_}.json >> $R/ab-ws.txt 2>&1; echo "ws $r $a rc=$?" >> $R/correct.log
    MOEKIT_CUDA_ATTN_PROBE=poly-exp timeout 30 $B --attn $a --json $R/ab-poly-$r-${a//,/_}.json >> $R/ab-poly.txt 2>&1; echo "poly $r $a rc=$?" >> $R/correct.log
  done
done
for n in ws poly; do echo "== $n"; grep -h "^attention" $R/ab-$n.txt | awk '{print $4, $5, $6, $(NF-4), $(NF-3), $(NF-1), $NF}'; done | tee -a $R/correct.log
el end
