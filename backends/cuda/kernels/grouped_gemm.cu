// grouped_gemm kernels: see src/ops/grouped_gemm.rs.
//
// One call queues three kernels, with no host synchronisation:
// 1. `grouped_gemm_plan` (one block) checks the offsets (or counts) and writes the tile plan
//    `plan [3E+2] = [tile_start (E+1) | row_begin (E) | rows (E) | valid_end (1)]`: expert e
//    owns m-tiles tile_start[e]..tile_start[e+1] and output rows row_begin[e]..+rows[e].
// 2. `grouped_gemm_{mma,fma}_{kn,nk}_<dtype>`: one block per (m-tile, n-tile) over an upper bound
//    of the m-tiles; each block finds its expert in the plan, or exits past the last tile.
// 3. `grouped_gemm_zero_<dtype>`: zeroes the output rows outside every expert and checks the
//    gather rows the GEMM kernel did not read.
// Bad offsets make every expert empty (all-zero output), bad counts are clamped to 0..=C, bad
// gather rows read a zero row; each is recorded with report_bad and surfaces at the next sync.

#define GG_PLAN_THREADS 256

// ---------------------------------------------------------------------------------------------
// Plan

// `group`: offsets [E+1] (contiguous, `limit` = R) or counts [E] (masked, `limit` = C).
// `bm`: the GEMM kernel's rows per m-tile.
extern "C" __global__ void __launch_bounds__(GG_PLAN_THREADS)
    grouped_gemm_plan(const i32* group, i32* plan, int experts, int limit, int masked, int bm, i32* rec) {
    __shared__ int s_bad;
    __shared__ int s_carry;
    __shared__ int s_scan[GG_PLAN_THREADS];
    const int tid = threadIdx.x;
    if (tid == 0) {
        s_bad = 0;
        s_carry = 0;
    }
    __syncthreads();
    if (!masked) {
        for (int e = tid; e <= experts; e += GG_PLAN_THREADS) {
            const int o = group[e];
            bool bad = e == 0 ? o != 0 : o < group[e - 1];
            if (e == experts && o > limit) bad = true;
            if (bad) {
                report_bad(rec, MOEKIT_BAD_GEMM_OFFSETS, e, o, limit);
                s_bad = 1;
            }
        }
    } else {
        for (int e = tid; e < experts; e += GG_PLAN_THREADS) {
            const int c = group[e];
            if (c < 0 || c > limit) report_bad(rec, MOEKIT_BAD_GEMM_COUNTS, e, c, limit + 1);
        }
    }
    __syncthreads();
    const int bad = s_bad;
    for (int base = 0; base < experts; base += GG_PLAN_THREADS) {
        const int e = base + tid;
        int begin = 0, rows = 0;
        if (e < experts) {
            if (masked) {
                begin = e * limit;
                rows = min(max(group[e], 0), limit);
            } else if (!bad) {
                begin = group[e];
                rows = group[e + 1] - group[e];
            }
        }
        const int tiles = rows / bm + (rows % bm != 0);
        s_scan[tid] = tiles;
        __syncthreads();
        for (int off = 1; off < GG_PLAN_THREADS; off <<= 1) {
            const int v = tid >= off ? s_scan[tid - off] : 0;
            __syncthreads();
            s_scan[tid] += v;
            __syncthreads();
        }
        const int incl = s_scan[tid];
        const int carry = s_carry;
        if (e < experts) {
            plan[e] = carry + incl - tiles;
            plan[experts + 1 + e] = begin;
            plan[2 * experts + 1 + e] = rows;
        }
        __syncthreads();
        if (tid == GG_PLAN_THREADS - 1) s_carry = carry + incl;
        __syncthreads();
    }
    if (tid == 0) {
        plan[experts] = s_carry;
        plan[3 * experts + 1] = masked || bad ? 0 : group[experts];
    }
}

// ---------------------------------------------------------------------------------------------
// Shared by the GEMM kernels

