#line 1 "attention_decode.cu"
// Split-KV decode attention (src/ops/attention.rs, `Path::Decode`): `attention_decode_d{64,128}_*`
// then `attention_decode_combine_d{64,128}_*`, for batches whose sequences have few query rows
// (Lq · G <= 16, G = Hq / Hkv the GQA group) and long keys. Its own module, after attention.cu
// with ATT_HELPERS_ONLY (the mma.sync, ldmatrix, cp.async and softmax helpers).
//
// Work items `[n][6] = {q0, Lq, k0, Lk, ks0, ks1}`: a split ks0..ks1 (local keys, ks0 a multiple of
// DEC_BN) of one sequence; a sequence's splits are consecutive items. One CTA per (item, kv head),
// `blockIdx.x = item * Hkv + kvh`, 4 warps. Its 16 rows are the group's query rows: row rho < Lq·G
// is query row rho / G (local) of head kvh·G + rho % G; the others are zero and never stored. So
// the K and V of a kv head are read once for its whole group, which is what bounds decode.
// - Q once into shared memory and into registers (A fragments for all of D).
// - K/V in blocks of DEC_BN = 64 keys through DEC_STAGES = 2 cp.async stages; keys past ks1 are
//   zero-filled and masked. NOTE: 3 stages (two blocks in flight while one is computed) ran
//   slower: 106 KiB of shared memory leave 2 CTAs per SM at D 128 instead of 3, and the kernel
//   took 115 against 94 us on B8 S8192 (ncu, run 27 calls G and H): the warps resident matter
//   more than the depth of each one's pipeline. Warp w takes keys 16w..16w+16 of each block: S (16 × 16) by mma.sync m16n8k16, its
//   own online softmax over its keys (the helpers of the other kernels: scores in the log2 domain,
//   masks, softcap), O += P·V.
// - The 4 warps merge through shared memory (after the last block, over the K/V stages): the
//   split's row maxima M (log2 domain) and sums L, and O = sum over warps of O_w · 2^(m_w - M),
//   unnormalised, to `part_o [n][Hkv][16][D]` and `part_ml [n][Hkv][16][2]` (f32).
// The combine kernel, one CTA of D threads per (sequence, kv head, row) (`seqs [s][2] = {first
// item, splits}`), merges a sequence's splits: M = max m_j, L = sum l_j 2^(m_j - M), o = sum O_j 2^(m_j - M) / L,
// lse = (M + log2 L) ln 2 (NaN without a positive sum, as everywhere).

#define DEC_BN 64
#define DEC_THREADS 128
#define DEC_ROWS 16
#define DEC_STAGES 2

// Waits until at most N of this thread's cp.async groups are pending.
template <int N> __device__ __forceinline__ void dec_cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

