#!/usr/bin/env bash
# Runs on the GPU machine after `scripts/gpu-pack.sh` (which packs the `moekit` command and the
# model's tests with the CUDA and cubecl-CUDA backends): the model's figures of
# benches/results/h200 runs 10-13. Logs and JSON lines go to $OUT.
#
#   bash scripts/gpu-model.sh check               the model against the reference on both GPU backends
#   bash scripts/gpu-model.sh bench BACKEND...    prefill / decode of `small` and the 4-layer ERNIE cut
#   bash scripts/gpu-model.sh ernie BACKEND       the whole ernie-a3b preset (46 GB of bf16 weights)
#   bash scripts/gpu-model.sh peer                the PyTorch model peer on the same presets
#
# Environment: ITERS (timed runs per figure, default 5).
set -uo pipefail
out=${OUT:-/tmp/moekit-out}
mkdir -p "$out"
[ -d .gpu/bin ] || (cd .gpu && tar xJf bins.tar.xz)
B=.gpu/bin
iters=${ITERS:-5}
export MOEKIT_NO_SKIP=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$out/log.txt"
what=${1:-check}
shift || true
case "$what" in
check)
    timeout 500 $B/test-forward_gpu --test-threads 2 2>&1 | tee -a "$out/log.txt"
    ;;
bench)
    for be in "$@"; do
        timeout 200 $B/bin-moekit run --backend "$be" --dtype bf16 --preset small --tokens 512 --iters 3 2>&1 | tee -a "$out/log.txt"
        timeout 100 $B/bin-moekit generate --backend "$be" --dtype bf16 --preset small 2>&1 | tee -a "$out/log.txt"
        timeout 200 $B/bin-moekit bench --backend "$be" --dtype bf16 --preset small --prefill 1024,4096 \
            --context 0,1024 --iters "$iters" --json "$out/model-$be-small.jsonl" 2>&1 | tee -a "$out/log.txt"
        timeout 240 $B/bin-moekit bench --backend "$be" --dtype bf16 --config benches/configs/ernie-a3b-4l.json \
            --prefill 1024,4096 --context 1024 --iters "$iters" --json "$out/model-$be-ernie4l.jsonl" 2>&1 | tee -a "$out/log.txt"
    done
    ;;
ernie)
    timeout 400 $B/bin-moekit bench --backend "${1:-cuda}" --dtype bf16 --preset ernie-a3b --prefill 1024,4096 \
        --context 1024 --iters 3 --json "$out/model-${1:-cuda}-ernie-a3b.jsonl" 2>&1 | tee -a "$out/log.txt"
    ;;
peer)
    P=benches/peers/moekit_model.py
    timeout 150 python3 $P bench --preset small --graph --tokens 1024,4096 --decode-context 0,1024 --iters 10 >"$out/peer-small.jsonl"
    timeout 200 python3 $P bench --config benches/configs/ernie-a3b-4l.json --graph --tokens 1024,4096 \
        --decode-context 1024 --iters 5 >"$out/peer-ernie4l.jsonl"
    timeout 200 python3 $P bench --preset ernie-a3b --graph --tokens 1024,4096 --decode-context 1024 --iters 5 \
        >"$out/peer-ernie-a3b.jsonl"
    ;;
*)
    echo "gpu-model.sh: unknown step \`$what\` (check, bench, ernie, peer)" >&2
    exit 2
    ;;
esac
