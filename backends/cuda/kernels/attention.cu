// Packed varlen attention (see src/ops/attention.rs and ops/src/attention.rs for the semantics).
//
// Work items come from the host: `items [n][5] = {q0, Lq, k0, Lk, m0}` (the sequence's first
// query row and key row in the packed tensors, its lengths, and the item's first local query
// row). One CTA handles one (item, query head): `blockIdx.x = item * Hq + h`, so the heaviest
// items (the host sorts them first) start on every head before the light ones.
//
// Mask arguments: `causal` (0/1), window `wl`, `wr` (`wl < 0`: no window), column ranges `cr`
// (null or `[4][Tk]` = lts, lte, uts, ute, rows local to the sequence).

#define ATT_BM 64
#define ATT_BN 64
#define ATT_THREADS 128
#define ATT_LOG2E 1.4426950408889634f
#define ATT_LN2 0.6931471805599453f
#define ATT_NEG_INF (-__int_as_float(0x7f800000))
// A row whose visible scores are all -inf or hold a NaN (only through non-finite q, k or v:
// validation leaves every row a key) has no positive sum `l`: its o and lse are NaN on every
// backend (`moekit_ops::numerics`).
#define ATT_NAN __int_as_float(0x7fc00000)

// The keys `[lo, hi)` that causal and window allow to local query row `i` (clamped to 0..Lk).
__device__ __forceinline__ void att_row_range(long long i, int lq, int lk, int causal, long long wl, long long wr,
                                              int& lo, int& hi) {
    long long diag = i + (long long)lk - (long long)lq;
    long long l = 0, h = lk;
    if (causal) h = h < diag + 1 ? h : diag + 1;
    if (wl >= 0) {
        l = l > diag - wl ? l : diag - wl;
        h = h < diag + wr + 1 ? h : diag + wr + 1;
    }
    l = l < 0 ? 0 : (l > lk ? lk : l);
    h = h < 0 ? 0 : (h > lk ? lk : h);
    lo = (int)l;
    hi = (int)(h > l ? h : l);
}

// Whether FlashMask column `col` (packed) masks local query row `i`.
__device__ __forceinline__ bool att_col_masked(const i32* cr, int tk, int col, int i) {
    return (cr[col] <= i && i < cr[tk + col]) || (cr[2 * tk + col] <= i && i < cr[3 * tk + col]);
}

__device__ __forceinline__ float att_score(float dot, float scale, float softcap) {
    float s = dot * scale;
    return softcap > 0.0f ? softcap * tanhf(s / softcap) : s;
}

// ---------------------------------------------------------------------------------------------
// Simple path (f32, and GPUs without bf16 tensor cores): one warp per query row, keys streamed
// 32 at a time (one key per lane for the score, then all lanes over D for P·V). Exact f32.

template <typename T, int D>
__device__ void attention_rows_impl(const T* q, const T* k, const T* v, T* o, float* lse, const i32* items,
                                    const i32* cr, int tq, int tk, int hq, int hkv, float scale, float softcap,
                                    int causal, long long wl, long long wr) {
    constexpr int PER = D / 32;
    __shared__ float sq[ATT_THREADS / 32][D];
    const int item = blockIdx.x / hq, h = blockIdx.x % hq, kvh = h / (hq / hkv);
    const i32* it = items + (size_t)item * 5;
    const int q0 = it[0], lq = it[1], k0 = it[2], lk = it[3], m0 = it[4];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int r = warp; r < ATT_BM; r += ATT_THREADS / 32) {
        const int i = m0 + r;
        if (i >= lq) break;
        const T* qr = q + ((size_t)(q0 + i) * hq + h) * D;
        __syncwarp();
        for (int c = lane; c < D; c += 32) sq[warp][c] = to_f32(qr[c]);
        __syncwarp();
        int lo, hi;
        att_row_range(i, lq, lk, causal, wl, wr, lo, hi);
        float m = ATT_NEG_INF, l = 0.0f, acc[PER];
#pragma unroll
        for (int c = 0; c < PER; ++c) acc[c] = 0.0f;
        for (int j0 = lo; j0 < hi; j0 += 32) {
            const int j = j0 + lane;
            float s = ATT_NEG_INF;
            if (j < hi && !(cr && att_col_masked(cr, tk, k0 + j, i))) {
                const T* kr = k + ((size_t)(k0 + j) * hkv + kvh) * D;
                float dot = 0.0f;
#pragma unroll 8
                for (int c = 0; c < D; ++c) dot += sq[warp][c] * to_f32(kr[c]);
                s = att_score(dot, scale, softcap);
            }
            const float mn = fmaxf(m, warp_max(s));
            // NOTE: a chunk with no allowed key so far keeps the max at -inf; shift by 0 then, so
            // exp(-inf - -inf) never makes a NaN (every p and alpha is 0 or 1 as it should be).
            const float mu = mn == ATT_NEG_INF ? 0.0f : mn;
            const float alpha = expf(m - mu);
            const float p = expf(s - mu);
            l = l * alpha + warp_sum(p);
            m = mn;
#pragma unroll
            for (int c = 0; c < PER; ++c) acc[c] *= alpha;
            const int cnt = hi - j0 < 32 ? hi - j0 : 32;
            for (int jj = 0; jj < cnt; ++jj) {
                const float pj = __shfl_sync(0xffffffffu, p, jj);
                if (pj == 0.0f) continue;  // warp-uniform: every lane holds the same pj
                const T* vr = v + ((size_t)(k0 + j0 + jj) * hkv + kvh) * D;
#pragma unroll
                for (int c = 0; c < PER; ++c) acc[c] += pj * to_f32(vr[lane + 32 * c]);
            }
        }
        const float inv = l > 0.0f ? 1.0f / l : ATT_NAN;
        T* orow = o + ((size_t)(q0 + i) * hq + h) * D;
#pragma unroll
        for (int c = 0; c < PER; ++c) orow[lane + 32 * c] = from_f32<T>(acc[c] * inv);
        if (lane == 0) lse[(size_t)h * tq + q0 + i] = l > 0.0f ? m + logf(l) : ATT_NAN;
    }
}

