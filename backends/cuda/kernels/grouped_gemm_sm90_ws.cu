#line 1 "grouped_gemm_sm90_ws.cu"
// grouped_gemm on Hopper (sm_90a only), warp-specialised and persistent:
// `grouped_gemm_wgmma_ws[_tma][_wide]_{kn,nk}_<dtype>`, f16 / bf16 (the TMA form is the default on
// Hopper since run 16; MOEKIT_CUDA_GEMM=wgmma-ws picks the cp.async form).
// Appended after grouped_gemm_sm90.cu in one module (see src/runtime/sources.rs): it reuses the
// plan, gg_src_row, the epilogue helpers, the zero kernel, from grouped_gemm_sm90.cu the
// constants of namespace gw, gw_cp16, the wgmma wrappers and gw_desc, and from hopper.cuh
// (before this file) the mbarrier, TMA and setmaxnreg helpers (hp_*) and HpTmap. The block tile
// (128 × 256 × 64), the 48 KiB stage, the 128-byte-swizzled shared layouts, the descriptors and
// the accumulator fragment are exactly those of grouped_gemm_sm90.cu (read its header); only the
// thread roles, the synchronisation and the tile walk differ.
//
// Block: 384 threads = 3 warpgroups, one block per SM (grid = min(#SMs, tile bound)).
// - Warpgroup 0, the producer (setmaxnreg.dec to PRODUCER_REGS): its 128 threads copy each
//   k-tile's A (8 chunks each: rows tid/8 + 16j, chunk tid%8) and B (16 chunks each) into a
//   stage with cp.async (zero-fill rules of grouped_gemm_sm90.cu) and signal the stage's FULL
//   barrier with cp.async.mbarrier.arrive.noinc (FULL counts 128 arrivals: one per producer
//   thread, each fired when that thread's earlier copies have landed).
// - Warpgroups 1 and 2, the consumers (setmaxnreg.inc to CONSUMER_REGS): consumer warpgroup c
//   computes tile rows 64c..64c+64 × 256 virtual columns (acc[0], acc[1], as in
//   grouped_gemm_sm90.cu). Per k-tile: wait FULL, 8 wgmma, commit, wgmma.wait_group 1 (the
//   previous k-tile's wgmmas, and with them their shared-memory reads, are complete), then lane 0
//   of each consumer warp arrives on the previous stage's EMPTY barrier (EMPTY counts 8 arrivals,
//   one per consumer warp); after the last k-tile, wait_group 0 and release the last stage. Then
//   the epilogue (SwiGLU / scale / plain, registers to global) of this tile runs while the
//   producer already fills the stages with the next tile's k-tiles.
//
// Pipeline state: both roles count the k-tiles they have handled over all their tiles (`it`,
// continuing across tiles); k-tile `it` uses stage it % S in round r = it / S. The consumers wait
// FULL[s] for parity r & 1 (phase r completes when the producer filled round r); the producer
// waits EMPTY[s] for parity (r & 1) ^ 1 (round 0 passes at once: the "phase before phase 0"
// counts as complete; round r >= 1 needs the consumers' release of round r - 1). A barrier never
// runs more than one phase ahead of its waiter (FULL round r + 1 needs EMPTY round r, which
// needs the consumers past FULL round r), so the parity test is unambiguous.
//
// Tile walk: tiles t = blockIdx.x, +gridDim.x, ... < plan[E] · n_tiles (the plan's m-tile count,
// read on the device: no host sync), m-tile-major: m-tile t / n_tiles, n-tile t % n_tiles. The
// blocks running at one time hold ~#SMs consecutive tiles: every n-tile of ~#SMs / n_tiles
// consecutive m-tiles, so an A m-tile is read from DRAM once and shared in L2 by its n-tiles, and
// the few experts those m-tiles belong to have their whole weights read by all of them while in
// L2 (qwen3 up: 6 n-tiles, ~22 m-tiles ≈ 3 experts ≈ 18 MiB of weights at a time, inside the
// 50 MiB L2). Producer and consumers walk the same sequence; each thread finds a tile's expert by
// a binary search of the plan's tile starts (no block barrier: the roles run apart).
// Expert-major (GWS_ORDER_EXPERT, the default since run 21): within each expert's range of
// tiles, n-tile by n-tile, so the expert's m-tiles of one n-tile are consecutive tiles, run side
// by side, and read each weight tile from DRAM once between them. For deepseek-v3 (58.7 MB of up
// weights per expert, ~2-3 m-tiles each) the m-tile-major walk put them 16 tiles apart and the
// blocks drifted: 27.0 GB of DRAM reads for 15 GB of weights; expert-major read 17.0 GB and took
// the up GEMM from 8.00 to 7.11 ms (ncu, run 21).
//
// Proxy ordering: cp.async writes shared memory through the generic proxy; wgmma reads it through
// the async proxy. The PTX ISA asks for fence.proxy.async between the two, which the writer
// cannot issue after its copies without waiting for them (that is what the .noinc arrive avoids).
// The mbarrier wait (acquire, cta) makes the copies visible to the consumer thread in the generic
// proxy; a fence.proxy.async in that consumer thread after the wait and before its wgmma orders
// that view before its async-proxy reads (the fence is cumulative). CUTLASS's cp.async + GMMA
// warp-specialised mainloop (sm90_mma_multistage_gmma_ss_warpspecialized: producer_commit with
// cpasync_barrier_arrive, consumer_wait, warpgroup_arrive, gemm) issues no proxy fence, and the
// __syncthreads-ordered grouped_gemm_sm90.cu kernel runs correctly without one on the H200. So,
// as there, the consumer-side fence is a run-time switch (`proxy_fence`,
// MOEKIT_CUDA_GEMM=wgmma-ws-fence), off by default. In the other direction (wgmma reads, then
// the producer's cp.async overwrites) no fence is needed: the completion of a wgmma is followed by
// an implicit generic-async proxy fence, and the EMPTY arrive (release) / wait (acquire) orders
// it before the copies.
//
// TMA variant (TMA_B; `grouped_gemm_wgmma_ws_tma[_wide]_{kn,nk}_<dtype>`, opt-in:
// MOEKIT_CUDA_GEMM=wgmma-ws-tma): the weight tile B comes through the tensor memory accelerator;
// A (gathered rows) stays on cp.async as above. Per k-tile, after the EMPTY wait, producer thread
// 0 arrives on FULL[s] with mbarrier.arrive.expect_tx of B_BYTES (32 KiB: always the whole boxes,
// because TMA writes every element of a box, the zero-filled out-of-bounds ones too, and counts
// them in complete_tx; CUTLASS's sm90 TMA mainloops likewise expect a constant per-stage byte
// count for residue tiles), then issues the stage's B boxes with
// cp.async.bulk.tensor.4d...mbarrier::complete_tx::bytes into FULL[s]. FULL then counts 129
// arrivals (128 cp.async noinc + the expect_tx arrive) and completes when those and the 32 KiB
// have landed. TMA writes through the async proxy, which wgmma reads: no proxy fence for B.
// The 4-D tensor map (src/ops/grouped_gemm_tma.rs; passed by value as a __grid_constant__
// parameter) bounds each SwiGLU half by I on its own, so out-of-range columns and k past K are
// zero-filled exactly where the cp.async path writes zeros (c >= col_limit, k >= K):
// - NK [E, N, K]: dims (K, C, H, E), box (64, 128, 1, 1): 128 rows of 128 bytes at
//   row·128 with the 128B swizzle = B rows (virtual columns) v..v+128 of the layout above.
//   Plain: C = N, H = 1; copy h (0, 1) at coordinates (k0, 256·nt + 128h, 0, e) into sb + 16384h.
//   SwiGLU: C = I, H = 2 (strides K·2, I·K·2, N·K·2 bytes); copy h at (k0, 128·nt, h, e) into
//   sb + 16384h (h = 0 gate columns j0.., h = 1 up columns I + j0..).
// - KN [E, K, N]: dims (C, H, K, E), box (64, 1, 64, 1): 64 k rows of 64 columns (128 bytes)
//   at kr·128, swizzled = one 64-column atom. Plain: C = N, H = 1; atom a (0..4) at
//   (256·nt + 64a, 0, k0, e) into sb + 8192a. SwiGLU: C = I, H = 2 (strides I·2, N·2, K·N·2
//   bytes); atom a at (128·nt + 64(a % 2), a / 2, k0, e) into sb + 8192a.
//
// TMA_A (`grouped_gemm_wgmma_ws_tma2_{kn,nk}_<dtype>`, the default where the rows are not
// gathered): A comes through TMA as well, from a tensor map over x [R, K] (dims (K, R, 1, 1),
// box (64, 128, 1, 1), 128B swizzle = the cp.async layout of A above) at (k0, first row of the
// tile); producer thread 0 issues every copy (gws_produce_tma) and FULL counts its 2 arrivals.
// Why: the TMA_B kernel with its wgmmas left out still took 1.41 ms on the qwen3 up GEMM (run
// 17), where with them it takes 1.43 ms (run 16): its loads, the cp.async A producer, bound it.
// Every destination is 1024-aligned (stage bases are), so the hardware's swizzle (address bits
// 4..6 ^ 7..9) is the layout's chunk ^ row % 8.

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

