#line 1 "hopper.cuh"
// Hopper (sm_90a) building blocks shared by the warp-specialised kernels: mbarriers, TMA copies of
// tiled tensor maps, register reallocation and named barriers. Included in a module's source
// (src/runtime/sources.rs) before the files that use it; compiles to nothing elsewhere.
//
// mbarrier phases: a barrier initialised with count N completes a phase when N arrivals (and, for
// a barrier given an expected transaction count, that many bytes) have come in. A waiter of round
// r waits for parity r & 1; a producer refilling a stage in round r waits for the consumers'
// release of round r - 1, i.e. parity (r & 1) ^ 1 (round 0 passes at once: the phase "before
// phase 0" counts as complete).

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ void hp_bar_init(u32 bar, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
// Makes the barrier initialisations of this thread visible to the async proxy (TMA) as well.
__device__ __forceinline__ void hp_bar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
__device__ __forceinline__ void hp_bar_arrive(u32 bar) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}" ::"r"(bar) : "memory");
}
// Arrives on the barrier and raises its expected transaction count by `bytes`.
__device__ __forceinline__ void hp_bar_arrive_tx(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
// Spins until the phase of parity `parity` of the barrier has completed (acquire, cta).
__device__ __forceinline__ void hp_bar_wait(u32 bar, u32 parity) {
    u32 done;
    do {
        asm volatile(
            "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
            : "=r"(done)
            : "r"(bar), "r"(parity)
            : "memory");
    } while (!done);
}

// The driver's CUtensorMap: 128 opaque bytes, 64-byte aligned (src/ops/grouped_gemm_tma.rs `TensorMap`),
// passed by value as a `const __grid_constant__` kernel parameter.
struct alignas(64) HpTmap {
    unsigned long long opaque[16];
};
// One box of the 4-D tensor map at coordinates (c0, c1, c2, c3) (innermost first) to shared
// `dst`, completing its bytes on barrier `bar`. Elements outside the tensor are zero-filled and
// counted.
__device__ __forceinline__ void hp_tma4(u32 dst, const HpTmap* map, int c0, int c1, int c2, int c3, u32 bar) {
    asm volatile(
        "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, "
        "%5}], [%6];" ::"r"(dst),
        "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
        : "memory");
}
__device__ __forceinline__ void hp_tma_prefetch(const HpTmap* map) {
    asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<unsigned long long>(map)) : "memory");
}

template <int N> __device__ __forceinline__ void hp_setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(N));
}
template <int N> __device__ __forceinline__ void hp_setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(N));
}

// Named barriers (id 0 is __syncthreads): `threads` (a multiple of 32) must come in, by sync
// (waits) or arrive (does not).
__device__ __forceinline__ void hp_named_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void hp_named_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// Orders this thread's generic-proxy shared-memory writes before later async-proxy (wgmma, TMA)
// accesses.
__device__ __forceinline__ void hp_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// `v` as the whole warp sees lane 0's: lets ptxas prove a role branch warp-uniform.
__device__ __forceinline__ int hp_uniform(int v) { return __shfl_sync(0xffffffffu, v, 0); }

#endif  // __CUDA_ARCH_FEAT_SM90_ALL
