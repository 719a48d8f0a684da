#!/usr/bin/env bash
# Device call D (session 16, run 26): the warp-specialised attention with its row maxima and sums
# in 4 partial chains per row: correctness (long sequences, the attention properties), memcheck,
# then the four peer shapes, 3 rounds each, against the peers of this command.
set -u
source .gpu/prelude.sh
timeout 150 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long-ws.log 2>&1; echo "long ws rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/long-ws.log | head -5 | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=24 timeout 100 .gpu/bin/test-suite attention --test-threads 4 > $R/suite-attn.log 2>&1; echo "suite attention rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/suite-attn.log | head -8 | tee -a $R/correct.log
el after tests
timeout 90 python3 .gpu/torch_peers.py attention > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --iters 30 --samples 8 --peers $R/peers.jsonl"
for r in 1 2 3; do
  for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1 2,32,8,8192,128,0; do
    timeout 40 $B --attn $a --json $R/b-$r-${a//,/_}.json >> $R/bench.txt 2>&1; echo "bench $r $a rc=$?" >> $R/correct.log
  done
done
grep -h "^attention" $R/bench.txt | tee -a $R/correct.log
el after bench
timeout 80 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-cuda_backend attention_matches --test-threads 1 > $R/san-memcheck-long.log 2>&1
echo "sanitizer memcheck long rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-memcheck-long.log | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=2 timeout 60 compute-sanitizer --tool racecheck --print-limit 5 .gpu/bin/test-suite attention --test-threads 1 > $R/san-racecheck.log 2>&1
echo "sanitizer racecheck rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-racecheck.log | tee -a $R/correct.log
el end