namespace gws {
constexpr int BM = gw::BM, BN = gw::BN, BK = gw::BK, STAGES = 4;
constexpr int PRODUCER_THREADS = 128, CONSUMER_THREADS = 256, THREADS = PRODUCER_THREADS + CONSUMER_THREADS;
constexpr int A_BYTES = gw::A_BYTES, STAGE_BYTES = gw::STAGE_BYTES, ATOM_N_BYTES = gw::ATOM_N_BYTES;
constexpr int FULL_COUNT = PRODUCER_THREADS;        // one noinc cp.async arrival per producer thread
constexpr int B_BYTES = gw::B_BYTES;                 // TMA_B: the expect_tx bytes of one stage
constexpr int EMPTY_COUNT = CONSUMER_THREADS / 32;  // one arrival per consumer warp
// Registers per thread after setmaxnreg: 128 · 40 + 256 · 232 = 64512 <= 65536.
constexpr int PRODUCER_REGS = 40, CONSUMER_REGS = 232;
// Dynamic shared memory asked for: the stages, the FULL and EMPTY barriers (8 bytes each) and
// slack to align the base to 1024 bytes (keep in step with WGMMA_WS_SHARED in
// src/ops/grouped_gemm.rs).
constexpr int BAR_BYTES = 2 * STAGES * 8;
constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + BAR_BYTES + 1024;
// EPI (TMA2 only): 3 stages, then the output tile buffer [BM][BN] of T with rows EPI_PITCH
// bytes apart (16 bytes of padding: the consumers' 4-byte writes of 8 rows × 4 column pairs hit
// 32 distinct banks), then FULL/EMPTY of the stages and EPI_FULL, EPI_EMPTY. Keep in step with
// WGMMA_WS_EPI_SHARED in src/ops/grouped_gemm.rs.
constexpr int EPI_STAGES = 3, EPI_PITCH = 2 * BN + 16, EPI_BYTES = BM * EPI_PITCH;
constexpr int STORER_THREADS = PRODUCER_THREADS - 32;  // producer warps 1..3
constexpr int EPI_SMEM_BYTES = EPI_STAGES * STAGE_BYTES + EPI_BYTES + (2 * EPI_STAGES + 2) * 8 + 1024;
}  // namespace gws

