#line 1 "attention_decode.cu"
// Split-KV decode attention (src/ops/attention.rs, `Path::Decode`): `attention_decode_d{64,128}_*`
// then `attention_decode_combine_d{64,128}_*`, for batches whose sequences have few query rows
// (Lq · G <= 16, G = Hq / Hkv the GQA group) and long keys. Its own module, after attention.cu
// with ATT_HELPERS_ONLY (the mma.sync, ldmatrix, cp.async and softmax helpers).
//
// Work items `[n][8] = {q0, Lq, k0, Lk, ks0, ks1, first, splits}`: a split ks0..ks1 (local keys,
// ks0 a multiple of DEC_BN for v1, of DEC2_KB for v2) of one sequence, whose splits are the
// consecutive items first..first + splits; from `items`, or when that is null from the `table`
// argument (up to DEC_TABLE_ITEMS). One CTA per (item, kv head),
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
// The combine, in the last CTA of each (sequence, kv head) when `counters` is given (dec_finish:
// the host fuses it where no sequence has more than 4 splits; one CTA merging many splits after
// the others is slower than the kernel, run 28 call B), else in the combine kernel, one CTA of D threads per (sequence, kv head, row) (`seqs [s][2] =
// {first item, splits}`), merges a sequence's splits: M = max m_j, L = sum l_j 2^(m_j - M), o = sum O_j 2^(m_j - M) / L,
// lse = (M + log2 L) ln 2 (NaN without a positive sum, as everywhere).

#define DEC_BN 64
#define DEC_THREADS 128
#define DEC_ROWS 16
#define DEC_STAGES 2

// Waits until at most N of this thread's cp.async groups are pending.
template <int N> __device__ __forceinline__ void dec_cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// Fields of a work item (see the header).
#define DEC_ITEM 8
// Work items passed by value when they fit (the host's `TABLE_ITEMS`): the kernel argument, read
// through the constant bank, in place of a copy to the device before every call.
#define DEC_TABLE_ITEMS 112
struct DecTable {
    i32 items[DEC_TABLE_ITEMS * DEC_ITEM];
};
// The fields of work item `item`: from `items` when given, else from the table argument.
__device__ __forceinline__ const i32* dec_item(const i32* items, const DecTable& table, int item) {
    return items ? items + (size_t)item * DEC_ITEM : table.items + item * DEC_ITEM;
}

// The CTA's 16 query rows → sQ [16][D + 8] by cp.async (the caller commits): row rho < rows =
// Lq · G is token q0 + rho / G of head kvh·G + rho % G; the rest zero-filled. Every kernel's.
template <typename T, int D>
__device__ __forceinline__ void dec_load_q(T* sQ, const T* q, int q0, int rows, int grp, int hq, int kvh) {
    constexpr int CH = D / 8, LD = D + 8;
    for (int c = threadIdx.x; c < DEC_ROWS * CH; c += DEC_THREADS) {
        const int r = c / CH, ch = c % CH;
        const bool ok = r < rows;
        const T* src = ok ? q + ((size_t)(q0 + r / grp) * hq + kvh * grp + r % grp) * D + ch * 8 : q;
        att_cp16(sQ + r * LD + ch * 8, src, ok);
    }
}

// This thread's rows g and g + 8: their local query rows `ri` and key ranges `rlo..rhi`, cut to
// the split's end ks1 (rows past `rows` see no key). Every kernel's.
__device__ __forceinline__ void dec_row_ranges(int g, int rows, int grp, int lq, int lk, int causal, long long wl,
                                               long long wr, int ks1, int* ri, int* rlo, int* rhi) {
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        const int rho = g + 8 * x;
        ri[x] = rho / grp;
        rlo[x] = rhi[x] = 0;
        if (rho < rows) att_row_range(ri[x], lq, lk, causal, wl, wr, rlo[x], rhi[x]);
        rhi[x] = min(rhi[x], ks1);
    }
}