// The expert owning m-tile `mt` (< plan[E]): the one e with tile_start[e] <= mt < tile_start[e+1].
// Every thread of the block must call it (it synchronises the block).
__device__ __forceinline__ int gg_find_expert(const i32* plan, int experts, int mt) {
    __shared__ int s_e;
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        if (plan[e] <= mt && mt < plan[e + 1]) s_e = e;
    }
    __syncthreads();
    return s_e;
}

// Source row of `x` for output row `out_row`, or -1 for a zero row (gather −1 or a bad gather
// row, which is recorded).
__device__ __forceinline__ int gg_src_row(const i32* gather, int tokens, int out_row, i32* rec) {
    if (!gather) return out_row;
    const int s = gather[out_row];
    if (s < -1 || s >= tokens) {
        report_bad(rec, MOEKIT_BAD_GEMM_GATHER, out_row, s, tokens);
        return -1;
    }
    return s;
}

// ---------------------------------------------------------------------------------------------
// f16 / bf16: tensor cores through mma.sync.m16n8k16, f32 accumulators.
//
// Block tile BM × BN × BK = 128 × 128 × 32, 8 warps as 2 (m) × 4 (n), each warp 64 × 32
// (4 × 4 mma tiles). The shared tiles keep k contiguous for A ([BM][BK+8]) and for NK weights
// ([BN][BK+8]); KN weights stay n contiguous ([BK][BN+8]) and are read with ldmatrix.trans.
// The padding of 8 halves makes the ldmatrix row reads conflict-free.
// Register-staged double buffering: the next k-tile's global loads are in flight while the
// tensor cores work on the current one; one barrier per k-tile.
//
// SwiGLU: a block computes 64 output columns j0..j0+64 (j0 = 64·nt); its 128 virtual columns
// are arranged so that every warp holds 16 gate columns (its n8 tiles 0, 1) and the matching
// 16 up columns (tiles 2, 3): virtual v -> c = j0 + 16·(v/32) + v%16, gate column c for
// v%32 < 16, up column I + c otherwise.

namespace gg {
constexpr int BM = 128, BN = 128, BK = 32, THREADS = 256;
constexpr int SA = BK + 8;   // row stride of sA and of NK sB, in halves
constexpr int SBK = BN + 8;  // row stride of KN sB, in halves
}  // namespace gg

// Shared-memory address of a generic pointer into shared memory.
__device__ __forceinline__ u32 gg_smem(const void* p) {
    u32 r;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
    return r;
}

// Four 8 × 8 16-bit matrices; lane l gives the address of row l % 8 of matrix l / 8 (16 bytes,
// 16-byte aligned); r[i] holds matrix i's row lane / 4, columns 2 (lane % 4) and +1.
__device__ __forceinline__ void gg_ldsm_x4(u32* r, const u16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(gg_smem(p)));
}

// The same, transposed: r[i] holds matrix i's rows 2 (lane % 4) and +1 of column lane / 4.
__device__ __forceinline__ void gg_ldsm_x4_trans(u32* r, const u16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(gg_smem(p)));
}

