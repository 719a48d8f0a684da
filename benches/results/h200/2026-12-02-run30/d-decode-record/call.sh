#!/usr/bin/env bash
# Device call D (session 22, run 30): decode v2 as committed (16-key sub-blocks, 3 stages a warp,
# splits in multiples of 16 keys sized for the fastest of 1-4 waves): the decode test on v2 and
# v1, memcheck and racecheck, the attention property suite; the decode record with its peers
# (with and without the cache-clearing write), and B48 S2048 against the one-wave plan (w1).
set -u
source .gpu/prelude.sh
(cd .gpu && tar xJf var.tar.xz)
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED" "$1" | head -${2:-12} | tee -a $R/correct.log; }
for v in v2 v1; do MOEKIT_CUDA_DECODE=$v timeout 90 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/dec.log 2>&1; echo "decode $v rc=$?" | tee -a $R/correct.log; ok $R/dec.log 3; done
MOEKIT_NO_SKIP=1 timeout 60 .gpu/bin/test-moekit_cuda v2_gives --test-threads 1 > $R/v2v1.log 2>&1; echo "v2 against v1 rc=$?" | tee -a $R/correct.log; ok $R/v2v1.log 3
for tool in memcheck racecheck; do
  timeout 70 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/san-$tool.log 2>&1
  echo "sanitizer $tool (decode) rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
MOEKIT_PROPTEST_CASES=32 timeout 90 .gpu/bin/test-suite cuda::attention --test-threads 4 > $R/suite.log 2>&1; echo "suite attention rc=$?" | tee -a $R/correct.log; grep -hE "test result|panicked" $R/suite.log | tee -a $R/correct.log
el after tests
S="8,32,8,8192,128 32,32,8,4096,128 1,32,8,65536,128 16,16,16,4096,64 64,32,8,2048,128 48,32,8,2048,128"
timeout 60 python3 .gpu/torch_peers.py ceilings > $R/peers.jsonl 2> $R/peers.err; echo "ceilings rc=$?" | tee -a $R/correct.log
timeout 70 python3 .gpu/decode_peers.py $S >> $R/peers.jsonl 2>> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
MOEKIT_BENCH_FLUSH=0 timeout 70 python3 .gpu/decode_peers.py $S > $R/peers-noflush.jsonl 2>> $R/peers.err; echo "decode peers no flush rc=$?" | tee -a $R/correct.log
grep -h '"copy"\|cudnn' $R/peers.jsonl | cut -c1-150 | tee -a $R/correct.log
el after peers
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 50"
run() { local label=$1; shift; [ $(( $(date +%s) - t0 )) -lt 480 ] || { echo "skipped $label (time)" >> $R/correct.log; return; }; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for a in $S; do
  run "$a" .gpu/bin/bin-moekit-bench $B --peers $R/peers.jsonl --attn $a,dec1 --json $R/b-$a.json
  run "$a no-flush" MOEKIT_BENCH_FLUSH=0 .gpu/bin/bin-moekit-bench $B --peers $R/peers-noflush.jsonl --attn $a,dec1 --json $R/b-$a-noflush.json
done
for r in 1 2; do
  run "48,32,8,2048,128 w1 r$r" .gpu/var/bin-w1 $B --peers $R/peers.jsonl --attn 48,32,8,2048,128,dec1 --json $R/b-w1-r$r.json
  run "48,32,8,2048,128 r$r" .gpu/bin/bin-moekit-bench $B --peers $R/peers.jsonl --attn 48,32,8,2048,128,dec1 --json $R/b-48-r$r.json
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
left=$(( 560 - ($(date +%s) - t0) ))
if [ $left -gt 30 ]; then timeout $left .gpu/bin/test-kernels_compile > $R/compile.log 2>&1; echo "kernels compile rc=$? (limit ${left}s)" | tee -a $R/correct.log; ok $R/compile.log 12; fi
el end
