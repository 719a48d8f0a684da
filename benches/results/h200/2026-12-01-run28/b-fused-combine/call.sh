#!/usr/bin/env bash
# Device call B (session 18, run 28): the decode combine fused into the decode kernel (the last CTA
# of each sequence merges) and the work items passed by value. Correctness of every path (fused
# with the table, fused with uploaded items, the combine kernel; v1 and v2), the model on CUDA,
# the sanitizers on the decode test; then decode peers and moekit in the same command.
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED" "$1" | head -${2:-12} | tee -a $R/correct.log; }
T=".gpu/bin/test-cuda_backend attention_decode --test-threads 1"
for cfg in "v2 -" "v2 upload-items" "v2 combine-kernel" "v1 -" "v1 combine-kernel"; do
  set -- $cfg
  MOEKIT_CUDA_DECODE=$1 MOEKIT_CUDA_DECODE_PROBE=$2 timeout 60 $T > $R/dec.log 2>&1; echo "decode $cfg rc=$?" | tee -a $R/correct.log; ok $R/dec.log 3
done
timeout 100 .gpu/bin/test-moekit_cuda --test-threads 1 > $R/lib.log 2>&1; echo "lib (v2 vs v1) rc=$?" | tee -a $R/correct.log; grep -hE "v2_gives|test result|panicked" $R/lib.log | head -4 | tee -a $R/correct.log
timeout 150 .gpu/bin/test-forward_gpu --test-threads 1 > $R/model.log 2>&1; echo "model forward_gpu rc=$?" | tee -a $R/correct.log; ok $R/model.log 4
for tool in memcheck racecheck; do
  timeout 100 compute-sanitizer --tool $tool --print-limit 5 $T > $R/san-$tool.log 2>&1
  echo "sanitizer $tool rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
el after tests
timeout 60 python3 .gpu/torch_peers.py ceilings > $R/peers.jsonl 2> $R/peers.err; echo "ceilings rc=$?" | tee -a $R/correct.log
timeout 100 python3 .gpu/decode_peers.py >> $R/peers.jsonl 2>> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
grep -h '"copy"' $R/peers.jsonl | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 50 --peers $R/peers.jsonl"
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 60 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for a in 8,32,8,8192,128,dec1 32,32,8,4096,128,dec1 1,32,8,65536,128,dec1 16,16,16,4096,64,dec1; do
  for cfg in "v2 -" "v2 upload-items" "v2 combine-kernel" "v1 -"; do
    set -- $cfg
    run "$a $1 $2" MOEKIT_CUDA_DECODE=$1 MOEKIT_CUDA_DECODE_PROBE=$2 $B --attn $a --json $R/b-$a-$1-$2.json
  done
done
for a in 8,32,8,8192,128,dec4 64,32,8,2048,128,dec1; do run "$a v2 -" $B --attn $a --json $R/b-$a.json; done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el end