template <typename T> __device__ __forceinline__ void gg_mma(float* c, const u32* a, const u32* b);
template <> __device__ __forceinline__ void gg_mma<bf16>(float* c, const u32* a, const u32* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> __device__ __forceinline__ void gg_mma<f16>(float* c, const u32* a, const u32* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Eight consecutive 16-bit elements `base[off..off+valid)` (zeros past `valid`) as raw bits.
// One 16-byte load when `vec` (the caller proved 16-byte alignment) and all eight are valid.
__device__ __forceinline__ uint4 gg_load8(const u16* base, long long off, int valid, bool vec) {
    uint4 r = make_uint4(0u, 0u, 0u, 0u);
    if (valid >= 8 && vec) {
        r = *reinterpret_cast<const uint4*>(base + off);
    } else if (valid > 0) {
        const u16* p = base + off;
        u32 h[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) h[i] = i < valid ? (u32)p[i] : 0u;
        r.x = h[0] | (h[1] << 16);
        r.y = h[2] | (h[3] << 16);
        r.z = h[4] | (h[5] << 16);
        r.w = h[6] | (h[7] << 16);
    }
    return r;
}

__device__ __forceinline__ int gg_clamp8(long long n) { return n <= 0 ? 0 : (n >= 8 ? 8 : (int)n); }

template <typename T> __device__ __forceinline__ u16 gg_bits(float v) { return from_f32<T>(v).bits; }

// Store columns c, c+1 (c even) of output row `yr` [n_out], skipping columns past the end.
template <typename T> __device__ __forceinline__ void gg_store2(T* yr, int c, float v0, float v1, int n_out) {
    u16* p = reinterpret_cast<u16*>(yr);
    if ((n_out & 1) == 0 && c + 1 < n_out) {
        *reinterpret_cast<u32*>(p + c) = (u32)gg_bits<T>(v0) | ((u32)gg_bits<T>(v1) << 16);
    } else {
        if (c < n_out) p[c] = gg_bits<T>(v0);
        if (c + 1 < n_out) p[c + 1] = gg_bits<T>(v1);
    }
}

// ---------------------------------------------------------------------------------------------
// Epilogue helpers, shared by the mma.sync, FMA and wgmma (grouped_gemm_sm90.cu) kernels.

// SwiGLU of one (gate, up) accumulator pair times the row scale: silu(gate) · up · s, in that order.
__device__ __forceinline__ float gg_swiglu(float gate, float up, float s) { return silu(gate) * up * s; }

// Output row of tile row `i` (local to the expert's rows `row_begin..row_begin + rows`, contiguous
// or masked alike): `yr` = y row [n_out] and its scale `s` (1 without `scale`). False past `rows`.
template <typename T>
__device__ __forceinline__ bool gg_out_row(T* y, const float* scale, int row_begin, int rows, int i, int n_out,
                                           T*& yr, float& s) {
    if (i >= rows) return false;
    const int r = row_begin + i;
    s = scale ? scale[r] : 1.0f;
    yr = y + (long long)r * n_out;
    return true;
}

// Columns c, c+1 (c even) of `yr`: SwiGLU of gate (g0, g1) with up (u0, u1), scaled by `s`.
template <typename T>
__device__ __forceinline__ void gg_store2_swiglu(T* yr, int c, float g0, float g1, float u0, float u1, float s,
                                                 int n_out) {
    const float v0 = gg_swiglu(g0, u0, s);
    const float v1 = gg_swiglu(g1, u1, s);
    gg_store2<T>(yr, c, v0, v1, n_out);
}

// Columns c, c+1 (c even) of `yr`: accumulators (a0, a1) scaled by `s`.
template <typename T>
__device__ __forceinline__ void gg_store2_scaled(T* yr, int c, float a0, float a1, float s, int n_out) {
    gg_store2<T>(yr, c, a0 * s, a1 * s, n_out);
}

template <typename T, bool NK>
__device__ __forceinline__ void gg_mma_impl(const T* x_, const T* w_, const i32* plan, const i32* gather,
                                            const float* scale, T* y, int experts, int K, int N, int swiglu,
                                            int n_tiles, int tokens, i32* rec) {
    using namespace gg;
    constexpr int SB_SIZE = NK ? BN * SA : BK * SBK;
    __shared__ __align__(16) u16 sA[2][BM * SA];
    __shared__ __align__(16) u16 sB[2][SB_SIZE];

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

    // A loader: rows a_row and a_row + 64 of the tile, k chunk a_k..a_k+8.
    const int a_row = tid >> 2, a_k = (tid & 3) * 8;
    long long a_off[2];
    bool a_ok[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        const int i = i0 + a_row + 64 * j;
        const int src = i < rows ? gg_src_row(gather, tokens, row_begin + i, rec) : -1;
        a_ok[j] = src >= 0;
        a_off[j] = a_ok[j] ? (long long)src * K : 0;
    }
    // B loader. NK: virtual columns b_v and b_v + 64, k chunk b_k..b_k+8. KN: k rows b_k and
    // b_k + 16, virtual columns b_v..b_v+8 (contiguous weight columns b_col.., b_valid of them).
    const int b_v = NK ? tid >> 2 : (tid & 15) * 8;
    const int b_k = NK ? (tid & 3) * 8 : tid >> 4;
    long long b_off[2];
    bool b_ok[2];
    int b_valid = 0;
    long long b_col = 0;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        const int v = NK ? b_v + 64 * j : b_v;
        const int c = swiglu ? nt * 64 + (v >> 5) * 16 + (v & 15) : nt * BN + v;
        const int wcol = swiglu && (v & 16) ? half_n + c : c;
        b_ok[j] = c < col_limit;
        b_off[j] = b_ok[j] ? (long long)wcol * K : 0;
        if (!NK && j == 0) {
            b_valid = gg_clamp8((long long)col_limit - c);
            b_col = wcol;
        }
    }
    const bool vec_a = (K & 7) == 0;
    const bool vec_b = NK ? (K & 7) == 0 : (col_limit & 7) == 0;

    uint4 ra[2], rb[2];
    auto load = [&](int k0) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int k = k0 + a_k;
            ra[j] = gg_load8(x, a_off[j] + k, a_ok[j] ? gg_clamp8((long long)K - k) : 0, vec_a);
        }
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            if (NK) {
                const int k = k0 + b_k;
                rb[j] = gg_load8(we, b_off[j] + k, b_ok[j] ? gg_clamp8((long long)K - k) : 0, vec_b);
            } else {
                const int k = k0 + b_k + 16 * j;
                rb[j] = gg_load8(we, (long long)k * N + b_col, k < K ? b_valid : 0, vec_b);
            }
        }
    };
    auto store = [&](int buf) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            *reinterpret_cast<uint4*>(&sA[buf][(a_row + 64 * j) * SA + a_k]) = ra[j];
            if (NK) {
                *reinterpret_cast<uint4*>(&sB[buf][(b_v + 64 * j) * SA + b_k]) = rb[j];
            } else {
                *reinterpret_cast<uint4*>(&sB[buf][(b_k + 16 * j) * SBK + b_v]) = rb[j];
            }
        }
    };

    const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
    const int wm = warp >> 2, wn = warp & 3;
    float acc[4][4][4];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[mi][ni][r] = 0.0f;

    auto compute = [&](int buf) {
        const u16* a = sA[buf];
        const u16* b = sB[buf];
#pragma unroll
        for (int ks = 0; ks < BK; ks += 16) {
            u32 af[4][4], bfr[4][2];
            // A: matrices (rows 0-7 | 8-15) × (k 0-7 | 8-15) are a0..a3 of the mma fragment.
#pragma unroll
            for (int mi = 0; mi < 4; ++mi) {
                gg_ldsm_x4(af[mi], a + (wm * 64 + mi * 16 + (lane & 15)) * SA + ks + (lane >> 4) * 8);
            }
            // B, two n8 tiles per ldmatrix: matrix j is n tile 2np + j / 2, k half j % 2.
            const int j = lane >> 3, r8 = lane & 7;
#pragma unroll
            for (int np = 0; np < 2; ++np) {
                u32 t[4];
                const int n = wn * 32 + np * 16 + (j >> 1) * 8;
                const int k = ks + (j & 1) * 8;
                if (NK) {
                    gg_ldsm_x4(t, b + (n + r8) * SA + k);
                } else {
                    gg_ldsm_x4_trans(t, b + (k + r8) * SBK + n);
                }
                bfr[2 * np][0] = t[0];
                bfr[2 * np][1] = t[1];
                bfr[2 * np + 1][0] = t[2];
                bfr[2 * np + 1][1] = t[3];
            }
#pragma unroll
            for (int mi = 0; mi < 4; ++mi)
#pragma unroll
                for (int ni = 0; ni < 4; ++ni) gg_mma<T>(acc[mi][ni], af[mi], bfr[ni]);
        }
    };

    const int kt_n = (K + BK - 1) / BK;
    load(0);
    store(0);
    __syncthreads();
    for (int kt = 0; kt < kt_n; ++kt) {
        const int buf = kt & 1;
        const bool more = kt + 1 < kt_n;
        if (more) load((kt + 1) * BK);
        compute(buf);
        // NOTE: buffer buf^1 was last read in the previous iteration, before its barrier.
        if (more) store(buf ^ 1);
        __syncthreads();
    }

    // Epilogue: SwiGLU and the row scale on the f32 accumulators, one rounding.
    const int n_out = col_limit;
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
            T* yr;
            float s;
            if (!gg_out_row<T>(y, scale, row_begin, rows, i0 + wm * 64 + mi * 16 + g + hr * 8, n_out, yr, s)) continue;
            if (swiglu) {
#pragma unroll
                for (int ni = 0; ni < 2; ++ni) {
                    const int c = nt * 64 + wn * 16 + ni * 8 + tg * 2;
                    gg_store2_swiglu<T>(yr, c, acc[mi][ni][hr * 2], acc[mi][ni][hr * 2 + 1], acc[mi][ni + 2][hr * 2],
                                        acc[mi][ni + 2][hr * 2 + 1], s, n_out);
                }
            } else {
#pragma unroll
                for (int ni = 0; ni < 4; ++ni) {
                    const int c = nt * BN + wn * 32 + ni * 8 + tg * 2;
                    gg_store2_scaled<T>(yr, c, acc[mi][ni][hr * 2], acc[mi][ni][hr * 2 + 1], s, n_out);
                }
            }
        }
    }
}

