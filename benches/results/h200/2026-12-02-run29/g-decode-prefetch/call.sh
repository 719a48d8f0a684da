#!/usr/bin/env bash
# Device call G (session 21, run 29): the decode kernel's K/V copies with the L2 prefetch hint
# (128 bytes; call F's pf128): the decode test on v2 and v1, memcheck and racecheck on it, the
# attention properties, then the decode record with its peers (with and without the
# cache-clearing write).
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED" "$1" | head -${2:-12} | tee -a $R/correct.log; }
for v in v2 v1; do MOEKIT_CUDA_DECODE=$v timeout 60 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/dec.log 2>&1; echo "decode $v rc=$?" | tee -a $R/correct.log; ok $R/dec.log 2; done
for tool in memcheck racecheck; do
  timeout 60 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/san-$tool.log 2>&1
  echo "sanitizer $tool (decode) rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
MOEKIT_PROPTEST_CASES=32 timeout 60 .gpu/bin/test-suite cuda::attention --test-threads 4 > $R/suite.log 2>&1; echo "suite attention rc=$?" | tee -a $R/correct.log; grep -hE "test result|panicked" $R/suite.log | tee -a $R/correct.log
el after tests
timeout 60 python3 .gpu/torch_peers.py ceilings > $R/peers.jsonl 2> $R/peers.err; echo "ceilings rc=$?" | tee -a $R/correct.log
timeout 50 python3 .gpu/decode_peers.py >> $R/peers.jsonl 2>> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
grep -h '"copy"' $R/peers.jsonl | tee -a $R/correct.log
MOEKIT_BENCH_FLUSH=0 timeout 50 python3 .gpu/decode_peers.py > $R/peers-noflush.jsonl 2>> $R/peers.err; echo "decode peers no flush rc=$?" | tee -a $R/correct.log
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8"
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for a in 8,32,8,8192,128,dec1 32,32,8,4096,128,dec1 1,32,8,65536,128,dec1 16,16,16,4096,64,dec1 64,32,8,2048,128,dec1; do
  run "$a" $B --peers $R/peers.jsonl --iters 50 --attn $a --json $R/b-$a.json
  run "$a no-flush" MOEKIT_BENCH_FLUSH=0 $B --peers $R/peers-noflush.jsonl --iters 50 --attn $a --json $R/b-$a-noflush.json
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el end
