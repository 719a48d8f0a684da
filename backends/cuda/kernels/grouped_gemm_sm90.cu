#line 1 "grouped_gemm_sm90.cu"
// grouped_gemm on Hopper (sm_90a only): `grouped_gemm_wgmma_{kn,nk}_<dtype>`, f16 / bf16.
// Appended to grouped_gemm.cu in one module (see src/runtime/sources.rs): it reuses the plan,
// gg_find_expert, gg_src_row, the epilogue helpers (gg_out_row, gg_store2_swiglu,
// gg_store2_scaled) and the zero kernel, and replaces only step 2.
//
// Block tile BM × BN × BK = 128 × 256 × 64, 256 threads = 2 warpgroups; warpgroup g computes
// rows 64g..64g+64 of the tile with two wgmma.mma_async.m64n128k16 per k16 step (virtual columns
// 0..128 into acc[0], 128..256 into acc[1]), f32 accumulators in registers (2 × 64 per thread).
// SwiGLU: virtual v < 128 is gate column j0 + v, v >= 128 up column I + j0 + v - 128
// (j0 = 128·nt), so acc[0] and acc[1] pair element by element; plain: v is column 256·nt + v.
//
// Operands: every thread copies 16-byte chunks from global to shared memory with cp.async
// (zero-filled past the rows, K and N: src-size 0), 4 stages of A 128×64 (16 KiB) + B 64×256
// (32 KiB); the copy for k-tile kt+2 is issued while the tensor cores work on kt and kt-1.
// No tensor maps: the grouped layout, the gather and the SwiGLU column pairing stay plain
// address arithmetic.
//
// Shared layouts (byte offsets; every stage base is 1024-aligned). The 128-byte swizzle of the
// PTX ISA ("Shared Memory Matrix Layout", Swizzle<3,4,3> on byte addresses) XORs address bits
// 4..6 (the 16-byte chunk within a 128-byte row) with bits 7..9 (the row within a 1024-byte
// group of 8 rows):
// - A, K-major: row r (0..128), chunk c (k 8c..8c+8): r·128 + ((c ^ r%8) · 16).
//   Descriptor: start = tile + 64g·128 (+32 bytes per k16 step inside the 128-byte row),
//   LBO unused for swizzled K-major (encoded 1), SBO = 1024 (from one 8-row group to the next).
// - B from [E,N,K] weights, K-major like A: virtual column v (0..256) is a row:
//   v·128 + ((c ^ v%8) · 16). Descriptor for half h: start = tile + 128h·128 (+32 per k16),
//   LBO 1, SBO 1024; imm-trans-b = 0.
// - B from [E,K,N] weights, N-major: atoms of 64 columns (128 bytes) × 8 k rows; column chunk
//   q = v/8 (0..32) of k row kr lies at (q/8)·8192 + kr·128 + ((q%8 ^ kr%8) · 16), so the
//   four 64-column atoms are 8192 bytes apart and k rows run down each at 128 bytes.
//   Canonical MN-major 128B layout ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)): LBO = 8192 (next
//   64 columns), SBO = 1024 (next 8 k rows). Descriptor for half h, k16 step s:
//   start = tile + 2h·8192 + 16s·128; imm-trans-b = 1.
// Descriptor bits: 0..13 start >> 4, 16..29 LBO >> 4, 32..45 SBO >> 4, 49..51 base offset (0:
// every 8-row pattern starts 1024-aligned), 62..63 swizzle (1 = 128B).
//
// Accumulator fragment of m64nNk16 (f32): warp w of the warpgroup holds rows 16w..16w+16;
// register 4i + 2hr + j of lane l is row 16w + l/4 + 8hr, column 8i + 2(l%4) + j — the
// mma.sync m16n8 C fragment repeated over the N/8 column tiles.
//
// Pipeline (S = 4 stages, k-tile kt in stage kt % S); per k-tile, every thread:
//   wait until its copies of tile kt landed (cp.async.wait_group S-3), barrier;
//   issue the copies of tile kt+S-2 into stage (kt-2) % S and commit (an empty group past the
//   end keeps the count); wgmma.fence, 8 wgmma on stage kt, commit, wait until at most 1 group
//   is pending (so tile kt-1's wgmma finished before the next barrier: the stage that the
//   next iteration overwrites, (kt-1) % S, was read only by it).
// NOTE: cp.async writes shared memory through the generic proxy and wgmma reads it through the
// async proxy; the PTX memory model asks for fence.proxy.async between the two. CUTLASS's own
// cp.async + GMMA mainloop (sm90_mma_multistage_gmma_ss_warpspecialized) orders them with the
// barrier alone, and the fence lowers to MEMBAR.ALL.CTA, which may also wait for the copies
// still in flight for later tiles (it would shorten the pipeline). So the fence is a run-time
// switch (`proxy_fence`, MOEKIT_CUDA_GEMM=wgmma-fence), off by default.

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

