#line 1 "attention_sm90.cu"
// Attention forward on Hopper (sm_90a only): `attention_sm90_d{64,128}_{f16,bf16}`. Appended to
// attention.cu in one module (see src/runtime/sources.rs): same work items, arguments and
// masking helpers (att_row_range, att_col_masked, att_score, att_exp2, att_pack) as
// attention_fa2_impl; only the inner loop moves to wgmma.
//
// CTA: 128 query rows of one (item, query head), 256 threads = 2 warpgroups; warpgroup g owns
// rows 64g..64g+64 (warp w of it rows 16w..16w+16). Keys stream in tiles of BN = 128.
//   S = Q·K^T: wgmma m64n128k16 (D/16 steps), A = Q and B = K from shared memory (K-major).
//   Softmax on the accumulator in registers (log2 domain, as attention_fa2_impl).
//   O += P·V: wgmma m64nDk16 (8 steps), A = P from registers, B = V (MN-major, imm-trans-b 1).
// Accumulator fragment of m64nNk16 (f32), thread t of the warpgroup (warp w = t/32, lane l):
// register 4i + 2hr + j is row 16w + l/4 + 8hr, column 8i + 2(l%4) + j. The register A
// fragment of m64nNk16 (16-bit) is the mma.sync m16n8k16 A fragment of the warp's 16 rows:
// k step kk takes registers {pack(d[8kk], d[8kk+1]), pack(d[8kk+2], d[8kk+3]),
// pack(d[8kk+4], d[8kk+5]), pack(d[8kk+6], d[8kk+7])}, i.e. P register i = pack(d[2i], d[2i+1]).
//
// Intra-warpgroup overlap (FlashAttention-3's idea): tile n issues S_n = Q·K_n, then the
// P·V of the previous tile (P_{n-1} kept in registers), waits for S_n only, and runs the
// softmax of S_n while the tensor cores do P_{n-1}·V_{n-1}; then waits for that, rescales O
// and packs P_n.
//
// Shared memory (byte offsets from a 1024-aligned base): Q, then 2 stages of K, then 3 of V,
// each a 128-row tile of D columns in the 128-byte swizzle of the PTX ISA (as
// grouped_gemm_sm90.cu): 16-byte chunk c (columns 8c..8c+8) of row r lies at
//   (c / 8)·16384 + r·128 + ((c % 8) ^ (r % 8))·16,
// i.e. column halves of 64 (one 128-byte swizzle atom wide) 16 KiB apart. Descriptors
// (bits 0..13 start >> 4, 16..29 LBO >> 4, 32..45 SBO >> 4, 62..63 = 1: 128B swizzle):
// - Q (A, K-major), k step s: start = Q + (s/4)·16384 + 64g·128 + (s%4)·32, SBO 1024.
// - K (B, K-major: keys are N), k step s: start = K + (s/4)·16384 + (s%4)·32, SBO 1024.
// - V (B, MN-major: D is N), k step s (keys 16s..): start = V + 16s·128, LBO 16384 (next 64
//   columns), SBO 1024 (next 8 keys).
//
// Pipeline, key tile it (K stage it % 2, V stage it % 3); per tile, every thread:
//   waits for its own copies of tile it, fence.proxy.async, __syncthreads;
//   issues wgmma S_it, then P_{it-1}·V_{it-1};
//   copies tile it + 1 into K stage (it+1) % 2 (last read by S_{it-1}, which every warpgroup
//   waited for in tile it-1) and V stage (it+1) % 3 (last read by P_{it-2}·V_{it-2}, issued
//   and waited for in tile it-1; P_{it-1}·V_{it-1} reads stage (it-1) % 3), one commit group;
//   waits for S_it; softmax; waits for P·V; rescales O, packs P_it.
// No wgmma is in flight at the barrier. The first tile is peeled (no P·V before it), the last
// P·V follows the loop.
// Every warpgroup computes every tile of the CTA's key range (rows that see none of a tile
// get p = 0): a per-warpgroup skip would put wgmma in a branch ptxas cannot prove uniform,
// and it then serialises every wgmma of the kernel (info C7520).
// NOTE: the proxy fence sits where this thread has no copy in flight, so it costs little.

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

namespace a90 {
constexpr int BM = 128, BN = 128, THREADS = 256, K_STAGES = 2, V_STAGES = 3;
constexpr int HALF = 128 * 128;  // bytes of one 64-column half of a 128-row tile
// Bytes of one 128-row tile of D 16-bit columns.
template <int D> struct Tile {
    static constexpr int BYTES = 128 * D * 2;
};
// Dynamic shared memory asked for: Q + K and V stages + slack to align the base to 1024
// (keep in step with `Path::shared_bytes` in src/ops/attention.rs).
template <int D> struct Smem {
    static constexpr int BYTES = Tile<D>::BYTES * (1 + K_STAGES + V_STAGES) + 1024;
};
}  // namespace a90