#define ATT_ROWS_PARAMS                                                                                       \
    (const T* q, const T* k, const T* v, T* o, float* lse, const i32* items, const i32* cr, int tq, int tk, \
     int hq, int hkv, float scale, float softcap, int causal, long long wl, long long wr)
#define ATT_ARGS (q, k, v, o, lse, items, cr, tq, tk, hq, hkv, scale, softcap, causal, wl, wr)

template <typename T> __device__ void attention_rows_d64_impl ATT_ROWS_PARAMS {
    attention_rows_impl<T, 64> ATT_ARGS;
}
template <typename T> __device__ void attention_rows_d128_impl ATT_ROWS_PARAMS {
    attention_rows_impl<T, 128> ATT_ARGS;
}
template <typename T> __device__ void attention_rows_d256_impl ATT_ROWS_PARAMS {
    attention_rows_impl<T, 256> ATT_ARGS;
}
// NOTE: ATT_HELPERS_ONLY (the warp-specialised Hopper module, src/runtime/sources.rs) keeps the
// helpers and leaves this file's kernels out, so that module compiles only its own.
#ifndef ATT_HELPERS_ONLY
MOEKIT_FLOAT_KERNELS(attention_rows_d64, ATT_ROWS_PARAMS, ATT_ARGS)
MOEKIT_FLOAT_KERNELS(attention_rows_d128, ATT_ROWS_PARAMS, ATT_ARGS)
MOEKIT_FLOAT_KERNELS(attention_rows_d256, ATT_ROWS_PARAMS, ATT_ARGS)
#endif

// ---------------------------------------------------------------------------------------------
// Tensor-core path (f16, bf16; sm_80+): FlashAttention-2 forward. A CTA of 4 warps owns 64
// query rows (16 per warp) of one head; key blocks of 64 stream through shared memory with
// cp.async (V of block n loads while S = Q·K^T is computed, K of block n+1 while O += P·V);
// Q·K^T and P·V on `mma.sync.m16n8k16` with f32 accumulation; online softmax in f32 in the
// log2 domain. Shared tiles are [64][D + 8]: the 16-byte pad makes ldmatrix conflict-free.
//
// Fragment layouts (g = lane / 4, t = lane % 4): an S or O accumulator tile of 8 columns holds
// (row g, cols 2t, 2t+1) in c0, c1 and (row g + 8, same cols) in c2, c3.

__device__ __forceinline__ u32 att_smem_addr(const void* p) {
    u32 r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

// 16 bytes global → shared; `pred` false zero-fills (reading nothing).
__device__ __forceinline__ void att_cp16(void* dst, const void* src, bool pred) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(att_smem_addr(dst)), "l"(src),
                 "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void att_cp_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void att_cp_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }

__device__ __forceinline__ void att_ldsm4(u32* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(att_smem_addr(p)));
}
__device__ __forceinline__ void att_ldsm4_t(u32* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(att_smem_addr(p)));
}