namespace gw {
constexpr int BM = 128, BN = 256, BK = 64, STAGES = 4, THREADS = 256;
constexpr int A_BYTES = BM * BK * 2;  // 16 KiB
constexpr int B_BYTES = BN * BK * 2;  // 32 KiB
constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
constexpr int ATOM_N_BYTES = BK * 128;  // one 64-column atom of the N-major B tile: 8 KiB
// Dynamic shared memory asked for: the stages plus slack to align the base to 1024 bytes
// (keep in step with WGMMA_SHARED in src/ops/grouped_gemm.rs).
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 1024;
}  // namespace gw

// cp.async, wgmma and descriptor helpers (gw_cp16, gw_mma, ...): wgmma.cuh, prepended.

// The wide form (WIDE kernels): one m64n256k16 per k16 step instead of two m64n128k16, so each
// warpgroup reads its A rows from shared memory once per step, not twice. d[128] is acc[0]
// followed by acc[1]: register 4i + 2hr + j is column 8i + 2(l%4) + j, so i < 16 lands in
// acc[0] (columns 0..127) and i >= 16 in acc[1] (128..255), the same accumulators as the two
// narrow instructions. The B descriptor is the first half's: the second half's rows (K-major,
// +16 groups of SBO) and atoms (N-major, +2 LBO) continue the same strides.
#define GW_D128 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), \
    "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), \
    "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), \
    "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), \
    "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), \
    "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), \
    "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), \
    "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), \
    "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), \
    "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), \
    "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), \
    "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), \
    "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), \
    "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), \
    "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), \
    "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
    "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), \
    "+f"(d[127])

#define GW_REGS128 \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
    "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, " \
    "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, " \
    "%56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, " \
    "%74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, " \
    "%92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, " \
    "%108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, " \
    "%123, %124, %125, %126, %127}"

// d [128] += A (64 × 16, descriptor da) · B (16 × 256, descriptor db); TB: imm-trans-b.
#define GW_WGMMA256(TY, TB)                                                                               \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"                                          \
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY " " GW_REGS128                 \
                 ", %128, %129, p, 1, 1, 0, " #TB ";\n}\n"                                              \
                 : GW_D128                                                                               \
                 : "l"(da), "l"(db), "r"(1))

GW_MMA_FAMILY(gw_mma256, GW_WGMMA256)

// One k16 step s (0..3) of a stage for one warpgroup: its A rows at `sa_wg` (stage A base plus
// 64·wg rows), the stage's B tile at `sb`, into acc[2][64] (both kernels use this).
template <typename T, bool NK, bool WIDE>
__device__ __forceinline__ void gw_k16(float (&acc)[2][64], u32 sa_wg, u32 sb, int s) {
    const unsigned long long da = gw_desc(sa_wg + s * 32, 16, 1024);
    if (WIDE) {
        if (NK) {
            gw_mma256<T, 0>(&acc[0][0], da, gw_desc(sb + s * 32, 16, 1024));
        } else {
            gw_mma256<T, 1>(&acc[0][0], da, gw_desc(sb + s * 16 * 128, gw::ATOM_N_BYTES, 1024));
        }
    } else {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            if (NK) {
                gw_mma<T, 0>(acc[h], da, gw_desc(sb + h * 128 * 128 + s * 32, 16, 1024));
            } else {
                gw_mma<T, 1>(acc[h], da, gw_desc(sb + h * 2 * gw::ATOM_N_BYTES + s * 16 * 128, gw::ATOM_N_BYTES, 1024));
            }
        }
    }
}