// Arrives on the barrier once all of this thread's earlier cp.async copies have completed; the
// pending count is not raised first (.noinc), so each call is one of the barrier's arrivals.
__device__ __forceinline__ void gws_cp_arrive(u32 bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void gws_cp_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }
// `v`, opaque to the compiler: values computed from it inside a loop are not hoisted out of it.
__device__ __forceinline__ int gws_opaque(int v) {
    int r;
    asm volatile("mov.b32 %0, %1;" : "=r"(r) : "r"(v));
    return r;
}
// TMA_B, producer thread 0: B of k-tile k0 of n-tile nt of expert e into stage B region `sb`,
// completing on FULL barrier `bar` (box geometry: the header).
template <bool NK>
__device__ __forceinline__ void gws_tma_b(const HpTmap* map, u32 sb, u32 bar, int k0, int e, int nt, int swiglu) {
    hp_bar_arrive_tx(bar, gws::B_BYTES);
    if (NK) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int c = swiglu ? nt * 128 : nt * gws::BN + 128 * h;
            hp_tma4(sb + h * 128 * 128, map, k0, c, swiglu ? h : 0, e, bar);
        }
    } else {
#pragma unroll
        for (int a = 0; a < 4; ++a) {
            const int c = swiglu ? nt * 128 + 64 * (a & 1) : nt * gws::BN + 64 * a;
            hp_tma4(sb + a * gws::ATOM_N_BYTES, map, c, swiglu ? a >> 1 : 0, k0, e, bar);
        }
    }
}

// Probes (bits of `proxy_fence` above bit 0, MOEKIT_CUDA_GEMM_PROBE; timing experiments only,
// the output is wrong): leave one stage of the kernel out to see what it costs. NO_A: the
// producer issues no activation-row copies (the A stages keep stale data; FULL still counts
// every producer thread's arrival). NO_EPILOGUE: the consumers store nothing. (No probe may
// leave the wgmma out: any branch around it serialises the wgmmas, see the consumer.)
#define GWS_PROBE_NO_A 2
#define GWS_PROBE_NO_EPILOGUE 8

// One output tile of the persistent walk.
struct GwsTile {
    int e, row_begin, rows, i0, nt;
};

// Tile `t` (< plan[E] · n_tiles): its expert is the last e with tile_start[e] <= m-tile (empty
// experts share their tile start with the next expert, so the last one is the owner).
__device__ __forceinline__ GwsTile gws_tile(const i32* plan, int experts, int n_tiles, int t) {
    const int mt = t / n_tiles;
    int lo = 0, hi = experts;  // tile_start[lo] <= mt < tile_start[hi]
    while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (__ldg(plan + mid) <= mt) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    GwsTile r;
    r.e = lo;
    r.row_begin = __ldg(plan + experts + 1 + lo);
    r.rows = __ldg(plan + 2 * experts + 1 + lo);
    r.i0 = (mt - __ldg(plan + lo)) * gws::BM;
    r.nt = t - mt * n_tiles;
    return r;
}

// Flag bit of the `proxy_fence` word (of every persistent kernel here and of the ping-pong
// kernel): the expert-major tile order (the default; MOEKIT_CUDA_GEMM_ORDER=mtile clears it).
// Tiles [tile_start[e] · n_tiles, tile_start[e + 1] · n_tiles) are expert e's in either order;
// m-tile-major walks them m-tile by m-tile (every n-tile of one m-tile, then the next:
// consecutive tiles share A), expert-major n-tile by n-tile (the expert's m-tiles of one n-tile,
// then the next: consecutive tiles share the weight tile, which for large experts such as
// deepseek-v3's, 58.7 MB of up weights each, cannot stay in L2).
#define GWS_ORDER_EXPERT 16