// The combine, fused (`counters` given): after its split's partial results, a CTA counts itself
// in on its (sequence, kv head) (`counters [first item · Hkv + kvh]`, zero between calls); the
// last of the sequence's `splits` CTAs merges them all into o and lse (as the combine kernel) and
// sets the count back to zero. The classic last-block pattern: every thread's partial writes are
// fenced device-wide before the count, and the last CTA reads them past L1 (ld.global.cg).
// `smem` is free (the merge's reads are done once its CTA passed the barrier below); it holds
// the splits' (m, l) of every row, `splits · DEC_ROWS · 2` floats (the host fuses only where they
// fit). The merge is three steps of independent loads, not a chain of them: every (split, row)
// pair's m and l at once; a warp per row reduces them (M = max m_j, L = sum l_j 2^(m_j - M)) and
// leaves each split's weight 2^(m_j - M) / L in place of m_j; then each thread sums its 4 columns
// of one row over the splits, DEC_MERGE_LOADS loads in flight. (Row by row and split by split, each load
// waited for, it cost more than the combine kernel from 6 splits on: run 28 call B.)
// Loads in flight per thread in the fused merge's sum over the splits.
#define DEC_MERGE_LOADS 4
template <typename T, int D>
__device__ __forceinline__ void dec_finish(int* smem, const float* part_o, const float* part_ml, int* counters, T* o,
                                           float* lse, int first, int splits, int kvh, int hkv, int hq, int q0,
                                           int lq, int tq) {
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int* c = counters + (size_t)first * hkv + kvh;
        const bool last = atomicAdd(c, 1) == splits - 1;
        if (last) atomicExch(c, 0);
        smem[0] = last;
    }
    __syncthreads();
    const bool last = smem[0];
    __syncthreads();
    if (!last) return;
    __threadfence();
    const int grp = hq / hkv, rows = lq * grp;
    auto row = [&](int j, int r) { return (((size_t)first + j) * hkv + kvh) * DEC_ROWS + r; };
    float* sw = reinterpret_cast<float*>(smem);  // [splits][DEC_ROWS]: m, then the weight
    float* sl = sw + splits * DEC_ROWS;          // [splits][DEC_ROWS]: l
    for (int idx = threadIdx.x; idx < splits * DEC_ROWS; idx += DEC_THREADS) {
        const int j = idx / DEC_ROWS, r = idx % DEC_ROWS;
        const float2 ml = r < rows ? __ldcg(reinterpret_cast<const float2*>(part_ml) + row(j, r)) : make_float2(0.0f, 0.0f);
        sw[idx] = ml.x;
        sl[idx] = ml.y;
    }
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int r = warp; r < rows; r += DEC_THREADS / 32) {
        float m = ATT_NEG_INF;
        for (int j = lane; j < splits; j += 32) m = fmaxf(m, sw[j * DEC_ROWS + r]);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
        float l = 0.0f;
        for (int j = lane; j < splits; j += 32) {
            const float mj = sw[j * DEC_ROWS + r];
            // NOTE: a split none of whose keys this row sees holds m = -inf: weight 0.
            l += mj == ATT_NEG_INF ? 0.0f : sl[j * DEC_ROWS + r] * att_exp2(mj - m);
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        __syncwarp();
        for (int j = lane; j < splits; j += 32) {
            const float mj = sw[j * DEC_ROWS + r];
            sw[j * DEC_ROWS + r] = mj == ATT_NEG_INF ? 0.0f : att_exp2(mj - m) * inv;
        }
        if (lane == 0) {
            const int i = r / grp, h = kvh * grp + r % grp;
            lse[(size_t)h * tq + q0 + i] = att_lse(m, l);
            sl[r] = l;  // (the l of split 0 is read no more) whether the row saw any key
        }
    }
    __syncthreads();
    constexpr int C4 = D / 4;  // float4 columns per row
    for (int idx = threadIdx.x; idx < rows * C4; idx += DEC_THREADS) {
        const int r = idx / C4, c = idx % C4;
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        int j = 0;
        for (; j + DEC_MERGE_LOADS <= splits; j += DEC_MERGE_LOADS) {
            float4 v[DEC_MERGE_LOADS];
#pragma unroll
            for (int u = 0; u < DEC_MERGE_LOADS; ++u)
                v[u] = __ldcg(reinterpret_cast<const float4*>(part_o + row(j + u, r) * D) + c);
#pragma unroll
            for (int u = 0; u < DEC_MERGE_LOADS; ++u) {
                const float w = sw[(j + u) * DEC_ROWS + r];
                acc.x += v[u].x * w, acc.y += v[u].y * w, acc.z += v[u].z * w, acc.w += v[u].w * w;
            }
        }
        for (; j < splits; ++j) {
            const float4 v = __ldcg(reinterpret_cast<const float4*>(part_o + row(j, r) * D) + c);
            const float w = sw[j * DEC_ROWS + r];
            acc.x += v.x * w, acc.y += v.y * w, acc.z += v.z * w, acc.w += v.w * w;
        }
        const int i = r / grp, h = kvh * grp + r % grp;
        const bool seen = sl[r] > 0.0f;
        T* dst = o + ((size_t)(q0 + i) * hq + h) * D + 4 * c;
        dst[0] = from_f32<T>(seen ? acc.x : ATT_NAN);
        dst[1] = from_f32<T>(seen ? acc.y : ATT_NAN);
        dst[2] = from_f32<T>(seen ? acc.z : ATT_NAN);
        dst[3] = from_f32<T>(seen ? acc.w : ATT_NAN);
    }
}

// The split's merge over the CTA's 4 warps (after the last block; the K/V stages hold it now):
// each warp's row maxima m (log2 domain), sums l and O scaled to the split's maxima, summed to
// `part_o` / `part_ml`. Every warp of the CTA calls it.
template <int D>
__device__ __forceinline__ void dec_merge(void* smem, const float* mrow, float* lrow, float (*oacc)[4], float* part_o,
                                          float* part_ml, int item, int kvh, int hkv, int warp, int g, int t) {
    constexpr int OT = D / 8;
    att_cp_wait_all();
    // Every warp is done with the K/V stages: they hold the merge now.
    __syncthreads();

    // The quad's row sums; each warp's (m, l) and O (scaled to the split's maxima) to shared.
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        lrow[x] += __shfl_xor_sync(0xffffffffu, lrow[x], 1);
        lrow[x] += __shfl_xor_sync(0xffffffffu, lrow[x], 2);
    }
    float* sm = reinterpret_cast<float*>(smem);  // [4][16] m, [4][16] l, then [4][16][D] O
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
}

