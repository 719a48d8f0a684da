#!/usr/bin/env bash
# Device call A (session 17, run 27): FlashMask tile classification in the warp-specialised
# attention (tiles wholly masked by the column ranges skipped, clear ones unmasked, partial ones
# elementwise from one 16-byte load per key). Correctness: the long test (new cases with long
# documents and blocks, causal as ranges), the attention properties, memcheck on the long test,
# racecheck/synccheck on the properties. Then the mask patterns against causal at the same S.
set -u
source .gpu/prelude.sh
timeout 120 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long-ws.log 2>&1; echo "long ws rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/long-ws.log | head -5 | tee -a $R/correct.log
el after long ws
MOEKIT_PROPTEST_CASES=24 timeout 120 .gpu/bin/test-suite attention --test-threads 4 > $R/suite-attn.log 2>&1; echo "suite attention rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/suite-attn.log | head -8 | tee -a $R/correct.log
el after suite
timeout 90 python3 .gpu/torch_peers.py attention > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --iters 20 --samples 8 --peers $R/peers.jsonl"
for base in 4,32,8,4096,128 1,32,8,16384,128 4,16,16,4096,64; do
  for m in 1 ranges docs image; do
    timeout 60 $B --attn $base,$m --json $R/bench-$base-$m.json >> $R/bench.txt 2>&1; echo "bench $base,$m rc=$?" | tee -a $R/correct.log
  done
done
grep -h "^attention" $R/bench.txt | tee -a $R/correct.log
el after bench
timeout 120 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-cuda_backend attention_matches --test-threads 1 > $R/san-memcheck-long.log 2>&1
echo "sanitizer memcheck long rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-memcheck-long.log | tee -a $R/correct.log
for tool in racecheck synccheck; do
  MOEKIT_PROPTEST_CASES=2 timeout 60 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-suite attention --test-threads 1 > $R/san-$tool.log 2>&1
  echo "sanitizer $tool rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
el end