#define GG_MMA_KERNEL(NAME, TY, NKV)                                                                          \
    extern "C" __global__ void __launch_bounds__(gg::THREADS, 2)                                              \
        NAME(const TY* x, const TY* w, const i32* plan, const i32* gather, const float* scale, TY* y,          \
             int experts, int K, int N, int swiglu, int n_tiles, int tokens, i32* rec) {                       \
        gg_mma_impl<TY, NKV>(x, w, plan, gather, scale, y, experts, K, N, swiglu, n_tiles, tokens, rec);      \
    }
GG_MMA_KERNEL(grouped_gemm_mma_kn_bf16, bf16, false)
GG_MMA_KERNEL(grouped_gemm_mma_nk_bf16, bf16, true)
GG_MMA_KERNEL(grouped_gemm_mma_kn_f16, f16, false)
GG_MMA_KERNEL(grouped_gemm_mma_nk_f16, f16, true)

// ---------------------------------------------------------------------------------------------
// f32: plain tiled FMA (no TF32: its 10-bit mantissa would miss the f32 tolerance).
//
// Block tile 64 × 64 × 16, 256 threads, 4 × 4 outputs each (rows ty + 16i, virtual columns
// tx + 16j). SwiGLU: a block covers 32 output columns j0..j0+32; virtual v < 32 is gate column
// j0 + v, v >= 32 up column I + j0 + v - 32, so each thread's columns j and j + 2 pair up.

