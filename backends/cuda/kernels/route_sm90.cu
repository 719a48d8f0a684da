#line 1 "route_sm90.cu"
// Routing on Hopper (sm_90a only): `route_fused_r<EPL>_<dtype>`, f16 / bf16, the gate GEMM and
// the routing in one kernel, so the f32 logits never leave the multiprocessor (unless the
// hidden dimension is split, below). Appended to route.cu after wgmma.cuh (one module, see
// src/runtime/sources.rs); launcher: src/ops/route.rs (`fused_plan`).
//
// Block: 256 threads = 2 warpgroups, BM = 128 tokens; warpgroup g computes the logits of tokens
// 64g..64g+64 for BN = 128·NH experts (NH = 1 for E <= 128, 2 for E <= 256; columns past E are
// zero-filled weights) with m64n128k16 wgmma, f32 accumulators in registers. Operands stream
// through STAGES shared-memory stages by cp.async, exactly as grouped_gemm_sm90.cu's gw_impl
// (the A tile K-major, the gate [H, E] tile N-major, both with the 128-byte swizzle; its header
// derives the layouts and descriptors).
//
// Split hidden dimension (gridDim.y = S > 1, for few token tiles: decode, or 64 tiles of a
// 7168-wide hidden on 132 SMs): block (m, z) sums H range [z·kchunk, (z+1)·kchunk) and writes its
// f32 tile to `part` [m][z][BM][BN]; the last block of tile m to arrive (a per-tile counter in
// `sem`, zeroed by the launcher before the kernel) adds the S partials in order z = 0..S-1 and
// routes. The others exit.
//
// Routing: the tile's logits are staged in shared memory [BM][BN + 4] f32 (over the pipeline
// stages, which are free by then); warp w routes tokens w, w + 8, ... of the tile with the
// register path's route_reg_token, so the results follow its rules exactly (route.cu); the
// block's counts and load go to the global totals with one atomic per expert.
// Shared memory (bytes, 1024-aligned base): max(pipeline, logits), then the routing words:
// load [E], counts [E], and with groups each warp's selection [E], group scores [G], kept [G].
// Keep in step with `FusedPlan` in src/ops/route.rs.

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

namespace rf {
constexpr int BM = 128, BK = 64, THREADS = 256, WARPS = 8;
constexpr int A_BYTES = BM * BK * 2;  // 16 KiB
constexpr int ATOM_N_BYTES = BK * 128;  // one 64-column atom of the N-major gate tile: 8 KiB
}  // namespace rf

