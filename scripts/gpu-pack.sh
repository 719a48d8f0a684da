#!/usr/bin/env bash
# Builds here (no GPU, no CUDA toolkit needed) everything `scripts/gpu-run.sh` runs on the GPU
# machine, and lays it in `.gpu/` (git-ignored) small enough to travel (64 MiB at most):
#   - the release test binaries of moekit-cuda and moekit-cubecl (CUDA and wgpu runtimes) and
#     the benchmark binary with every GPU backend, through the project's `../shared/gpu/pack`;
#   - compressed into `.gpu/bins.tar.xz` (the binaries are ~120 MB, ~30 MB compressed);
#     gpu-run.sh unpacks it;
#   - `torch_peers.py` (the PyTorch peers) from ../shared/peers;
#   - with GL=1, the Vulkan loader packages in `.gl/` for the wgpu runtime over NVIDIA's driver.
#
#   - among the test binaries, the fault tests `test-faults` (CUDA) and `test-faults_cuda`
#     (cubecl on CUDA) that `scripts/gpu-faults.sh` runs with the sanitizers' suites;
#
#   bash scripts/gpu-pack.sh            then send `.gpu` (and `.gl`) and run `bash scripts/gpu-run.sh`
#                                       (or `bash scripts/gpu-faults.sh`)
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
../shared/gpu/pack -p moekit-cuda -p moekit-cubecl -p moekit-bench -p moekit-cli -p moekit-model --features \
    moekit-cuda/cuda,moekit-cubecl/cubecl-cuda,moekit-cubecl/cubecl-wgpu,moekit-bench/cuda,moekit-bench/cubecl-cuda,moekit-bench/cubecl-wgpu,moekit-cli/cuda,moekit-cli/cubecl-cuda,moekit-model/cuda,moekit-model/cubecl-cuda \
    || true # NOTE: pack warns (and exits non-zero) when .gpu is over the limit; we compress below.
[ -x .gpu/bin/bin-moekit-bench ] || { echo "gpu-pack: the build failed (see above)" >&2; exit 1; }
# NOTE: pack names a test binary after its target (`tests/faults.rs` -> test-faults) and keeps
# the first of equal names, so the fault tests' names must stay unique in the workspace.
for t in test-faults test-faults_cuda test-suite test-suite_cuda; do
    [ -x ".gpu/bin/$t" ] || { echo "gpu-pack: .gpu/bin/$t is missing (gpu-faults.sh needs it)" >&2; exit 1; }
done
# The benchmark crate's own tests (CLI, dump, peers parsing) need no GPU, and the NVRTC compile
# check of every source runs here too (cuda-local notes): CI and this machine run them.
rm -f .gpu/bin/test-kernels_compile .gpu/bin/test-cases .gpu/bin/test-cli .gpu/bin/test-copy_ceiling .gpu/bin/test-dump \
    .gpu/bin/test-moekit-bench .gpu/bin/test-moekit_bench .gpu/bin/test-peer_match
(cd .gpu && tar cJf bins.tar.xz bin && rm -rf bin)
cp ../shared/peers/torch_peers.py .gpu/
if [ "${GL:-0}" = 1 ]; then
    grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo '/.gl/' >>.git/info/exclude
    l=$(mktemp -d)
    mkdir -p .gl "$l/partial"
    o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$l"
    # shellcheck disable=SC2086
    apt-get $o update >/dev/null
    # shellcheck disable=SC2086
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
du -sh .gpu
