#!/usr/bin/env bash
# Device call C (session 23, run 31): v2 with 2 stages (attention_decode2s2_*, 3 CTAs per SM at
# D 128) where only that holds the batch in one wave, v3 at 3 stages refilled a tile back (now its
# default). Tests: the decode test on the default (auto), v2s2 and v3; v1 against v2 (3 and 2
# stages) and v3; memcheck and racecheck on v2s2; the attention property suite. Bench: the decode
# record on the default with its peers, B48 / B40 (auto picks 2 stages) against v2s3, 2 rounds
# interleaved, and v3 on every shape.
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED|error" "$1" | head -${2:-12} | tee -a $R/correct.log; }
for v in "" v2s2 v3; do MOEKIT_CUDA_DECODE=$v timeout 90 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/dec-$v.log 2>&1; echo "decode '$v' rc=$?" | tee -a $R/correct.log; ok $R/dec-$v.log 3; done
timeout 60 .gpu/bin/test-moekit_cuda v2_gives --test-threads 1 > $R/v2v1.log 2>&1; echo "v2 s3, s2, v3 against v1 rc=$?" | tee -a $R/correct.log; ok $R/v2v1.log 3
for tool in memcheck racecheck; do
  MOEKIT_CUDA_DECODE=v2s2 timeout 80 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/san-$tool.log 2>&1
  echo "sanitizer $tool (decode v2s2) rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
MOEKIT_PROPTEST_CASES=32 timeout 90 .gpu/bin/test-suite cuda::attention --test-threads 4 > $R/suite.log 2>&1; echo "suite attention rc=$?" | tee -a $R/correct.log; grep -hE "test result|panicked" $R/suite.log | tee -a $R/correct.log
el after tests
S="8,32,8,8192,128 32,32,8,4096,128 1,32,8,65536,128 16,16,16,4096,64 64,32,8,2048,128 48,32,8,2048,128 40,32,8,4096,128"
timeout 60 python3 .gpu/torch_peers.py ceilings > $R/peers.jsonl 2> $R/peers.err; echo "ceilings rc=$?" | tee -a $R/correct.log
timeout 80 python3 .gpu/decode_peers.py $S >> $R/peers.jsonl 2>> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
grep -h '"copy"\|cudnn' $R/peers.jsonl | cut -c1-150 | tee -a $R/correct.log
el after peers
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 50"
run() { local label=$1; shift; [ $(( $(date +%s) - t0 )) -lt 420 ] || { echo "skipped $label (time)" >> $R/correct.log; return; }; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for a in $S; do run "$a default" .gpu/bin/bin-moekit-bench $B --peers $R/peers.jsonl --attn $a,dec1 --json $R/b-$a.json; done
for r in 1 2; do for a in 48,32,8,2048,128 40,32,8,4096,128; do for v in v2s3 v2; do
  run "$a $v r$r" MOEKIT_CUDA_DECODE=$v .gpu/bin/bin-moekit-bench $B --peers $R/peers.jsonl --attn $a,dec1 --json $R/b-$a-$v-r$r.json
done; done; done
for a in $S; do run "$a v3" MOEKIT_CUDA_DECODE=v3 .gpu/bin/bin-moekit-bench $B --peers $R/peers.jsonl --attn $a,dec1 --json $R/b-$a-v3.json; done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el after bench
left=$(( 540 - ($(date +%s) - t0) ))
if [ $left -gt 60 ]; then timeout $left .gpu/bin/test-kernels_compile > $R/compile.log 2>&1; echo "kernels compile rc=$? (limit ${left}s)" | tee -a $R/correct.log; ok $R/compile.log 12; fi
el end
