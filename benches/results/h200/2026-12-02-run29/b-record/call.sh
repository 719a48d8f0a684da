#!/usr/bin/env bash
# Device call B (session 21, run 29): the persistent warp-specialised attention with the unit
# handed over through a global slot (call A's bulk copy into shared memory drew racecheck
# reports), and the fused decode merge: correctness under every probe and both sanitizers first,
# then the record of every issue #8 target with its peers, and one persistence A/B round.
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED" "$1" | head -${2:-12} | tee -a $R/correct.log; }
timeout 200 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long.log 2>&1; echo "long+decode rc=$?" | tee -a $R/correct.log; ok $R/long.log 4
el after long
for pr in "" "grid=3" "static,grid=3" "no-persist"; do
  MOEKIT_CUDA_ATTN_PROBE=$pr MOEKIT_PROPTEST_CASES=48 timeout 90 .gpu/bin/test-suite cuda::attention:: --test-threads 4 > $R/suite.log 2>&1
  echo "suite attention probe='$pr' rc=$?" | tee -a $R/correct.log; grep -hE "test result|panicked" $R/suite.log | tee -a $R/correct.log
done
for tool in racecheck memcheck; do
  MOEKIT_CUDA_ATTN_PROBE=grid=3 MOEKIT_PROPTEST_CASES=16 timeout 100 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-suite cuda::attention:: --test-threads 1 > $R/san-$tool.log 2>&1
  echo "sanitizer $tool (grid=3) rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
timeout 40 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/san-dec.log 2>&1
echo "sanitizer memcheck (decode) rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-dec.log | tee -a $R/correct.log
el after sanitizers
timeout 100 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "cuda_graph rc=$?" | tee -a $R/correct.log; ok $R/graph.log 8
el after tests
timeout 90 python3 .gpu/torch_peers.py attention ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
timeout 50 python3 .gpu/decode_peers.py >> $R/peers.jsonl 2>> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
timeout 50 python3 .gpu/prefill_peers.py >> $R/peers.jsonl 2>> $R/peers.err; echo "prefill peers rc=$?" | tee -a $R/correct.log
MOEKIT_BENCH_FLUSH=0 timeout 50 python3 .gpu/decode_peers.py > $R/peers-noflush.jsonl 2>> $R/peers.err; echo "decode peers no flush rc=$?" | tee -a $R/correct.log
grep -h '"copy"' $R/peers.jsonl | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8"
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1 2,32,8,8192,128,0 2,16,16,8192,64,0 4,32,8,4096,256,1 2,32,8,8192,256,0 1,32,8,16384,256,1; do
  run "$a" $B --peers $R/peers.jsonl --iters 20 --attn $a --json $R/b-$a.json
done
for base in 4,32,8,4096,128 4,16,16,4096,64; do
  for m in ranges docs docs-varlen image; do run "$base,$m" $B --iters 20 --attn $base,$m --json $R/b-$base,$m.json; done
done
for a in 8,32,8,8192,128,dec1 32,32,8,4096,128,dec1 1,32,8,65536,128,dec1 16,16,16,4096,64,dec1 64,32,8,2048,128,dec1; do
  run "$a" $B --peers $R/peers.jsonl --iters 50 --attn $a --json $R/b-$a.json
  run "$a no-flush" MOEKIT_BENCH_FLUSH=0 $B --peers $R/peers-noflush.jsonl --iters 50 --attn $a --json $R/b-$a-noflush.json
done
el after record
for a in 4,16,16,4096,64,1 4,32,8,4096,128,1 4,32,8,4096,256,1 4,16,16,4096,64,image 4,16,16,4096,64,docs-varlen 4,32,8,4096,128,image 4,32,8,4096,128,docs-varlen; do
  for pr in static no-persist; do run "$a $pr" MOEKIT_CUDA_ATTN_PROBE=$pr $B --iters 20 --attn $a --json $R/b-$a-$pr.json; done
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el end
