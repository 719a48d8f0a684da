#!/usr/bin/env bash
# Device call C (session 22, run 30). Decode v2 with 16-key sub-blocks and splits in multiples of
# 16 keys (base): the decode test on v2 and v1; against it, interleaved, 2 rounds, with the
# cache-clearing write: g64 (splits in multiples of 64 keys, as before), s3 / s4 (3 / 4 stages a
# warp: 2 / 1 CTAs per SM at D 128), with ncu of each on B8. Prefill: a share of the softmax's
# exp2 on the FMA pipe (a degree-3 polynomial: emu8 every 8th score, emu16 every 16th) against
# base, interleaved, 2 rounds, with SDPA-cuDNN.
set -u
source .gpu/prelude.sh
(cd .gpu && tar xJf var.tar.xz)
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED" "$1" | head -${2:-12} | tee -a $R/correct.log; }
for v in v2 v1; do MOEKIT_CUDA_DECODE=$v timeout 90 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/dec.log 2>&1; echo "decode $v rc=$?" | tee -a $R/correct.log; ok $R/dec.log 3; done
el after tests
timeout 60 python3 .gpu/torch_peers.py ceilings > $R/peers.jsonl 2> $R/peers.err; echo "ceilings rc=$?" | tee -a $R/correct.log
timeout 60 python3 .gpu/decode_peers.py 8,32,8,8192,128 32,32,8,4096,128 1,32,8,65536,128 16,16,16,4096,64 64,32,8,2048,128 >> $R/peers.jsonl 2>> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
timeout 60 python3 .gpu/prefill_peers.py 4,16,16,4096,64,1 2,16,16,8192,64,0 4,32,8,4096,128,1 >> $R/peers.jsonl 2>> $R/peers.err; echo "prefill peers rc=$?" | tee -a $R/correct.log
grep -h cudnn $R/peers.jsonl | cut -c1-140 | tee -a $R/correct.log
el after peers
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8"
run() { local label=$1; shift; [ $(( $(date +%s) - t0 )) -lt 470 ] || { echo "skipped $label (time)" >> $R/correct.log; return; }; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for round in 1 2; do
  for a in 8,32,8,8192,128,dec1 32,32,8,4096,128,dec1 1,32,8,65536,128,dec1 16,16,16,4096,64,dec1 64,32,8,2048,128,dec1; do
    run "$a base r$round" .gpu/bin/bin-moekit-bench $B --iters 50 --peers $R/peers.jsonl --attn $a --json $R/b-$a-base-r$round.json
    for v in g64 s3 s4; do run "$a $v r$round" .gpu/var/bin-$v $B --iters 50 --peers $R/peers.jsonl --attn $a --json $R/b-$a-$v-r$round.json; done
  done
  for a in 4,16,16,4096,64,1 2,16,16,8192,64,0 4,32,8,4096,128,1; do
    run "$a base r$round" .gpu/bin/bin-moekit-bench $B --iters 20 --peers $R/peers.jsonl --attn $a --json $R/b-$a-base-r$round.json
    for v in emu8 emu16; do run "$a $v r$round" .gpu/var/bin-$v $B --iters 20 --peers $R/peers.jsonl --attn $a --json $R/b-$a-$v-r$round.json; done
  done
  el round $round
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
M="gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,launch__occupancy_limit_shared_mem"
N="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 4 --iters 10"
for v in base g64 s3 s4; do
  [ $(( $(date +%s) - t0 )) -lt 530 ] || break
  b=.gpu/var/bin-$v; [ $v = base ] && b=.gpu/bin/bin-moekit-bench
  timeout 40 ncu --clock-control none --metrics $M -k regex:attention_decode --launch-skip 5 --launch-count 3 --csv $b $N --attn 8,32,8,8192,128,dec1 > $R/ncu-$v.csv 2>> $R/ncu.err; echo "ncu $v rc=$?" >> $R/correct.log
  python3 - $R/ncu-$v.csv <<'P' | tee -a $R/correct.log
import csv,sys,collections
rows=[r for r in csv.reader(open(sys.argv[1])) if len(r)>10]
h=rows[0]; d=collections.defaultdict(list)
for r in rows[1:]:
    try: d[r[h.index('Metric Name')]].append(float(r[h.index('Metric Value')].replace(',','')))
    except Exception: pass
print(sys.argv[1].split('/')[-1], ' '.join(f"{k.split('.')[0]}={sum(v)/len(v):.4g}" for k,v in d.items()))
P
done
(cd $R && tar czf ncu.tar.gz ncu-*.csv && rm -f ncu-*.csv)
el end
