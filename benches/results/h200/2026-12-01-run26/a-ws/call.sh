#!/usr/bin/env bash
# Device call A (session 16, run 26): the warp-specialised Hopper attention kernel (sm90ws):
# correctness (long sequences on both Hopper kernels, the attention properties, non-finite),
# compute-sanitizer (memcheck, racecheck, synccheck) on the long-sequence test, then the four
# peer shapes of torch_peers.py on sm90ws and the earlier sm90 kernel, with the peers.
set -u
source .gpu/prelude.sh
timeout 100 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long-ws.log 2>&1; echo "long ws rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/long-ws.log | head -5 | tee -a $R/correct.log
el after long ws
MOEKIT_CUDA_ATTN=sm90 timeout 60 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long-sm90.log 2>&1; echo "long sm90 rc=$?" | tee -a $R/correct.log
el after long sm90
MOEKIT_PROPTEST_CASES=24 timeout 120 .gpu/bin/test-suite attention --test-threads 4 > $R/suite-attn.log 2>&1; echo "suite attention rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/suite-attn.log | head -8 | tee -a $R/correct.log
el after suite
timeout 90 python3 .gpu/torch_peers.py attention > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --iters 20 --samples 16 --peers $R/peers.jsonl"
for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1 2,32,8,8192,128,0; do
  timeout 60 $B --attn $a --json $R/bench-ws-$a.json >> $R/bench-ws.txt 2>&1; echo "bench ws $a rc=$?" | tee -a $R/correct.log
  MOEKIT_CUDA_ATTN=sm90 timeout 60 $B --attn $a --json $R/bench-sm90-$a.json >> $R/bench-sm90.txt 2>&1; echo "bench sm90 $a rc=$?" | tee -a $R/correct.log
done
grep -h "^attention" $R/bench-ws.txt $R/bench-sm90.txt | tee -a $R/correct.log
el after bench
timeout 70 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-cuda_backend attention_matches --test-threads 1 > $R/san-memcheck-long.log 2>&1
echo "sanitizer memcheck long rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-memcheck-long.log | tee -a $R/correct.log
for tool in racecheck synccheck; do
  MOEKIT_PROPTEST_CASES=2 timeout 60 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-suite attention --test-threads 1 > $R/san-$tool.log 2>&1
  echo "sanitizer $tool rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
el end