// Shared-memory address of a generic pointer into shared memory.
__device__ __forceinline__ u32 rf_smem_addr(const void* p) {
    u32 r;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
    return r;
}
// Partials bypass L1 (another block of the tile reads them): two f32 stored, four loaded.
__device__ __forceinline__ void rf_st2_cg(float* p, float a, float b) {
    asm volatile("st.global.cg.v2.f32 [%0], {%1, %2};" ::"l"(p), "f"(a), "f"(b) : "memory");
}
__device__ __forceinline__ void rf_ld4_cg(const float* p, float (&v)[4]) {
    asm volatile("ld.global.cg.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(v[0]), "=f"(v[1]), "=f"(v[2]), "=f"(v[3]) : "l"(p) : "memory");
}

template <int NH> struct RfTile {
    static constexpr int BN = 128 * NH;
    static constexpr int B_BYTES = BN * rf::BK * 2;
    static constexpr int STAGE_BYTES = rf::A_BYTES + B_BYTES;
    static constexpr int STAGES = NH == 1 ? 5 : 4;
    static constexpr int PIPE_BYTES = STAGES * STAGE_BYTES;  // 160 KiB / 192 KiB
    static constexpr int LSTRIDE = BN + 4;                   // f32 per staged logit row
    static constexpr int LOGIT_BYTES = rf::BM * LSTRIDE * 4;  // 66 KiB / 130 KiB
    static constexpr int MAIN_BYTES = PIPE_BYTES > LOGIT_BYTES ? PIPE_BYTES : LOGIT_BYTES;
};

template <typename T, int EPL>
__device__ __forceinline__ void rf_impl(const T* x_, const T* g_, const float* bias, const i32* mask, i32* ids,
                                        float* weights, i32* counts, float* load, int tokens, int H, int E, int k,
                                        int softmax, int G, int topk_group, int renorm, float scaling, int kchunk,
                                        float* part, i32* sem, i32* rec) {
    constexpr int NH = EPL > 4 ? 2 : 1;
    using Tile = RfTile<NH>;
    constexpr int BM = rf::BM, BK = rf::BK, BN = Tile::BN, STAGES = Tile::STAGES;
    extern __shared__ unsigned char rf_smem_raw[];
    const u32 smem = (rf_smem_addr(rf_smem_raw) + 1023u) & ~1023u;
    unsigned char* base = rf_smem_raw + (smem - rf_smem_addr(rf_smem_raw));
    float* stage_logits = reinterpret_cast<float*>(base);
    float* words = reinterpret_cast<float*>(base + Tile::MAIN_BYTES);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = tid >> 7;
    const int mt = blockIdx.x, z = blockIdx.y, splits = gridDim.y;
    const long long row0 = (long long)mt * BM;
    const int k_begin = z * kchunk, k_end = min(H, k_begin + kchunk);
    const u16* x = reinterpret_cast<const u16*>(x_);
    const u16* g = reinterpret_cast<const u16*>(g_);

    // A copies: tile rows (tid / 8) + 32j, j < 4, chunk tid % 8.
    const int a_c = tid & 7, a_r0 = tid >> 3;
    const u32 a_dst = (u32)(a_r0 * 128 + ((a_c ^ (a_r0 & 7)) << 4));
    bool a_ok[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) a_ok[j] = row0 + a_r0 + 32 * j < tokens;
    const u16* a_src = x + (row0 + a_r0) * H + a_c * 8;
    // Gate copies: CPR = BN / 8 column chunks per k row; chunk q = tid % CPR of k rows
    // tid / CPR + (256 / CPR)·j, j < CPR / 4.
    constexpr int CPR = BN / 8, KR_STEP = rf::THREADS / CPR, B_PASSES = CPR / 4;
    const int q = tid % CPR, kr0 = tid / CPR;
    const u32 b_dst = (u32)((q >> 3) * rf::ATOM_N_BYTES + kr0 * 128 + (((q & 7) ^ (kr0 & 7)) << 4));
    const bool b_col_ok = q * 8 < E;

    auto load_tile = [&](int stage, int kt) {
        const int k0 = k_begin + kt * BK;
        const u32 sa = smem + stage * Tile::STAGE_BYTES;
        const u32 sb = sa + rf::A_BYTES;
        const bool a_kok = k0 + a_c * 8 < k_end;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const bool ok = a_ok[j] && a_kok;
            gw_cp16(sa + a_dst + j * 32 * 128, ok ? a_src + (long long)32 * j * H + k0 : x, ok);
        }
#pragma unroll
        for (int j = 0; j < B_PASSES; ++j) {
            const int kr = k0 + kr0 + KR_STEP * j;
            const bool ok = b_col_ok && kr < k_end;
            gw_cp16(sb + b_dst + j * KR_STEP * 128, ok ? g + (long long)kr * E + q * 8 : g, ok);
        }
    };

    float acc[NH][64];
#pragma unroll
    for (int h = 0; h < NH; ++h)
#pragma unroll
        for (int i = 0; i < 64; ++i) acc[h][i] = 0.0f;

    const int kt_n = (k_end - k_begin + BK - 1) / BK;
#pragma unroll
    for (int s = 0; s < STAGES - 2; ++s) {
        if (s < kt_n) load_tile(s, s);
        gw_cp_commit();
    }
    for (int kt = 0; kt < kt_n; ++kt) {
        gw_cp_wait<STAGES - 3>();
        __syncthreads();
        const int next = kt + STAGES - 2;
        if (next < kt_n) load_tile(next % STAGES, next);
        gw_cp_commit();
        const u32 sa = smem + (kt % STAGES) * Tile::STAGE_BYTES;
        const u32 sb = sa + rf::A_BYTES;
#pragma unroll
        for (int h = 0; h < NH; ++h) gw_fence_acc(acc[h]);
        gw_mma_fence();
#pragma unroll
        for (int s = 0; s < BK / 16; ++s) {
            const unsigned long long da = gw_desc(sa + wg * 64 * 128 + s * 32, 16, 1024);
#pragma unroll
            for (int h = 0; h < NH; ++h)
                gw_mma<T, 1>(acc[h], da, gw_desc(sb + h * 2 * rf::ATOM_N_BYTES + s * 16 * 128, rf::ATOM_N_BYTES, 1024));
        }
        gw_mma_commit();
        gw_mma_wait<1>();
#pragma unroll
        for (int h = 0; h < NH; ++h) gw_fence_acc(acc[h]);
    }
    gw_mma_wait<0>();
#pragma unroll
    for (int h = 0; h < NH; ++h) gw_fence_acc(acc[h]);
    gw_cp_wait<0>();
    __syncthreads();  // every warpgroup is done with the stages: the logits go over them

    // Accumulator fragment (grouped_gemm_sm90.cu): register 4i + 2hr + j of lane l in warp w of
    // warpgroup g is tile row 64g + 16(w%4) + l/4 + 8hr, column 128h + 8i + 2(l%4) + j.
    const int r_frag = wg * 64 + (warp & 3) * 16 + (lane >> 2);
    const int c_frag = 2 * (lane & 3);
    if (splits == 1) {
#pragma unroll
        for (int h = 0; h < NH; ++h)
#pragma unroll
            for (int i = 0; i < 16; ++i)
#pragma unroll
                for (int hr = 0; hr < 2; ++hr) {
                    float* o = &stage_logits[(r_frag + 8 * hr) * Tile::LSTRIDE + 128 * h + 8 * i + c_frag];
                    o[0] = acc[h][4 * i + 2 * hr];
                    o[1] = acc[h][4 * i + 2 * hr + 1];
                }
    } else {
        float* mine = part + ((long long)mt * splits + z) * BM * BN;
#pragma unroll
        for (int h = 0; h < NH; ++h)
#pragma unroll
            for (int i = 0; i < 16; ++i)
#pragma unroll
                for (int hr = 0; hr < 2; ++hr) {
                    rf_st2_cg(&mine[(r_frag + 8 * hr) * BN + 128 * h + 8 * i + c_frag], acc[h][4 * i + 2 * hr],
                              acc[h][4 * i + 2 * hr + 1]);
                }
        // Release the partial, count the arrival; the last block of the tile goes on.
        __threadfence();
        __syncthreads();
        __shared__ int rf_last;
        if (tid == 0) rf_last = atomicAdd(&sem[mt], 1) == splits - 1;
        __syncthreads();
        if (!rf_last) return;
        __threadfence();
        const float* all = part + (long long)mt * splits * BM * BN;
        for (int v = tid * 4; v < BM * BN; v += rf::THREADS * 4) {
            float sum[4], o[4];
            rf_ld4_cg(all + v, sum);
            for (int s = 1; s < splits; ++s) {
                rf_ld4_cg(all + (long long)s * BM * BN + v, o);
#pragma unroll
                for (int c = 0; c < 4; ++c) sum[c] += o[c];
            }
            float* dst = &stage_logits[(v / BN) * Tile::LSTRIDE + v % BN];
#pragma unroll
            for (int c = 0; c < 4; ++c) dst[c] = sum[c];
        }
    }

    // Routing of the tile's tokens, warp w: tokens w, w + 8, ...
    float* acc_load = words;
    i32* acc_cnt = reinterpret_cast<i32*>(words + E);
    float* gsel = words + 2 * E + warp * (E + 2 * G);
    float* gsc = gsel + E;
    i32* gkeep = reinterpret_cast<i32*>(gsc + G);
    route_acc_zero(acc_load, acc_cnt, E);
    RouteLane<EPL> s;
    route_lane_init<EPL>(s, bias, mask, E, row0 + warp < tokens, rec);
    __syncthreads();
    for (int r = warp; r < BM; r += rf::WARPS) {
        const long long t = row0 + r;
        if (t >= tokens) break;
        const float* row = stage_logits + r * Tile::LSTRIDE;
        float sc[EPL];
#pragma unroll
        for (int i = 0; i < EPL; ++i) {
            const int e = lane + 32 * i;
            float v = 0.0f;
            if (e < E) {
                v = row[e];
                if (!route_finite(v)) {
                    report_bad(rec, MOEKIT_BAD_ROUTE_NONFINITE, (int)(t * E + e), 0, 0);
                    v = 0.0f;
                }
            }
            sc[i] = v;
        }
        route_reg_token<EPL>(s, sc, t, mask, ids, weights, E, k, softmax, G, topk_group, renorm, scaling, gsel, gsc,
                             gkeep, acc_cnt);
    }
    route_lane_flush<EPL>(s, acc_load, acc_cnt, E);
    __syncthreads();
    route_acc_flush(acc_load, acc_cnt, load, counts, E);
}

#define RF_KERNEL(TY, SUFFIX, EPL)                                                                              \
    extern "C" __global__ void __launch_bounds__(rf::THREADS, 1) route_fused_r##EPL##_##SUFFIX(                 \
        const TY* x, const TY* gate, const float* bias, const i32* mask, i32* ids, float* weights, i32* counts,   \
        float* load, int tokens, int H, int experts, int k, int softmax, int groups, int topk_group, int renorm,   \
        float scaling, int kchunk, float* part, i32* sem, i32* rec) {                                             \
        rf_impl<TY, EPL>(x, gate, bias, mask, ids, weights, counts, load, tokens, H, experts, k, softmax, groups, \
                         topk_group, renorm, scaling, kchunk, part, sem, rec);                                    \
    }
#define RF_KERNELS(EPL)         \
    RF_KERNEL(bf16, bf16, EPL)  \
    RF_KERNEL(f16, f16, EPL)
RF_KERNELS(1)
RF_KERNELS(2)
RF_KERNELS(4)
RF_KERNELS(8)

#endif  // __CUDA_ARCH_FEAT_SM90_ALL
