#!/usr/bin/env bash
# Device call F (session 17, run 27): the split-KV decode kernels (attention_decode.cu).
# Correctness: the decode test (8 shapes x f16/bf16), the attention properties (their small
# cases with Lq·G <= 16 now take the decode kernels), memcheck/racecheck on the decode test; then
# decode shapes against SDPA (benches/peers/decode_peers.py, same command) and the copy ceiling.
set -u
source .gpu/prelude.sh
timeout 150 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long.log 2>&1; echo "long+decode rc=$?" | tee -a $R/correct.log
grep -hE "^test |test result|panicked|FAILED" $R/long.log | head -8 | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=32 timeout 150 .gpu/bin/test-suite attention --test-threads 4 > $R/suite-attn.log 2>&1; echo "suite attention rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/suite-attn.log | head -8 | tee -a $R/correct.log
el after tests
timeout 120 python3 .gpu/decode_peers.py > $R/peers.jsonl 2> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
timeout 60 python3 .gpu/torch_peers.py ceilings >> $R/peers.jsonl 2>> $R/peers.err; echo "ceilings rc=$?" | tee -a $R/correct.log
grep -h '"copy"' $R/peers.jsonl | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --iters 50 --samples 8 --peers $R/peers.jsonl"
for a in 8,32,8,8192,128,dec1 32,32,8,4096,128,dec1 1,32,8,65536,128,dec1 16,16,16,4096,64,dec1 8,32,8,8192,128,dec4 64,32,8,2048,128,dec1; do
  timeout 60 $B --attn $a --json $R/b-$a.json >> $R/bench.txt 2>&1; echo "bench $a rc=$?" | tee -a $R/correct.log
done
grep -h "^attention" $R/bench.txt | tee -a $R/correct.log
el after bench
for a in 8,32,8,8192,128,dec1 1,32,8,65536,128,dec1; do
  timeout 60 ncu --kernel-name regex:attention_decode -c 4 --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --attn $a --iters 1 --warmup 1 --samples 1 > $R/ncu-tmp.txt 2>&1
  echo "ncu $a rc=$?" | tee -a $R/correct.log; grep -E "attention_decode|gpu__time|dram__" $R/ncu-tmp.txt | tee -a $R/correct.log
done
for tool in memcheck racecheck; do
  timeout 120 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/san-$tool-decode.log 2>&1
  echo "sanitizer $tool decode rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/san-$tool-decode.log | tee -a $R/correct.log
done
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json ncu-tmp.txt)
el end
