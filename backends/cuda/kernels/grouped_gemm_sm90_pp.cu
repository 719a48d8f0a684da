#line 1 "grouped_gemm_sm90_pp.cu"
// grouped_gemm on Hopper (sm_90a only), ping-pong: `grouped_gemm_wgmma_pp[2]_{kn,nk}_<dtype>`
// (opt-in: MOEKIT_CUDA_GEMM=wgmma-pp). Appended after grouped_gemm_sm90_ws.cu in one module: it
// reuses the plan, gg_src_row, the epilogue helpers, the wgmma wrappers and gw_desc, and from
// grouped_gemm_sm90_ws.cu the mbarrier, TMA and setmaxnreg helpers and gws_tile.
//
// Why: in the warp-specialised kernel both consumer warpgroups work on one 128 × 256 tile, so
// both run its epilogue at the same time and the tensor cores idle meanwhile (run 17's probe:
// the stores were 14% of the qwen3 up GEMM). Here each consumer warpgroup owns whole tiles of
// 128 rows × 128 virtual columns, the two take the block's tiles in turns (warpgroup 1 the
// even ones of its walk, warpgroup 2 the odd ones), and one's epilogue runs while the other's
// main loop keeps the tensor cores busy (CUTLASS's "ping-pong" schedule). The price: each k-tile
// loads A 128 × 64 (16 KiB) and B 128 × 64 (16 KiB) for half the work of the 48 KiB stage of
// the 128 × 256 tile, so 4/3 of the shared-memory fill per flop.
//
// Block: 384 threads, one block per SM, persistent over tiles t = blockIdx.x + j · gridDim.x
// (j = 0, 1, ...; the m-tile-major walk of grouped_gemm_sm90_ws.cu with n-tiles of 128 virtual
// columns, or expert-major: GWS_ORDER_EXPERT in grouped_gemm_sm90_ws.cu); tile j goes to consumer warpgroup j % 2.
// - Producer warpgroup 0: PP2 (A through TMA too, no gather): thread 0 issues every box, FULL
//   counts 2 arrivals (A and B expect_tx). Otherwise its 128 threads copy A's gathered rows with
//   cp.async exactly as grouped_gemm_sm90_ws.cu (8 chunks each, cp.async.mbarrier.arrive.noinc)
//   and thread 0 issues B's boxes: FULL counts 129. The k-tile counter runs over the walk:
//   k-tile kt of tile j is it = j · kt_n + kt, in stage it % S, round it / S.
// - Consumer warpgroup w: for its tiles j, the k-tiles it = j · kt_n + kt: wait FULL, 8 wgmma
//   m64n128k16 (rows 0..64 into acc[0], 64..128 into acc[1], the same B), commit, wait_group 1,
//   release the previous k-tile's stage (EMPTY counts 4: the owner's warps). Then the epilogue.
// - Order: warpgroup w starts the main loop of tile j only after the other has issued every
//   wgmma of tile j - 1 (ORDER[w], one arrival by the other's thread 0). This keeps the main
//   loops in turn (the tensor cores serve one at a time) and it is what makes the FULL parity
//   test sound: when tile j's k-tile it is awaited, the producer has filled k-tile it - S (in
//   tile j - 1 or before), so FULL[s] is in round it / S - 1 or later, never two rounds behind.
//   ORDER[w] completes its phases in turn with the waiter's (the other cannot finish its next
//   main loop before this one ran), so its parity is sound too: warpgroup 1's i-th tile
//   (j = 2i) waits phase i - 1 (i >= 1), warpgroup 2's (j = 2i + 1) phase i.
//
// Shared layouts: A exactly as grouped_gemm_sm90.cu (128 rows × 128 bytes, 128B swizzle); B is
// the first half of its B tile: NK 128 virtual columns as K-major rows, KN two 64-column atoms
// 8 KiB apart. Virtual column v: plain, column 128·nt + v; SwiGLU, v < 64 gate column
// 64·nt + v, v >= 64 up column I + 64·nt + v - 64, so a thread's accumulator registers 4i + ..
// (columns 8i + ..) of gate (i < 8) and up (i + 8) pair in registers. Tensor maps
// (src/ops/grouped_gemm_tma.rs, `weight_map_geometry_pp`):
// - NK plain: box (64, 128, 1, 1) at (k0, 128·nt, 0, e); SwiGLU: box (64, 64, 2, 1) over
//   (K, I, 2, E) at (k0, 64·nt, 0, e): 64 gate rows, then the 64 up rows.
// - KN: box (64, 1, 64, 1), atoms a = 0, 1 at (128·nt + 64a, 0, k0, e) (plain) or
//   (64·nt, a, k0, e) (SwiGLU) into sb + 8192a.

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

