#!/usr/bin/env bash
# Device call D (session 17, run 27): the table of record for the FlashMask work. The four peer
# shapes of torch_peers.py with the peers (SDPA flash / cuDNN), then the mask patterns against
# causal at the same S (the rate counts allowed pairs): causal as ranges, packed documents, the
# same documents as varlen causal sequences (the plain problem with the same pairs), the 4-scale
# image; kernel-only times (ncu) for the documents pair.
set -u
source .gpu/prelude.sh
timeout 120 .gpu/bin/test-cuda_backend attention --test-threads 1 > $R/long-ws.log 2>&1; echo "long ws rc=$?" | tee -a $R/correct.log
grep -hE "test result|panicked|FAILED" $R/long-ws.log | head -5 | tee -a $R/correct.log
timeout 90 python3 .gpu/torch_peers.py attention > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --iters 20 --samples 8 --peers $R/peers.jsonl"
for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1 2,32,8,8192,128,0; do
  timeout 60 $B --attn $a --json $R/b-$a.json >> $R/bench.txt 2>&1; echo "bench $a rc=$?" | tee -a $R/correct.log
done
for base in 4,32,8,4096,128 1,32,8,16384,128 4,16,16,4096,64; do
  for m in ranges docs docs-varlen image; do
    timeout 60 $B --attn $base,$m --json $R/b-$base,$m.json >> $R/bench.txt 2>&1; echo "bench $base,$m rc=$?" | tee -a $R/correct.log
  done
done
grep -h "^attention" $R/bench.txt | tee -a $R/correct.log
el after bench
for base in 4,32,8,4096,128 4,16,16,4096,64; do
  for m in 1 docs docs-varlen; do
    timeout 60 ncu --kernel-name regex:attention_sm90ws -c 3 --metrics gpu__time_duration.sum .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --attn $base,$m --iters 2 --warmup 1 --samples 1 > $R/ncu-tmp.txt 2>&1
    echo "ncu $base,$m rc=$? $(grep gpu__time_duration $R/ncu-tmp.txt | awk '{print $NF}' | tr '\n' ' ')" | tee -a $R/correct.log
    cat $R/ncu-tmp.txt >> $R/ncu.txt
  done
done
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json ncu-tmp.txt)
el end