template <typename T, int D>
__device__ void attention_decode_impl(const T* q, const T* k, const T* v, float* part_o, float* part_ml,
                                      const i32* items, const i32* cr, int tk, int hq, int hkv, float scale,
                                      float softcap, int causal, long long wl, long long wr, int* counters, T* o,
                                      float* lse, int tq, const DecTable& table) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int LD = D + 8, KD = D / 16, OT = D / 8;
    constexpr int STAGE = 2 * DEC_BN * LD;  // elements of one K + V stage
    extern __shared__ __align__(16) unsigned char att_smem[];
    T* sQ = reinterpret_cast<T*>(att_smem);  // [16][LD]
    T* sKV = sQ + DEC_ROWS * LD;             // DEC_STAGES stages of K [64][LD], V [64][LD]

    const int item = blockIdx.x / hkv, kvh = blockIdx.x % hkv, grp = hq / hkv;
    const i32* it = dec_item(items, table, item);
    const int q0 = it[0], lq = it[1], k0 = it[2], lk = it[3], ks0 = it[4], ks1 = it[5];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int rows = lq * grp;

    // Q (the CTA's 16 rows).
    dec_load_q<T, D>(sQ, q, q0, rows, grp, hq, kvh);
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

    int ri[2], rlo[2], rhi[2];
    dec_row_ranges(g, rows, grp, lq, lk, causal, wl, wr, ks1, ri, rlo, rhi);

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
        att_softmax_tile<2, OT>(s, oacc, mrow, lrow, nb, t, full, rlo, rhi, ri, cr, tk, k0, scale, scale_log2, softcap);
        u32 pa[4];
        att_pack_a<T>(pa, s[0], s[1]);
        // O += P·V (V through transposed ldmatrix).
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
            u32 b[4];
            att2_ldsm4_t(b, vaddr + dp * 16 * 2);
            att_mma<T>(oacc[2 * dp], pa, b[0], b[1]);
            att_mma<T>(oacc[2 * dp + 1], pa, b[2], b[3]);
        }
    }
    dec_merge<D>(sKV, mrow, lrow, oacc, part_o, part_ml, item, kvh, hkv, warp, g, t);
    if (counters)
        dec_finish<T, D>(reinterpret_cast<int*>(sKV), part_o, part_ml, counters, o, lse, it[6], it[7], kvh, hkv, hq,
                         q0, lq, tq);
#endif
}

// ---------------------------------------------------------------------------------------------
// v2 (`attention_decode2_*`, MOEKIT_CUDA_DECODE=v2): the same work items, CTA, rows, masks, merge
// and outputs as above, but every warp runs its own cp.async pipeline and the main loop has no
// CTA barrier. The split's keys go in sub-blocks of DEC2_KB = 16 (sub-block j: keys
// ks0 + 16j .. ks0 + 16j + 16); warp w takes sub-blocks w, w + 4, w + 8, ... through NS = 3
// stages of its own (2 in `attention_decode2s2_*`, which fits 3 CTAs per SM at D 128 and 5 at
// D 64: the host takes it where only that holds every (sequence, kv head) of the batch in one
// wave) (K [16][D], V [16][D], swizzled: see dec2_chunk), which only its own lanes fill and read: a
// sub-block is waited for with cp.async.wait_group and __syncwarp, and its stage is refilled (the
// warp's sub-block NS ahead) by the same warp the moment it is computed. Per sub-block: S (16 × 16)
// by mma.sync m16n8k16 (two tiles of 8 keys, two chains), the online softmax over 16 keys, O +=
// P·V by mma.sync m16n8k16 (V through transposed ldmatrix). Keys past ks1 are zero-filled and
// masked as in v1.
// Why: v1 holds at most one 64-key block (32 KiB at D 128) in flight per CTA, issued only after
// all 4 warps pass the barrier of the previous one, so the slowest warp and the barrier gate
// every load. Here each warp keeps 2 sub-blocks in flight while it computes a third (3 once it
// refilled): 16-24 KiB per warp, 64-96 KiB per CTA at D 128 (32-48 KiB at D 64), with no wait on
// the other warps: 100 KiB of shared memory (D 128; 50 KiB at D 64; 106 and 56 with the padded
// rows before run 32), 2 CTAs per SM at D 128 (166 registers, no spills; sm_90a and sm_80).
// Run 30 call C (H200, interleaved, 2 rounds, a call with the cache-clearing write): 3 stages
// against 2 (2 CTAs per SM against 3 at D 128): B8 S8192 84.7 / 86.4 us, 1 × 65536 87.7 / 90.8,
// B64 S2048 152.3 / 168.0 (512 CTAs: 1.94 waves of 264 against 1.29 of 396), B32 S4096 148.0 both,
// B16 D64 87.0 / 86.6 (3 CTAs per SM against 5); ncu, B8: 73.6 against 75.7 us. 4 stages (1 CTA
// per SM at D 128) were slower (B8 87.1, B32 160.4 us).
// Run 30 call A (H200, interleaved, 2 rounds; ncu at free clocks): 16-key sub-blocks (then as 2
// stages of 8 keys taken together) against the 8-key ones of 4 stages that came first: kernel
// B8 S8192 76.6 against 78.4 us, B32 S4096 137.8 against 139.5 us; a call 1-2% faster on every
// decode shape (B8 86.3 / 87.5 us, B32 147.7 / 149.3, 1 × 65536 90.6 / 91.6, B16 D64 86.4 /
// 88.3): half the softmax steps and O rescales, half the mma instructions for P·V. The loads
// alone (DEC2_LDONLY) take 72.0 and 132.4 us: the rest of the gap to SDPA-cuDNN (its kernel
// 123-125 us on B32) is in how the loads reach DRAM, not the compute. Bulk copies (sm_90
// cp.async.bulk a row, an mbarrier a stage) instead of cp.async: no faster alone (72.6, 133.3
// us), slower with the compute (B32 172 us a call). The history of v2 with 8-key sub-blocks:
// Measured on the H200 (ncu --clock-control none, the kernel alone; bf16): B8 Hq32 Hkv8 S8192
// D128 76.9 against 78.7 us (73.5 against 71.6% of DRAM peak), B16 S8192 141.7 both, B16 Hq16 Hkv16
// S4096 D64 77.4 against 79.6 us; a call (bench, queued) B32 S4096 158 against 177 us (2 CTAs
// per SM: fewer warps, where the barrier cost most), 1 × 65536 keys 96 against 95 us. So bytes in
// flight were not what held v1 back. NOTE: ncu's default clock control (base clocks) put v1 at
// 95.5 us and 60% of DRAM peak, the figure that suggested it; at free clocks the kernel is at
// ~80% of the copy ceiling, and a call's ~94 us is the kernel, the combine (~5 us) and ~10 us
// more. Those are not the upload from pageable memory waiting for the stream: from page-locked
// staging buffers every call took 7-8 us longer (run 28 call A). Run 28 call A, a call (bench,
// queued, the default pageable upload), v2 against v1: B8 S8192 92.6 / 93.0 us, B32 S4096
// 157.1 / 176.4, 1 × 65536 95.0 / 93.6, B16 D64 92.9 / 93.3: v2 is the default.