namespace gpp {
constexpr int BM = 128, BNV = 128, BK = 64, STAGES = 6;
constexpr int A_BYTES = BM * BK * 2, B_BYTES = BNV * BK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
constexpr int PRODUCER_THREADS = 128, THREADS = 384;
constexpr int EMPTY_COUNT = 4;  // the owning warpgroup's warps
constexpr int PRODUCER_REGS = 40, CONSUMER_REGS = 232;
// Dynamic shared memory: the stages, FULL[S], EMPTY[S], ORDER[2] (8 bytes each) and slack to
// align the base to 1024 bytes (keep in step with WGMMA_PP_SHARED in src/ops/grouped_gemm.rs).
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + (2 * STAGES + 2) * 8 + 1024;
static_assert(BM == gws::BM, "gws_tile computes the m-tile's first row with gws::BM");
}  // namespace gpp

// B of k-tile k0 of n-tile nt of expert e into `sb`, completing on `bar` (boxes: the header).
template <bool NK>
__device__ __forceinline__ void gpp_tma_b(const HpTmap* map, u32 sb, u32 bar, int k0, int e, int nt, int swiglu) {
    hp_bar_arrive_tx(bar, gpp::B_BYTES);
    if (NK) {
        hp_tma4(sb, map, k0, swiglu ? nt * 64 : nt * 128, 0, e, bar);
    } else {
#pragma unroll
        for (int a = 0; a < 2; ++a)
            hp_tma4(sb + a * gw::ATOM_N_BYTES, map, swiglu ? nt * 64 : nt * 128 + 64 * a, swiglu ? a : 0, k0, e, bar);
    }
}

// One k16 step s of a stage for a whole 128-row tile: rows 0..64 into acc[0], 64..128 into acc[1].
template <typename T, bool NK>
__device__ __forceinline__ void gpp_k16(float (&acc)[2][64], u32 sa, u32 sb, int s) {
    const unsigned long long db =
        NK ? gw_desc(sb + s * 32, 16, 1024) : gw_desc(sb + s * 16 * 128, gw::ATOM_N_BYTES, 1024);
#pragma unroll
    for (int h = 0; h < 2; ++h) gw_mma<T, NK ? 0 : 1>(acc[h], gw_desc(sa + h * 64 * 128 + s * 32, 16, 1024), db);
}