template <typename T, int D>
__device__ void attention_decode_impl(const T* q, const T* k, const T* v, float* part_o, float* part_ml,
                                      const i32* items, const i32* cr, int tk, int hq, int hkv, float scale,
                                      float softcap, int causal, long long wl, long long wr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int LD = D + 8, KD = D / 16, OT = D / 8, CH = D / 8;
    constexpr int STAGE = 2 * DEC_BN * LD;  // elements of one K + V stage
    extern __shared__ __align__(16) unsigned char att_smem[];
    T* sQ = reinterpret_cast<T*>(att_smem);  // [16][LD]
    T* sKV = sQ + DEC_ROWS * LD;             // DEC_STAGES stages of K [64][LD], V [64][LD]

    const int item = blockIdx.x / hkv, kvh = blockIdx.x % hkv, grp = hq / hkv;
    const i32* it = items + (size_t)item * 6;
    const int q0 = it[0], lq = it[1], k0 = it[2], lk = it[3], ks0 = it[4], ks1 = it[5];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int rows = lq * grp;

    // Q: row rho < rows is token q0 + rho / G of head kvh·G + rho % G; the rest zero-filled.
    for (int c = threadIdx.x; c < DEC_ROWS * CH; c += DEC_THREADS) {
        const int r = c / CH, ch = c % CH;
        const bool ok = r < rows;
        const T* src = ok ? q + ((size_t)(q0 + r / grp) * hq + kvh * grp + r % grp) * D + ch * 8 : q;
        att_cp16(sQ + r * LD + ch * 8, src, ok);
    }
    // The first DEC_STAGES - 1 blocks, a commit group each (Q in the first).
#pragma unroll
    for (int st = 0; st < DEC_STAGES - 1; ++st) {
        const int n = ks0 + st * DEC_BN;
        if (n < ks1) {
            att2_load_tile<T, D, DEC_BN>(sKV + st * STAGE, k, k0, n, ks1, hkv, kvh);
            att2_load_tile<T, D, DEC_BN>(sKV + st * STAGE + DEC_BN * LD, v, k0, n, ks1, hkv, kvh);
        }
        att_cp_commit();
    }

    // This thread's rows g and g + 8: their local query rows and key ranges, cut to the split
    // (rows past `rows` see no key).
    int ri[2], rlo[2], rhi[2];
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        const int rho = g + 8 * x;
        ri[x] = rho / grp;
        rlo[x] = rhi[x] = 0;
        if (rho < rows) att_row_range(ri[x], lq, lk, causal, wl, wr, rlo[x], rhi[x]);
        rhi[x] = min(rhi[x], ks1);
    }

    float oacc[OT][4];
#pragma unroll
    for (int n = 0; n < OT; ++n) oacc[n][0] = oacc[n][1] = oacc[n][2] = oacc[n][3] = 0.0f;
    float mrow[2] = {ATT_NEG_INF, ATT_NEG_INF}, lrow[2] = {0.0f, 0.0f};
    const float scale_log2 = scale * ATT_LOG2E;

    const u32 q_lane = att_smem_addr(sQ) + ((lane & 15) * LD + (lane >> 4) * 8) * 2;
    const u32 kv_lane =
        att_smem_addr(sKV) + (((lane >> 4) * 8 + (lane & 7) + 16 * warp) * LD + ((lane >> 3) & 1) * 8) * 2;
    const u32 v_lane = att_smem_addr(sKV + DEC_BN * LD) +
                       ((((lane >> 3) & 1) * 8 + (lane & 7) + 16 * warp) * LD + (lane >> 4) * 8) * 2;

    u32 qa[KD][4];
    int stage = 0;
    for (int n = ks0; n < ks1; n += DEC_BN, stage = stage + 1 == DEC_STAGES ? 0 : stage + 1) {
        // Block n's group (and Q's) done: one group per block was committed, in order, and only
        // the newest DEC_STAGES - 2 may still be in flight.
        dec_cp_wait<DEC_STAGES - 2>();
        // K/V[n] (and Q) visible to all; every warp is done with block n - DEC_BN, whose stage the
        // load below overwrites.
        __syncthreads();
        if (n == ks0) {
#pragma unroll
            for (int kk = 0; kk < KD; ++kk) att2_ldsm4(qa[kk], q_lane + kk * 16 * 2);
        }
        const int ahead = n + (DEC_STAGES - 1) * DEC_BN;
        if (ahead < ks1) {
            T* nxt = sKV + (stage == 0 ? DEC_STAGES - 1 : stage - 1) * STAGE;
            att2_load_tile<T, D, DEC_BN>(nxt, k, k0, ahead, ks1, hkv, kvh);
            att2_load_tile<T, D, DEC_BN>(nxt + DEC_BN * LD, v, k0, ahead, ks1, hkv, kvh);
        }
        att_cp_commit();

        // S = Q·K^T for the 16 rows × this warp's 16 keys.
        const int nb = n + 16 * warp;
        const u32 kaddr = kv_lane + stage * STAGE * 2, vaddr = v_lane + stage * STAGE * 2;
        float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
            u32 b[4];
            att2_ldsm4(b, kaddr + kk * 16 * 2);
            att_mma<T>(s[0], qa[kk], b[0], b[1]);
            att_mma<T>(s[1], qa[kk], b[2], b[3]);
        }
        const bool full = !cr && nb >= rlo[0] && nb >= rlo[1] && nb + 16 <= rhi[0] && nb + 16 <= rhi[1];
        float mx[2] = {ATT_NEG_INF, ATT_NEG_INF};
        att_mask_scores<2>(s, mx, nb, t, full, rlo, rhi, ri, cr, tk, k0, scale, scale_log2, softcap);
        float alpha[2], mu[2];
        att_online_max(mx, mrow, mu, alpha);
        float rs[2] = {0.0f, 0.0f};
        att_exp_rowsum<2>(s, mu, rs);
        u32 pa[4];
        att_pack_a<T>(pa, s[0], s[1]);