__device__ __forceinline__ void a90_cp16(u32 dst, const void* src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void a90_cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void a90_cp_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }
__device__ __forceinline__ void a90_fence_proxy() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ void a90_mma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void a90_mma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void a90_mma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Keep the compiler from moving register reads or writes across this point: wgmma results
// (and its reads of A registers) happen behind the compiler's back, between issue and wait.
template <int N> __device__ __forceinline__ void a90_fence_f(float* d) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
template <int N> __device__ __forceinline__ void a90_fence_u(u32* d) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+r"(d[i])::"memory");
}

// Shared-memory matrix descriptor, 128-byte swizzle (see the header).
__device__ __forceinline__ unsigned long long a90_desc(u32 addr, u32 lbo, u32 sbo) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | ((unsigned long long)((lbo & 0x3FFFF) >> 4) << 16) |
           ((unsigned long long)((sbo & 0x3FFFF) >> 4) << 32) | (1ull << 62);
}

#define A90_D32                                                                                                 \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),  \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define A90_D64                                                                                                   \
    A90_D32, "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]),           \
        "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]),   \
        "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),   \
        "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),   \
        "+f"(d[63])
#define A90_R32                                                                                                  \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define A90_R64                                                                                                  \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "   \
    "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"

// d [64] (=|+=) Q (64 × 16, descriptor da) · K^T (16 × 128, descriptor db, K-major); `acc` 0
// overwrites d.
#define A90_SS(TY)                                                                                   \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                      \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " A90_R64              \
                 ", %64, %65, p, 1, 1, 0, 0;\n}\n"                                                  \
                 : A90_D64                                                                          \
                 : "l"(da), "l"(db), "r"(acc))
// d [N/2] += P (64 × 16, registers a) · V (16 × N, descriptor db, MN-major: imm-trans-b 1).
#define A90_RS128(TY)                                                                                  \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                        \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " A90_R64                \
                 ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"                                     \
                 : A90_D64                                                                            \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1))
#define A90_RS64(TY)                                                                                   \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                        \
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " A90_R32                 \
                 ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"                                     \
                 : A90_D32                                                                            \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1))

template <typename T> __device__ __forceinline__ void a90_qk(float* d, unsigned long long da, unsigned long long db, int acc);
template <> __device__ __forceinline__ void a90_qk<bf16>(float* d, unsigned long long da, unsigned long long db, int acc) {
    A90_SS("bf16");
}
template <> __device__ __forceinline__ void a90_qk<f16>(float* d, unsigned long long da, unsigned long long db, int acc) {
    A90_SS("f16");
}

template <typename T, int D> struct A90Pv;
template <> struct A90Pv<bf16, 128> {
    static __device__ __forceinline__ void run(float* d, const u32* a, unsigned long long db) { A90_RS128("bf16"); }
};
template <> struct A90Pv<f16, 128> {
    static __device__ __forceinline__ void run(float* d, const u32* a, unsigned long long db) { A90_RS128("f16"); }
};
template <> struct A90Pv<bf16, 64> {
    static __device__ __forceinline__ void run(float* d, const u32* a, unsigned long long db) { A90_RS64("bf16"); }
};
template <> struct A90Pv<f16, 64> {
    static __device__ __forceinline__ void run(float* d, const u32* a, unsigned long long db) { A90_RS64("f16"); }
};

// o [D/2] += P (64 × 128 keys: p [32] registers) · V (the tile at shared address `vt`).
template <typename T, int D> __device__ __forceinline__ void a90_pv(float* o, const u32* p, u32 vt) {
    const unsigned long long dv = a90_desc(vt, a90::HALF, 1024);
#pragma unroll
    for (int kk = 0; kk < a90::BN / 16; ++kk) A90Pv<T, D>::run(o, p + 4 * kk, dv + ((kk * 16 * 128) >> 4));
}

// The 128 threads of a warpgroup meet at named barrier `id` (barrier 0 is __syncthreads).
__device__ __forceinline__ void a90_bar(int id) { asm volatile("bar.sync %0, 128;" ::"r"(id) : "memory"); }