template <typename T, bool NK, bool TMA_A>
__device__ __forceinline__ void gpp_impl(const T* x_, const T* w_, const i32* plan, const i32* gather,
                                         const float* scale, T* y, int experts, int K, int N, int swiglu,
                                         int n_tiles, int tokens, int probe, i32* rec, const HpTmap* b_map,
                                         const HpTmap* a_map) {
    using namespace gpp;
    constexpr int S = STAGES;
    extern __shared__ unsigned char gpp_smem_raw[];
    const u32 smem = (gg_smem(gpp_smem_raw) + 1023u) & ~1023u;
    const u32 full_bar = smem + S * STAGE_BYTES, empty_bar = full_bar + 8 * S, order_bar = empty_bar + 8 * S;
    const int tid = threadIdx.x;
    if (tid == 0) {
#pragma unroll
        for (int s = 0; s < S; ++s) {
            hp_bar_init(full_bar + 8 * s, TMA_A ? 2 : PRODUCER_THREADS + 1);
            hp_bar_init(empty_bar + 8 * s, EMPTY_COUNT);
        }
        hp_bar_init(order_bar, 1);
        hp_bar_init(order_bar + 8, 1);
    }
    __syncthreads();

    const int tiles = __ldg(plan + experts) * n_tiles;
    const int kt_n = (K + BK - 1) / BK;
    const int col_limit = swiglu ? N / 2 : N;
    const bool by_expert = (probe & GWS_ORDER_EXPERT) != 0;

    if (tid < PRODUCER_THREADS) {
        hp_setmaxnreg_dec<PRODUCER_REGS>();
        if (!TMA_A || tid == 0) {
            if (tid == 0) {
                hp_tma_prefetch(b_map);
                if (TMA_A) hp_tma_prefetch(a_map);
            }
            const u16* x = reinterpret_cast<const u16*>(x_);
            // A by cp.async (gather): tile rows a_r0 + 16j (j < 8), chunk a_c, as grouped_gemm_sm90_ws.cu.
            const int a_c = tid & 7, a_r0 = tid >> 3;
            const u32 a_dst = (u32)(a_r0 * 128 + ((a_c ^ (a_r0 & 7)) << 4));
            int it = 0;
            for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
                const GwsTile tl = gws_tile_in(plan, experts, n_tiles, t, by_expert);
                int a_src[8];
                if (!TMA_A) gws_a_rows(a_src, tl, a_r0, gather, tokens, rec);
                for (int kt = 0; kt < kt_n; ++kt, ++it) {
                    const int s = it % S;
                    hp_bar_wait(empty_bar + 8 * s, (u32)(((it / S) & 1) ^ 1));
                    const u32 sa = smem + s * STAGE_BYTES, bar = full_bar + 8 * s;
                    if (tid == 0) {
                        if (TMA_A) {
                            hp_bar_arrive_tx(bar, A_BYTES);
                            hp_tma4(sa, a_map, kt * BK, tl.row_begin + tl.i0, 0, 0, bar);
                        }
                        gpp_tma_b<NK>(b_map, sa + A_BYTES, bar, kt * BK, tl.e, tl.nt, swiglu);
                    }
                    if (!TMA_A) {
                        gws_copy_a(sa, a_dst, a_src, x, kt * BK + a_c * 8, K, gws_opaque(K));
                        gws_cp_arrive(bar);
                    }
                }
            }
            // NOTE: no copy may be in flight into shared memory when this warpgroup exits.
            if (!TMA_A) gws_cp_wait_all();
        }
    } else {
        hp_setmaxnreg_inc<CONSUMER_REGS>();
        const int ctid = tid - PRODUCER_THREADS;
        const int wg = ctid >> 7, wtid = ctid & 127;
        const int lane = ctid & 31, g = lane >> 2, tg = lane & 3;
        const int r_base = ((wtid >> 5) & 3) * 16 + g;  // + 64h + 8hr
        float acc[2][64];
        int i = 0;
        for (int j = wg; blockIdx.x + (long long)j * gridDim.x < tiles; j += 2, ++i) {
            const int t = blockIdx.x + j * gridDim.x;
            const GwsTile tl = gws_tile_in(plan, experts, n_tiles, t, by_expert);
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
                for (int q = 0; q < 64; ++q) acc[h][q] = 0.0f;
            // The other warpgroup has issued every wgmma of tile j - 1 (the header's Order).
            if (j > 0) hp_bar_wait(order_bar + 8 * wg, (u32)((wg == 0 ? i - 1 : i) & 1));
            int it = j * kt_n;
            for (int kt = 0; kt < kt_n; ++kt, ++it) {
                const int s = it % S;
                hp_bar_wait(full_bar + 8 * s, (u32)((it / S) & 1));
                const u32 sa = smem + s * STAGE_BYTES;
                gw_fence_acc(acc[0]);
                gw_fence_acc(acc[1]);
                gw_mma_fence();
#pragma unroll
                for (int ks = 0; ks < BK / 16; ++ks) gpp_k16<T, NK>(acc, sa, sa + A_BYTES, ks);
                gw_mma_commit();
                gw_mma_wait<1>();
                gw_fence_acc(acc[0]);
                gw_fence_acc(acc[1]);
                // k-tile it - 1 (this tile's previous one) is complete: release its stage.
                if (kt > 0 && lane == 0) hp_bar_arrive(empty_bar + 8 * ((it - 1) % S));
            }
            // Every wgmma of this tile is issued: the other warpgroup may start its main loop.
            if (wtid == 0) hp_bar_arrive(order_bar + 8 * (wg ^ 1));
            gw_mma_wait<0>();
            gw_fence_acc(acc[0]);
            gw_fence_acc(acc[1]);
            if (kt_n > 0 && lane == 0) hp_bar_arrive(empty_bar + 8 * ((it - 1) % S));

            // Epilogue (the other warpgroup's main loop runs meanwhile): SwiGLU and the row
            // scale on the f32 accumulators, one rounding.
            if (probe & GWS_PROBE_NO_EPILOGUE) continue;
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
                for (int hr = 0; hr < 2; ++hr) {
                    T* yr;
                    float sc;
                    if (!gg_out_row<T>(y, scale, tl.row_begin, tl.rows, tl.i0 + 64 * h + r_base + 8 * hr, col_limit, yr,
                                       sc))
                        continue;
                    if (swiglu) {
#pragma unroll
                        for (int ni = 0; ni < 8; ++ni) {
                            const int q = 4 * ni + 2 * hr, u = q + 32;
                            gg_store2_swiglu<T>(yr, tl.nt * 64 + ni * 8 + tg * 2, acc[h][q], acc[h][q + 1], acc[h][u],
                                                acc[h][u + 1], sc, col_limit);
                        }
                    } else {
#pragma unroll
                        for (int ni = 0; ni < 16; ++ni) {
                            const int q = 4 * ni + 2 * hr;
                            gg_store2_scaled<T>(yr, tl.nt * 128 + ni * 8 + tg * 2, acc[h][q], acc[h][q + 1], sc,
                                                col_limit);
                        }
                    }
                }
        }
    }
}