// Tile t of the walk in the order `by_expert` picks (GWS_ORDER_EXPERT).
__device__ __forceinline__ GwsTile gws_tile_in(const i32* plan, int experts, int n_tiles, int t, bool by_expert) {
    GwsTile r = gws_tile(plan, experts, n_tiles, t);
    if (by_expert) {
        const int ts = __ldg(plan + r.e), m_e = __ldg(plan + r.e + 1) - ts;  // m_e >= 1: e owns tile t
        const int local = t - ts * n_tiles;
        r.nt = local / m_e;
        r.i0 = (local - r.nt * m_e) * gws::BM;
    }
    return r;
}

// The cp.async A producer (a thread of the producer warpgroup; rows a_r0 + 16j, j < 8, of the
// tile, chunk a_c of each): the source row of each of its rows, -1 past the expert's rows.
__device__ __forceinline__ void gws_a_rows(int (&a_src)[8], const GwsTile& tl, int a_r0, const i32* gather,
                                           int tokens, i32* rec) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int i = tl.i0 + a_r0 + 16 * j;
        a_src[j] = i < tl.rows ? gg_src_row(gather, tokens, tl.row_begin + i, rec) : -1;
    }
}
// Its 8 copies of k-tile chunk ka (K elements per row, K as k_stride) into the stage's A at
// sa + a_dst; zero-filled past the rows and K.
__device__ __forceinline__ void gws_copy_a(u32 sa, u32 a_dst, const int (&a_src)[8], const u16* x, int ka, int K,
                                           int k_stride) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const bool ok = a_src[j] >= 0 && ka < K;
        gw_cp16(sa + a_dst + j * 16 * 128, x + (ok ? (long long)a_src[j] * k_stride + ka : 0), ok);
    }
}

// TMA_A, producer thread 0: per k-tile, after the EMPTY wait, the A box (128 rows from the
// tile's first row, 64 k; rows past the expert's are other experts' rows or zero-filled past
// the tensor, computed and never stored) and the B boxes into the stage, both completing on
// FULL[s], which then counts 2 arrivals (A_BYTES + B_BYTES of transactions).
template <bool NK, int NST>
__device__ __forceinline__ void gws_produce_tma(const HpTmap* a_map, const HpTmap* b_map, const i32* plan,
                                                int experts, int n_tiles, int tiles, int kt_n, int swiglu, u32 smem,
                                                u32 full_bar, u32 empty_bar, bool by_expert) {
    using namespace gws;
    hp_tma_prefetch(a_map);
    hp_tma_prefetch(b_map);
    int it = 0;
    for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
        const GwsTile tl = gws_tile_in(plan, experts, n_tiles, t, by_expert);
        const int row0 = tl.row_begin + tl.i0;
        for (int kt = 0; kt < kt_n; ++kt, ++it) {
            const int s = it % NST;
            hp_bar_wait(empty_bar + 8 * s, (u32)(((it / NST) & 1) ^ 1));
            const u32 sa = smem + s * STAGE_BYTES, bar = full_bar + 8 * s;
            hp_bar_arrive_tx(bar, A_BYTES);
            hp_tma4(sa, a_map, kt * BK, row0, 0, 0, bar);
            gws_tma_b<NK>(b_map, sa + A_BYTES, bar, kt * BK, tl.e, tl.nt, swiglu);
        }
    }
}

__device__ __forceinline__ void gws_st_shared_u32(u32 addr, u32 v) {
    asm volatile("st.shared.u32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}

// EPI, producer warps 1..3 (`sid` 0..95): for each tile of the walk, after EPI_FULL (the
// consumers wrote the rounded tile into the buffer at `epi`), copy its rows inside the expert's
// rows and its columns inside n_out to y with 16-byte loads and stores, then release the buffer
// on EPI_EMPTY. n_out is a multiple of 8 (the launcher's chunk rule), so a 16-byte chunk is all
// in or all out, and every global address is 16-byte aligned.
template <typename T>
__device__ __forceinline__ void gws_store_tiles(T* y, const i32* plan, int experts, int n_tiles, int tiles,
                                                int swiglu, int n_out, u32 epi, u32 epi_full, u32 epi_empty,
                                                int sid, bool by_expert) {
    using namespace gws;
    const int shift = swiglu ? 4 : 5;  // 16-byte chunks per tile row: 16 (SwiGLU: 128 columns) or 32
    const int cpr = 1 << shift, width = swiglu ? BN / 2 : BN;
    int j = 0;
    for (int t = blockIdx.x; t < tiles; t += gridDim.x, ++j) {
        const GwsTile tl = gws_tile_in(plan, experts, n_tiles, t, by_expert);
        hp_bar_wait(epi_full, (u32)(j & 1));
        for (int idx = sid; idx < BM * cpr; idx += STORER_THREADS) {
            const int r = idx >> shift, ch = idx & (cpr - 1);
            const int c = tl.nt * width + ch * 8;
            if (tl.i0 + r >= tl.rows || c >= n_out) continue;
            u32 v0, v1, v2, v3;
            asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
                         : "=r"(v0), "=r"(v1), "=r"(v2), "=r"(v3)
                         : "r"(epi + (u32)(r * EPI_PITCH + ch * 16))
                         : "memory");
            T* dst = y + (long long)(tl.row_begin + tl.i0 + r) * n_out + c;
            asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "r"(v0), "r"(v1), "r"(v2), "r"(v3)
                         : "memory");
        }
        hp_bar_arrive(epi_empty);
    }
}