// Needs K % 8 == 0 and the columns a block reads in whole 8-column chunks (N % 8 == 0, and
// I % 8 == 0 with SwiGLU): the launcher checks; x and w 16-byte aligned (whole allocations).
template <typename T, bool NK, bool WIDE>
__device__ __forceinline__ void gw_impl(const T* x_, const T* w_, const i32* plan, const i32* gather,
                                        const float* scale, T* y, int experts, int K, int N, int swiglu, int n_tiles,
                                        int tokens, int proxy_fence, i32* rec) {
    using namespace gw;
    extern __shared__ unsigned char gw_smem_raw[];
    const int mt = blockIdx.x / n_tiles, nt = blockIdx.x % n_tiles;
    if (mt >= plan[experts]) return;
    const int e = gg_find_expert(plan, experts, mt);
    const int row_begin = plan[experts + 1 + e], rows = plan[2 * experts + 1 + e];
    const int i0 = (mt - plan[e]) * BM;
    const int tid = threadIdx.x;
    const u16* x = reinterpret_cast<const u16*>(x_);
    const u16* we = reinterpret_cast<const u16*>(w_) + (long long)e * N * K;
    const int half_n = N / 2;
    const int col_limit = swiglu ? half_n : N;
    const u32 smem = (gg_smem(gw_smem_raw) + 1023u) & ~1023u;

    // A copies: tile rows (tid / 8) + 32j, j < 4, chunk tid % 8 (k 8·(tid%8)..+8).
    const int a_c = tid & 7;
    const int a_r0 = tid >> 3;
    const u32 a_dst = (u32)(a_r0 * 128 + ((a_c ^ (a_r0 & 7)) << 4));
    long long a_off[4];
    bool a_ok[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int i = i0 + a_r0 + 32 * j;
        const int src = i < rows ? gg_src_row(gather, tokens, row_begin + i, rec) : -1;
        a_ok[j] = src >= 0;
        a_off[j] = a_ok[j] ? (long long)src * K + a_c * 8 : 0;
    }

    // B copies. NK: virtual columns (tid / 8) + 32j, j < 8, chunk tid % 8. KN: k rows
    // (tid / 32) + 8j, j < 8, virtual columns 8·(tid%32)..+8.
    // Weight column of virtual column v, or -1 past the output columns.
    auto wcol_of = [&](int v) -> int {
        const int c = swiglu ? nt * 128 + (v & 127) : nt * BN + v;
        if (c >= col_limit) return -1;
        return swiglu && v >= 128 ? half_n + c : c;
    };
    u32 b_dst;
    int b_wcol[NK ? 8 : 1];
    if (NK) {
        const int r0 = tid >> 3, c = tid & 7;
        b_dst = (u32)(r0 * 128 + ((c ^ (r0 & 7)) << 4));
#pragma unroll
        for (int j = 0; j < (NK ? 8 : 1); ++j) b_wcol[j] = wcol_of(r0 + 32 * j);
    } else {
        const int q = tid & 31, kr0 = tid >> 5;
        b_dst = (u32)((q >> 3) * ATOM_N_BYTES + kr0 * 128 + (((q & 7) ^ kr0) << 4));
        b_wcol[0] = wcol_of(q * 8);
    }

    auto load = [&](int stage, int kt) {
        const int k0 = kt * BK;
        const u32 sa = smem + stage * STAGE_BYTES;
        const u32 sb = sa + A_BYTES;
        const bool a_kok = k0 + a_c * 8 < K;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const bool ok = a_ok[j] && a_kok;
            gw_cp16(sa + a_dst + j * 32 * 128, x + (ok ? a_off[j] + k0 : 0), ok);
        }
        if (NK) {
            const int kc = k0 + (tid & 7) * 8;
#pragma unroll
            for (int j = 0; j < (NK ? 8 : 1); ++j) {
                const bool ok = b_wcol[j] >= 0 && kc < K;
                gw_cp16(sb + b_dst + j * 32 * 128, we + (ok ? (long long)b_wcol[j] * K + kc : 0), ok);
            }
        } else {
            const int kr0 = tid >> 5;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int k = k0 + kr0 + 8 * j;
                const bool ok = b_wcol[0] >= 0 && k < K;
                gw_cp16(sb + b_dst + j * 8 * 128, we + (ok ? (long long)k * N + b_wcol[0] : 0), ok);
            }
        }
    };

    const int wg = tid >> 7;
    float acc[2][64];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int i = 0; i < 64; ++i) acc[h][i] = 0.0f;

    const int kt_n = (K + BK - 1) / BK;
