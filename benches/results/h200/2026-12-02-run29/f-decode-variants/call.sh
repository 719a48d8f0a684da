#!/usr/bin/env bash
# Device call F (session 21, run 29): decode kernel variants, interleaved with the committed one,
# 2 rounds, with the cache-clearing write: L2 prefetch hints on the K/V cp.async (pf128, pf256),
# 3 and 6 stages a warp (s3, s6; 4 committed).
set -u
source .gpu/prelude.sh
(cd .gpu && tar xJf var.tar.xz)
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 50"
run() { local label=$1; shift; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for round in 1 2; do
  for a in 8,32,8,8192,128,dec1 32,32,8,4096,128,dec1 1,32,8,65536,128,dec1 16,16,16,4096,64,dec1; do
    run "$a base r$round" .gpu/bin/bin-moekit-bench $B --attn $a --json $R/b-$a-base-r$round.json
    for v in pf128 pf256 s3 s6; do run "$a $v r$round" .gpu/var/bin-$v $B --attn $a --json $R/b-$a-$v-r$round.json; done
  done
done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el end