#pragma unroll
        for (int x = 0; x < 2; ++x) lrow[x] = lrow[x] * alpha[x] + rs[x];
        att_scale_o<OT>(oacc, alpha);
        // O += P·V (V through transposed ldmatrix).
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
            u32 b[4];
            att2_ldsm4_t(b, vaddr + dp * 16 * 2);
            att_mma<T>(oacc[2 * dp], pa, b[0], b[1]);
            att_mma<T>(oacc[2 * dp + 1], pa, b[2], b[3]);
        }
    }
    att_cp_wait_all();
    // Every warp is done with the K/V stages: they hold the merge now.
    __syncthreads();

    // The quad's row sums; each warp's (m, l) and O (scaled to the split's maxima) to shared.
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        lrow[x] += __shfl_xor_sync(0xffffffffu, lrow[x], 1);
        lrow[x] += __shfl_xor_sync(0xffffffffu, lrow[x], 2);
    }
    float* sm = reinterpret_cast<float*>(sKV);  // [4][16] m, [4][16] l, then [4][16][D] O
    float* sO = sm + 2 * 4 * DEC_ROWS;
    if (t == 0) {
#pragma unroll
        for (int x = 0; x < 2; ++x) {
            sm[warp * DEC_ROWS + g + 8 * x] = mrow[x];
            sm[4 * DEC_ROWS + warp * DEC_ROWS + g + 8 * x] = lrow[x];
        }
    }
    __syncthreads();
    float f[2];
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        const int r = g + 8 * x;
        float m = ATT_NEG_INF;
#pragma unroll
        for (int w = 0; w < 4; ++w) m = fmaxf(m, sm[w * DEC_ROWS + r]);
        // NOTE: a warp whose keys this row never saw holds m = -inf and O = 0: weight 0.
        f[x] = mrow[x] == ATT_NEG_INF ? 0.0f : att_exp2(mrow[x] - m);
    }
#pragma unroll
    for (int d = 0; d < OT; ++d) {
        const int col = d * 8 + 2 * t;
        float* o0 = sO + ((size_t)warp * DEC_ROWS + g) * D + col;
        o0[0] = oacc[d][0] * f[0];
        o0[1] = oacc[d][1] * f[0];
        o0[8 * D] = oacc[d][2] * f[1];
        o0[8 * D + 1] = oacc[d][3] * f[1];
    }
    __syncthreads();
    const size_t base = ((size_t)item * hkv + kvh) * DEC_ROWS;
    for (int c = threadIdx.x; c < DEC_ROWS * D; c += DEC_THREADS) {
        const int r = c / D, d = c % D;
        part_o[base * D + c] = sO[r * D + d] + sO[(DEC_ROWS + r) * D + d] + sO[(2 * DEC_ROWS + r) * D + d] +
                               sO[(3 * DEC_ROWS + r) * D + d];
    }
    if (threadIdx.x < DEC_ROWS) {
        const int r = threadIdx.x;
        float m = ATT_NEG_INF, l = 0.0f;
#pragma unroll
        for (int w = 0; w < 4; ++w) m = fmaxf(m, sm[w * DEC_ROWS + r]);
#pragma unroll
        for (int w = 0; w < 4; ++w) {
            const float mw = sm[w * DEC_ROWS + r];
            if (mw != ATT_NEG_INF) l += sm[4 * DEC_ROWS + w * DEC_ROWS + r] * att_exp2(mw - m);
        }
        part_ml[(base + r) * 2] = m;
        part_ml[(base + r) * 2 + 1] = l;
    }
