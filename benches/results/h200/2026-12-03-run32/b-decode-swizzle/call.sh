#!/usr/bin/env bash
# Device call B (session 24, run 32): v2 decode with swizzled, unpadded K/V stages (dec2_chunk:
# each warp-wide cp.async fills whole 128-byte lines; call A's ncu counted 1.5x the L2 sectors with
# the padded rows). Tests: the decode test on the default and on v2s2, v2 / v3 against v1,
# memcheck and racecheck on the decode test; bench: the decode shapes with the read flush, new
# against the padded kernel of call A (bin-old), 2 rounds interleaved, and the record (write and
# read flush) with the SDPA peers of the same command; ncu of both on B8, B32 and D64 (sectors
# from L2, DRAM throughput); the CUDA graph test with the time left.
set -u
source .gpu/prelude.sh
(cd .gpu && tar xJf old.tar.xz)
ok() { grep -hE "^test |test result|panicked|FAILED|SKIPPED|error" "$1" | head -${2:-12} | tee -a $R/correct.log; }
for v in "" v2s2; do MOEKIT_CUDA_DECODE=$v timeout 80 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/dec-$v.log 2>&1; echo "decode '$v' rc=$?" | tee -a $R/correct.log; ok $R/dec-$v.log 3; done
timeout 60 .gpu/bin/test-moekit_cuda v2_gives --test-threads 1 > $R/v2v1.log 2>&1; echo "v2 s3, s2, v3 against v1 rc=$?" | tee -a $R/correct.log; ok $R/v2v1.log 3
for tool in memcheck racecheck; do
  timeout 80 compute-sanitizer --tool $tool --print-limit 5 .gpu/bin/test-cuda_backend attention_decode --test-threads 1 > $R/san-$tool.log 2>&1
  echo "sanitizer $tool (decode) rc=$?" | tee -a $R/correct.log; grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|test result" $R/san-$tool.log | tee -a $R/correct.log
done
el after tests
S="8,32,8,8192,128 32,32,8,4096,128 1,32,8,65536,128 16,16,16,4096,64 64,32,8,2048,128 48,32,8,2048,128"
timeout 60 python3 .gpu/torch_peers.py ceilings > $R/peers.jsonl 2> $R/peers.err; echo "ceilings rc=$?" | tee -a $R/correct.log
cp $R/peers.jsonl $R/peers-read.jsonl
timeout 70 python3 .gpu/decode_peers.py $S >> $R/peers.jsonl 2>> $R/peers.err; echo "decode peers (write) rc=$?" | tee -a $R/correct.log
MOEKIT_BENCH_FLUSH_READ=1 timeout 70 python3 .gpu/decode_peers.py $S >> $R/peers-read.jsonl 2>> $R/peers.err; echo "decode peers (read) rc=$?" | tee -a $R/correct.log
grep -h '"copy"\|cudnn' $R/peers.jsonl $R/peers-read.jsonl | cut -c1-160 | tee -a $R/correct.log
el after peers
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 50"
run() { local label=$1; shift; [ $(( $(date +%s) - t0 )) -lt 330 ] || { echo "skipped $label (time)" >> $R/correct.log; return; }; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for a in $S; do
  run "$a write" .gpu/bin/bin-moekit-bench $B --peers $R/peers.jsonl --attn $a,dec1 --json $R/b-$a-write.json
  run "$a read" MOEKIT_BENCH_FLUSH_READ=1 .gpu/bin/bin-moekit-bench $B --peers $R/peers-read.jsonl --attn $a,dec1 --json $R/b-$a-read.json
  run "$a read old" MOEKIT_BENCH_FLUSH_READ=1 .gpu/bin-old $B --peers $R/peers-read.jsonl --attn $a,dec1 --json $R/b-$a-read-old.json
done
for a in $S; do
  run "$a read r2" MOEKIT_BENCH_FLUSH_READ=1 .gpu/bin/bin-moekit-bench $B --peers $R/peers-read.jsonl --attn $a,dec1 --json $R/b-$a-read-r2.json
  run "$a read old r2" MOEKIT_BENCH_FLUSH_READ=1 .gpu/bin-old $B --peers $R/peers-read.jsonl --attn $a,dec1 --json $R/b-$a-read-old-r2.json
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el after bench
M="gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,l1tex__m_xbar2l1tex_read_sectors_mem_lg_op_ld.sum,lts__t_sector_hit_rate.pct,launch__grid_size,launch__registers_per_thread,launch__occupancy_limit_shared_mem"
N="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 2 --iters 4"
for a in 8,32,8,8192,128 32,32,8,4096,128 16,16,16,4096,64; do for w in new old; do
  [ $(( $(date +%s) - t0 )) -lt 450 ] || break 2
  b=.gpu/bin/bin-moekit-bench; [ $w = old ] && b=.gpu/bin-old
  timeout 30 ncu --clock-control none --metrics $M -k regex:attention_decode --launch-skip 3 --launch-count 3 --csv $b $N --attn $a,dec1 > $R/ncu-$w-$a.csv 2>> $R/ncu.err; echo "ncu $w $a rc=$?" >> $R/correct.log
  ncu_sum $R/ncu-$w-$a.csv | tee -a $R/correct.log
done; done
(cd $R && tar czf ncu.tar.gz ncu-*.csv && rm -f ncu-*.csv)
el after ncu
left=$(( 570 - ($(date +%s) - t0) ))
[ $left -gt 30 ] && { timeout $left .gpu/bin/test-cuda_graph --test-threads 1 > $R/graph.log 2>&1; echo "graph rc=$? (limit ${left}s)" | tee -a $R/correct.log; ok $R/graph.log 8; }
el end
