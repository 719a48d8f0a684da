#!/usr/bin/env bash
# Runs every test suite this machine can run, after installing what they need, and says what
# ran and what was skipped. This is the README's test command and what CI (.ci/run) runs.
set -euo pipefail

cd "$(dirname "$0")/.."

# No incremental caches (a clean build gains nothing from them, and they double the disk a
# build takes); say how much disk there is, since a full disk shows up as a linker bus error.
export CARGO_INCREMENTAL=0
# cubecl compiles kernels to SPIR-V on its own device threads, which get Rust's default 2 MiB
# stack; its compiler recurses deeply on the routing kernel and overflows that when several
# tests launch at once (README, "Backends and features"). 16 MiB for every thread.
export RUST_MIN_STACK=${RUST_MIN_STACK:-16777216}
echo "==> disk: $(df -h . | awk 'NR==2 {print $4 " free of " $2}')"

ran=()
skipped=()

step() {
    local name=$1
    shift
    echo
    echo "==> ${name}: $*"
    "$@"
    ran+=("${name}")
}

# --- what the tests need -------------------------------------------------------------------
# The cubecl wgpu suite (issue #4) runs on Mesa's lavapipe (software Vulkan). Installed now so
# that a fresh machine is ready for it; a failure here only matters to that suite.
if ldconfig -p 2>/dev/null | grep -q 'libvulkan_lvp'; then
    echo "==> mesa-vulkan-drivers: already installed"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing mesa-vulkan-drivers (lavapipe, for the cubecl wgpu suite)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers >/dev/null; }; then
        echo "WARNING: could not install mesa-vulkan-drivers; the cubecl wgpu suite would find no Vulkan adapter"
    fi
else
    echo "WARNING: mesa-vulkan-drivers missing and not installable here (needs root and apt-get);"
    echo "         the cubecl wgpu suite would find no Vulkan adapter"
fi

# --- checks and tests ----------------------------------------------------------------------
step "rustfmt" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --all-targets -- -D warnings
# `cargo test` runs the unit, integration and doc tests of every crate: the reference and CPU
# property suites on every op and dtype, and the runnable examples of the docs.
step "tests" cargo test --workspace
# The cubecl backend on wgpu over lavapipe: the whole property suite plus its own tests.
# NOTE: MOEKIT_NO_SKIP turns the suite's "no adapter" skips into failures: CI must run it for real.
step "cubecl-wgpu clippy" cargo clippy -p moekit-cubecl --features cubecl-wgpu --all-targets -- -D warnings
step "cubecl-wgpu suite" env MOEKIT_NO_SKIP=1 cargo test -p moekit-cubecl --features cubecl-wgpu --test suite_wgpu
step "cubecl-wgpu tests" env MOEKIT_NO_SKIP=1 cargo test -p moekit-cubecl --features cubecl-wgpu --lib --test cube_backend --test faults_wgpu
# The model (issue #5) on cubecl-wgpu over lavapipe against the reference path.
step "model on cubecl-wgpu" env MOEKIT_NO_SKIP=1 cargo test -p moekit-model --features cubecl-wgpu --test forward_cubecl
# The cargo-fuzz targets (issue #6): build, replay each committed corpus, fuzz a bounded time.
fuzz_summary=$(mktemp)
step "fuzz" env MOEKIT_NO_SKIP=1 MOEKIT_FUZZ_SUMMARY="$fuzz_summary" bash scripts/fuzz.sh
step "docs" env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet

# --- what did not run here -----------------------------------------------------------------
skipped+=("CUDA suite (moekit-cuda, feature cuda): no GPU on this machine; its tests print SKIPPED above; run it on the GPU machine (README, 'For GPU', scripts/gpu-run.sh)")
skipped+=("cubecl-cuda suite (moekit-cubecl, feature cubecl-cuda): no GPU on this machine; run it on the GPU machine")

echo
echo "==================== summary ===================="
for r in "${ran[@]}"; do
    echo "RAN      ${r}"
done
for s in "${skipped[@]}"; do
    echo "SKIPPED  ${s}"
done
while read -r line; do
    echo "FUZZ     ${line}"
done <"$fuzz_summary"
echo "================================================="