template <typename T> __device__ __forceinline__ void att_mma(float* c, const u32* a, u32 b0, u32 b1);
template <> __device__ __forceinline__ void att_mma<bf16>(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void att_mma<f16>(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as a packed pair (`lo` in the low half, the lower column).
template <typename T> __device__ __forceinline__ u32 att_pack(float lo, float hi);
template <> __device__ __forceinline__ u32 att_pack<bf16>(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
template <> __device__ __forceinline__ u32 att_pack<f16>(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ float att_exp2(float x) {
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
}

// ---------------------------------------------------------------------------------------------
// Softmax steps on mma.sync fragments, shared by the v1 and v2 kernels (x = 0, 1: a thread's
// rows g and g + 8 of a 16-row tile; a row's 4 threads are a quad of consecutive lanes).

// Raw score `s` in the log2 domain: scaled, soft-capped when `softcap` > 0.
__device__ __forceinline__ float att_score_log2(float s, float scale, float scale_log2, float softcap) {
    return softcap > 0.0f ? att_score(s, scale, softcap) * ATT_LOG2E : s * scale_log2;
}

// Whether key `key` (local) is allowed for local query row `row` with key range [lo, hi).
__device__ __forceinline__ bool att_key_ok(int key, int lo, int hi, const i32* cr, int tk, int k0, int row) {
    return key >= lo && key < hi && !(cr && att_col_masked(cr, tk, k0 + key, row));
}

// Scores S [NT][4] of keys nb.. in the log2 domain, masked unless `full` (rows ri[x], key ranges
// [rlo[x], rhi[x])); mx[x] = the thread's row maxima.
template <int NT>
__device__ __forceinline__ void att_mask_scores(float (*s)[4], float* mx, int nb, int t, bool full, const int* rlo,
                                                const int* rhi, const int* ri, const i32* cr, int tk, int k0,
                                                float scale, float scale_log2, float softcap) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int x = e >> 1, key = nb + j * 8 + 2 * t + (e & 1);
            float sc = att_score_log2(s[j][e], scale, scale_log2, softcap);
            if (!full) {
                if (!att_key_ok(key, rlo[x], rhi[x], cr, tk, k0, ri[x])) sc = ATT_NEG_INF;
            }
            s[j][e] = sc;
            mx[x] = fmaxf(mx[x], sc);
        }
    }
}

// Online softmax: the quad's row maxima mx, the new running max mrow, the shift mu and the
// rescale factor alpha of the old sums.
__device__ __forceinline__ void att_online_max(float* mx, float* mrow, float* mu, float* alpha) {
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 1));
        mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 2));
        const float mn = fmaxf(mrow[x], mx[x]);
        // NOTE: a row with no allowed key yet keeps the max at -inf; shift by 0 then, so
        // exp2(-inf - -inf) never makes a NaN.
        mu[x] = mn == ATT_NEG_INF ? 0.0f : mn;
        alpha[x] = att_exp2(mrow[x] - mu[x]);
        mrow[x] = mn;
    }
}

// P = exp2(S - mu) in place; rs[x] = the thread's part of the row sums.
template <int NT> __device__ __forceinline__ void att_exp_rowsum(float (*s)[4], const float* mu, float* rs) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int x = e >> 1;
            s[j][e] = att_exp2(s[j][e] - mu[x]);
            rs[x] += s[j][e];
        }
    }
}

// The A fragment of P·V from two S tiles of 8 keys (keys 0..8 and 8..16 of the k16 step).
template <typename T> __device__ __forceinline__ void att_pack_a(u32* a, const float* s0, const float* s1) {
    a[0] = att_pack<T>(s0[0], s0[1]);
    a[1] = att_pack<T>(s0[2], s0[3]);
    a[2] = att_pack<T>(s1[0], s1[1]);
    a[3] = att_pack<T>(s1[2], s1[3]);
}

// O [OT][4] *= alpha of its row.
template <int OT> __device__ __forceinline__ void att_scale_o(float (*oacc)[4], const float* alpha) {
#pragma unroll
    for (int d = 0; d < OT; ++d) {
        oacc[d][0] *= alpha[0];
        oacc[d][1] *= alpha[0];
        oacc[d][2] *= alpha[1];
        oacc[d][3] *= alpha[1];
    }
}