// The epilogue of warpgroup `wg` (thread `wt` of it, quad lane t; its accumulator rows wrow and
// wrow + 8 in `oacc`, their maxima and partial sums in mrow, lrow): normalises its 64 output rows
// and stages them in its own rows of the Q tile at sQ (64-column halves `qhalf` bytes apart, the
// tile's swizzled layout; only the warpgroup's own wgmma read them, all finished) between two
// meets at named barrier `bar`, then writes 16-byte chunks of the rows inside the sequence, and
// their LSE.
template <typename T, int D>
__device__ __forceinline__ void a90_store_rows(u32 sQ, int qhalf, int bar, int wg, int wt, int wrow, int t,
                                               const float* oacc, float* lrow, const float* mrow, T* o_, float* lse,
                                               int q0, int lq, int m0, int hq, int h, int tq) {
    float inv[2];
    att_final_inv(lrow, inv);
    a90_bar(bar);
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        const int row = wrow + 8 * x;
#pragma unroll
        for (int c = 0; c < D / 8; ++c) {
            const u32 addr = sQ + (c >> 3) * qhalf + row * 128 + (((c & 7) ^ (row & 7)) << 4) + 4 * t;
            const u32 val = att_pack<T>(oacc[4 * c + 2 * x] * inv[x], oacc[4 * c + 2 * x + 1] * inv[x]);
            asm volatile("st.shared.u32 [%0], %1;" ::"r"(addr), "r"(val) : "memory");
        }
        const int i = m0 + row;
        if (t == 0 && i < lq) lse[(size_t)h * tq + q0 + i] = att_lse(mrow[x], lrow[x]);
    }
    a90_bar(bar);
    constexpr int CPR = D / 8, RPW = 128 / CPR, PASSES = 64 / RPW;
    const int c = wt % CPR;
    u16* o = reinterpret_cast<u16*>(o_);
#pragma unroll
    for (int pass = 0; pass < PASSES; ++pass) {
        const int row = 64 * wg + wt / CPR + RPW * pass, i = m0 + row;
        if (i < lq) {
            const u32 addr = sQ + (c >> 3) * qhalf + row * 128 + (((c & 7) ^ (row & 7)) << 4);
            uint4 val;
            asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
                         : "=r"(val.x), "=r"(val.y), "=r"(val.z), "=r"(val.w)
                         : "r"(addr)
                         : "memory");
            *reinterpret_cast<uint4*>(o + ((size_t)(q0 + i) * hq + h) * D + c * 8) = val;
        }
    }
}

template <bool B> struct a90_flag {
    static constexpr bool value = B;
};

// Rows `row0..row0 + 128` (local; the first `valid` exist) of a [tokens, heads, D] tensor at
// `head` -> the swizzled tile at shared address `tile`, by all 256 threads; absent rows are
// zero-filled (nothing read). Thread: chunk c = tid % (D/8) of rows tid / (D/8) + RPP·j.
template <int D>
__device__ __forceinline__ void a90_load(u32 tile, const u16* g, int tok0, int row0, int valid, int heads, int head) {
    constexpr int CPR = D / 8, RPP = a90::THREADS / CPR, PASSES = a90::BM / RPP;
    const int c = threadIdx.x % CPR, r0 = threadIdx.x / CPR;
    const u32 dst = tile + (c >> 3) * a90::HALF + r0 * 128 + (((c & 7) ^ (r0 & 7)) << 4);
    const long long stride = (long long)heads * D;
    const u16* src = g + ((long long)tok0 + row0 + r0) * stride + (long long)head * D + c * 8;
#pragma unroll
    for (int j = 0; j < PASSES; ++j) {
        const bool ok = row0 + r0 + RPP * j < valid;
        a90_cp16(dst + j * RPP * 128, ok ? src + j * RPP * stride : g, ok);
    }
}

