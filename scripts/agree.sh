#!/usr/bin/env bash
# Many random valid problems per op, on the CPU backend and on cubecl-wgpu, each checked
# against the reference (integers exactly, floats within moekit_ops::tolerance): the
# "agree across reference, CPU and cubecl-wgpu" run of issue #6. Long: not part of CI.
#
#   bash scripts/agree.sh [CASES] [OUT.json]      # default 10000 cases per op, f32
#
# It runs one `*_matches_reference` property per op (the same bodies as the CI suites) with
# MOEKIT_PROPTEST_CASES=CASES, so every case is a fresh random valid problem with fresh random
# data; a failing case fails the property and prints the shrunk problem. Needs lavapipe
# (mesa-vulkan-drivers) for cubecl-wgpu; set CARGO_TARGET_DIR as you like.
set -euo pipefail
cd "$(dirname "$0")/.."

cases=${1:-10000}
out=${2:-agree.json}
dtype=${MOEKIT_AGREE_DTYPE:-f32}
ops=(route update_bias permute unpermute_combine grouped_gemm attention rms_norm rotary swiglu
    embedding gemm copy_rows reshape moe_layer)

bin_of() { # crate, test, features...
    cargo test -p "$1" --test "$2" "${@:3}" --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])' | tail -1
}

echo "==> building the CPU and cubecl-wgpu suites"
cargo test -p moekit-testing --test cpu --no-run
cargo test -p moekit-cubecl --features cubecl-wgpu --test suite_wgpu --no-run
cpu_bin=$(bin_of moekit-testing cpu)
wgpu_bin=$(bin_of moekit-cubecl suite_wgpu --features cubecl-wgpu)

rows=()
fail=0
for backend in cpu wgpu; do
    bin=$cpu_bin
    [ "$backend" = wgpu ] && bin=$wgpu_bin
    for op in "${ops[@]}"; do
        name="${backend}::${op}::${dtype}"
        # update_bias has no dtype: it runs once, as f32.
        [ "$op" = update_bias ] && name="${backend}::${op}::f32"
        start=$(date +%s.%N)
        if MOEKIT_NO_SKIP=1 MOEKIT_PROPTEST_CASES=$cases "$bin" --exact "$name" --test-threads 1 >"/tmp/agree-${backend}-${op}.log" 2>&1; then
            status=pass
        else
            status=FAIL
            fail=1
            tail -30 "/tmp/agree-${backend}-${op}.log"
        fi
        secs=$(python3 -c "import time; print(round(time.time() - $start, 1))")
        printf '%-6s %-20s %6s cases  %8ss  %s\n' "$backend" "$op" "$cases" "$secs" "$status"
        rows+=("{\"backend\": \"${backend}\", \"op\": \"${op}\", \"dtype\": \"${dtype}\", \"cases\": ${cases}, \"seconds\": ${secs}, \"result\": \"${status}\"}")
    done
done

{
    echo "{\"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"commit\": \"$(git rev-parse --short HEAD)\", \"runs\": ["
    (IFS=,; echo "${rows[*]}" | sed 's/},{/},\n{/g')
    echo "]}"
} >"$out"
echo "wrote $out"
exit $fail