// Needs what grouped_gemm_sm90.cu's kernel needs (K % 8 == 0, whole 8-column chunks; the
// launcher checks), gridDim.x + tiles <= INT_MAX (the launcher checks), and 384 threads.
// TMA_B: `b_map` is the weight tensor map of the header (null otherwise).
template <typename T, bool NK, bool WIDE, bool TMA_B, bool TMA_A, bool EPI = false>
__device__ __forceinline__ void gws_impl(const T* x_, const T* w_, const i32* plan, const i32* gather,
                                         const float* scale, T* y, int experts, int K, int N, int swiglu,
                                         int n_tiles, int tokens, int proxy_fence, i32* rec, const HpTmap* b_map,
                                         const HpTmap* a_map) {
    using namespace gws;
    static_assert(!EPI || TMA_A, "the EPI storers are the producer warps TMA_A leaves idle");
    constexpr int NST = EPI ? EPI_STAGES : STAGES;
    extern __shared__ unsigned char gws_smem_raw[];
    const u32 smem = (gg_smem(gws_smem_raw) + 1023u) & ~1023u;
    const u32 epi = smem + NST * STAGE_BYTES;                   // EPI: the output tile buffer
    const u32 full_bar = epi + (EPI ? EPI_BYTES : 0);           // FULL[s] at full_bar + 8s
    const u32 empty_bar = full_bar + NST * 8;                   // EMPTY[s] at empty_bar + 8s
    const u32 epi_full = empty_bar + NST * 8, epi_empty = epi_full + 8;
    const int tid = threadIdx.x;
    if (tid == 0) {
#pragma unroll
        for (int s = 0; s < NST; ++s) {
            hp_bar_init(full_bar + 8 * s, TMA_A ? 2 : FULL_COUNT + (TMA_B ? 1 : 0));
            hp_bar_init(empty_bar + 8 * s, EMPTY_COUNT);
        }
        if (EPI) {
            hp_bar_init(epi_full, CONSUMER_THREADS);
            hp_bar_init(epi_empty, STORER_THREADS);
        }
    }
    __syncthreads();

    const int tiles = __ldg(plan + experts) * n_tiles;
    const int kt_n = (K + BK - 1) / BK;
    const int half_n = N / 2;
    const int col_limit = swiglu ? half_n : N;
    const bool by_expert = (proxy_fence & GWS_ORDER_EXPERT) != 0;

    if (tid < PRODUCER_THREADS) {
        hp_setmaxnreg_dec<PRODUCER_REGS>();
        if (TMA_A) {
            // TMA_A: producer thread 0 alone loads A and B of every stage; the others are done.
            if (tid == 0)
                gws_produce_tma<NK, NST>(a_map, b_map, plan, experts, n_tiles, tiles, kt_n, swiglu, smem, full_bar,
                                         empty_bar, by_expert);
            else if (EPI && tid >= 32)
                gws_store_tiles<T>(y, plan, experts, n_tiles, tiles, swiglu, col_limit, epi, epi_full, epi_empty,
                                   tid - 32, by_expert);
        } else {
            if (TMA_B && tid == 0) hp_tma_prefetch(b_map);
            const u16* x = reinterpret_cast<const u16*>(x_);
            // A: tile rows a_r0 + 16j (j < 8), chunk a_c; (a_r0 + 16j) % 8 == a_r0 % 8, so the
            // swizzled destination of row j is a_dst + 16j · 128.
            const int a_c = tid & 7, a_r0 = tid >> 3;
            const u32 a_dst = (u32)(a_r0 * 128 + ((a_c ^ (a_r0 & 7)) << 4));
            // B. NK: virtual columns b_r0 + 16j (j < 16), chunk tid % 8, destination b_dst0 + 16j · 128.
            // KN: k rows b_kr0 + 4j (j < 16), column chunk b_q: k row b_kr0 + 4 (j % 2) + 8 (j / 2)
            // swizzles with b_kr0 + 4 (j % 2), so its destination is b_dst0 (even j) or b_dst1 (odd
            // j), plus (j / 2) · 1024.
            const int b_r0 = tid >> 3, b_q = tid & 31, b_kr0 = tid >> 5;
            const u32 b_dst0 = NK ? (u32)(b_r0 * 128 + (((tid & 7) ^ (b_r0 & 7)) << 4))
                                  : (u32)((b_q >> 3) * ATOM_N_BYTES + b_kr0 * 128 + (((b_q & 7) ^ b_kr0) << 4));
            const u32 b_dst1 = NK ? 0u : (u32)((b_q >> 3) * ATOM_N_BYTES + (b_kr0 + 4) * 128 +
                                               (((b_q & 7) ^ (b_kr0 + 4)) << 4));
            int it = 0;
            for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
                const GwsTile tl = gws_tile_in(plan, experts, n_tiles, t, by_expert);
                const u16* we = reinterpret_cast<const u16*>(w_) + (long long)tl.e * N * K;
                int a_src[8];
                gws_a_rows(a_src, tl, a_r0, gather, tokens, rec);
                // NK: output column of virtual column b_r0 + 16j is cb + 16 (j % 8) with SwiGLU
                // (+ half_n for the up half, j >= 8), cb + 16j without. KN: the weight column of
                // virtual column 8 b_q, or -1 past the output columns.
                const int cb = swiglu ? tl.nt * 128 + b_r0 : tl.nt * BN + b_r0;
                int kn_col;
                {
                    const int v = b_q * 8;
                    const int c = swiglu ? tl.nt * 128 + (v & 127) : tl.nt * BN + v;
                    kn_col = c >= col_limit ? -1 : (swiglu && v >= 128 ? half_n + c : c);
                }
                for (int kt = 0; kt < kt_n; ++kt, ++it) {
                    const int s = it % NST;
                    hp_bar_wait(empty_bar + 8 * s, (u32)(((it / NST) & 1) ^ 1));
                    const int k0 = kt * BK;
                    const u32 sa = smem + s * STAGE_BYTES;
                    const u32 sb = sa + A_BYTES;
                    if (TMA_B && tid == 0) gws_tma_b<NK>(b_map, sb, full_bar + 8 * s, k0, tl.e, tl.nt, swiglu);
                    const int ka = k0 + a_c * 8;
                    // NOTE: the row addresses are recomputed per k-tile from an opaque K (and NK
                    // column base); hoisted out of the loop, 24 64-bit addresses and 16 predicates
                    // would not fit the producer's registers.
                    const int k_stride = gws_opaque(K);
                    if (!(proxy_fence & GWS_PROBE_NO_A)) gws_copy_a(sa, a_dst, a_src, x, ka, K, k_stride);
                    if (TMA_B) {
                        // B: thread 0's boxes above.
                    } else if (NK) {
                        const int kc = k0 + (tid & 7) * 8;
                        const int cb_k = gws_opaque(cb);
    #pragma unroll
                        for (int j = 0; j < 16; ++j) {
                            const int c = cb_k + 16 * (swiglu ? (j & 7) : j);
                            const int wcol = swiglu && j >= 8 ? half_n + c : c;
                            const bool ok = c < col_limit && kc < K;
                            gw_cp16(sb + b_dst0 + j * 16 * 128, we + (ok ? (long long)wcol * k_stride + kc : 0), ok);
                        }
                    } else {
    #pragma unroll
                        for (int j = 0; j < 16; ++j) {
                            const int k = k0 + b_kr0 + 4 * j;
                            const bool ok = kn_col >= 0 && k < K;
                            // k row b_kr0 + 4j = (b_kr0 + 4 (j % 2)) + 8 (j / 2).
                            const u32 dst = ((j & 1) ? b_dst1 : b_dst0) + (j >> 1) * 8 * 128;
                            gw_cp16(sb + dst, we + (ok ? (long long)k * N + kn_col : 0), ok);
                        }
                    }
                    gws_cp_arrive(full_bar + 8 * s);
                }
            }
            // NOTE: no copy may be in flight into shared memory when this warpgroup exits.
            gws_cp_wait_all();
        }
    } else {
        hp_setmaxnreg_inc<CONSUMER_REGS>();
        const int ctid = tid - PRODUCER_THREADS;
        const int wg = ctid >> 7;
        const int lane = ctid & 31, g = lane >> 2, tg = lane & 3;
        const int r_base = wg * 64 + ((ctid >> 5) & 3) * 16 + g;
        const int n_out = col_limit;
        float acc[2][64];
        int it = 0, j = 0;
        for (int t = blockIdx.x; t < tiles; t += gridDim.x, ++j) {
            const GwsTile tl = gws_tile_in(plan, experts, n_tiles, t, by_expert);
            // NOTE: no branch may hold the wgmma: skipping it for a warpgroup whose 64 rows are
            // all past the tile's rows (decode tiles) made ptxas serialise every wgmma of the
            // kernel (C7520: a compiler-inserted warpgroup.arrive on a divergent path) and cost
            // 17% on the qwen3 up GEMM (run 17). Decode tiles stay weight-bound anyway.
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
                for (int i = 0; i < 64; ++i) acc[h][i] = 0.0f;
            for (int kt = 0; kt < kt_n; ++kt, ++it) {
                const int s = it % NST;
                hp_bar_wait(full_bar + 8 * s, (u32)((it / NST) & 1));
                if (proxy_fence & 1) gw_fence_proxy_async();
                const u32 sa = smem + s * STAGE_BYTES;
                const u32 sb = sa + A_BYTES;
                gw_fence_acc(acc[0]);
                gw_fence_acc(acc[1]);
                gw_mma_fence();
#pragma unroll
                for (int ks = 0; ks < BK / 16; ++ks) gw_k16<T, NK, WIDE>(acc, sa + wg * 64 * 128, sb, ks);
                gw_mma_commit();
                gw_mma_wait<1>();
                gw_fence_acc(acc[0]);
                gw_fence_acc(acc[1]);
                // k-tile it - 1 (this tile's previous one) is complete: release its stage.
                if (kt > 0 && lane == 0) hp_bar_arrive(empty_bar + 8 * ((it - 1) % NST));
            }
            gw_mma_wait<0>();
            gw_fence_acc(acc[0]);
            gw_fence_acc(acc[1]);
            if (kt_n > 0 && lane == 0) hp_bar_arrive(empty_bar + 8 * ((it - 1) % NST));

            if (EPI) {
                // EPI: the rounded tile into the buffer (once the storers released it), then on
                // to the next tile's k-tiles while the storers write this one out. Rows past the
                // expert's are written too (never stored) with scale 1.
                hp_bar_wait(epi_empty, (u32)((j & 1) ^ 1));
#pragma unroll
                for (int hr = 0; hr < 2; ++hr) {
                    const int i = r_base + 8 * hr;
                    const float sc = scale && tl.i0 + i < tl.rows ? scale[tl.row_begin + tl.i0 + i] : 1.0f;
                    const u32 row = epi + (u32)(i * EPI_PITCH);
                    if (swiglu) {
#pragma unroll
                        for (int ni = 0; ni < 16; ++ni) {
                            const int q = 4 * ni + 2 * hr;
                            const float v0 = gg_swiglu(acc[0][q], acc[1][q], sc);
                            const float v1 = gg_swiglu(acc[0][q + 1], acc[1][q + 1], sc);
                            gws_st_shared_u32(row + (u32)((ni * 8 + tg * 2) * 2),
                                              (u32)gg_bits<T>(v0) | ((u32)gg_bits<T>(v1) << 16));
                        }
                    } else {
#pragma unroll
                        for (int h = 0; h < 2; ++h)
#pragma unroll
                            for (int ni = 0; ni < 16; ++ni) {
                                const int q = 4 * ni + 2 * hr;
                                const u32 v = (u32)gg_bits<T>(acc[h][q] * sc) | ((u32)gg_bits<T>(acc[h][q + 1] * sc) << 16);
                                gws_st_shared_u32(row + (u32)((h * 128 + ni * 8 + tg * 2) * 2), v);
                            }
                    }
                }
                hp_bar_arrive(epi_full);
                continue;
            }

            // Epilogue (the producer is loading the next tile meanwhile): SwiGLU and the row
            // scale on the f32 accumulators, one rounding; as in grouped_gemm_sm90.cu.
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
                T* yr;
                float sc;
                if (proxy_fence & GWS_PROBE_NO_EPILOGUE) break;
                if (!gg_out_row<T>(y, scale, tl.row_begin, tl.rows, tl.i0 + r_base + 8 * hr, n_out, yr, sc)) continue;
                if (swiglu) {
#pragma unroll
                    for (int ni = 0; ni < 16; ++ni) {
                        const int c = tl.nt * 128 + ni * 8 + tg * 2;
                        const int q = 4 * ni + 2 * hr;
                        gg_store2_swiglu<T>(yr, c, acc[0][q], acc[0][q + 1], acc[1][q], acc[1][q + 1], sc, n_out);
                    }
                } else {
#pragma unroll
                    for (int h = 0; h < 2; ++h)
#pragma unroll
                        for (int ni = 0; ni < 16; ++ni) {
                            const int c = tl.nt * BN + h * 128 + ni * 8 + tg * 2;
                            const int q = 4 * ni + 2 * hr;
                            gg_store2_scaled<T>(yr, c, acc[h][q], acc[h][q + 1], sc, n_out);
                        }
                }
            }
        }
    }
}

