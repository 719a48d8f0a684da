#!/usr/bin/env bash
# Runs on the GPU machine, from the checkout root, after `scripts/gpu-pack.sh` built `.gpu/`
# here (see README, "For GPU"): the test suites (CUDA, cubecl on CUDA, cubecl on Vulkan),
# compute-sanitizer (memcheck, racecheck) over the CUDA suite, the PyTorch peers and the
# benchmarks of every GPU backend, all in one command. Logs go to $OUT.
#
#   bash scripts/gpu-run.sh [tests|sanitize|bench|bench-cubecl|variants|bundle]...
#   (default: tests sanitize bench bench-cubecl)
#
# `bundle` (last) packs every log under $OUT into one `run.tar.gz` (the device tool brings
# back only a few files per call, and none whose name holds `=`) and the kernel caches into
# `cache.tar.xz` (copy it into .gpu/ for the next run).
#
# Environment: TEST_BINS (a glob, default .gpu/bin/test-*), SUITE_CASES, OTHER_CASES and
# TEST_TIMEOUT (tests), SANITIZE_CASES (proptest
# cases under the sanitizers, default 6), BENCH_SHAPES (shape flags of the benchmark),
# CUBECL_SHAPES and CUBECL_TIMEOUT (the same for the cubecl benchmarks), TEST_THREADS (default
# 4), VARIANTS (the overrides the `variants` step tries, `NAME=value` words) and
# PEERS_ARGS (what torch_peers.py measures, e.g. `moe attention`; default all) and
# VARIANT_FILTER (the suite properties it runs under each; VARIANT_SUITE=0 runs only the
# benchmark lines the override changes).
# With `.gl/` present (the Vulkan loader debs, see GPU.md) the wgpu runtime runs over
# NVIDIA's Vulkan driver.
set -uo pipefail
out=${OUT:-/tmp/moekit-out}
mkdir -p "$out"
steps=${*:-tests sanitize bench bench-cubecl}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
if compgen -G ".gl/*.deb" >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
if [ -f .gpu/bins.tar.xz ] && ! [ -d .gpu/bin ]; then
    (cd .gpu && tar xJf bins.tar.xz)
fi
# Compiled kernels outlive the machine: the CUDA backend's NVRTC cache, the driver's PTX->SASS
# cache and cubecl's PTX cache (through a `cubecl.toml` written here, in the working copy on the
# GPU machine only) live in .gpu/cache; `bundle` brings them back as cache.tar.xz, which
# travels in .gpu/ next time. NOTE: a fresh machine otherwise spends minutes compiling (the
# cubecl suite asks for hundreds of kernel variants).
cache=$PWD/.gpu/cache
mkdir -p "$cache"
[ -f .gpu/cache.tar.xz ] && tar xJf .gpu/cache.tar.xz -C "$cache"
export MOEKIT_CUDA_CACHE=${MOEKIT_CUDA_CACHE:-$cache/moekit-cuda}
export CUDA_CACHE_PATH=${CUDA_CACHE_PATH:-$cache/nv} CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-4294967296}
[ -e cubecl.toml ] || printf '[compilation]\ncache = { file = "%s" }\n' "$cache/cubecl" >cubecl.toml
rc=0
shapes=${BENCH_SHAPES:---shape qwen3-30b-a3b --shape ernie45-21b-a3b}
attn="--attn 4,32,8,4096,128,1"