// One key tile's online softmax on mma.sync fragments: the scores S [NT][4] of keys nb.. in the
// log2 domain, masked unless `full` (att_mask_scores), the running maxima mrow moved, P =
// exp2(S - mu) in place, the row sums lrow and O [OT][4] rescaled.
template <int NT, int OT>
__device__ __forceinline__ void att_softmax_tile(float (*s)[4], float (*oacc)[4], float* mrow, float* lrow, int nb,
                                                 int t, bool full, const int* rlo, const int* rhi, const int* ri,
                                                 const i32* cr, int tk, int k0, float scale, float scale_log2,
                                                 float softcap) {
    float mx[2] = {ATT_NEG_INF, ATT_NEG_INF};
    att_mask_scores<NT>(s, mx, nb, t, full, rlo, rhi, ri, cr, tk, k0, scale, scale_log2, softcap);
    float alpha[2], mu[2];
    att_online_max(mx, mrow, mu, alpha);
    float rs[2] = {0.0f, 0.0f};
    att_exp_rowsum<NT>(s, mu, rs);
#pragma unroll
    for (int x = 0; x < 2; ++x) lrow[x] = lrow[x] * alpha[x] + rs[x];
    att_scale_o<OT>(oacc, alpha);
}

// Final row sums over the quad (in place) and their inverses (NaN for a row without a positive
// sum: all its visible scores -inf, or a NaN among them; padding rows past Lq are never stored).
__device__ __forceinline__ void att_final_inv(float* lrow, float* inv) {
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        lrow[x] += __shfl_xor_sync(0xffffffffu, lrow[x], 1);
        lrow[x] += __shfl_xor_sync(0xffffffffu, lrow[x], 2);
        inv[x] = lrow[x] > 0.0f ? 1.0f / lrow[x] : ATT_NAN;
    }
}

// The natural-log LSE of a row from its log2-domain max `m` and sum `l` (NaN without a positive sum).
__device__ __forceinline__ float att_lse(float m, float l) {
    return l > 0.0f ? (m + log2f(l)) * ATT_LN2 : ATT_NAN;
}

// Normalised O [OT][4] of rows r0, r0 + 8 → the staging tile (u32 pairs, row stride LD halves).
template <typename T, int OT, int LD>
__device__ __forceinline__ void att_stage_o(u32* stage, int r0, int t, float (*oacc)[4], const float* inv) {
#pragma unroll
    for (int d = 0; d < OT; ++d) {
        const int col = d * 8 + 2 * t;
        stage[(r0 * LD + col) / 2] = att_pack<T>(oacc[d][0] * inv[0], oacc[d][1] * inv[0]);
        stage[((r0 + 8) * LD + col) / 2] = att_pack<T>(oacc[d][2] * inv[1], oacc[d][3] * inv[1]);
    }
}

// The warp's ROWS staged rows (tile rows wrow.., local rows first..; those < lq) → o, 16-byte chunks.
template <typename T, int D, int ROWS>
__device__ __forceinline__ void att_store_o(T* o, const T* tile, int wrow, int first, int lq, int q0, int hq, int h,
                                            int lane) {
    constexpr int LD = D + 8, CH = D / 8;
    for (int c = lane; c < ROWS * CH; c += 32) {
        const int r = c / CH, ch = c % CH, i = first + r;
        if (i < lq) {
            const uint4 val = *reinterpret_cast<const uint4*>(tile + (wrow + r) * LD + ch * 8);
            *reinterpret_cast<uint4*>(o + ((size_t)(q0 + i) * hq + h) * D + ch * 8) = val;
        }
    }
}

// Rows `row0..row0 + 64` (local, `valid` of them present) of a [tokens, heads, D] tensor at
// `head` → the shared tile [64][D + 8]; absent rows are zero-filled.
template <typename T, int D>
__device__ __forceinline__ void att_load_tile(T* tile, const T* g, int tok0, int row0, int valid, int heads,
                                              int head) {
    constexpr int CH = D / 8, LD = D + 8;
    for (int c = threadIdx.x; c < ATT_BM * CH; c += ATT_THREADS) {
        const int r = c / CH, ch = c % CH;
        const bool ok = row0 + r < valid;
        const T* src = ok ? g + ((size_t)(tok0 + row0 + r) * heads + head) * D + ch * 8 : g;
        att_cp16(tile + r * LD + ch * 8, src, ok);
    }
}

