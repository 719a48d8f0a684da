#!/usr/bin/env bash
# Device call E (session 23, run 31): K/V stages of the warp-specialised attention at D 64 (2, the
# committed kernel; 3 and 4: `WS_D64_STAGES`, variant binaries built here with the host's
# `SM90WS_D64_STAGES` to match), interleaved, 2 rounds, with SDPA from the same command; the
# attention property suite on the variants if time is left.
set -u
source .gpu/prelude.sh
(cd .gpu && tar xJf var.tar.xz)
S="4,16,16,4096,64,1 2,16,16,8192,64,0"
timeout 60 python3 .gpu/prefill_peers.py $S > $R/peers.jsonl 2> $R/peers.err; echo "prefill peers rc=$?" | tee -a $R/correct.log
el after peers
B="--backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 8 --iters 20"
for v in ws3 ws4; do timeout 150 .gpu/var/bin-$v --backend cuda --dtype bf16 --op attention --shape qwen3-30b-a3b --samples 1 --iters 2 --attn 4,16,16,4096,64,1 > $R/warm-$v.log 2>&1; echo "warm-up $v rc=$?" | tee -a $R/correct.log; done
el after warm-up
run() { local label=$1; shift; [ $(( $(date +%s) - t0 )) -lt 290 ] || { echo "skipped $label (time)" >> $R/correct.log; return; }; echo "== $label" >> $R/bench.txt; timeout 40 env "$@" >> $R/bench.txt 2>&1; echo "bench $label rc=$?" >> $R/correct.log; }
for r in 1 2; do for a in $S 4,16,16,4096,64,image 4,16,16,4096,64,docs-varlen; do for v in base ws3 ws4; do
  b=.gpu/var/bin-$v; [ $v = base ] && b=.gpu/bin/bin-moekit-bench
  run "$a $v r$r" $b $B --peers $R/peers.jsonl --attn $a --json $R/b-$a-$v-r$r.json
done; done; done
grep -hE "^==|^attention" $R/bench.txt | tee -a $R/correct.log
(cd $R && tar czf json.tar.gz b-*.json && rm -f b-*.json)
el after bench
for v in ws4 ws3; do
  left=$(( 400 - ($(date +%s) - t0) )); [ $left -gt 40 ] || break
  MOEKIT_PROPTEST_CASES=16 timeout $left .gpu/var/test-suite-$v cuda::attention --test-threads 4 > $R/suite-$v.log 2>&1; echo "suite attention $v rc=$? (limit ${left}s)" | tee -a $R/correct.log; grep -hE "test result|panicked" $R/suite-$v.log | tee -a $R/correct.log
done
el end
# Variants (built here by /tmp/buildws.sh NAME STAGES: `#define WS_D64_STAGES STAGES` in
# attention_sm90_ws.cu and `SM90WS_D64_STAGES = STAGES` in src/ops/attention.rs; the test-suite
# binaries the same way with `cargo test --no-run --test suite`): ws3 3, ws4 4.