for step in $steps; do
    case $step in
    tests)
        # Every packed test binary, skips forbidden; the CUDA suite (`test-suite`) at
        # SUITE_CASES proptest cases, the rest at OTHER_CASES (cubecl's suites compile many
        # kernel variants per case).
        for t in ${TEST_BINS:-.gpu/bin/test-*}; do
            n=$(basename "$t")
            cases=${OTHER_CASES:-64}
            [ "$n" = test-suite ] && cases=${SUITE_CASES:-256}
            echo "== $n ($cases cases)"
            MOEKIT_NO_SKIP=1 MOEKIT_PROPTEST_CASES=$cases timeout "${TEST_TIMEOUT:-300}" "$t" --test-threads="${TEST_THREADS:-4}" \
                >"$out/$n.log" 2>&1 || { echo "   FAILED (exit $?)"; rc=1; }
            grep -E "^test result|FAILED|panicked" "$out/$n.log" | head -20
        done
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
        # shellcheck disable=SC2086
        PYTHONUNBUFFERED=1 python3 .gpu/torch_peers.py ${PEERS_ARGS:-} >"$out/peers.jsonl" 2>"$out/peers.err" || rc=1
        tail -2 "$out/peers.err"
        echo "== moekit-bench --backend cuda"
        # shellcheck disable=SC2086
        .gpu/bin/bin-moekit-bench --backend cuda --dtype bf16 $shapes --op all $attn --ceiling --iters 20 \
            --peers "$out/peers.jsonl" --json "$out/bench.json" 2>&1 | tee "$out/bench.txt" || rc=1
        ;;
    bench-cubecl)
        # NOTE: the peers come from the `bench` step of the same command when it ran first.
        peers=()
        [ -s "$out/peers.jsonl" ] && peers=(--peers "$out/peers.jsonl")
        # NOTE: wgpu over Vulkan has f16 but no bf16, so that backend runs in f16.
        for be in cubecl-cuda:bf16 cubecl-wgpu:f16; do
            dt=${be#*:} be=${be%:*}
            echo "== moekit-bench --backend $be --dtype $dt"
            # shellcheck disable=SC2086
            timeout ${CUBECL_TIMEOUT:-300} .gpu/bin/bin-moekit-bench --backend $be --dtype $dt \
                ${CUBECL_SHAPES:-$shapes} --op all $attn --iters 10 "${peers[@]}" --json "$out/bench-$be.json" \
                2>&1 | tee "$out/bench-$be.txt" || rc=1
        done
        ;;
    variants)
        # Opt-in cubecl kernels: the suite's properties named by VARIANT_FILTER and the matching
        # benchmark lines under each override of VARIANTS, so one run shows which to make the
        # default. Files are named after the override with `=` as `-`.
        for v in ${VARIANTS:-MOEKIT_CUBECL_GEMM=cmma3 MOEKIT_CUBECL_ATTN=mma8 MOEKIT_CUBECL_ROUTE_GATE=cmma}; do
            tag=${v//=/-}
            if [ "${VARIANT_SUITE:-1}" = 1 ]; then
                echo "== $v: suite (${VARIANT_FILTER:=gemm attention moe_layer})"
                # shellcheck disable=SC2086
                env "$v" MOEKIT_NO_SKIP=1 MOEKIT_PROPTEST_CASES=${OTHER_CASES:-64} timeout "${TEST_TIMEOUT:-300}" \
                    .gpu/bin/test-suite_cuda --test-threads="${TEST_THREADS:-4}" $VARIANT_FILTER >"$out/variant-$tag.log" 2>&1 \
                    || { echo "   FAILED (exit $?)"; rc=1; }
                grep -E "^test result|FAILED|panicked" "$out/variant-$tag.log" | head -10
            fi
            # The benchmark lines the override can change (each checked against the reference).
            case $v in
            *_GEMM=*) ops="--op grouped_gemm_up --op grouped_gemm_down --op gemm --op moe_layer" ;;
            *_ATTN=*) ops="--op attention" ;;
            *_ROUTE*) ops="--op route --op moe_layer" ;;
            *) ops="--op grouped_gemm_up --op grouped_gemm_down --op gemm --op attention --op route --op moe_layer" ;;
            esac
            echo "== $v: bench"
            # shellcheck disable=SC2086
            env "$v" timeout "${CUBECL_TIMEOUT:-300}" .gpu/bin/bin-moekit-bench --backend cubecl-cuda --dtype bf16 \
                ${CUBECL_SHAPES:-$shapes} $ops $attn --iters 10 --json "$out/bench-variant-$tag.json" 2>&1 \
                | tee "$out/bench-variant-$tag.txt" || rc=1
        done
        ;;
    bundle)
        (cd "$out" && tar czf run.tar.gz --exclude run.tar.gz ./* && find . -type f ! -name run.tar.gz -delete)
        tar cJf "$out/cache.tar.xz" -C "$cache" .
        ls -la "$out"
        ;;
    *) echo "unknown step $step" ;;
    esac
done
exit $rc
