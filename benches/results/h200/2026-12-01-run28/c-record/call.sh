#!/usr/bin/env bash
# Device call C (session 18, run 28): the record of the session's final code, every issue #8
# target in one command with its peers: the prefill shapes (D 64, 128, 256), the FlashMask
# patterns, decode (with the 256 MiB cache-clearing write before each run, as do_bench, and
# without it: MOEKIT_BENCH_FLUSH=0 for moekit and decode_peers.py alike). Correctness first.
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED" "$1" | head -${2:-12} | tee -a $R/correct.log; }
timeout 150 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long.log 2>&1; echo "long+decode rc=$?" | tee -a $R/correct.log; ok $R/long.log 4
timeout 60 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/san-memcheck.log 2>&1
echo "sanitizer memcheck (decode) rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-memcheck.log | tee -a $R/correct.log
el after tests
timeout 90 python3 .gpu/torch_peers.py attention ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
timeout 60 python3 .gpu/decode_peers.py >> $R/peers.jsonl 2>> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
timeout 60 python3 .gpu/prefill_peers.py >> $R/peers.jsonl 2>> $R/peers.err; echo "prefill peers rc=$?" | tee -a $R/correct.log
MOEKIT_BENCH_FLUSH=0 timeout 60 python3 .gpu/decode_peers.py > $R/peers-noflush.jsonl 2>> $R/peers.err; echo "decode peers no flush rc=$?" | tee -a $R/correct.log
grep -h '"copy"' $R/peers.jsonl | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8"
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 60 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1 2,32,8,8192,128,0 4,32,8,4096,256,1 2,32,8,8192,256,0 1,32,8,16384,256,1; do
  run "$a" $B --peers $R/peers.jsonl --iters 20 --attn $a --json $R/b-$a.json
done
for base in 4,32,8,4096,128 4,16,16,4096,64; do
  for m in ranges docs docs-varlen image; do run "$base,$m" $B --iters 20 --attn $base,$m --json $R/b-$base,$m.json; done
done
for a in 8,32,8,8192,128,dec1 32,32,8,4096,128,dec1 1,32,8,65536,128,dec1 16,16,16,4096,64,dec1 64,32,8,2048,128,dec1; do
  run "$a" $B --peers $R/peers.jsonl --iters 50 --attn $a --json $R/b-$a.json
  run "$a no-flush" MOEKIT_BENCH_FLUSH=0 $B --peers $R/peers-noflush.jsonl --iters 50 --attn $a --json $R/b-$a-noflush.json
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el end
