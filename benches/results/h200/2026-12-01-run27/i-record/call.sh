#!/usr/bin/env bash
# Device call I (session 17, run 27): the record of the session's final code. Correctness (the
# long and decode tests, the attention properties, memcheck/racecheck on both tests); the peers
# (torch_peers.py attention and ceilings, decode_peers.py) and moekit in the same command: the four
# prefill shapes, the FlashMask patterns at three sizes, the decode shapes.
set -u
source .gpu/prelude.sh
timeout 150 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long.log 2>&1; echo "long+decode rc=$?" | tee -a $R/correct.log
grep -hE "^test |test result|panicked|FAILED" $R/long.log | head -8 | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=32 timeout 150 .gpu/bin/test-suite attention --test-threads 4 > $R/suite-attn.log 2>&1; echo "suite attention rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/suite-attn.log | head -8 | tee -a $R/correct.log
el after tests
timeout 90 python3 .gpu/torch_peers.py attention ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
timeout 120 python3 .gpu/decode_peers.py >> $R/peers.jsonl 2>> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
grep -h '"copy"' $R/peers.jsonl | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --peers $R/peers.jsonl"
for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1 2,32,8,8192,128,0; do
  timeout 60 $B --iters 20 --attn $a --json $R/b-$a.json >> $R/bench.txt 2>&1; echo "bench $a rc=$?" | tee -a $R/correct.log
done
for base in 4,32,8,4096,128 1,32,8,16384,128 4,16,16,4096,64; do
  for m in ranges docs docs-varlen image; do
    timeout 60 $B --iters 20 --attn $base,$m --json $R/b-$base,$m.json >> $R/bench.txt 2>&1; echo "bench $base,$m rc=$?" | tee -a $R/correct.log
  done
done
for a in 8,32,8,8192,128,dec1 32,32,8,4096,128,dec1 1,32,8,65536,128,dec1 16,16,16,4096,64,dec1 8,32,8,8192,128,dec4 64,32,8,2048,128,dec1; do
  timeout 60 $B --iters 50 --attn $a --json $R/b-$a.json >> $R/bench.txt 2>&1; echo "bench $a rc=$?" | tee -a $R/correct.log
done
grep -h "^attention" $R/bench.txt | tee -a $R/correct.log
el after bench
for tool in memcheck racecheck; do
  timeout 150 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-cuda_backend attention_ --test-threads 1 > $R/san-$tool.log 2>&1
  echo "sanitizer $tool rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el end
