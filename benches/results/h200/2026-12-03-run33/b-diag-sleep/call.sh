#!/usr/bin/env bash
# Device call B (session 25, run 33): the sm90ws producer's sleeping waits (WS_PROD_SLEEP) and the
# causal-diagonal fast mask loop (WS_DIAG_FAST). (1) the attention property suite and sanitizers
# on the new build; (2) old (HEAD 911575b) / diag-only / both, interleaved, 2 rounds; (3) ncu on
# the new D 64 kernel; (4) the record: peers and every prefill record shape on the new build.
set -u
source .gpu/prelude.sh
(cd .gpu && tar xJf var.tar.xz)
ok() { grep -hE "^test result|panicked|FAILED|SKIPPED|error\[" "$1" | head -${2:-12} | tee -a $R/correct.log; }
timeout 150 .gpu/bin/test-suite cuda:: --test-threads 4 > $R/suite.log 2>&1; echo "suite cuda:: rc=$?" | tee -a $R/correct.log; ok $R/suite.log 8
el after suite
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for r in 1 2; do for a in 4,16,16,4096,64,1 4,32,8,4096,128,1 2,16,16,8192,64,0 4,16,16,4096,64,image 4,16,16,4096,64,docs-varlen 4,32,8,4096,128,docs; do
  for w in bin-old bin-diag bin/bin-moekit-bench; do run "$a ${w##*/} r$r" .gpu/$w $B --attn $a --json $R/ab-$a-${w##*/}-r$r.json; done
  case $a in *,64,*) run "$a ws3-new r$r" MOEKIT_CUDA_ATTN=ws3 .gpu/bin/bin-moekit-bench $B --attn $a --json $R/ab-$a-ws3-r$r.json;; esac
done; done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
el after ab
S=4,16,16,4096,64,1
timeout 90 ncu -k regex:"sm90ws" -s 3 -c 1 --set full -o $R/new-d64 .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 3 --iters 3 --attn $S > $R/ncu-new.log 2>&1; echo "ncu new rc=$?" | tee -a $R/correct.log
[ -f $R/new-d64.ncu-rep ] && { ncu -i $R/new-d64.ncu-rep --print-details all > $R/new-details.txt 2>&1; ncu -i $R/new-d64.ncu-rep --page source --csv --print-source sass > $R/new-sass.csv 2>&1; grep -E "Duration|Pipe Tensor Cyc|Inst Executed Pipe Xu|Issue Slots Busy" $R/new-details.txt | head -5 | tee -a $R/correct.log; }
el after ncu
[ $(( $(date +%s) - t0 )) -lt 330 ] && {
timeout 60 python3 .gpu/torch_peers.py attention ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
timeout 40 python3 .gpu/prefill_peers.py > $R/peers-d256.jsonl 2>> $R/peers.err; echo "prefill peers rc=$?" | tee -a $R/correct.log
cat $R/peers-d256.jsonl >> $R/peers.jsonl
for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1 2,32,8,8192,128,0 2,16,16,8192,64,0 4,32,8,4096,256,1 2,32,8,8192,256,0 1,32,8,16384,256,1 4,32,8,4096,128,ranges 4,32,8,4096,128,docs 4,32,8,4096,128,docs-varlen 4,32,8,4096,128,image 4,16,16,4096,64,ranges 4,16,16,4096,64,docs 4,16,16,4096,64,docs-varlen 4,16,16,4096,64,image; do
  run "record $a" .gpu/bin/bin-moekit-bench $B --attn $a --peers $R/peers.jsonl --json $R/rec-$a.json
done
grep -hE "^== record|^attention" $R/bench.txt | tail -32 > $R/record.txt
el after record
}
MOEKIT_PROPTEST_CASES=6 timeout $(( 500 - ($(date +%s) - t0) )) compute-sanitizer --tool racecheck --print-limit 5 .gpu/bin/test-suite cuda::attention::bf16 --exact --test-threads 1 > $R/san-race.log 2>&1; echo "racecheck attention rc=$?" | tee -a $R/correct.log; grep -hE "RACECHECK SUMMARY|ERROR SUMMARY|test result" $R/san-race.log | tail -3 | tee -a $R/correct.log
MOEKIT_PROPTEST_CASES=6 timeout $(( 575 - ($(date +%s) - t0) )) compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-suite cuda::attention::bf16 --exact --test-threads 1 > $R/san-mem.log 2>&1; echo "memcheck attention rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-mem.log | tail -3 | tee -a $R/correct.log
el after sanitizers
(cd $R && tar czf json.tar.gz *.json && rm -f *.json; tar czf ncu.tar.gz *.ncu-rep && rm -f *.ncu-rep; gzip -f *-sass.csv *-details.txt)
el end