#define DEC2_KB 16
#define DEC2_WARPS (DEC_THREADS / 32)
// The loop's loads alone, for measurement (`#define DEC2_LDONLY 1` ahead of this file in a
// variant build; wrong results): the copy ceiling of this pipeline (run 30 calls A, B).
#ifndef DEC2_LDONLY
#define DEC2_LDONLY 0
#endif

// A K/V row chunk of v2 (16 bytes) with the L2 prefetch hint of 128 bytes: the line a lane's
// chunk lies in is the half row its quarter-warp reads. Run 29 call F (interleaved, 2 rounds):
// 1.5-2% faster on every decode shape (B8 S8192 89.1 -> 87.1 us, B32 S4096 150.3 -> 147.3,
// 1 x 65536 92.7 -> 91.1, B16 D64 88.4 -> 87.1); 256 bytes: no change.
// DEC2_HINT 0 (a build switch for measurements): no hint, as SDPA-cuDNN's copies. With the
// swizzled stages (dec2_chunk) the hint no longer matters: run 32 call C, 2 rounds interleaved,
// every decode shape within 0.5% either way (B8 S8192 72.7 / 72.7 us, ncu 71.4 / 71.3 us). Issuing
// a sub-block's K rows before its V rows (instead of row by row) was 2-6% slower (B8 76.7 us,
// DRAM 75.5% of peak against 79.0%) and left.
#ifndef DEC2_HINT
#define DEC2_HINT 1
#endif
__device__ __forceinline__ void dec2_cp16(void* dst, const void* src, bool pred) {
#if DEC2_HINT
    asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;" ::"r"(att_smem_addr(dst)), "l"(src),
                 "r"(pred ? 16 : 0));
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(att_smem_addr(dst)), "l"(src), "r"(pred ? 16 : 0));
#endif
}

// The stage layout of v2: K [KB][D] then V [KB][D], rows D · 2 bytes apart (no padding), the
// 16-byte chunk c of row r stored at chunk c ^ (r & 7): each warp-wide copy (D / 8 chunks of
// 32 / (D / 8) whole rows) fills whole aligned 128-byte lines, and the 8 rows an ldmatrix reads
// at one logical chunk fall in 8 different bank groups.
// Why: the padded rows (D + 8) this replaced put a row's 16-byte chunks off the 128-byte lines,
// and each warp's cp.async went to shared memory in 2-3 wavefronts, each asking L2 again for the
// sectors it shared with the others: ncu (run 32 call A, B8 S8192) counted 24 L2 sectors per
// warp-wide copy where its 512 bytes are 16, 1.5x the K/V bytes crossing from L2 to the SMs (403
// against 269 MB), an L2 hit rate of 48% (SDPA-cuDNN's kernel, 128-byte aligned stages: 16
// sectors, 0.6%), and DRAM at 77.5% of its peak against cuDNN's 86%. Run 32 call B (read flush,
// 2 rounds interleaved with the padded kernel): every decode shape 3.5-4.5% faster (B8 S8192 75.7
// -> 73.0 us, B32 S4096 139.4 -> 133.5, 1 x 65536 78.6 -> 75.4, B16 D64 77.0 -> 73.4); ncu B8: 8.42M
// sectors from L2 (the ideal), L2 hit rate 1.8%, DRAM 75.8 -> 78.9% of its peak, 74.4 -> 71.5 us.
// A plain grid-stride 16-byte load of the same bytes (bench_read_flush) reads at 86.9%.
__device__ __forceinline__ int dec2_chunk(int r, int c) { return c ^ (r & 7); }

// One warp: keys n..n + KB (local) of K and V → its stage (the layout above); keys at or past
// ks1 zero-filled (reading nothing). `off` is the lane's element offset of key 0 of the
// sequence's kv head and chunk (`(k0 · Hkv + kvh) · D + chunk · 8`), `stride` = Hkv · D.
template <typename T, int D>
__device__ __forceinline__ void dec2_load(T* stage, const T* k, const T* v, size_t off, long long stride, int n,
                                          int ks1, int lane) {
    constexpr int CH = D / 8, RPI = 32 / CH;  // 16-byte chunks a row; rows a warp-wide copy
    const int r0 = lane / CH, ch = lane % CH;
#pragma unroll
    for (int i = 0; i < DEC2_KB / RPI; ++i) {
        const int r = r0 + i * RPI;
        const bool ok = n + r < ks1;
        const size_t at = off + (size_t)((long long)(n + r) * stride);
        // (KB + r) & 7 == r & 7: V's rows take K's swizzle.
        const int sc = dec2_chunk(r, ch) * 8;
        dec2_cp16(stage + r * D + sc, ok ? k + at : k, ok);
        dec2_cp16(stage + (DEC2_KB + r) * D + sc, ok ? v + at : v, ok);
    }
}

