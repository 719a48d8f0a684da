#!/usr/bin/env bash
# Device call D (session 18, run 28): three consumer warpgroups at D 64 without the
# intra-warpgroup overlap (`attention_sm90ws3_d64_*`, MOEKIT_CUDA_ATTN=ws3) against the default
# two-consumer kernel. Correctness (the long test and the properties under ws3), then the D 64
# shapes interleaved, 3 rounds, with the peers of the same command, then the sanitizers.
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED" "$1" | head -${2:-12} | tee -a $R/correct.log; }
MOEKIT_CUDA_ATTN=ws3 timeout 120 .gpu/bin/test-cuda_backend attention_matches --test-threads 1 > $R/long.log 2>&1; echo "long ws3 rc=$?" | tee -a $R/correct.log; ok $R/long.log 3
MOEKIT_CUDA_ATTN=ws3 MOEKIT_PROPTEST_CASES=48 timeout 100 .gpu/bin/test-suite attention --test-threads 4 > $R/suite.log 2>&1; echo "suite ws3 rc=$?" | tee -a $R/correct.log; ok $R/suite.log 3
el after tests
timeout 60 python3 .gpu/torch_peers.py attention > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 60 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for round in 1 2 3; do
  for a in 4,16,16,4096,64,1 2,16,16,8192,64,0; do
    run "$a ws r$round" $B --peers $R/peers.jsonl --attn $a --json $R/b-$a-ws-r$round.json
    run "$a ws3 r$round" MOEKIT_CUDA_ATTN=ws3 $B --peers $R/peers.jsonl --attn $a --json $R/b-$a-ws3-r$round.json
  done
done
for m in docs docs-varlen image; do
  run "4,16,16,4096,64,$m ws" $B --attn 4,16,16,4096,64,$m --json $R/b-$m-ws.json
  run "4,16,16,4096,64,$m ws3" MOEKIT_CUDA_ATTN=ws3 $B --attn 4,16,16,4096,64,$m --json $R/b-$m-ws3.json
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
el after bench
for tool in memcheck racecheck; do
  MOEKIT_CUDA_ATTN=ws3 MOEKIT_PROPTEST_CASES=16 timeout 70 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-suite cuda::attention:: --test-threads 1 > $R/san-$tool.log 2>&1
  echo "sanitizer $tool (ws3) rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el end
