#!/usr/bin/env bash
# Device call B (session 28, run 36): the FlashMask plan's causal blocks (blocks whose ranges hide
# exactly what causal hides over their span run as clear blocks with the causal flag; at D 64 on
# the banded kernel when there are any) against 10dd566's binary (`bin-old`), interleaved, 3
# rounds. Variants: `new` (this build), `ws3` (probe whole-tiles: causal blocks on
# attention_sm90ws3_*), `nocb` (probe no-causal-blocks: 10dd566's plan on this build's kernels).
# Then the record with the peers, and racecheck / memcheck.
# (This call's build read the causal-block flag in every kernel; the commit gives the plans with
# causal blocks kernels of their own, PTX-identical to this build's, and the others 10dd566's PTX.)
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test result|panicked|FAILED|SKIPPED|error\[" "$1" | head -${2:-12} | tee -a $R/correct.log; }
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
timeout 170 .gpu/bin/test-cuda_backend attention --test-threads 2 > $R/long.log 2>&1; echo "cuda_backend attention rc=$?" | tee -a $R/correct.log; ok $R/long.log 6
timeout 100 .gpu/bin/test-suite cuda:: --test-threads 4 > $R/suite.log 2>&1; echo "suite cuda:: rc=$?" | tee -a $R/correct.log; ok $R/suite.log 8
timeout 30 .gpu/bin/test-moekit_cuda > $R/unit.log 2>&1; echo "unit rc=$?" | tee -a $R/correct.log; ok $R/unit.log 3
el after tests
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for r in 1 2 3; do
  for av in "4,16,16,4096,64,1:old new" "4,16,16,4096,64,image:old new ws3 nocb" "4,16,16,4096,64,docs:old new" "2,16,16,8192,64,0:old new" "4,32,8,4096,128,1:old new" "4,32,8,4096,128,image:old new nocb"; do
    a=${av%%:*}
    for n in ${av#*:}; do
      bin=.gpu/bin/bin-moekit-bench; [ $n = old ] && bin=.gpu/bin/bin-old
      pr=; [ $n = ws3 ] && pr=whole-tiles; [ $n = nocb ] && pr=no-causal-blocks
      run "$a $n r$r" MOEKIT_CUDA_ATTN_PROBE=$pr $bin $B --attn $a --json $R/ab-$a-$n-r$r.json
    done
  done
  el after round $r
done
python3 - "$R/bench.txt" > $R/ab-summary.txt <<'P'
import sys,collections,statistics
d=collections.defaultdict(list); lab=None
for l in open(sys.argv[1]):
    if l.startswith('== '): lab=l[3:].split(); continue
    if l.startswith('attention') and lab and len(lab)==3:
        f=l.split(); v=float(f[3])*(1000 if f[4]=='ms' else 1); d[(lab[0],lab[1])].append(v)
med={k:statistics.median(x) for k,x in d.items()}
for a in sorted(set(a for a,_ in d)): print(a, ' '.join(f"{v}={med[(a,v)]:.1f}" for v in ['old','new','ws3','nocb'] if (a,v) in med))
P
cat $R/ab-summary.txt | tee -a $R/correct.log
el after ab
timeout 60 python3 .gpu/torch_peers.py attention ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
timeout 40 python3 .gpu/prefill_peers.py > $R/peers-d256.jsonl 2>> $R/peers.err; echo "prefill peers rc=$?" | tee -a $R/correct.log
cat $R/peers-d256.jsonl >> $R/peers.jsonl
for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1 2,32,8,8192,128,0 2,16,16,8192,64,0 4,32,8,4096,256,1 2,32,8,8192,256,0 1,32,8,16384,256,1 4,32,8,4096,128,ranges 4,32,8,4096,128,docs 4,32,8,4096,128,docs-varlen 4,32,8,4096,128,image 4,16,16,4096,64,ranges 4,16,16,4096,64,docs 4,16,16,4096,64,docs-varlen 4,16,16,4096,64,image; do
  run "record $a" .gpu/bin/bin-moekit-bench $B --attn $a --peers $R/peers.jsonl --json $R/rec-$a.json
done
grep -hE "^== record|^attention" $R/bench.txt | grep -A1 "^== record" | grep -v "^--" > $R/record.txt; cat $R/record.txt >> $R/correct.log
el after record
for t in bf16 f16; do
MOEKIT_PROPTEST_CASES=32 timeout 60 compute-sanitizer --tool racecheck --print-limit 5 .gpu/bin/test-suite cuda::attention::$t --exact --test-threads 1 > $R/san-race-$t.log 2>&1; echo "racecheck attention $t rc=$?" | tee -a $R/correct.log; grep -hE "RACECHECK SUMMARY|test result" $R/san-race-$t.log | tail -2 | tee -a $R/correct.log
done
MOEKIT_PROPTEST_CASES=32 timeout 50 compute-sanitizer --tool memcheck --print-limit 5 .gpu/bin/test-suite cuda::attention::bf16 --exact --test-threads 1 > $R/san-mem.log 2>&1; echo "memcheck attention bf16 rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|test result" $R/san-mem.log | tail -2 | tee -a $R/correct.log
el after sanitizers
(cd $R && tar czf json.tar.gz *.json && rm -f *.json)
el end