namespace ggf {
constexpr int BM = 64, BN = 64, BK = 16, THREADS = 256;
}

template <bool NK>
__device__ __forceinline__ void gg_fma_impl(const float* x, const float* w, const i32* plan, const i32* gather,
                                            const float* scale, float* y, int experts, int K, int N, int swiglu,
                                            int n_tiles, int tokens, i32* rec) {
    using namespace ggf;
    __shared__ float sA[BK][BM + 4];
    __shared__ float sB[BK][BN + 4];

    const int mt = blockIdx.x / n_tiles, nt = blockIdx.x % n_tiles;
    if (mt >= plan[experts]) return;
    const int e = gg_find_expert(plan, experts, mt);
    const int row_begin = plan[experts + 1 + e], rows = plan[2 * experts + 1 + e];
    const int i0 = (mt - plan[e]) * BM;
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const float* we = w + (long long)e * N * K;
    const int half_n = N / 2;
    const int col_limit = swiglu ? half_n : N;

    // A: rows ty + 16j, k = tx.
    const float* a_src[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int i = i0 + ty + 16 * j;
        const int src = i < rows ? gg_src_row(gather, tokens, row_begin + i, rec) : -1;
        a_src[j] = src >= 0 ? x + (long long)src * K : nullptr;
    }
    // B: KN: k rows (tid >> 6) + 4j, virtual column tid & 63; NK: virtual columns ty + 16j, k = tx.
    int b_col[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int v = NK ? ty + 16 * j : (tid & 63);
        const int c = swiglu ? nt * 32 + (v & 31) : nt * BN + v;
        b_col[j] = c < col_limit ? (swiglu && v >= 32 ? half_n + c : c) : -1;
    }

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int k = k0 + tx;
            sA[tx][ty + 16 * j] = a_src[j] && k < K ? a_src[j][k] : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            if (NK) {
                const int k = k0 + tx;
                sB[tx][ty + 16 * j] = b_col[j] >= 0 && k < K ? we[(long long)b_col[j] * K + k] : 0.0f;
            } else {
                const int kr = (tid >> 6) + 4 * j, k = k0 + kr;
                sB[kr][tid & 63] = b_col[0] >= 0 && k < K ? we[(long long)k * N + b_col[0]] : 0.0f;
            }
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = sA[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = sB[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }

    const int n_out = col_limit;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        float* yr;
        float s;
        if (!gg_out_row<float>(y, scale, row_begin, rows, i0 + ty + 16 * i, n_out, yr, s)) continue;
        if (swiglu) {
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const int c = nt * 32 + tx + 16 * j;
                if (c < n_out) yr[c] = gg_swiglu(acc[i][j], acc[i][j + 2], s);
            }
        } else {
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int c = nt * BN + tx + 16 * j;
                if (c < n_out) yr[c] = acc[i][j] * s;
            }
        }
    }
}

