#line 1 "wgmma.cuh"
// Hopper (sm_90a) helpers shared by the grouped GEMM (grouped_gemm_sm90*.cu) and the fused
// routing kernel (route_sm90.cu): cp.async copies, wgmma fences and groups, the 128-byte-swizzle
// shared-memory descriptor and the m64n128k16 instruction `gw_mma<T, TB>`. The layouts and
// descriptors they serve are derived in grouped_gemm_sm90.cu's header. Concatenated into each
// module that uses them (src/runtime/sources.rs); compiles to nothing elsewhere.

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// 16 bytes global -> shared, bypassing L1; zero-filled (nothing read) when !ok.
__device__ __forceinline__ void gw_cp16(u32 dst, const void* src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void gw_cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void gw_cp_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
__device__ __forceinline__ void gw_fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ void gw_mma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void gw_mma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void gw_mma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// Keeps the compiler from moving accumulator reads or writes across this point (the wgmma
// results land asynchronously, behind the compiler's back).
__device__ __forceinline__ void gw_fence_acc(float* d) {
#pragma unroll
    for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Shared-memory matrix descriptor, 128-byte swizzle (see the header).
__device__ __forceinline__ unsigned long long gw_desc(u32 addr, u32 lbo, u32 sbo) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | ((unsigned long long)((lbo & 0x3FFFF) >> 4) << 16) |
           ((unsigned long long)((sbo & 0x3FFFF) >> 4) << 32) | (1ull << 62);
}

#define GW_D64                                                                                                    \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),   \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),    \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),   \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),   \
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),   \
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),   \
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),   \
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

#define GW_REGS64                                                                                                  \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "  \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "     \
    "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// d [64] += A (64 × 16, descriptor da) · B (16 × 128, descriptor db); TB: imm-trans-b.
#define GW_WGMMA(TY, TB)                                                                                  \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                           \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " GW_REGS64                 \
                 ", %64, %65, p, 1, 1, 0, " #TB ";\n}\n"                                                 \
                 : GW_D64                                                                                \
                 : "l"(da), "l"(db), "r"(1))

// FN<T, TB>(d, da, db) for both input types and both B layouts, each one instruction of MACRO.
#define GW_MMA_FAMILY(FN, MACRO)                                                                          \
    template <typename T, int TB>                                                                         \
    __device__ __forceinline__ void FN(float* d, unsigned long long da, unsigned long long db);           \
    template <> __device__ __forceinline__ void FN<bf16, 0>(float* d, unsigned long long da,             \
                                                            unsigned long long db) {                     \
        MACRO("bf16", 0);                                                                                 \
    }                                                                                                     \
    template <> __device__ __forceinline__ void FN<bf16, 1>(float* d, unsigned long long da,             \
                                                            unsigned long long db) {                     \
        MACRO("bf16", 1);                                                                                 \
    }                                                                                                     \
    template <> __device__ __forceinline__ void FN<f16, 0>(float* d, unsigned long long da,              \
                                                           unsigned long long db) {                      \
        MACRO("f16", 0);                                                                                  \
    }                                                                                                     \
    template <> __device__ __forceinline__ void FN<f16, 1>(float* d, unsigned long long da,              \
                                                           unsigned long long db) {                      \
        MACRO("f16", 1);                                                                                  \
    }
GW_MMA_FAMILY(gw_mma, GW_WGMMA)

#endif  // __CUDA_ARCH_FEAT_SM90_ALL