#define GWS_KERNEL(NAME, TY, NKV, WIDEV)                                                                      \
    extern "C" __global__ void __launch_bounds__(gws::THREADS, 1)                                             \
        NAME(const TY* x, const TY* w, const i32* plan, const i32* gather, const float* scale, TY* y,          \
             int experts, int K, int N, int swiglu, int n_tiles, int tokens, int proxy_fence, i32* rec) {      \
        gws_impl<TY, NKV, WIDEV, false, false>(x, w, plan, gather, scale, y, experts, K, N, swiglu, n_tiles,  \
                                               tokens, proxy_fence, rec, nullptr, nullptr);                   \
    }
// TMA_B: the weight tensor map, by value in the parameter space (CUtensorMap must live in
// param, const or global memory; __grid_constant__ lets the kernel take its address).
#define GWS_TMA_KERNEL(NAME, TY, NKV, WIDEV)                                                                  \
    extern "C" __global__ void __launch_bounds__(gws::THREADS, 1)                                             \
        NAME(const TY* x, const TY* w, const i32* plan, const i32* gather, const float* scale, TY* y,          \
             int experts, int K, int N, int swiglu, int n_tiles, int tokens, int proxy_fence, i32* rec,        \
             const __grid_constant__ HpTmap b_map) {                                                        \
        gws_impl<TY, NKV, WIDEV, true, false>(x, w, plan, gather, scale, y, experts, K, N, swiglu, n_tiles,   \
                                              tokens, proxy_fence, rec, &b_map, nullptr);                     \
    }
