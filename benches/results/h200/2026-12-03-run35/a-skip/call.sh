#!/usr/bin/env bash
# Device call A (session 27, run 35): three consumers skip the key tiles that hide every key from
# all their rows (WS_SKIP=1, the default; WS_SKIP=0 through MOEKIT_CUDA_DEFINES runs every tile of
# the CTA's span). (1) the CUDA property suite, the crate's unit tests; (2) the record: peers and
# every prefill record shape; (3) interleaved, 3 rounds: WS_SKIP 1 against 0 on the D 64 shapes;
# (4) racecheck and memcheck on the attention properties.
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test result|panicked|FAILED|SKIPPED|error\[" "$1" | head -${2:-12} | tee -a $R/correct.log; }
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
timeout 150 .gpu/bin/test-suite cuda:: --test-threads 4 > $R/suite.log 2>&1; echo "suite cuda:: rc=$?" | tee -a $R/correct.log; ok $R/suite.log 8
timeout 60 .gpu/bin/test-moekit_cuda > $R/unit.log 2>&1; echo "unit rc=$?" | tee -a $R/correct.log; ok $R/unit.log 3
el after suite
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
timeout 60 python3 .gpu/torch_peers.py attention ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
timeout 40 python3 .gpu/prefill_peers.py > $R/peers-d256.jsonl 2>> $R/peers.err; echo "prefill peers rc=$?" | tee -a $R/correct.log
cat $R/peers-d256.jsonl >> $R/peers.jsonl
for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1 2,32,8,8192,128,0 2,16,16,8192,64,0 4,32,8,4096,256,1 2,32,8,8192,256,0 1,32,8,16384,256,1 4,32,8,4096,128,ranges 4,32,8,4096,128,docs 4,32,8,4096,128,docs-varlen 4,32,8,4096,128,image 4,16,16,4096,64,ranges 4,16,16,4096,64,docs 4,16,16,4096,64,docs-varlen 4,16,16,4096,64,image; do
  run "record $a" .gpu/bin/bin-moekit-bench $B --attn $a --peers $R/peers.jsonl --json $R/rec-$a.json
done
grep -hE "^== record|^attention" $R/bench.txt > $R/record.txt; cat $R/record.txt >> $R/correct.log
el after record
for r in 1 2 3; do
  for a in 4,16,16,4096,64,1 2,16,16,8192,64,0 4,16,16,4096,64,docs-varlen 4,16,16,4096,64,docs 4,16,16,4096,64,image; do
    run "$a skip r$r" .gpu/bin/bin-moekit-bench $B --attn $a --json $R/ab-$a-skip-r$r.json
    run "$a all r$r" MOEKIT_CUDA_DEFINES=WS_SKIP=0 .gpu/bin/bin-moekit-bench $B --attn $a --json $R/ab-$a-all-r$r.json
  done
  el after round $r
done
grep -hE "^== [0-9]|^attention" $R/bench.txt | grep -v record >> $R/correct.log
for t in bf16 f16; do
MOEKIT_PROPTEST_CASES=32 timeout 60 compute-sanitizer --tool racecheck --print-limit 5 .gpu/bin/test-suite cuda::attention::$t --exact --test-threads 1 > $R/san-race-$t.log 2>&1; echo "racecheck attention $t rc=$?" | tee -a $R/correct.log; grep -hE "RACECHECK SUMMARY|test result" $R/san-race-$t.log | tail -2 | tee -a $R/correct.log
done
MOEKIT_PROPTEST_CASES=32 timeout 50 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-suite cuda::attention::bf16 --exact --test-threads 1 > $R/san-mem.log 2>&1; echo "memcheck attention bf16 rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-mem.log | tail -2 | tee -a $R/correct.log
el after sanitizers
(cd $R && tar czf json.tar.gz *.json && rm -f *.json)
el end
