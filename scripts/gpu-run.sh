#!/usr/bin/env bash
# Runs on the GPU machine, from the checkout root, after `../shared/gpu/pack` built `.gpu/`
# here (see README, "For GPU"): the CUDA test suite, compute-sanitizer (memcheck, racecheck)
# over it, the PyTorch peers and the CUDA benchmark, all in one command. Logs go to $OUT.
#
#   bash scripts/gpu-run.sh [tests|sanitize|bench]...   (default: all three)
set -uo pipefail
out=${OUT:-/tmp/moekit-out}
mkdir -p "$out"
export MOEKIT_CUDA_CACHE=${MOEKIT_CUDA_CACHE:-/tmp/moekit-cuda-cache}
steps=${*:-tests sanitize bench}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
rc=0

for step in $steps; do
    case $step in
    tests)
        echo "== tests"
        (cd .gpu && OUT="$out" bash run-all) || rc=1
        ;;
    sanitize)
        # NOTE: few proptest cases: the sanitizers slow kernels down by 10-100x.
        for tool in memcheck racecheck; do
            echo "== compute-sanitizer $tool"
            MOEKIT_PROPTEST_CASES=${SANITIZE_CASES:-6} compute-sanitizer --tool "$tool" --error-exitcode 9 \
                .gpu/bin/test-suite --test-threads=1 >"$out/sanitizer-$tool.log" 2>&1 || rc=1
            grep -E "ERROR SUMMARY|RACECHECK SUMMARY|test result" "$out/sanitizer-$tool.log" | tail -3
        done
        ;;
    bench)
        echo "== PyTorch peers"
        PYTHONUNBUFFERED=1 python3 .gpu/torch_peers.py >"$out/peers.jsonl" 2>"$out/peers.err" || rc=1
        tail -2 "$out/peers.err"
        echo "== moekit-bench --backend cuda"
        .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 ${BENCH_SHAPES:---shape qwen3-30b-a3b --shape ernie45-21b-a3b} \
            --op all --attn 4,32,8,4096,128,1 --ceiling --iters 20 --peers "$out/peers.jsonl" \
            --json "$out/bench.json" 2>&1 | tee "$out/bench.txt" || rc=1
        ;;
    *) echo "unknown step $step" ;;
    esac
done
exit $rc
