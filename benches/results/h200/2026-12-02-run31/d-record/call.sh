#!/usr/bin/env bash
# Device call D (session 23, run 31): the record of every issue #8 target on the final commit of
# the session (f3dab3d; the binaries of call C): prefill (causal / non-causal, D 64 / 128 / 256),
# the FlashMask masks against their plain problems, and decode, with the PyTorch peers from the
# same command.
set -u
source .gpu/prelude.sh
timeout 90 python3 .gpu/torch_peers.py attention ceilings > $R/peers.jsonl 2> $R/peers.err; echo "peers rc=$?" | tee -a $R/correct.log
timeout 60 python3 .gpu/decode_peers.py 8,32,8,8192,128 32,32,8,4096,128 1,32,8,65536,128 16,16,16,4096,64 64,32,8,2048,128 48,32,8,2048,128 >> $R/peers.jsonl 2>> $R/peers.err; echo "decode peers rc=$?" | tee -a $R/correct.log
timeout 60 python3 .gpu/prefill_peers.py >> $R/peers.jsonl 2>> $R/peers.err; echo "prefill peers rc=$?" | tee -a $R/correct.log
grep -h '"copy"' $R/peers.jsonl | tee -a $R/correct.log
el after peers
B=".gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8"
run() { local label=$1; shift; [ $(( $(date +%s) - t0 )) -lt 480 ] || { echo "skipped $label (time)" >> $R/correct.log; return; }; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for a in 4,32,8,4096,128,1 1,32,8,16384,128,1 4,16,16,4096,64,1 2,32,8,8192,128,0 2,16,16,8192,64,0 4,32,8,4096,256,1 2,32,8,8192,256,0 1,32,8,16384,256,1; do
  run "$a" $B --peers $R/peers.jsonl --iters 20 --attn $a --json $R/b-$a.json
done
for base in 4,32,8,4096,128 4,16,16,4096,64; do
  for m in ranges docs docs-varlen image; do run "$base,$m" $B --iters 20 --attn $base,$m --json $R/b-$base,$m.json; done
done
for a in 8,32,8,8192,128,dec1 32,32,8,4096,128,dec1 1,32,8,65536,128,dec1 16,16,16,4096,64,dec1 64,32,8,2048,128,dec1 48,32,8,2048,128,dec1; do
  run "$a" $B --peers $R/peers.jsonl --iters 50 --attn $a --json $R/b-$a.json
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el end
