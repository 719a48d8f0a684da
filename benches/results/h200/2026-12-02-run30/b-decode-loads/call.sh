#!/usr/bin/env bash
# Device call B (session 22, run 30). 1) v2 with 16-key sub-blocks (2 stages a warp): the decode
# test on v2 and v1, memcheck and racecheck, the decode record with its peers (with and without
# the cache-clearing write). 2) Where the loads lose bandwidth: the loads alone (DEC2_LDONLY: not
# correct, the copy ceiling of the loop) with KB keys a stage and NS stages a warp (ld 8x4, the
# first v2; ldk16 16x2, the new one; ldn8 8x8; ldk16n4 16x4), on the token-major layout with Hkv 8
# (a head's row every 2 KiB) and on the same bytes with Hkv 1 (rows contiguous), with SDPA-cuDNN
# on each; ncu kernel time and DRAM throughput.
set -u
source .gpu/prelude.sh
(cd .gpu && tar xJf var.tar.xz)
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED" "$1" | head -${2:-12} | tee -a $R/correct.log; }
for v in v2 v1; do MOEKIT_CUDA_DECODE=$v timeout 90 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/dec.log 2>&1; echo "decode $v rc=$?" | tee -a $R/correct.log; ok $R/dec.log 3; done
for tool in memcheck racecheck; do
  timeout 60 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/san-$tool.log 2>&1
  echo "sanitizer $tool (decode) rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
el after tests
timeout 60 python3 .gpu/torch_peers.py ceilings > $R/peers.jsonl 2> $R/peers.err; echo "ceilings rc=$?" | tee -a $R/correct.log
timeout 90 python3 .gpu/decode_peers.py 8,32,8,8192,128 32,32,8,4096,128 1,32,8,65536,128 16,16,16,4096,64 64,32,8,2048,128 64,4,1,8192,128 256,4,1,4096,128 >> $R/peers.jsonl 2>> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
MOEKIT_BENCH_FLUSH=0 timeout 50 python3 .gpu/decode_peers.py > $R/peers-noflush.jsonl 2>> $R/peers.err; echo "decode peers no flush rc=$?" | tee -a $R/correct.log
grep -h cudnn $R/peers.jsonl | cut -c1-160 | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 50"
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for a in 8,32,8,8192,128,dec1 32,32,8,4096,128,dec1 1,32,8,65536,128,dec1 16,16,16,4096,64,dec1 64,32,8,2048,128,dec1; do
  run "$a" $B --peers $R/peers.jsonl --attn $a --json $R/b-$a.json
  run "$a no-flush" MOEKIT_BENCH_FLUSH=0 $B --peers $R/peers-noflush.jsonl --attn $a --json $R/b-$a-noflush.json
done
el after record
V="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 50"
for a in 8,32,8,8192,128,dec1 64,4,1,8192,128,dec1 32,32,8,4096,128,dec1 256,4,1,4096,128,dec1; do
  [ "${a#64,4}" = "$a" ] && [ "${a#256,4}" = "$a" ] || run "$a" $B --peers $R/peers.jsonl --attn $a --json $R/b-$a.json
  for v in ld ldk16 ldn8 ldk16n4; do run "$a $v" .gpu/var/bin-$v $V --peers $R/peers.jsonl --attn $a --json $R/b-$a-$v.json; done
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el after bench
M="gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,launch__occupancy_limit_shared_mem"
N="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 4 --iters 10"
for a in 8,32,8,8192,128 64,4,1,8192,128; do
  for v in base ld ldk16 ldn8; do
    b=.gpu/var/bin-$v; [ $v = base ] && b=.gpu/bin/bin-moekit-bench
    timeout 40 ncu --clock-control none --metrics $M -k regex:attention_decode --launch-skip 5 --launch-count 3 --csv $b $N --attn $a,dec1 > $R/ncu-$v-$a.csv 2>> $R/ncu.err; echo "ncu $v $a rc=$?" >> $R/correct.log
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