// NS: stages a warp (3 in `attention_decode2_*`, 2 in `attention_decode2s2_*`).
template <typename T, int D, int NS>
__device__ void attention_decode2_impl(const T* q, const T* k, const T* v, float* part_o, float* part_ml,
                                       const i32* items, const i32* cr, int tk, int hq, int hkv, float scale,
                                       float softcap, int causal, long long wl, long long wr, int* counters, T* o,
                                       float* lse, int tq, const DecTable& table) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int LD = D + 8, KD = D / 16, OT = D / 8, CH = D / 8, KB = DEC2_KB;
    constexpr int STAGE = 2 * KB * D;  // elements of one K + V stage of a warp (dec2_chunk's layout)
    static_assert(32 % CH == 0 && KB % (32 / CH) == 0 && KB == 16, "dec2_load / ldmatrix shapes");
    extern __shared__ __align__(16) unsigned char att_smem[];
    T* sQ = reinterpret_cast<T*>(att_smem);  // [16][LD]
    T* sKV = sQ + DEC_ROWS * LD;             // [4 warps][NS stages] of K [KB][D], V [KB][D]

    const int item = blockIdx.x / hkv, kvh = blockIdx.x % hkv, grp = hq / hkv;
    const i32* it = dec_item(items, table, item);
    const int q0 = it[0], lq = it[1], k0 = it[2], lk = it[3], ks0 = it[4], ks1 = it[5];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int rows = lq * grp;
    // Sub-blocks of the split (none for an empty split).
    const int nsub = ks1 > ks0 ? (ks1 - ks0 + KB - 1) / KB : 0;
    T* wst = sKV + warp * NS * STAGE;  // this warp's stages
    const size_t off = ((size_t)k0 * hkv + kvh) * D + (lane % CH) * 8;
    const long long stride = (long long)hkv * D;

    // Q (one commit group, as in v1), then this warp's first NS sub-blocks, a group each (empty
    // groups too: the wait counts below assume one group per stage).
    dec_load_q<T, D>(sQ, q, q0, rows, grp, hq, kvh);
    att_cp_commit();
#pragma unroll
    for (int st = 0; st < NS; ++st) {
        const int j = warp + DEC2_WARPS * st;
        if (j < nsub) dec2_load<T, D>(wst + st * STAGE, k, v, off, stride, ks0 + KB * j, ks1, lane);
        att_cp_commit();
    }

    int ri[2], rlo[2], rhi[2];
    dec_row_ranges(g, rows, grp, lq, lk, causal, wl, wr, ks1, ri, rlo, rhi);

    float oacc[OT][4];
#pragma unroll
    for (int n = 0; n < OT; ++n) oacc[n][0] = oacc[n][1] = oacc[n][2] = oacc[n][3] = 0.0f;
    float mrow[2] = {ATT_NEG_INF, ATT_NEG_INF}, lrow[2] = {0.0f, 0.0f};
    const float scale_log2 = scale * ATT_LOG2E;

    // Q's group done (only the NS stage groups may be pending) and visible to every warp: the
    // CTA's one barrier before the merge.
    dec_cp_wait<NS>();
    __syncthreads();
    u32 qa[KD][4];
    const u32 q_lane = att_smem_addr(sQ) + ((lane & 15) * LD + (lane >> 4) * 8) * 2;
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) att2_ldsm4(qa[kk], q_lane + kk * 16 * 2);

    // ldmatrix x4 lane addresses (lane l gives row l % 8 of matrix l / 8), as v1's: K's matrices
    // are (keys 0..8, columns 0..8), (0..8, 8..16), (8..16, 0..8), (8..16, 8..16) of a 16-column
    // slice, so b[0], b[1] are the B fragment of keys 0..8 and b[2], b[3] of keys 8..16; V's
    // (transposed) are (keys 0..8, columns 0..8), (8..16, 0..8), (0..8, 8..16), (8..16, 8..16), the
    // B fragments of m16n8k16 for two 8-column tiles of O. Swizzled (dec2_chunk): the lane's row
    // r has r & 7 == lane & 7, and its chunk at k step kk is c0 + 2kk = c0 ^ 2kk (c0 0 or 1), so it
    // lies at chunk (c0 ^ (lane & 7)) ^ 2kk of the row.
    const u32 k_lane = att_smem_addr(wst) + ((lane >> 4) * 8 + (lane & 7)) * D * 2;
    const u32 v_lane = att_smem_addr(wst + KB * D) + (((lane >> 3) & 1) * 8 + (lane & 7)) * D * 2;
    const int k_c0 = ((lane >> 3) & 1) ^ (lane & 7), v_c0 = (lane >> 4) ^ (lane & 7);

    int stage = 0;
    for (int j = warp; j < nsub; j += DEC2_WARPS, stage = (stage + 1) % NS) {
        // Sub-block j's group done: one group per stage was committed, in order, and only the
        // newest NS - 1 may still be in flight. __syncwarp: every lane's copies visible to the warp.
        dec_cp_wait<NS - 1>();
        __syncwarp();
#if !DEC2_LDONLY
        const int nb = ks0 + KB * j;
        const u32 kaddr = k_lane + stage * STAGE * 2, vaddr = v_lane + stage * STAGE * 2;
        // S = Q·K^T, 16 rows × 16 keys: two tiles of 8 keys, two independent chains.
        float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
            u32 b[4];
            att2_ldsm4(b, kaddr + ((k_c0 ^ (2 * kk)) << 4));
            att_mma<T>(s[0], qa[kk], b[0], b[1]);
            att_mma<T>(s[1], qa[kk], b[2], b[3]);
        }
        const bool full = !cr && nb >= rlo[0] && nb >= rlo[1] && nb + KB <= rhi[0] && nb + KB <= rhi[1];
        att_softmax_tile<2, OT>(s, oacc, mrow, lrow, nb, t, full, rlo, rhi, ri, cr, tk, k0, scale, scale_log2, softcap);
        u32 pa[4];
        att_pack_a<T>(pa, s[0], s[1]);
        // O += P·V by mma.sync m16n8k16.
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
            u32 b[4];
            att2_ldsm4_t(b, vaddr + ((v_c0 ^ (2 * dp)) << 4));
            att_mma<T>(oacc[2 * dp], pa, b[0], b[1]);
            att_mma<T>(oacc[2 * dp + 1], pa, b[2], b[3]);
        }