template <typename T, int D>
__device__ __forceinline__ void a90_impl(const T* q_, const T* k_, const T* v_, T* o_, float* lse, const i32* items,
                                         const i32* cr, int tq, int tk, int hq, int hkv, float scale, float softcap,
                                         int causal, long long wl, long long wr) {
    using namespace a90;
    constexpr int TILE = Tile<D>::BYTES, KS = D / 16, ON = D / 2;
    extern __shared__ __align__(1024) unsigned char a90_smem[];
    const u32 smem = (att_smem_addr(a90_smem) + 1023u) & ~1023u;
    const u32 sQ = smem, sK = smem + TILE, sV = smem + (1 + K_STAGES) * TILE;
    const u16* q = reinterpret_cast<const u16*>(q_);
    const u16* k = reinterpret_cast<const u16*>(k_);
    const u16* v = reinterpret_cast<const u16*>(v_);

    const int item = blockIdx.x / hq, h = blockIdx.x % hq, kvh = h / (hq / hkv);
    const i32* itm = items + (size_t)item * 5;
    const int q0 = itm[0], lq = itm[1], k0 = itm[2], lk = itm[3], m0 = itm[4];
    const int tid = threadIdx.x, wg = tid >> 7, lane = tid & 31, g = lane >> 2, t = lane & 3;
    // This thread's rows in the tile: wrow and wrow + 8.
    const int wrow = 64 * wg + 16 * ((tid >> 5) & 3) + g;

    // CTA key tiles: from the first row's lower bound to the last row's upper bound (both
    // bounds are non-decreasing in the row).
    const int last = (m0 + BM < lq ? m0 + BM : lq) - 1;
    int blo, bhi, unused0, unused1;
    att_row_range(m0, lq, lk, causal, wl, wr, blo, unused0);
    att_row_range(last, lq, lk, causal, wl, wr, unused1, bhi);
    const int nstart = (blo / BN) * BN;

    // Keys every valid row of this warpgroup sees: [wlast_lo, wfirst_hi) (empty when it has no
    // valid row); tiles inside it skip the element mask.
    const int wfirst = m0 + 64 * wg;
    const int wlast = (wfirst + 64 < lq ? wfirst + 64 : lq) - 1;
    int wfirst_hi = 0, wlast_lo = 0, unused2, unused3;
    if (wfirst < lq) {
        att_row_range(wfirst, lq, lk, causal, wl, wr, unused2, wfirst_hi);
        att_row_range(wlast, lq, lk, causal, wl, wr, wlast_lo, unused3);
    }

    float s[64], oacc[ON];
    u32 p[32];
#pragma unroll
    for (int e = 0; e < 64; ++e) s[e] = 0.0f;
#pragma unroll
    for (int e = 0; e < ON; ++e) oacc[e] = 0.0f;
#pragma unroll
    for (int e = 0; e < 32; ++e) p[e] = 0u;
    float mrow[2] = {ATT_NEG_INF, ATT_NEG_INF}, lrow[2] = {0.0f, 0.0f};
    const float scale_log2 = scale * ATT_LOG2E;

    a90_load<D>(sQ, q, q0, m0, lq, hq, h);
    if (nstart < bhi) {
        a90_load<D>(sK, k, k0, nstart, lk, hkv, kvh);
        a90_load<D>(sV, v, k0, nstart, lk, hkv, kvh);
    }
    a90_cp_commit();

    const unsigned long long dq = a90_desc(sQ + wg * 64 * 128, 16, 1024);
    // The V stage of the last computed tile, whose P waits in p for its O += P·V.
    u32 pend_v = 0;
    int ks_cur = 0, vs_cur = 0;  // K and V stages of the current tile
    // One key tile at n; FIRST (a compile-time flag, see the header): no P·V pending yet.
    auto tile = [&](int n, auto first_tag) {
        constexpr bool FIRST = decltype(first_tag)::value;
        a90_cp_wait_all();
        a90_fence_proxy();
        __syncthreads();  // tile n visible; every warpgroup is done with the stages loaded next
        const int ks_nxt = ks_cur ^ 1, vs_nxt = vs_cur == V_STAGES - 1 ? 0 : vs_cur + 1;
        const u32 kt = sK + ks_cur * TILE, vt = sV + vs_cur * TILE;
        ks_cur = ks_nxt;
        vs_cur = vs_nxt;

        // S = Q·K^T, then the previous tile's O += P·V behind it.
        a90_mma_fence();
        const unsigned long long dk = a90_desc(kt, 16, 1024);
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
            const u32 off = (u32)(((ks >> 2) * HALF + (ks & 3) * 32) >> 4);
            a90_qk<T>(s, dq + off, dk + off, ks > 0 ? 1 : 0);
        }
        a90_mma_commit();
        if constexpr (!FIRST) {
            a90_pv<T, D>(oacc, p, pend_v);
            a90_mma_commit();
        }
        // The next tile's copies go out while the tensor cores work (into stages neither of
        // the two wgmma groups above reads).
        if (n + BN < bhi) {
            a90_load<D>(sK + ks_nxt * TILE, k, k0, n + BN, lk, hkv, kvh);
            a90_load<D>(sV + vs_nxt * TILE, v, k0, n + BN, lk, hkv, kvh);
        }
        a90_cp_commit();
        if constexpr (FIRST) {
            a90_mma_wait<0>();
        } else {
            a90_mma_wait<1>();
        }
        a90_fence_f<64>(s);

        // Scores in the log2 domain, masked (only tiles some row of the warpgroup sees partly);
        // online softmax, while the tensor cores finish the previous P·V.
        const bool full = !cr && n + BN <= lk && n >= wlast_lo && n + BN <= wfirst_hi;
        float mx[2] = {ATT_NEG_INF, ATT_NEG_INF};
        if (full) {
#pragma unroll
            for (int e = 0; e < 64; ++e) {
                const float sc = softcap > 0.0f ? att_score(s[e], scale, softcap) * ATT_LOG2E : s[e] * scale_log2;
                s[e] = sc;
                mx[(e >> 1) & 1] = fmaxf(mx[(e >> 1) & 1], sc);
            }
        } else {
            int rlo[2], rhi[2];
            const int r = m0 + wrow;
            att_row_range(r, lq, lk, causal, wl, wr, rlo[0], rhi[0]);
            att_row_range(r + 8, lq, lk, causal, wl, wr, rlo[1], rhi[1]);
#pragma unroll
            for (int e = 0; e < 64; ++e) {
                const int x = (e >> 1) & 1, key = n + 8 * (e >> 2) + 2 * t + (e & 1);
                float sc = softcap > 0.0f ? att_score(s[e], scale, softcap) * ATT_LOG2E : s[e] * scale_log2;
                const bool ok = key >= rlo[x] && key < rhi[x] && !(cr && att_col_masked(cr, tk, k0 + key, r + 8 * x));
                if (!ok) sc = ATT_NEG_INF;
                s[e] = sc;
                mx[x] = fmaxf(mx[x], sc);
            }
        }
        float alpha[2], mu[2];
        att_online_max(mx, mrow, mu, alpha);
        float rs[2] = {0.0f, 0.0f};
#pragma unroll
        for (int e = 0; e < 64; ++e) {
            s[e] = att_exp2(s[e] - mu[(e >> 1) & 1]);
            rs[(e >> 1) & 1] += s[e];
        }
#pragma unroll
        for (int x = 0; x < 2; ++x) lrow[x] = lrow[x] * alpha[x] + rs[x];

        // The previous P·V is done: O and p are free. Rescale O (not before the first P·V:
        // O is still zero), then P as the register A operand of the next P·V.
        if constexpr (!FIRST) {
            a90_mma_wait<0>();
            a90_fence_f<64>(s);
            a90_fence_f<ON>(oacc);
            a90_fence_u<32>(p);
            // NOTE: warp-uniform vote: once the row maxima settle, most tiles skip this.
            if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
                for (int e = 0; e < ON; ++e) oacc[e] *= alpha[(e >> 1) & 1];
            }
        }
