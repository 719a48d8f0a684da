#!/usr/bin/env bash
# Builds every cargo-fuzz target of fuzz/ once, then for each target replays its committed
# corpus (fuzz/corpus/<target>) and fuzzes for a bounded time, printing one line per target:
# execs, execs/s, corpus size, result. Exits non-zero on any crash, naming the artifact.
#
# Environment:
#   MOEKIT_FUZZ_SECONDS         seconds of fuzzing per target (default 45)
#   MOEKIT_FUZZ_CUBECL_SECONDS  seconds for cubecl_wgpu (default: the above, at least 60; its
#                               first seconds go to compiling kernels)
#   MOEKIT_FUZZ_TARGETS         space-separated subset of targets (default: all)
#   MOEKIT_NO_SKIP=1            a missing Vulkan/wgpu adapter fails cubecl_wgpu instead of
#                               skipping it
#
# Stable toolchain: every cargo fuzz call passes `-s none` (no sanitizer; AddressSanitizer
# needs nightly). New corpus entries go to a temporary folder, so the committed corpus is
# only read.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"

secs=${MOEKIT_FUZZ_SECONDS:-45}
cubecl_secs=${MOEKIT_FUZZ_CUBECL_SECONDS:-$((secs > 60 ? secs : 60))}
all_targets=(route permute grouped_gemm attention glue moe_layer tensor cubecl_wgpu)
read -r -a targets <<<"${MOEKIT_FUZZ_TARGETS:-${all_targets[*]}}"

# --- cargo-fuzz ----------------------------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked || cargo install cargo-fuzz
fi
echo "==> $(cargo fuzz --version)"

# --- build once ----------------------------------------------------------------------------
t0=$(date +%s)
cargo fuzz build -s none
echo "==> fuzz targets built in $(($(date +%s) - t0)) s"

# --- replay the corpus and fuzz, per target ------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
    s=$secs
    [ "$t" = cubecl_wgpu ] && s=$cubecl_secs
    mkdir -p "$work/$t" "corpus/$t"
    log="$work/$t.log"
    echo
    echo "==> fuzz $t: corpus/$t ($(find "corpus/$t" -type f | wc -l) inputs), ${s} s"
    rc=0
    # NOTE: the first corpus folder receives new inputs; the committed one is only read.
    cargo fuzz run -s none "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$s" -print_final_stats=1 -timeout=120 -rss_limit_mb=4096 \
        >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [ -z "$execs" ]; then
        # No final stats (a crash): the last "Done N runs" or status line says how far it got.
        execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p; s/^#\([0-9]*\).*exec\/s.*/\1/p' "$log" | tail -1)
    fi
    corpus=$(($(find "corpus/$t" -type f | wc -l) + $(find "$work/$t" -type f | wc -l)))
    if [ "$rc" -ne 0 ]; then
        result="CRASH"
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        grep -m1 -B2 -A25 -E "panicked|ERROR: libFuzzer|deadly signal" "$log" || tail -40 "$log"
        echo "artifact: ${artifact:-none written}"
        echo "replay:   cd fuzz && cargo fuzz run -s none $t ${artifact:-<artifact>}"
        failed+=("$t")
    elif grep -q "^SKIPPED" "$log"; then
        result="SKIPPED ($(grep -m1 '^SKIPPED' "$log" | cut -d: -f3- | sed 's/^ *//'))"
    else
        result="ok"
    fi
    line=$(printf '%-14s execs %-10s execs/s %-8s corpus %-6s %s' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$result")
    echo "$line"
    summary+=("$line")
done

echo
echo "==================== fuzz summary ===================="
printf '%s\n' "${summary[@]}"
echo "======================================================"
# NOTE: the test command repeats these lines in its own summary, at the end of CI's log.
if [ -n "${MOEKIT_FUZZ_SUMMARY:-}" ]; then
    printf '%s\n' "${summary[@]}" >"$MOEKIT_FUZZ_SUMMARY"
fi
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]} (artifacts under fuzz/artifacts/)"
    exit 1
fi