#pragma unroll
    for (int s = 0; s < STAGES - 2; ++s) {
        if (s < kt_n) load(s, s);
        gw_cp_commit();
    }
    for (int kt = 0; kt < kt_n; ++kt) {
        gw_cp_wait<STAGES - 3>();
        if (proxy_fence) gw_fence_proxy_async();
        __syncthreads();
        const int next = kt + STAGES - 2;
        if (next < kt_n) load(next % STAGES, next);
        gw_cp_commit();

        const u32 sa = smem + (kt % STAGES) * STAGE_BYTES;
        const u32 sb = sa + A_BYTES;
        gw_fence_acc(acc[0]);
        gw_fence_acc(acc[1]);
        gw_mma_fence();
#pragma unroll
        for (int s = 0; s < BK / 16; ++s) gw_k16<T, NK, WIDE>(acc, sa + wg * 64 * 128, sb, s);
        gw_mma_commit();
        gw_mma_wait<1>();
        gw_fence_acc(acc[0]);
        gw_fence_acc(acc[1]);
    }
    gw_mma_wait<0>();
    gw_fence_acc(acc[0]);
    gw_fence_acc(acc[1]);

    // Epilogue: SwiGLU and the row scale on the f32 accumulators, one rounding.
    const int lane = tid & 31, g = lane >> 2, tg = lane & 3;
    const int r_base = wg * 64 + ((tid >> 5) & 3) * 16 + g;
    const int n_out = col_limit;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        T* yr;
        float s;
        if (!gg_out_row<T>(y, scale, row_begin, rows, i0 + r_base + 8 * hr, n_out, yr, s)) continue;
        if (swiglu) {
#pragma unroll
            for (int ni = 0; ni < 16; ++ni) {
                const int c = nt * 128 + ni * 8 + tg * 2;
                const int q = 4 * ni + 2 * hr;
                gg_store2_swiglu<T>(yr, c, acc[0][q], acc[0][q + 1], acc[1][q], acc[1][q + 1], s, n_out);
            }
        } else {
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
                for (int ni = 0; ni < 16; ++ni) {
                    const int c = nt * BN + h * 128 + ni * 8 + tg * 2;
                    const int q = 4 * ni + 2 * hr;
                    gg_store2_scaled<T>(yr, c, acc[h][q], acc[h][q + 1], s, n_out);
                }
        }
    }
}

#define GW_KERNEL(NAME, TY, NKV, WIDEV)                                                                       \
    extern "C" __global__ void __launch_bounds__(gw::THREADS, 1)                                              \
        NAME(const TY* x, const TY* w, const i32* plan, const i32* gather, const float* scale, TY* y,          \
             int experts, int K, int N, int swiglu, int n_tiles, int tokens, int proxy_fence, i32* rec) {      \
        gw_impl<TY, NKV, WIDEV>(x, w, plan, gather, scale, y, experts, K, N, swiglu, n_tiles, tokens,        \
                                proxy_fence, rec);                                                            \
    }
GW_KERNEL(grouped_gemm_wgmma_kn_bf16, bf16, false, false)
GW_KERNEL(grouped_gemm_wgmma_nk_bf16, bf16, true, false)
GW_KERNEL(grouped_gemm_wgmma_kn_f16, f16, false, false)
GW_KERNEL(grouped_gemm_wgmma_nk_f16, f16, true, false)
// The wide form (one m64n256k16 per k16 step): MOEKIT_CUDA_WGMMA_WIDE=1.
GW_KERNEL(grouped_gemm_wgmma_wide_kn_bf16, bf16, false, true)
GW_KERNEL(grouped_gemm_wgmma_wide_nk_bf16, bf16, true, true)
GW_KERNEL(grouped_gemm_wgmma_wide_kn_f16, f16, false, true)
GW_KERNEL(grouped_gemm_wgmma_wide_nk_f16, f16, true, true)

#endif  // __CUDA_ARCH_FEAT_SM90_ALL
