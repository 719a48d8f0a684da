#!/usr/bin/env bash
# Device call A (session 28, run 36): the banded three-consumer kernel skipping, per consumer, the
# key tiles its rows' ranges mask (and the host taking it for column ranges too), against
# 10dd566's binary (`bin-old`), interleaved, 3 rounds; variants: `new` (this build), `vfirst`
# (WS_V_FIRST=1: the V wait and O rescale before the first part's exponents), `whole` (probe
# whole-tiles: the image mask on attention_sm90ws3_*, 10dd566's choice, PTX identical). The faster
# of new / vfirst on causal + image is then tested (suite, racecheck, memcheck) and recorded with
# the peers.
# (The source of this call's build: range-skip.patch on top of 10dd566, not committed.)
set -u
source .gpu/prelude.sh
ok() { grep -hE "^test result|panicked|FAILED|SKIPPED|error\[" "$1" | head -${2:-12} | tee -a $R/correct.log; }
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
timeout 150 .gpu/bin/test-cuda_backend attention --test-threads 2 > $R/long.log 2>&1; echo "cuda_backend attention rc=$?" | tee -a $R/correct.log; ok $R/long.log 6
MOEKIT_CUDA_ATTN_PROBE=ranges-as-given timeout 150 .gpu/bin/test-cuda_backend attention_matches_the_reference_on_long --test-threads 2 > $R/long-rag.log 2>&1; echo "cuda_backend long ranges-as-given rc=$?" | tee -a $R/correct.log; ok $R/long-rag.log 6
timeout 100 .gpu/bin/test-suite cuda:: --test-threads 4 > $R/suite.log 2>&1; echo "suite cuda:: rc=$?" | tee -a $R/correct.log; ok $R/suite.log 8
timeout 30 .gpu/bin/test-moekit_cuda > $R/unit.log 2>&1; echo "unit rc=$?" | tee -a $R/correct.log; ok $R/unit.log 3
el after tests
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
VARS="old: new: vfirst:WS_V_FIRST=1 whole:"
for r in 1 2 3; do
  for a in 4,16,16,4096,64,1 4,16,16,4096,64,image 4,16,16,4096,64,docs 4,16,16,4096,64,docs-varlen 4,16,16,4096,64,ranges; do
    for v in $VARS; do
      n=${v%%:*}; bin=.gpu/bin/bin-moekit-bench; [ $n = old ] && bin=.gpu/bin/bin-old
      pr=; [ $n = whole ] && pr=whole-tiles
      run "$a $n r$r" MOEKIT_CUDA_DEFINES=${v#*:} MOEKIT_CUDA_ATTN_PROBE=$pr $bin $B --attn $a --json $R/ab-$a-$n-r$r.json
    done
  done
  el after round $r
done
python3 - "$R/bench.txt" "$VARS" > $R/ab-summary.txt <<'P'
import sys,collections,statistics
d=collections.defaultdict(list); lab=None
for l in open(sys.argv[1]):
    if l.startswith('== '): lab=l[3:].split(); continue
    if l.startswith('attention') and lab and len(lab)==3:
        f=l.split(); v=float(f[3])*(1000 if f[4]=='ms' else 1); d[(lab[0],lab[1])].append(v)
vs=[v.split(':')[0] for v in sys.argv[2].split()]; defs=dict(v.split(':',1) for v in sys.argv[2].split())
shapes=sorted(set(a for a,_ in d)); med={k:statistics.median(x) for k,x in d.items()}
for a in shapes: print(a, ' '.join(f"{v}={med.get((a,v),0):.1f}" for v in vs))
c='4,16,16,4096,64,1'; i='4,16,16,4096,64,image'
pick=min(['new','vfirst'], key=lambda v: med.get((c,v),1e9)+med.get((i,v),1e9))
print('pick', pick, defs[pick] or 'none')
P
cat $R/ab-summary.txt | tee -a $R/correct.log
PICK=$(awk '/^pick/{print $3}' $R/ab-summary.txt); [ "$PICK" = "none" ] && PICK=
export MOEKIT_CUDA_DEFINES=$PICK; echo "defines for the record: '$PICK'" | tee -a $R/correct.log
if [ -n "$PICK" ]; then
timeout 60 .gpu/bin/test-suite cuda::attention --test-threads 4 > $R/suite-pick.log 2>&1; echo "suite cuda::attention picked rc=$?" | tee -a $R/correct.log; ok $R/suite-pick.log 4
timeout 150 .gpu/bin/test-cuda_backend attention_matches_the_reference_on_long --test-threads 2 > $R/long-pick.log 2>&1; echo "long picked rc=$?" | tee -a $R/correct.log; ok $R/long-pick.log 4
fi
el after pick suite
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
