#!/usr/bin/env bash
# Device call A (session 22, run 30): decode v2 restructured into units of STEP stages with a
# choice of copy engine (the default build: STEP 1, cp.async, as committed) checked by the decode
# test on v2 and v1; then variants interleaved with it, 2 rounds, with the cache-clearing write:
# k16 (16-key steps over pairs of stages), bulk (sm_90 bulk copies a row, mbarrier a unit), bk16
# (both), ld and bld (the loop's loads alone, cp.async or bulk: not correct, the copy ceiling of
# each mechanism); ncu kernel time and DRAM throughput of each on B8 S8192 and B32 S4096.
set -u
source .gpu/prelude.sh
(cd .gpu && tar xJf var.tar.xz)
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED" "$1" | head -${2:-12} | tee -a $R/correct.log; }
for v in v2 v1; do MOEKIT_CUDA_DECODE=$v timeout 90 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/dec.log 2>&1; echo "decode $v rc=$?" | tee -a $R/correct.log; ok $R/dec.log 3; done
el after tests
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 50"
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for round in 1 2; do
  for a in 8,32,8,8192,128,dec1 32,32,8,4096,128,dec1 1,32,8,65536,128,dec1 16,16,16,4096,64,dec1; do
    run "$a base r$round" .gpu/bin/bin-moekit-bench $B --attn $a --json $R/b-$a-base-r$round.json
    for v in k16 bulk bk16 ld bld; do run "$a $v r$round" .gpu/var/bin-$v $B --attn $a --json $R/b-$a-$v-r$round.json; done
  done
  el round $round
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
M="gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread,smsp__inst_executed.sum"
N="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 4 --iters 10"
for a in 8,32,8,8192,128 32,32,8,4096,128; do
  for v in base k16 bulk bk16 ld bld; do
    b=.gpu/var/bin-$v; [ $v = base ] && b=.gpu/bin/bin-moekit-bench
    timeout 60 ncu --clock-control none --metrics $M -k regex:attention_decode --launch-skip 5 --launch-count 3 --csv $b $N --attn $a,dec1 > $R/ncu-$v-$a.csv 2>> $R/ncu.err; echo "ncu $v $a rc=$?" | tee -a $R/correct.log
    python3 - $R/ncu-$v-$a.csv <<'P' | tee -a $R/correct.log
import csv,sys,collections
rows=[r for r in csv.reader(open(sys.argv[1])) if len(r)>10]
h=rows[0]; d=collections.defaultdict(list)
for r in rows[1:]:
    try: d[r[h.index('Metric Name')]].append(float(r[h.index('Metric Value')].replace(',','')))
    except Exception: pass
print(sys.argv[1].split('/')[-1], ' '.join(f"{k.split('.')[0]}={sum(v)/len(v):.4g}" for k,v in d.items()))
P
  done
done
(cd $R && tar czf ncu.tar.gz ncu-*.csv && rm -f ncu-*.csv)
el end