// TMA_A too (no gather): the activation tensor map after the weights'.
#define GWS_TMA2_KERNEL(NAME, TY, NKV)                                                                        \
    extern "C" __global__ void __launch_bounds__(gws::THREADS, 1)                                             \
        NAME(const TY* x, const TY* w, const i32* plan, const i32* gather, const float* scale, TY* y,          \
             int experts, int K, int N, int swiglu, int n_tiles, int tokens, int proxy_fence, i32* rec,        \
             const __grid_constant__ HpTmap b_map, const __grid_constant__ HpTmap a_map) {                   \
        gws_impl<TY, NKV, false, true, true>(x, w, plan, gather, scale, y, experts, K, N, swiglu, n_tiles,    \
                                             tokens, proxy_fence, rec, &b_map, &a_map);                       \
    }
GWS_KERNEL(grouped_gemm_wgmma_ws_kn_bf16, bf16, false, false)
GWS_KERNEL(grouped_gemm_wgmma_ws_nk_bf16, bf16, true, false)
GWS_KERNEL(grouped_gemm_wgmma_ws_kn_f16, f16, false, false)
GWS_KERNEL(grouped_gemm_wgmma_ws_nk_f16, f16, true, false)
// The wide form (one m64n256k16 per k16 step): MOEKIT_CUDA_WGMMA_WIDE=1.
GWS_KERNEL(grouped_gemm_wgmma_ws_wide_kn_bf16, bf16, false, true)
GWS_KERNEL(grouped_gemm_wgmma_ws_wide_nk_bf16, bf16, true, true)
GWS_KERNEL(grouped_gemm_wgmma_ws_wide_kn_f16, f16, false, true)
GWS_KERNEL(grouped_gemm_wgmma_ws_wide_nk_f16, f16, true, true)
// B through TMA: MOEKIT_CUDA_GEMM=wgmma-ws-tma (with the wide form too).
GWS_TMA_KERNEL(grouped_gemm_wgmma_ws_tma_kn_bf16, bf16, false, false)
GWS_TMA_KERNEL(grouped_gemm_wgmma_ws_tma_nk_bf16, bf16, true, false)
GWS_TMA_KERNEL(grouped_gemm_wgmma_ws_tma_kn_f16, f16, false, false)
GWS_TMA_KERNEL(grouped_gemm_wgmma_ws_tma_nk_f16, f16, true, false)
GWS_TMA_KERNEL(grouped_gemm_wgmma_ws_tma_wide_kn_bf16, bf16, false, true)
GWS_TMA_KERNEL(grouped_gemm_wgmma_ws_tma_wide_nk_bf16, bf16, true, true)
GWS_TMA_KERNEL(grouped_gemm_wgmma_ws_tma_wide_kn_f16, f16, false, true)
GWS_TMA_KERNEL(grouped_gemm_wgmma_ws_tma_wide_nk_f16, f16, true, true)
// EPI: the TMA2 kernel whose idle producer warps store the output tiles (opt-in).
#define GWS_TMA2_EPI_KERNEL(NAME, TY, NKV)                                                                    \
    extern "C" __global__ void __launch_bounds__(gws::THREADS, 1)                                             \
        NAME(const TY* x, const TY* w, const i32* plan, const i32* gather, const float* scale, TY* y,          \
             int experts, int K, int N, int swiglu, int n_tiles, int tokens, int proxy_fence, i32* rec,        \
             const __grid_constant__ HpTmap b_map, const __grid_constant__ HpTmap a_map) {                   \
        gws_impl<TY, NKV, false, true, true, true>(x, w, plan, gather, scale, y, experts, K, N, swiglu,       \
                                                   n_tiles, tokens, proxy_fence, rec, &b_map, &a_map);        \
    }
GWS_TMA2_EPI_KERNEL(grouped_gemm_wgmma_ws_tma2_epi_kn_bf16, bf16, false)
GWS_TMA2_EPI_KERNEL(grouped_gemm_wgmma_ws_tma2_epi_nk_bf16, bf16, true)
GWS_TMA2_EPI_KERNEL(grouped_gemm_wgmma_ws_tma2_epi_kn_f16, f16, false)
GWS_TMA2_EPI_KERNEL(grouped_gemm_wgmma_ws_tma2_epi_nk_f16, f16, true)
// A through TMA too, where the rows are not gathered (the default there).
GWS_TMA2_KERNEL(grouped_gemm_wgmma_ws_tma2_kn_bf16, bf16, false)
GWS_TMA2_KERNEL(grouped_gemm_wgmma_ws_tma2_nk_bf16, bf16, true)
GWS_TMA2_KERNEL(grouped_gemm_wgmma_ws_tma2_kn_f16, f16, false)
GWS_TMA2_KERNEL(grouped_gemm_wgmma_ws_tma2_nk_f16, f16, true)

#endif  // __CUDA_ARCH_FEAT_SM90_ALL