template <typename T, int D>
__device__ void attention_mma_impl(const T* q, const T* k, const T* v, T* o, float* lse, const i32* items,
                                   const i32* cr, int tq, int tk, int hq, int hkv, float scale, float softcap,
                                   int causal, long long wl, long long wr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int LD = D + 8, KD = D / 16, NT = ATT_BN / 8, OT = D / 8;
    // NOTE: Q stays in registers up to D = 128; at D = 256 the O accumulator alone takes 128
    // registers, so Q fragments are re-read from shared memory each key block instead.
    constexpr bool Q_REGS = D <= 128;
    extern __shared__ __align__(16) unsigned char att_smem[];
    T* sQ = reinterpret_cast<T*>(att_smem);
    T* sK = sQ + ATT_BM * LD;
    T* sV = sK + ATT_BN * LD;

    const int item = blockIdx.x / hq, h = blockIdx.x % hq, kvh = h / (hq / hkv);
    const i32* it = items + (size_t)item * 5;
    const int q0 = it[0], lq = it[1], k0 = it[2], lk = it[3], m0 = it[4];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int wrow = warp * 16;

    // Key blocks: from the first row's lower bound to the last row's upper bound (both bounds
    // are non-decreasing in the row).
    const int last = (m0 + ATT_BM < lq ? m0 + ATT_BM : lq) - 1;
    int blo, bhi, first_hi, last_lo;
    att_row_range(m0, lq, lk, causal, wl, wr, blo, first_hi);
    att_row_range(last, lq, lk, causal, wl, wr, last_lo, bhi);
    const int nstart = (blo / ATT_BN) * ATT_BN;

    // This thread's two rows (g and g + 8 of the warp's 16): local index and key range.
    int ri[2], rlo[2], rhi[2];
    for (int x = 0; x < 2; ++x) {
        ri[x] = m0 + wrow + g + 8 * x;
        att_row_range(ri[x], lq, lk, causal, wl, wr, rlo[x], rhi[x]);
    }

    float oacc[OT][4];
#pragma unroll
    for (int n = 0; n < OT; ++n) oacc[n][0] = oacc[n][1] = oacc[n][2] = oacc[n][3] = 0.0f;
    float mrow[2] = {ATT_NEG_INF, ATT_NEG_INF}, lrow[2] = {0.0f, 0.0f};
    u32 qf[Q_REGS ? KD : 1][4];

    const float scale_log2 = scale * ATT_LOG2E;
    att_load_tile<T, D>(sQ, q, q0, m0, lq, hq, h);
    if (nstart < bhi) att_load_tile<T, D>(sK, k, k0, nstart, lk, hkv, kvh);
    att_cp_commit();

    for (int n = nstart; n < bhi; n += ATT_BN) {
        att_cp_wait_all();
        __syncthreads();  // K[n] (and Q) visible; every warp is done with V of the last block
        att_load_tile<T, D>(sV, v, k0, n, lk, hkv, kvh);
        att_cp_commit();
        if (Q_REGS && n == nstart) {
#pragma unroll
            for (int kk = 0; kk < (Q_REGS ? KD : 1); ++kk)
                att_ldsm4(qf[kk], sQ + (wrow + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
        }

        // S = Q·K^T for this warp's 16 rows × 64 keys.
        float s[NT][4];
#pragma unroll
        for (int j = 0; j < NT; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
            u32 a[4];
            if (Q_REGS) {
                a[0] = qf[Q_REGS ? kk : 0][0];
                a[1] = qf[Q_REGS ? kk : 0][1];
                a[2] = qf[Q_REGS ? kk : 0][2];
                a[3] = qf[Q_REGS ? kk : 0][3];
            } else {
                att_ldsm4(a, sQ + (wrow + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
            }
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                u32 b[4];
                att_ldsm4(b, sK + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
                att_mma<T>(s[2 * np], a, b[0], b[1]);
                att_mma<T>(s[2 * np + 1], a, b[2], b[3]);
            }
        }

        // Scores in the log2 domain, masked; online softmax.
        const bool full = !cr && n + ATT_BN <= lk && n >= last_lo && n + ATT_BN <= first_hi;
        att_softmax_tile<NT, OT>(s, oacc, mrow, lrow, n, t, full, rlo, rhi, ri, cr, tk, k0, scale, scale_log2,
                                 softcap);

        att_cp_wait_all();
        __syncthreads();  // V[n] visible; every warp is done with K[n]
        if (n + ATT_BN < bhi) att_load_tile<T, D>(sK, k, k0, n + ATT_BN, lk, hkv, kvh);
        att_cp_commit();

        // O += P·V: P (16 × 64) from the S accumulators, V through transposed ldmatrix.
#pragma unroll
        for (int kk = 0; kk < ATT_BN / 16; ++kk) {
            u32 a[4];
            att_pack_a<T>(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                u32 b[4];
                att_ldsm4_t(b, sV + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + dp * 16 + (lane >> 4) * 8);
                att_mma<T>(oacc[2 * dp], a, b[0], b[1]);
                att_mma<T>(oacc[2 * dp + 1], a, b[2], b[3]);
            }
        }
    }
    att_cp_wait_all();

    // Normalise; stage the warp's 16 output rows in its own rows of sQ (no other warp reads
    // them), then write them out in 16-byte chunks.
    float inv[2];
    att_final_inv(lrow, inv);
    __syncwarp();
    att_stage_o<T, OT, LD>(reinterpret_cast<u32*>(sQ), wrow + g, t, oacc, inv);
    __syncwarp();
    att_store_o<T, D, 16>(o, sQ, wrow, m0 + wrow, lq, q0, hq, h, lane);
    if (t == 0) {
#pragma unroll
        for (int x = 0; x < 2; ++x) {
            if (ri[x] < lq) lse[(size_t)h * tq + q0 + ri[x]] = att_lse(mrow[x], lrow[x]);
        }
    }
#endif
}

// Instantiates `attention_mma_dD_f16` and `attention_mma_dD_bf16`.
#define ATT_MMA_KERNEL_1(DIM, TY, SUFFIX)                                                           \
    namespace attention_mma_d##DIM##_##SUFFIX##_ns {                                                \
    using T = TY;                                                                                   \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) attention_mma_d##DIM##_##SUFFIX       \
        ATT_ROWS_PARAMS {                                                                           \
        attention_mma_impl<TY, DIM> ATT_ARGS;                                                       \
    }                                                                                               \
    }
#define ATT_MMA_KERNELS(DIM) ATT_MMA_KERNEL_1(DIM, f16, f16) ATT_MMA_KERNEL_1(DIM, bf16, bf16)
#ifndef ATT_HELPERS_ONLY
ATT_MMA_KERNELS(64)
ATT_MMA_KERNELS(128)
ATT_MMA_KERNELS(256)
#endif

// ---------------------------------------------------------------------------------------------
// Tensor-core path v2 (f16, bf16; D <= 128): FlashAttention-2 tiling as in the FA2 sm80/sm90
// kernels. A CTA of 4 warps owns 128 query rows; each warp owns 32 rows as two 16-row MMA
// tiles, so every K and V fragment read from shared memory feeds two MMAs (half the ldmatrix
// traffic per FLOP of v1, which was shared-memory bound). Q fragments are re-read from shared
// memory each key block (32 more registers for the second tile do not fit). K/V blocks of 64
// keys are double-buffered: block n + 1 loads with cp.async while block n is computed, one
// wait + barrier per key block. Per warp, key blocks that no row of the warp can see are
// skipped and blocks every row fully sees skip the element mask.
//
// Shared memory: sQ [128][D + 8], then two stages of (K [64][D + 8], V [64][D + 8]).

#define ATT2_BM 128
#define ATT2_BN 64
#define ATT2_BS 32
#define ATT2_THREADS 128
#define ATT2_MT 2

// ldmatrix on a 32-bit shared address (the constant offsets fold into the instruction).
__device__ __forceinline__ void att2_ldsm4(u32* r, u32 a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void att2_ldsm4_t(u32* r, u32 a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// Rows `row0..row0 + ROWS` (local, `valid` of them present) of a [tokens, heads, D] tensor at
// `head` → the shared tile [ROWS][D + 8] by ATT2_THREADS threads; absent rows are zero-filled.
template <typename T, int D, int ROWS>
__device__ __forceinline__ void att2_load_tile(T* tile, const T* g, int tok0, int row0, int valid, int heads,
                                               int head) {
    constexpr int CH = D / 8, LD = D + 8;
#pragma unroll 1
    for (int c = threadIdx.x; c < ROWS * CH; c += ATT2_THREADS) {
        const int r = c / CH, ch = c % CH;
        const bool ok = row0 + r < valid;
        const T* src = ok ? g + ((size_t)(tok0 + row0 + r) * heads + head) * D + ch * 8 : g;
        att_cp16(tile + r * LD + ch * 8, src, ok);
    }
}

template <typename T, int D>
__device__ void attention_fa2_impl(const T* q, const T* k, const T* v, T* o, float* lse, const i32* items,
                                   const i32* cr, int tq, int tk, int hq, int hkv, float scale, float softcap,
                                   int causal, long long wl, long long wr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int LD = D + 8, KD = D / 16, NT = ATT2_BS / 8, OT = D / 8, MT = ATT2_MT;
    constexpr int STAGE = 2 * ATT2_BN * LD;  // elements of one K + V stage
    extern __shared__ __align__(16) unsigned char att_smem[];
    T* sQ = reinterpret_cast<T*>(att_smem);
    T* sKV = sQ + ATT2_BM * LD;

    const int item = blockIdx.x / hq, h = blockIdx.x % hq, kvh = h / (hq / hkv);
    const i32* it = items + (size_t)item * 5;
    const int q0 = it[0], lq = it[1], k0 = it[2], lk = it[3], m0 = it[4];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int wrow = warp * (16 * MT);

    // CTA key blocks: from the first row's lower bound to the last row's upper bound (both
    // bounds are non-decreasing in the row).
    const int last = (m0 + ATT2_BM < lq ? m0 + ATT2_BM : lq) - 1;
    int blo, bhi, unused0, unused1;
    att_row_range(m0, lq, lk, causal, wl, wr, blo, unused0);
    att_row_range(last, lq, lk, causal, wl, wr, unused1, bhi);
    const int nstart = (blo / ATT2_BN) * ATT2_BN;

    // This warp's valid rows and their key span; a warp with no valid row sees no key.
    const int wfirst = m0 + wrow;
    const int wlast = (wfirst + 16 * MT < lq ? wfirst + 16 * MT : lq) - 1;
    int wlo = 0, wfirst_hi = 0, wlast_lo = 0, whi = 0;
    if (wfirst < lq) {
        att_row_range(wfirst, lq, lk, causal, wl, wr, wlo, wfirst_hi);
        att_row_range(wlast, lq, lk, causal, wl, wr, wlast_lo, whi);
    }

    float oacc[MT][OT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int n = 0; n < OT; ++n) oacc[mt][n][0] = oacc[mt][n][1] = oacc[mt][n][2] = oacc[mt][n][3] = 0.0f;
    float mrow[MT][2], lrow[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        mrow[mt][0] = mrow[mt][1] = ATT_NEG_INF;
        lrow[mt][0] = lrow[mt][1] = 0.0f;
    }
    const float scale_log2 = scale * ATT_LOG2E;

    // Per-lane shared byte addresses of the ldmatrix sources (stage 0 for K and V): Q rows of
    // the warp (A layout), K rows as the B operand, V rows through the transposed load.
    const u32 q_lane = att_smem_addr(sQ) + ((wrow + (lane & 15)) * LD + (lane >> 4) * 8) * 2;
    const u32 kv_lane =
        att_smem_addr(sKV) + (((lane >> 4) * 8 + (lane & 7)) * LD + ((lane >> 3) & 1) * 8) * 2;
    const u32 v_lane =
        att_smem_addr(sKV + ATT2_BN * LD) + ((((lane >> 3) & 1) * 8 + (lane & 7)) * LD + (lane >> 4) * 8) * 2;

    att2_load_tile<T, D, ATT2_BM>(sQ, q, q0, m0, lq, hq, h);
    if (nstart < bhi) {
        att2_load_tile<T, D, ATT2_BN>(sKV, k, k0, nstart, lk, hkv, kvh);
        att2_load_tile<T, D, ATT2_BN>(sKV + ATT2_BN * LD, v, k0, nstart, lk, hkv, kvh);
    }
    att_cp_commit();

    int stage = 0;
    for (int n = nstart; n < bhi; n += ATT2_BN, stage ^= 1) {
        att_cp_wait_all();
        // K/V[n] (and Q) visible to all; every warp is done with block n - 1, whose stage the
        // next load overwrites.
        __syncthreads();
        if (n + ATT2_BN < bhi) {
            T* nxt = sKV + (stage ^ 1) * STAGE;
            att2_load_tile<T, D, ATT2_BN>(nxt, k, k0, n + ATT2_BN, lk, hkv, kvh);
            att2_load_tile<T, D, ATT2_BN>(nxt + ATT2_BN * LD, v, k0, n + ATT2_BN, lk, hkv, kvh);
        }
        att_cp_commit();
        // Keys in two compute steps of 32 (S for 2 × 16 rows × 64 keys would not fit in the
        // registers next to the O accumulators).
#pragma unroll 1
        for (int sub = 0; sub < ATT2_BN; sub += ATT2_BS) {
            // NOTE: warp-uniform skip of keys no row of this warp can see (causal: the keys right
            // of the diagonal of the warp's 32 rows); the barrier above is the only one in the
            // loop, so a skipping warp still meets every other warp there.
            const int nb = n + sub;
            if (nb >= whi || nb + ATT2_BS <= wlo) continue;
            const u32 kaddr = kv_lane + (stage * STAGE + sub * LD) * 2, vaddr = v_lane + (stage * STAGE + sub * LD) * 2;

            // S = Q·K^T for this warp's 2 × 16 rows × 32 keys; each K fragment feeds both tiles.
            float s[MT][NT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int j = 0; j < NT; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KD; ++kk) {
                u32 a[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
                    att2_ldsm4(a[mt], q_lane + (mt * 16 * LD + kk * 16) * 2);
#pragma unroll
                for (int np = 0; np < NT / 2; ++np) {
                    u32 b[4];
                    att2_ldsm4(b, kaddr + (np * 16 * LD + kk * 16) * 2);
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        att_mma<T>(s[mt][2 * np], a[mt], b[0], b[1]);
                        att_mma<T>(s[mt][2 * np + 1], a[mt], b[2], b[3]);
                    }
                }
            }

            // Scores in the log2 domain, masked (only blocks some row of the warp sees partly);
            // online softmax; P packed into A fragments right away so S dies before P·V.
            const bool full = !cr && nb + ATT2_BS <= lk && nb >= wlast_lo && nb + ATT2_BS <= wfirst_hi;
            u32 p[MT][ATT2_BS / 16][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                // NOTE: the rows' key ranges are recomputed here rather than kept in registers
                // across the loop (only blocks on a mask edge need them).
                const int ri[2] = {wfirst + mt * 16 + g, wfirst + mt * 16 + g + 8};
                int rlo[2] = {0, 0}, rhi[2] = {0, 0};
                if (!full) {
                    for (int x = 0; x < 2; ++x) att_row_range(ri[x], lq, lk, causal, wl, wr, rlo[x], rhi[x]);
                }
                float mx[2] = {ATT_NEG_INF, ATT_NEG_INF};
                att_mask_scores<NT>(s[mt], mx, nb, t, full, rlo, rhi, ri, cr, tk, k0, scale, scale_log2, softcap);
                float alpha[2], mu[2];
                att_online_max(mx, mrow[mt], mu, alpha);
                float rs[2] = {0.0f, 0.0f};
                att_exp_rowsum<NT>(s[mt], mu, rs);
#pragma unroll
                for (int kk = 0; kk < ATT2_BS / 16; ++kk) att_pack_a<T>(p[mt][kk], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
                for (int x = 0; x < 2; ++x) lrow[mt][x] = lrow[mt][x] * alpha[x] + rs[x];
                att_scale_o<OT>(oacc[mt], alpha);
            }

            // O += P·V: V through transposed ldmatrix, each fragment feeding both tiles.
#pragma unroll
            for (int kk = 0; kk < ATT2_BS / 16; ++kk) {
#pragma unroll
                for (int dp = 0; dp < D / 16; ++dp) {
                    u32 b[4];
                    att2_ldsm4_t(b, vaddr + (kk * 16 * LD + dp * 16) * 2);
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        att_mma<T>(oacc[mt][2 * dp], p[mt][kk], b[0], b[1]);
                        att_mma<T>(oacc[mt][2 * dp + 1], p[mt][kk], b[2], b[3]);
                    }
                }
            }
        }
    }
    att_cp_wait_all();
    // NOTE: without a key block no barrier made the other threads' Q copies visible before
    // the staging below overwrites sQ (validation rules this case out; kept for safety).
    if (nstart >= bhi) __syncthreads();

    // Normalise; stage the warp's 32 output rows in its own rows of sQ (only this warp ever
    // reads them), then write them out in 16-byte chunks.
    __syncwarp();
    u32* stage_out = reinterpret_cast<u32*>(sQ);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        float inv[2];
        att_final_inv(lrow[mt], inv);
        att_stage_o<T, OT, LD>(stage_out, wrow + mt * 16 + g, t, oacc[mt], inv);
        if (t == 0) {
#pragma unroll
            for (int x = 0; x < 2; ++x) {
                const int i = wfirst + mt * 16 + g + 8 * x;
                if (i < lq) lse[(size_t)h * tq + q0 + i] = att_lse(mrow[mt][x], lrow[mt][x]);
            }
        }
    }
    __syncwarp();
    att_store_o<T, D, 16 * MT>(o, sQ, wrow, wfirst, lq, q0, hq, h, lane);
#endif
}

// Instantiates `attention_fa2_dD_f16` and `attention_fa2_dD_bf16`; at most 255 registers so
// that two CTAs (8 warps) share an SM.
#define ATT_FA2_KERNEL_1(DIM, TY, SUFFIX)                                                          \
    namespace attention_fa2_d##DIM##_##SUFFIX##_ns {                                               \
    using T = TY;                                                                                  \
    extern "C" __global__ void __launch_bounds__(ATT2_THREADS, 2) attention_fa2_d##DIM##_##SUFFIX \
        ATT_ROWS_PARAMS {                                                                          \
        attention_fa2_impl<TY, DIM> ATT_ARGS;                                                      \
    }                                                                                              \
    }
#define ATT_FA2_KERNELS(DIM) ATT_FA2_KERNEL_1(DIM, f16, f16) ATT_FA2_KERNEL_1(DIM, bf16, bf16)
#ifndef ATT_HELPERS_ONLY
ATT_FA2_KERNELS(64)
ATT_FA2_KERNELS(128)
#endif