#endif
        // Every lane's ldmatrix of this stage done before any lane refills it.
        __syncwarp();
        const int ahead = j + DEC2_WARPS * NS;
        if (ahead < nsub) dec2_load<T, D>(wst + stage * STAGE, k, v, off, stride, ks0 + KB * ahead, ks1, lane);
        att_cp_commit();
    }
    dec_merge<D>(sKV, mrow, lrow, oacc, part_o, part_ml, item, kvh, hkv, warp, g, t);
    if (counters)
        dec_finish<T, D>(reinterpret_cast<int*>(sKV), part_o, part_ml, counters, o, lse, it[6], it[7], kvh, hkv, hq,
                         q0, lq, tq);
#endif
}

// ---------------------------------------------------------------------------------------------
// v3 (`attention_decode3_*`, MOEKIT_CUDA_DECODE=v3; sm_90a only): v1's split of the work (warp w
// takes keys 16w..16w + 16 of each 64-key tile, its own online softmax, the same merge), with the
// K/V tiles brought in by TMA (the attention tensor maps over [T, H, D]: a tile is D / 64 boxes of
// 64 token rows × 64 columns, 128-byte swizzled) through DEC3_STAGES stages shared by the warps,
// each with a FULL barrier (one expect_tx arrival and the bytes) and an EMPTY barrier (one
// arrival per warp). Thread 0 issues every copy: the first DEC3_STAGES tiles before the loop, then
// at tile t the refill of the stage of tile t - DEC3_LAG (with tile t - DEC3_LAG + DEC3_STAGES)
// once all four warps released it. Two CTAs per SM at D 128 (3 stages of 32 KiB), four at D 64.
// Why: v2's per-warp cp.async pipelines stop at ~80% of the DRAM peak even without the compute
// (run 30 call A: the loads alone 72.0 us on B8 S8192), and fewer, deeper CTAs read faster (8
// stages of 8 keys at one CTA per SM, loads alone: 70.6 us, call B), but with the copies issued
// by the computing warps one CTA per SM was slower (4 stages of 16 keys: 87.1 against 84.7 us a
// call, call C): here one thread issues a tile in 2 · D / 64 instructions and the warps only wait.
// Measured (run 31, H200, a call with the cache-clearing write; the decode test, the v1
// comparison, memcheck and racecheck pass): no faster than v2. As first written (6 stages, refill
// two tiles back, 1 CTA per SM at D 128) 3-17% slower (B8 S8192 87.2 against 83.6 us, B32 S4096
// 164.1 / 146.2, B64 S2048 178.4 / 150.4); 3 stages refilled one tile back (2 CTAs per SM, now
// the default) within 2% of v2 (83.5, 148.8, 153.7; D 64 84.0 against 86.0). Its loads alone
// (DEC3_LDONLY, ncu) take 71.6 / 135.5 us, as v2's cp.async (72.0 / 132.4): TMA does not read
// the rows faster, so the ~80% of the DRAM peak the loads reach is not how they are issued.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define DEC3_BN 64
#ifndef DEC3_STAGES
#define DEC3_STAGES 3
#endif
// Thread 0 refills the stage of tile t - DEC3_LAG at tile t: 1 (default) waits for the warps'
// release one tile sooner, 2 lets a warp trail by a tile without holding the copies back (run
// 31: at 6 stages 1 and 2 are equal; at 3 stages only 1 keeps two tiles in flight).
#ifndef DEC3_LAG
#define DEC3_LAG 1
#endif
// DEC3_LDONLY: a build switch for measurements: the loop waits for its tiles and releases them,
// with no arithmetic (the output is wrong).
#ifndef DEC3_LDONLY
#define DEC3_LDONLY 0
#endif

