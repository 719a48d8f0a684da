#!/usr/bin/env bash
# Device call E (session 17, run 27): the FlashMask plan (src/ops/flashmask.rs): blocks of rows cut
# where a document ends, each block's key tiles on a grid from its first visible key, the rows'
# end passed to the kernel. Correctness (long test, properties, memcheck and racecheck on the long
# test), then the record: peers, the four peer shapes, the mask patterns, ncu for docs.
set -u
source .gpu/prelude.sh
timeout 120 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long-ws.log 2>&1; echo "long ws rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/long-ws.log | head -5 | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=24 timeout 120 .gpu/bin/test-suite attention --test-threads 4 > $R/suite-attn.log 2>&1; echo "suite attention rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/suite-attn.log | head -8 | tee -a $R/correct.log
el after tests
timeout 90 python3 .gpu/torch_peers.py attention > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --iters 20 --samples 8 --peers $R/peers.jsonl"
for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1 2,32,8,8192,128,0; do
  timeout 60 $B --attn $a --json $R/b-$a.json >> $R/bench.txt 2>&1; echo "bench $a rc=$?" | tee -a $R/correct.log
done
for base in 4,32,8,4096,128 1,32,8,16384,128 4,16,16,4096,64; do
  for m in ranges docs docs-varlen image; do
    timeout 60 $B --attn $base,$m --json $R/b-$base,$m.json >> $R/bench.txt 2>&1; echo "bench $base,$m rc=$?" | tee -a $R/correct.log
  done
done
grep -h "^attention" $R/bench.txt | tee -a $R/correct.log
el after bench
for base in 4,32,8,4096,128 4,16,16,4096,64; do
  for m in 1 docs docs-varlen image; do
    timeout 60 ncu --kernel-name regex:attention_sm90ws -c 3 --metrics gpu__time_duration.sum .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --attn $base,$m --iters 2 --warmup 1 --samples 1 > $R/ncu-tmp.txt 2>&1
    echo "ncu $base,$m rc=$? $(grep gpu__time_duration $R/ncu-tmp.txt | awk '{print $NF}' | tr '\n' ' ')" | tee -a $R/correct.log
    cat $R/ncu-tmp.txt >> $R/ncu.txt
  done
done
for tool in memcheck racecheck; do
  timeout 150 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-cuda_backend attention_matches --test-threads 1 > $R/san-$tool-long.log 2>&1
  echo "sanitizer $tool long rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/san-$tool-long.log | tee -a $R/correct.log
done
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json ncu-tmp.txt)
el end