#define GG_FMA_KERNEL(NAME, NKV)                                                                              \
    extern "C" __global__ void __launch_bounds__(ggf::THREADS)                                                \
        NAME(const float* x, const float* w, const i32* plan, const i32* gather, const float* scale, float* y, \
             int experts, int K, int N, int swiglu, int n_tiles, int tokens, i32* rec) {                       \
        gg_fma_impl<NKV>(x, w, plan, gather, scale, y, experts, K, N, swiglu, n_tiles, tokens, rec);          \
    }
GG_FMA_KERNEL(grouped_gemm_fma_kn_f32, false)
GG_FMA_KERNEL(grouped_gemm_fma_nk_f32, true)

// ---------------------------------------------------------------------------------------------
// Rows outside every expert

// Contiguous: rows valid_end..R of y [R, n_out] are zeroed, and their gather rows checked (the
// GEMM kernel checked the others). Masked: rows c >= rows[e] of y [E, C, n_out] are zeroed.
template <typename T>
__device__ void grouped_gemm_zero_impl(T* y, const i32* plan, const i32* gather, int experts, int out_rows,
                                       int n_out, int capacity, int masked, int tokens, i32* rec) {
    const long long total = (long long)out_rows * n_out;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const T zero = from_f32<T>(0.0f);
    if (!masked) {
        const int end = plan[3 * experts + 1];
        for (long long i = (long long)end * n_out + t0; i < total; i += stride) y[i] = zero;
        if (gather) {
            for (long long r = end + t0; r < out_rows; r += stride) gg_src_row(gather, tokens, (int)r, rec);
        }
    } else {
        for (long long i = t0; i < total; i += stride) {
            const int r = (int)(i / n_out);
            const int e = r / capacity, c = r - e * capacity;
            if (c >= plan[2 * experts + 1 + e]) y[i] = zero;
        }
    }
}
MOEKIT_FLOAT_KERNELS(grouped_gemm_zero,
                     (T * y, const i32* plan, const i32* gather, int experts, int out_rows, int n_out, int capacity,
                      int masked, int tokens, i32* rec),
                     (y, plan, gather, experts, out_rows, n_out, capacity, masked, tokens, rec))