#pragma unroll
        for (int i = 0; i < 32; ++i) p[i] = att_pack<T>(s[2 * i], s[2 * i + 1]);
        pend_v = vt;
    };

    if (nstart < bhi) {
        tile(nstart, a90_flag<true>());
        for (int n = nstart + BN; n < bhi; n += BN) tile(n, a90_flag<false>());
        a90_mma_fence();
        a90_pv<T, D>(oacc, p, pend_v);
        a90_mma_commit();
        a90_mma_wait<0>();
        a90_fence_f<ON>(oacc);
    }
    a90_cp_wait_all();
    // NOTE: without a key tile no barrier made the other threads' Q copies complete before the
    // staging below overwrites sQ (validation rules this case out; kept for safety).
    if (nstart >= bhi) __syncthreads();

    // Normalise and store through the warpgroup's own rows of sQ.
    a90_store_rows<T, D>(sQ, HALF, 1 + wg, wg, tid & 127, wrow, t, oacc, lrow, mrow, o_, lse, q0, lq, m0, hq, h, tq);
}

// Instantiates `attention_sm90_dD_f16` and `attention_sm90_dD_bf16`: 256 threads, one CTA per
// SM (the shared memory alone allows no second one at D = 128).
#define A90_KERNEL_1(DIM, TY, SUFFIX)                                                                   \
    namespace attention_sm90_d##DIM##_##SUFFIX##_ns {                                                   \
    using T = TY;                                                                                       \
    extern "C" __global__ void __launch_bounds__(a90::THREADS, 1) attention_sm90_d##DIM##_##SUFFIX     \
        ATT_ROWS_PARAMS {                                                                               \
        a90_impl<TY, DIM> ATT_ARGS;                                                                     \
    }                                                                                                   \
    }
#ifndef ATT_HELPERS_ONLY
A90_KERNEL_1(64, f16, f16)
A90_KERNEL_1(64, bf16, bf16)
A90_KERNEL_1(128, f16, f16)
A90_KERNEL_1(128, bf16, bf16)
#endif

#endif  // __CUDA_ARCH_FEAT_SM90_ALL