template <typename T, int D>
__device__ void attention_decode3_impl(const T* q, const T* k, const T* v, float* part_o, float* part_ml,
                                       const i32* items, const i32* cr, int tk, int hq, int hkv, float scale,
                                       float softcap, int causal, long long wl, long long wr, int* counters, T* o,
                                       float* lse, int tq, const DecTable& table, const HpTmap* km,
                                       const HpTmap* vm) {
    constexpr int LD = D + 8, KD = D / 16, OT = D / 8, NS = DEC3_STAGES, BN = DEC3_BN;
    constexpr int PARTS = D / 64, PART = BN * 128, TILE = PARTS * PART;  // bytes: a 64-column part, a tile
    extern __shared__ __align__(16) unsigned char att_smem[];
    T* sQ = reinterpret_cast<T*>(att_smem);  // [16][LD]
    const u32 smem0 = att_smem_addr(att_smem);
    // K/V stages (K then V, TILE bytes each), 1024-aligned for the swizzle, then FULL[NS], EMPTY[NS].
    const u32 st0 = (smem0 + DEC_ROWS * LD * (u32)sizeof(T) + 1023u) & ~1023u;
    const u32 bars = st0 + NS * 2 * TILE;
    unsigned char* stages = att_smem + (st0 - smem0);

    const int item = blockIdx.x / hkv, kvh = blockIdx.x % hkv, grp = hq / hkv;
    const i32* it = dec_item(items, table, item);
    const int q0 = it[0], lq = it[1], k0 = it[2], lk = it[3], ks0 = it[4], ks1 = it[5];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int rows = lq * grp;
    const int ntiles = ks1 > ks0 ? (ks1 - ks0 + BN - 1) / BN : 0;

    // Tile j (keys ks0 + 64j..) into stage j % NS: K and V, D / 64 boxes each.
    auto issue = [&](int j) {
        const int s = j % NS, tok = k0 + ks0 + BN * j;
        const u32 kdst = st0 + s * 2 * TILE, full = bars + 8 * s;
        hp_bar_arrive_tx(full, 2 * TILE);
#pragma unroll
        for (int p = 0; p < PARTS; ++p) {
            hp_tma4(kdst + p * PART, km, 64 * p, kvh, tok, 0, full);
            hp_tma4(kdst + TILE + p * PART, vm, 64 * p, kvh, tok, 0, full);
        }
    };
    if (threadIdx.x == 0) {
        hp_tma_prefetch(km);
        hp_tma_prefetch(vm);
#pragma unroll
        for (int s = 0; s < NS; ++s) {
            hp_bar_init(bars + 8 * s, 1);
            hp_bar_init(bars + 8 * (NS + s), DEC2_WARPS);
        }
        hp_bar_init_fence();
        for (int j = 0; j < NS && j < ntiles; ++j) issue(j);
    }

    // Q (cp.async, as v1 and v2).
    dec_load_q<T, D>(sQ, q, q0, rows, grp, hq, kvh);
    att_cp_commit();

    int ri[2], rlo[2], rhi[2];
    dec_row_ranges(g, rows, grp, lq, lk, causal, wl, wr, ks1, ri, rlo, rhi);
    float oacc[OT][4];
#pragma unroll
    for (int n = 0; n < OT; ++n) oacc[n][0] = oacc[n][1] = oacc[n][2] = oacc[n][3] = 0.0f;
    float mrow[2] = {ATT_NEG_INF, ATT_NEG_INF}, lrow[2] = {0.0f, 0.0f};
    const float scale_log2 = scale * ATT_LOG2E;

    // Q visible to every warp, and the barriers initialised before any wait on them.
    att_cp_wait_all();
    __syncthreads();
    u32 qa[KD][4];
    const u32 q_lane = att_smem_addr(sQ) + ((lane & 15) * LD + (lane >> 4) * 8) * 2;
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) att2_ldsm4(qa[kk], q_lane + kk * 16 * 2);

    // ldmatrix lane addresses in the swizzled tiles (v2's matrices): row r of a part is 128 bytes
    // at r · 128, its 16-byte chunk c at (c ^ (r % 8)) · 16; every lane's rows are ≡ lane (mod 8).
    // K: row 16w + 8(lane / 16) + lane % 8, chunk 2kk + (lane / 8) % 2 of 16-column step kk; V
    // (transposed): row 16w + 8((lane / 8) % 2) + lane % 8, chunk 2dp + lane / 16.
    const int x7 = lane & 7;
    const u32 k_row = (16 * warp + 8 * (lane >> 4) + x7) * 128, v_row = (16 * warp + 8 * ((lane >> 3) & 1) + x7) * 128;
    u32 k_chunk[4], v_chunk[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        k_chunk[i] = ((2 * i + ((lane >> 3) & 1)) ^ x7) << 4;
        v_chunk[i] = ((2 * i + (lane >> 4)) ^ x7) << 4;
    }

    for (int j = 0; j < ntiles; ++j) {
        const int s = j % NS;
        // The refill DEC3_LAG tiles back, once every warp has released that tile.
        if (threadIdx.x == 0 && j >= DEC3_LAG && j - DEC3_LAG + NS < ntiles) {
            hp_bar_wait(bars + 8 * (NS + (j - DEC3_LAG) % NS), ((j - DEC3_LAG) / NS) & 1);
            issue(j - DEC3_LAG + NS);
        }
        hp_bar_wait(bars + 8 * s, (j / NS) & 1);
        const u32 kst = st0 + s * 2 * TILE, vst = kst + TILE;
        const int nb = ks0 + BN * j + 16 * warp;
#if !DEC3_LDONLY
        // This warp's V rows at or past ks1 hold another split's or sequence's keys (zeros past
        // the tensor): zeroed, so that p = 0 times them is 0 whatever they hold. The writes are
        // fenced to the async proxy before the stage goes back to TMA.
        if (nb + 16 > ks1) {
            for (int idx = lane; idx < 16 * PARTS * 8; idx += 32) {
                const int r = idx / (PARTS * 8), ch = idx % (PARTS * 8), row = 16 * warp + r;
                if (nb + r >= ks1)
                    asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};" ::"r"(
                                     vst + (ch >> 3) * PART + row * 128 + (((ch & 7) ^ (row & 7)) << 4)),
                                 "r"(0u)
                                 : "memory");
            }
            hp_fence_proxy_async();
            __syncwarp();
        }
        float sc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
            u32 b[4];
            att2_ldsm4(b, kst + (kk >> 2) * PART + k_row + k_chunk[kk & 3]);
            att_mma<T>(sc[0], qa[kk], b[0], b[1]);
            att_mma<T>(sc[1], qa[kk], b[2], b[3]);
        }
        const bool full = !cr && nb >= rlo[0] && nb >= rlo[1] && nb + 16 <= rhi[0] && nb + 16 <= rhi[1];
        att_softmax_tile<2, OT>(sc, oacc, mrow, lrow, nb, t, full, rlo, rhi, ri, cr, tk, k0, scale, scale_log2,
                                softcap);
        u32 pa[4];
        att_pack_a<T>(pa, sc[0], sc[1]);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
            u32 b[4];
            att2_ldsm4_t(b, vst + (dp >> 2) * PART + v_row + v_chunk[dp & 3]);
            att_mma<T>(oacc[2 * dp], pa, b[0], b[1]);
            att_mma<T>(oacc[2 * dp + 1], pa, b[2], b[3]);
        }