#endif
}

template <typename T, int D>
__device__ void attention_decode_combine_impl(const float* part_o, const float* part_ml, const i32* items,
                                              const i32* seqs, T* o, float* lse, int tq, int hq, int hkv) {
    // One CTA of D threads per (sequence, kv head, row); thread d owns column d.
    const int per = hkv * DEC_ROWS, grp = hq / hkv;
    const int s = blockIdx.x / per, kvh = (blockIdx.x % per) / DEC_ROWS, r = blockIdx.x % DEC_ROWS;
    const int first = seqs[2 * s], splits = seqs[2 * s + 1];
    const int q0 = items[(size_t)first * 6], lq = items[(size_t)first * 6 + 1];
    if (r >= lq * grp) return;
    const int d = threadIdx.x;
    auto row = [&](int j) { return (((size_t)first + j) * hkv + kvh) * DEC_ROWS + r; };
    // M: the largest split maximum (the threads stride over the splits, then reduce).
    __shared__ float red[D / 32];
    float m = ATT_NEG_INF;
    for (int j = d; j < splits; j += D) m = fmaxf(m, part_ml[row(j) * 2]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    if ((d & 31) == 0) red[d >> 5] = m;
    __syncthreads();
#pragma unroll
    for (int w = 0; w < D / 32; ++w) m = fmaxf(m, red[w]);
    float l = 0.0f, acc = 0.0f;
#pragma unroll 4
    for (int j = 0; j < splits; ++j) {
        const size_t rj = row(j);
        const float mj = part_ml[rj * 2];
        // NOTE: a split none of whose keys this row sees holds m = -inf: weight 0.
        const float w = mj == ATT_NEG_INF ? 0.0f : att_exp2(mj - m);
        l += part_ml[rj * 2 + 1] * w;
        acc += part_o[rj * D + d] * w;
    }
    const int i = r / grp, h = kvh * grp + r % grp;
    o[((size_t)(q0 + i) * hq + h) * D + d] = from_f32<T>(l > 0.0f ? acc / l : ATT_NAN);
    if (d == 0) lse[(size_t)h * tq + q0 + i] = att_lse(m, l);
}

// Instantiates `attention_decode_dD_{f16,bf16}` (three CTAs per SM at D = 128: 152 registers,
// 74 KiB of shared memory) and `attention_decode_combine_dD_{f16,bf16}`.
#define DEC_KERNEL_1(DIM, TY, SUFFIX)                                                                         \
    namespace attention_decode_d##DIM##_##SUFFIX##_ns {                                                       \
    using T = TY;                                                                                             \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS) attention_decode_d##DIM##_##SUFFIX(             \
        const T* q, const T* k, const T* v, float* part_o, float* part_ml, const i32* items, const i32* cr,  \
        int tk, int hq, int hkv, float scale, float softcap, int causal, long long wl, long long wr) {       \
        attention_decode_impl<TY, DIM>(q, k, v, part_o, part_ml, items, cr, tk, hq, hkv, scale, softcap,     \
                                       causal, wl, wr);                                                       \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS) attention_decode_combine_d##DIM##_##SUFFIX(     \
        const float* part_o, const float* part_ml, const i32* items, const i32* seqs, T* o, float* lse,       \
        int tq, int hq, int hkv) {                                                                            \
        attention_decode_combine_impl<TY, DIM>(part_o, part_ml, items, seqs, o, lse, tq, hq, hkv);            \
    }                                                                                                         \
    }
DEC_KERNEL_1(64, f16, f16)
DEC_KERNEL_1(64, bf16, bf16)
DEC_KERNEL_1(128, f16, f16)
DEC_KERNEL_1(128, bf16, bf16)
