#!/usr/bin/env bash
# Device call A (session 18, run 28): D 256 on the warp-specialised Hopper kernel (64-key tiles),
# the page-locked staging of per-call uploads, the decode kernel v2 (more bytes in flight).
# Correctness first (long test with the D 256 shapes, decode test, kernel compile test, the
# attention properties, the model on CUDA, graphs), then the peers and moekit in the same command,
# then memcheck/racecheck.
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED" "$1" | head -${2:-12} | tee -a $R/correct.log; }
timeout 200 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long.log 2>&1; echo "long+decode rc=$?" | tee -a $R/correct.log; ok $R/long.log
MOEKIT_CUDA_DECODE=v1 timeout 100 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/decode-v1.log 2>&1; echo "decode v1 rc=$?" | tee -a $R/correct.log; ok $R/decode-v1.log 4
timeout 100 .gpu/bin/test-moekit_cuda --test-threads 1 > $R/lib.log 2>&1; echo "lib (v2 vs v1) rc=$?" | tee -a $R/correct.log; grep -hE "v2_gives|test result|panicked" $R/lib.log | head -4 | tee -a $R/correct.log
timeout 120 .gpu/bin/test-kernels_compile --test-threads 2 > $R/compile.log 2>&1; echo "compile rc=$?" | tee -a $R/correct.log; ok $R/compile.log 4
MOEKIT_PROPTEST_CASES=48 timeout 120 .gpu/bin/test-suite attention --test-threads 4 > $R/suite-attn.log 2>&1; echo "suite attention rc=$?" | tee -a $R/correct.log; ok $R/suite-attn.log 6
timeout 150 .gpu/bin/test-forward_gpu --test-threads 1 > $R/model.log 2>&1; echo "model forward_gpu rc=$?" | tee -a $R/correct.log; ok $R/model.log 10
timeout 60 .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "cuda_graph rc=$?" | tee -a $R/correct.log; ok $R/graph.log 8
el after tests
timeout 90 python3 .gpu/torch_peers.py attention ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
timeout 100 python3 .gpu/decode_peers.py >> $R/peers.jsonl 2>> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
timeout 100 python3 .gpu/prefill_peers.py >> $R/peers.jsonl 2>> $R/peers.err; echo "prefill peers rc=$?" | tee -a $R/correct.log
grep -h '"copy"\|, 256, ' $R/peers.jsonl | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --peers $R/peers.jsonl"
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 60 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for a in 4,32,8,4096,256,1 2,32,8,8192,256,0 1,32,8,16384,256,1; do
  run "$a ws" $B --iters 20 --attn $a --json $R/b-$a.json
done
run "4,32,8,4096,256,1 v1" MOEKIT_CUDA_ATTN=v1 $B --iters 10 --attn 4,32,8,4096,256,1 --json $R/b-4,32,8,4096,256,1-v1.json
run "4,32,8,4096,256,docs ws" $B --iters 20 --attn 4,32,8,4096,256,docs --json $R/b-4,32,8,4096,256,docs.json
run "4,32,8,4096,256,docs-varlen ws" $B --iters 20 --attn 4,32,8,4096,256,docs-varlen --json $R/b-4,32,8,4096,256,docs-varlen.json
for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1 2,32,8,8192,128,0; do
  run "$a ws" $B --iters 20 --attn $a --json $R/b-$a.json
  run "$a ws staging-off" MOEKIT_CUDA_STAGING=off $B --iters 20 --attn $a --json $R/b-$a-nostage.json
done
for a in 8,32,8,8192,128,dec1 32,32,8,4096,128,dec1 1,32,8,65536,128,dec1 16,16,16,4096,64,dec1; do
  for v in v1 v2; do
    for st in on off; do
      run "$a $v staging-$st" MOEKIT_CUDA_DECODE=$v MOEKIT_CUDA_STAGING=$st $B --iters 50 --attn $a --json $R/b-$a-$v-$st.json
    done
  done
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
el after bench
for tool in memcheck racecheck; do
  timeout 200 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-cuda_backend attention_ --test-threads 1 > $R/san-$tool.log 2>&1
  echo "sanitizer $tool rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el end