#endif
        // Every lane's reads of the stage done before the warp releases it.
        __syncwarp();
        if (lane == 0) hp_bar_arrive(bars + 8 * (NS + s));
    }
    // Every tile was waited for (no copy in flight): the stages hold the merge.
    dec_merge<D>(stages, mrow, lrow, oacc, part_o, part_ml, item, kvh, hkv, warp, g, t);
    if (counters)
        dec_finish<T, D>(reinterpret_cast<int*>(stages), part_o, part_ml, counters, o, lse, it[6], it[7], kvh, hkv,
                         hq, q0, lq, tq);
}

#define DEC_KERNEL_3(DIM, TY, SUFFIX)                                                                          \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS, 1) attention_decode3_d##DIM##_##SUFFIX(           \
        const TY* q, const TY* k, const TY* v, float* part_o, float* part_ml, const i32* items, const i32* cr, \
        int tk, int hq, int hkv, float scale, float softcap, int causal, long long wl, long long wr,           \
        int* counters, TY* o, float* lse, int tq, const __grid_constant__ DecTable table,                       \
        const __grid_constant__ HpTmap k_map, const __grid_constant__ HpTmap v_map) {                           \
        attention_decode3_impl<TY, DIM>(q, k, v, part_o, part_ml, items, cr, tk, hq, hkv, scale, softcap,      \
                                        causal, wl, wr, counters, o, lse, tq, table, &k_map, &v_map);           \
    }
DEC_KERNEL_3(64, f16, f16)
DEC_KERNEL_3(64, bf16, bf16)
DEC_KERNEL_3(128, f16, f16)
DEC_KERNEL_3(128, bf16, bf16)
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <typename T, int D>
__device__ void attention_decode_combine_impl(const float* part_o, const float* part_ml, const i32* items,
                                              const i32* seqs, T* o, float* lse, int tq, int hq, int hkv) {
    // One CTA of D threads per (sequence, kv head, row); thread d owns column d.
    const int per = hkv * DEC_ROWS, grp = hq / hkv;
    const int s = blockIdx.x / per, kvh = (blockIdx.x % per) / DEC_ROWS, r = blockIdx.x % DEC_ROWS;
    const int first = seqs[2 * s], splits = seqs[2 * s + 1];
    const int q0 = items[(size_t)first * DEC_ITEM], lq = items[(size_t)first * DEC_ITEM + 1];
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

// Instantiates `attention_decode_dD_{f16,bf16}` (three CTAs per SM at D = 128: 74 KiB of shared
// memory), `attention_decode_combine_dD_{f16,bf16}` and v2's `attention_decode2_dD_{f16,bf16}`,
// both held to 3 CTAs per SM at D 128 and 5 at D 64 (the fused merge's loads took v1 at D 64 from
// 96 to 112 registers, 4 CTAs per SM, without the bound).
#define DEC2_MIN_CTAS(DIM) ((DIM) == 128 ? 3 : 5)
#define DEC_KERNEL_1(DIM, TY, SUFFIX)                                                                         \
    namespace attention_decode_d##DIM##_##SUFFIX##_ns {                                                       \
    using T = TY;                                                                                             \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS, DEC2_MIN_CTAS(DIM)) attention_decode_d##DIM##_##SUFFIX( \
        const T* q, const T* k, const T* v, float* part_o, float* part_ml, const i32* items, const i32* cr,  \
        int tk, int hq, int hkv, float scale, float softcap, int causal, long long wl, long long wr,         \
        int* counters, T* o, float* lse, int tq, const __grid_constant__ DecTable table) {                   \
        attention_decode_impl<TY, DIM>(q, k, v, part_o, part_ml, items, cr, tk, hq, hkv, scale, softcap,     \
                                       causal, wl, wr, counters, o, lse, tq, table);                          \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS) attention_decode_combine_d##DIM##_##SUFFIX(     \
        const float* part_o, const float* part_ml, const i32* items, const i32* seqs, T* o, float* lse,       \
        int tq, int hq, int hkv) {                                                                            \
        attention_decode_combine_impl<TY, DIM>(part_o, part_ml, items, seqs, o, lse, tq, hq, hkv);            \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS, DEC2_MIN_CTAS(DIM))                             \
        attention_decode2_d##DIM##_##SUFFIX(const T* q, const T* k, const T* v, float* part_o, float* part_ml,\
                                            const i32* items, const i32* cr, int tk, int hq, int hkv,         \
                                            float scale, float softcap, int causal, long long wl,             \
                                            long long wr, int* counters, T* o, float* lse, int tq,            \
                                            const __grid_constant__ DecTable table) {                         \
        attention_decode2_impl<TY, DIM, 3>(q, k, v, part_o, part_ml, items, cr, tk, hq, hkv, scale, softcap, \
                                           causal, wl, wr, counters, o, lse, tq, table);                      \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS, DEC2_MIN_CTAS(DIM))                             \
        attention_decode2s2_d##DIM##_##SUFFIX(const T* q, const T* k, const T* v, float* part_o,             \
                                              float* part_ml, const i32* items, const i32* cr, int tk,        \
                                              int hq, int hkv, float scale, float softcap, int causal,        \
                                              long long wl, long long wr, int* counters, T* o, float* lse,    \
                                              int tq, const __grid_constant__ DecTable table) {               \
        attention_decode2_impl<TY, DIM, 2>(q, k, v, part_o, part_ml, items, cr, tk, hq, hkv, scale, softcap, \
                                           causal, wl, wr, counters, o, lse, tq, table);                      \
    }                                                                                                         \
    }
DEC_KERNEL_1(64, f16, f16)
DEC_KERNEL_1(64, bf16, bf16)
DEC_KERNEL_1(128, f16, f16)
DEC_KERNEL_1(128, bf16, bf16)