// PP (gathered or plain A by cp.async, B by TMA) and PP2 (both by TMA, no gather).
#define GPP_KERNEL(NAME, TY, NKV)                                                                             \
    extern "C" __global__ void __launch_bounds__(gpp::THREADS, 1)                                             \
        NAME(const TY* x, const TY* w, const i32* plan, const i32* gather, const float* scale, TY* y,          \
             int experts, int K, int N, int swiglu, int n_tiles, int tokens, int probe, i32* rec,              \
             const __grid_constant__ HpTmap b_map) {                                                        \
        gpp_impl<TY, NKV, false>(x, w, plan, gather, scale, y, experts, K, N, swiglu, n_tiles, tokens, probe, \
                                 rec, &b_map, nullptr);                                                       \
    }
#define GPP2_KERNEL(NAME, TY, NKV)                                                                            \
    extern "C" __global__ void __launch_bounds__(gpp::THREADS, 1)                                             \
        NAME(const TY* x, const TY* w, const i32* plan, const i32* gather, const float* scale, TY* y,          \
             int experts, int K, int N, int swiglu, int n_tiles, int tokens, int probe, i32* rec,              \
             const __grid_constant__ HpTmap b_map, const __grid_constant__ HpTmap a_map) {                   \
        gpp_impl<TY, NKV, true>(x, w, plan, gather, scale, y, experts, K, N, swiglu, n_tiles, tokens, probe,  \
                                rec, &b_map, &a_map);                                                         \
    }
GPP_KERNEL(grouped_gemm_wgmma_pp_kn_bf16, bf16, false)
GPP_KERNEL(grouped_gemm_wgmma_pp_nk_bf16, bf16, true)
GPP_KERNEL(grouped_gemm_wgmma_pp_kn_f16, f16, false)
GPP_KERNEL(grouped_gemm_wgmma_pp_nk_f16, f16, true)
GPP2_KERNEL(grouped_gemm_wgmma_pp2_kn_bf16, bf16, false)
GPP2_KERNEL(grouped_gemm_wgmma_pp2_nk_bf16, bf16, true)
GPP2_KERNEL(grouped_gemm_wgmma_pp2_kn_f16, f16, false)
GPP2_KERNEL(grouped_gemm_wgmma_pp2_nk_f16, f16, true)

#endif  // __CUDA_ARCH_FEAT_SM90_ALL
