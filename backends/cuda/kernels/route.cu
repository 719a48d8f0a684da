// Routing: the fused gate (logits = hidden · gate in f32), the per-token routing kernel (one
// warp per token) and the aux-loss-free bias update. Launchers: src/ops/route.rs.

#define ROUTE_FULL 0xffffffffu

__device__ __forceinline__ float route_neg_inf() { return __int_as_float(0xff800000); }
__device__ __forceinline__ bool route_finite(float x) { return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u; }

// ---- helpers of both routing kernels ------------------------------------------------------------
// Logit e of token t (row = logits + t·E): the sum of the `splits` slices; a non-finite value is
// recorded and read as 0.
template <typename T>
__device__ __forceinline__ float route_logit(const T* row, int e, long long t, int tokens, int E, int splits,
                                             i32* rec) {
    float x = to_f32(row[e]);
    for (int z = 1; z < splits; ++z) x += to_f32(row[(long long)z * tokens * E + e]);
    if (!route_finite(x)) {
        report_bad(rec, MOEKIT_BAD_ROUTE_NONFINITE, (int)(t * E + e), 0, 0);
        x = 0.0f;
    }
    return x;
}

__device__ __forceinline__ float route_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Warp argmax of (v, i) over the lanes, ties to the lower index (an index of -1, "none", loses
// every tie as the largest unsigned value).
__device__ __forceinline__ void route_warp_argmax(float& v, int& i) {
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(ROUTE_FULL, v, o);
        int oi = __shfl_xor_sync(ROUTE_FULL, i, o);
        if (ov > v || (ov == v && (unsigned)oi < (unsigned)i)) {
            v = ov;
            i = oi;
        }
    }
}

// Push v into the best two b1 >= b2 (strictly greater replaces: ties keep the earlier value).
__device__ __forceinline__ void route_top2_push(float v, float& b1, float& b2) {
    if (v > b1) {
        b2 = b1;
        b1 = v;
    } else if (v > b2) {
        b2 = v;
    }
}

// Group limit of one token, by its warp: from the selection scores sel [E] (shared memory,
// written by the warp and synced), gkeep[g] = whether group g is among the topk_group best.
// The group score is the sum of the two best allowed selection scores (one if only one, -inf
// if none); ties to the lower group index. gsc [G] is scratch. Ends with a __syncwarp.
__device__ __forceinline__ void route_keep_groups(const float* sel, const i32* mask, int E, int G, int topk_group,
                                                  float* gsc, i32* gkeep, int lane) {
    const float ninf = route_neg_inf();
    const int size = E / G;
    for (int g = lane; g < G; g += 32) {
        float b1 = ninf, b2 = ninf;
        int n = 0;
        for (int e = g * size; e < (g + 1) * size; ++e) {
            if (mask && !mask[e]) continue;
            ++n;
            route_top2_push(sel[e], b1, b2);
        }
        gsc[g] = n == 0 ? ninf : (n == 1 ? b1 : b1 + b2);
    }
    __syncwarp();
    for (int g = lane; g < G; g += 32) {
        float v = gsc[g];
        int rank = 0;
        for (int g2 = 0; g2 < G; ++g2) {
            float u = gsc[g2];
            rank += (u > v || (u == v && g2 < g)) ? 1 : 0;
        }
        gkeep[g] = rank < topk_group;
    }
    __syncwarp();
}

// Store pick j (expert e, score w) of token t: renormalised by wsum when asked, then scaled.
__device__ __forceinline__ void route_store(i32* ids, float* weights, long long t, int k, int j, int e, float w,
                                            float wsum, int renorm, float scaling) {
    // NOTE: a sum of 0 only happens when every chosen score underflowed; keep the zeros.
    if (renorm && wsum > 0.0f) w = w / wsum;
    ids[t * k + j] = e;
    weights[t * k + j] = w * scaling;
}

// Per-block accumulators load [E] f32 and counts [E] i32 in shared memory: zero them, and add
// them to the global totals with one atomic per non-zero expert.
__device__ __forceinline__ void route_acc_zero(float* acc_load, i32* acc_cnt, int E) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        acc_load[e] = 0.0f;
        acc_cnt[e] = 0;
    }
}

__device__ __forceinline__ void route_acc_flush(const float* acc_load, const i32* acc_cnt, float* load, i32* counts,
                                                int E) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        if (acc_cnt[e] != 0) atomicAdd(&counts[e], acc_cnt[e]);
        if (acc_load[e] != 0.0f) atomicAdd(&load[e], acc_load[e]);
    }
}

// ---- fused gate: logits [T, E] f32 = hidden [T, H] · gate [H, E], f32 accumulation ----------
// A 64 × 64 output tile per block of 256 threads, 4 × 4 outputs per thread, K steps of 16.
// Grid: (ceil(T / 64), ceil(E / 64), splits). Split z sums the H range [z·kchunk, (z+1)·kchunk)
// into its own slice logits + z·T·E (deterministic split-K; the routing kernel adds the
// slices), so few tokens (decode) still fill the GPU.
#define GATE_BM 64
#define GATE_BN 64
#define GATE_BK 16

template <typename T>
__device__ void route_gate_impl(const T* x, const T* g, float* logits, int tokens, int h, int experts,
                                int kchunk) {
    __shared__ float xs[GATE_BK][GATE_BM + 4];
    __shared__ float gs[GATE_BK][GATE_BN + 4];
    int tid = threadIdx.x;
    int tx = tid & 15, ty = tid >> 4;
    long long m0 = (long long)blockIdx.x * GATE_BM;
    int n0 = blockIdx.y * GATE_BN;
    float acc[4][4];
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    const int k_begin = blockIdx.z * kchunk;
    const int k_end = min(h, k_begin + kchunk);
    logits += (long long)blockIdx.z * tokens * experts;
    for (int k0 = k_begin; k0 < k_end; k0 += GATE_BK) {
        for (int i = tid; i < GATE_BM * GATE_BK; i += 256) {
            int m = i / GATE_BK, kk = i % GATE_BK;
            long long row = m0 + m;
            int col = k0 + kk;
            xs[kk][m] = (row < tokens && col < k_end) ? to_f32(x[row * h + col]) : 0.0f;
        }
        for (int i = tid; i < GATE_BK * GATE_BN; i += 256) {
            int kk = i / GATE_BN, n = i % GATE_BN;
            int row = k0 + kk, col = n0 + n;
            gs[kk][n] = (row < k_end && col < experts) ? to_f32(g[(long long)row * experts + col]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GATE_BK; ++kk) {
            float a[4], b[4];
            for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty * 4 + i];
            for (int j = 0; j < 4; ++j) b[j] = gs[kk][tx * 4 + j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; ++i) {
        long long row = m0 + ty * 4 + i;
        if (row >= tokens) continue;
        for (int j = 0; j < 4; ++j) {
            int col = n0 + tx * 4 + j;
            if (col < experts) logits[row * experts + col] = acc[i][j];
        }
    }
}
MOEKIT_FLOAT_KERNELS(route_gate, (const T* x, const T* g, float* logits, int tokens, int h, int experts, int kchunk),
                     (x, g, logits, tokens, h, experts, kchunk))

// ---- routing: one warp per token, tokens grid-strided ----------------------------------------
// Dynamic shared memory (words of 4 bytes):
//   block_acc: load [E] f32 and counts [E] i32 accumulated per block, flushed with one atomic
//              per expert at the end;
//   then, unless `gwork` is given, each warp's work area of `2E + 2G + k` words:
//   scores [E], selection [E], group scores [G], kept groups [G] i32, chosen experts [k] i32.
// With `gwork` (problems too large for shared memory) the work areas live there, one per warp
// of the grid. Without block_acc, counts and load take global atomics directly.
// `groups` = 0 turns group-limited routing off (the launcher passes 0 when every group is kept).
// `splits` > 1: the logits are that many [T, E] slices to add (the split-K gate's partials).
template <typename T>
__device__ void route_impl(const T* logits, const float* bias, const i32* mask, i32* ids, float* weights,
                           i32* counts, float* load, int tokens, int experts, int k, int softmax, int groups,
                           int topk_group, int renorm, float scaling, int splits, float* gwork, int block_acc,
                           i32* rec) {
    extern __shared__ float route_smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wpb = blockDim.x >> 5;
    const int E = experts, G = groups;
    const float ninf = route_neg_inf();
    float* acc_load = route_smem;
    i32* acc_cnt = (i32*)(route_smem + E);
    if (block_acc) {
        route_acc_zero(acc_load, acc_cnt, E);
        __syncthreads();
    }
    float* lacc = block_acc ? acc_load : load;
    i32* cacc = block_acc ? acc_cnt : counts;

    const long long pw = 2LL * E + 2LL * G + k;
    const long long gwarp = (long long)blockIdx.x * wpb + warp;
    float* sc = gwork ? gwork + gwarp * pw : route_smem + (block_acc ? 2 * E : 0) + warp * pw;
    float* sel = sc + E;
    float* gsc = sel + E;
    i32* gkeep = (i32*)(gsc + G);
    i32* chosen = gkeep + G;

    for (long long t = gwarp; t < tokens; t += (long long)gridDim.x * wpb) {
        const T* row = logits + t * E;
        // Scores: softmax over the allowed experts (0 for masked ones), or sigmoid.
        float m = ninf;
        for (int e = lane; e < E; e += 32) {
            const float x = route_logit(row, e, t, tokens, E, splits, rec);
            sc[e] = x;
            if (!mask || mask[e]) m = fmaxf(m, x);
        }
        if (softmax) {
            m = warp_max(m);
            float s = 0.0f;
            for (int e = lane; e < E; e += 32) {
                float v = (!mask || mask[e]) ? expf(sc[e] - m) : 0.0f;
                sc[e] = v;
                s += v;
            }
            s = warp_sum(s);
            for (int e = lane; e < E; e += 32) sc[e] = sc[e] / s;
        } else {
            for (int e = lane; e < E; e += 32) sc[e] = (!mask || mask[e]) ? route_sigmoid(sc[e]) : 0.0f;
        }
        // Selection scores (bias for selection only); masked experts are never candidates.
        for (int e = lane; e < E; e += 32) {
            bool ok = !mask || mask[e];
            float b = 0.0f;
            if (bias) {
                b = bias[e];
                if (!route_finite(b)) {
                    report_bad(rec, MOEKIT_BAD_ROUTE_BIAS_NONFINITE, e, 0, 0);
                    b = 0.0f;
                }
            }
            sel[e] = ok ? sc[e] + b : ninf;
            if (ok) atomicAdd(&lacc[e], sc[e]);
        }
        if (G > 0) {
            __syncwarp();
            route_keep_groups(sel, mask, E, G, topk_group, gsc, gkeep, lane);
            const int size = E / G;
            for (int e = lane; e < E; e += 32)
                if (!gkeep[e / size]) sel[e] = ninf;
        }
        // Top-k by repeated warp argmax, ties to the lower index. Each lane owns experts
        // lane, lane + 32, ...: it keeps its own best and rescans only when that one is taken.
        // NOTE: the sync makes every lane's scores visible: the weights read other lanes' ones.
        __syncwarp();
        float bv = ninf;
        int bi = -1;
        for (int e = lane; e < E; e += 32) {
            float v = sel[e];
            if (v > bv) {
                bv = v;
                bi = e;
            }
        }
        float wsum = 0.0f;
        for (int j = 0; j < k; ++j) {
            float v = bv;
            int i = bi;
            route_warp_argmax(v, i);
            // NOTE: validation guarantees k candidates with finite selection scores; the guard
            // only keeps a corrupted state in bounds.
            int pick = i < 0 ? 0 : i;
            if (lane == 0) chosen[j] = pick;
            wsum += sc[pick];
            if (i >= 0 && i == bi) {
                sel[i] = ninf;
                bv = ninf;
                bi = -1;
                for (int e = lane; e < E; e += 32) {
                    float u = sel[e];
                    if (u > bv) {
                        bv = u;
                        bi = e;
                    }
                }
            }
        }
        __syncwarp();
        for (int j = lane; j < k; j += 32) {
            int e = chosen[j];
            route_store(ids, weights, t, k, j, e, sc[e], wsum, renorm, scaling);
            atomicAdd(&cacc[e], 1);
        }
        __syncwarp();
    }
    if (block_acc) {
        __syncthreads();
        route_acc_flush(acc_load, acc_cnt, load, counts, E);
    }
}
MOEKIT_FLOAT_KERNELS(route,
                     (const T* logits, const float* bias, const i32* mask, i32* ids, float* weights, i32* counts,
                      float* load, int tokens, int experts, int k, int softmax, int groups, int topk_group,
                      int renorm, float scaling, int splits, float* gwork, int block_acc, i32* rec),
                     (logits, bias, mask, ids, weights, counts, load, tokens, experts, k, softmax, groups,
                      topk_group, renorm, scaling, splits, gwork, block_acc, rec))

// ---- routing, register path: one warp per token, E <= 32·EPL, k <= 32 --------------------------
// Lane l owns experts l, l + 32, ..., l + 32·(EPL−1): their scores, selection scores, bias and
// its share of the load and counts stay in registers, so the token loop takes no atomics and
// touches shared memory only for group-limited routing. The block reduces counts and load in
// shared memory at the end and flushes one global atomic per expert.
// Dynamic shared memory (words): load [E] f32, counts [E] i32, then with groups > 0 each warp's
// selection [E], group scores [G] and kept groups [G] i32.
// Same results as route_impl: ties to the lower expert index everywhere, the same f32 formulas.
// The fused Hopper kernel (route_sm90.cu) routes with the same three steps: route_lane_init,
// route_reg_token per token, route_lane_flush.

// Order-preserving unsigned key of a float that is not NaN (-0 keyed as +0, so keys tie exactly
// where the floats compare equal), and its inverse.
__device__ __forceinline__ u32 route_key(float x) {
    const u32 u = __float_as_uint(x + 0.0f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float route_unkey(u32 k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
// Warp max / min of 32-bit unsigned values: one redux.sync on sm_80+, shuffles before.
// NOTE: the intrinsics, not inline `redux.sync` asm: with the asm, ptxas held route_r8 to 64
// registers and spilled (276 bytes); with the intrinsics it takes 80 and spills nothing.
__device__ __forceinline__ u32 route_warp_umax(u32 v) {
#if __CUDA_ARCH__ >= 800
    return __reduce_max_sync(ROUTE_FULL, v);
#else
    for (int o = 16; o > 0; o >>= 1) v = max(v, (u32)__shfl_xor_sync(ROUTE_FULL, v, o));
    return v;
#endif
}
__device__ __forceinline__ u32 route_warp_uadd(u32 v) {
#if __CUDA_ARCH__ >= 800
    return __reduce_add_sync(ROUTE_FULL, v);
#else
    for (int o = 16; o > 0; o >>= 1) v += (u32)__shfl_xor_sync(ROUTE_FULL, v, o);
    return v;
#endif
}
__device__ __forceinline__ u32 route_warp_umin(u32 v) {
#if __CUDA_ARCH__ >= 800
    return __reduce_min_sync(ROUTE_FULL, v);
#else
    for (int o = 16; o > 0; o >>= 1) v = min(v, (u32)__shfl_xor_sync(ROUTE_FULL, v, o));
    return v;
#endif
}

// One lane's state across the tokens of a block: which of its experts exist and are allowed
// (bit i: expert lane + 32·i), their selection bias (`biased`: a bias was given) and its share of
// the load. Pick counts go to the block's shared accumulator, one warp-wide atomic per token
// (run 25; before, registers for EPL <= 2 and one atomic per pick for larger EPL).
template <int EPL> struct RouteLane {
    unsigned allowed;
    bool biased;
    float b[EPL];
    float lacc[EPL];
};

// The lane's state for E experts: `report` says whether a non-finite bias is recorded (one warp
// of the grid that routes tokens, so a bad bias is reported, not once per block).
template <int EPL>
__device__ __forceinline__ void route_lane_init(RouteLane<EPL>& s, const float* bias, const i32* mask, int E,
                                                bool report, i32* rec) {
    const int lane = threadIdx.x & 31;
    s.allowed = 0;
    s.biased = bias != nullptr;
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
        const int e = lane + 32 * i;
        s.b[i] = 0.0f;
        s.lacc[i] = 0.0f;
        if (e < E) {
            if (!mask || mask[e]) s.allowed |= 1u << i;
            if (bias) {
                float v = bias[e];
                if (!route_finite(v)) {
                    if (report) report_bad(rec, MOEKIT_BAD_ROUTE_BIAS_NONFINITE, e, 0, 0);
                    v = 0.0f;
                }
                s.b[i] = v;
            }
        }
    }
}

// Whether route_keep_groups_reg applies: every register slot i holds experts lane + 32·i of one
// group, i.e. E = 32·EPL and each group is a whole number m = EPL / G of slots.
template <int EPL> __device__ __forceinline__ bool route_groups_in_registers(int E, int G) {
    // NOTE: EPL is a power of two, so G divides it exactly when G is one too (no division).
    return E == 32 * EPL && G > 0 && G <= EPL && (G & (G - 1)) == 0;
}

// The group limit of route_keep_groups without shared memory, for the layout above (group g is
// slots [g·m, (g+1)·m) of every lane): bit i of the result says whether slot i's group is among
// the topk_group best, uniform over the warp. Same rule: a group's score is the sum of its two
// best allowed selection scores (one if only one, -inf if none), ties to the lower group index.
// Each lane takes the top two of its own slots of the group; the warp's best is one max
// reduction, and the second is the best again when two lanes hold it, else the best of the other
// lanes' first and the holder's second (a second max reduction).
template <int EPL>
__device__ __forceinline__ unsigned route_keep_groups_reg(const float (&sel)[EPL], unsigned allowed, int G,
                                                         int topk_group) {
    const int lane = threadIdx.x & 31;
    const float ninf = route_neg_inf();
    const int m = EPL >> (__ffs(G) - 1);
    float mine = ninf, l1 = ninf, l2 = ninf;
    int ln = 0, g = 0, left = m;
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
        if ((allowed >> i) & 1u) {
            ++ln;
            route_top2_push(sel[i], l1, l2);
        }
        if (--left == 0) {
            const int n = (int)route_warp_uadd((u32)ln);
            const u32 k1 = route_key(l1);
            const u32 m1 = route_warp_umax(k1);
            const bool holds = ln > 0 && k1 == m1;
            float score = ninf;
            if (n == 1) {
                score = route_unkey(m1);
            } else if (n > 1) {
                const float b1 = route_unkey(m1);
                const int holders = __popc(__ballot_sync(ROUTE_FULL, holds));
                const u32 k2 = holds ? route_key(l2) : (ln > 0 ? k1 : 0u);
                const float b2 = holders > 1 ? b1 : route_unkey(route_warp_umax(k2));
                score = b1 + b2;
            }
            if (lane == g) mine = score;
            ++g;
            left = m;
            l1 = l2 = ninf;
            ln = 0;
        }
    }
    // Lane g < G ranks group g against the others' scores (shuffled from their lanes).
    int rank = 0;
#pragma unroll
    for (int h = 0; h < EPL; ++h) {
        if (h >= G) break;
        const float u = __shfl_sync(ROUTE_FULL, mine, h);
        rank += (u > mine || (u == mine && h < lane)) ? 1 : 0;
    }
    const unsigned keep = __ballot_sync(ROUTE_FULL, lane < G && rank < topk_group);
    // Spread the group bits over the slots.
    unsigned slots = 0;
    g = 0;
    left = m;
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
        if ((keep >> g) & 1u) slots |= 1u << i;
        if (--left == 0) {
            ++g;
            left = m;
        }
    }
    return slots;
}

// A lane's best two candidates among its live slots (bit i of `live`; key 0: none): keys k0 >= k1
// at slots s0, s1, ties to the lower slot (the lower expert index).
template <int EPL>
__device__ __forceinline__ void route_lane_top2(const u32 (&key)[EPL], unsigned live, u32& k0, int& s0, u32& k1,
                                                int& s1) {
    k0 = k1 = 0u;
    s0 = s1 = 0;
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
        const u32 v = ((live >> i) & 1u) ? key[i] : 0u;
        if (v > k0) {
            k1 = k0;
            s1 = s0;
            k0 = v;
            s0 = i;
        } else if (v > k1) {
            k1 = v;
            s1 = i;
        }
    }
}

// Top-k of one token by repeated warp argmax over keys (0: not a candidate; sel -inf): the best
// key (one redux), then the lowest expert index holding it (a second), so ties go to the lower
// index. Each lane keeps its best two candidates; the owner of a pick moves its second up without
// a branch. For EPL > 2 the new second is not known until the lane is picked again, and only then
// does it rescan its slots (route_lane_top2). Lane j gets pick j (my_id, my_w; my_ok: a real
// candidate) and every lane the sum of the k scores. BIASED: the selection scores carry a bias,
// so a pick's score is shuffled from its owner; without one the selection score is the score
// (sc + 0 is exact for sc >= 0) and comes from the key.
template <int EPL, bool BIASED>
__device__ __forceinline__ void route_reg_picks(const float (&sel)[EPL], const float (&sc)[EPL], int k, float& wsum,
                                                int& my_id, float& my_w, int& my_ok) {
    const int lane = threadIdx.x & 31;
    const float ninf = route_neg_inf();
    u32 key[EPL];
#pragma unroll
    for (int i = 0; i < EPL; ++i) key[i] = sel[i] == ninf ? 0u : route_key(sel[i]);
    unsigned live = EPL == 32 ? ROUTE_FULL : (1u << (EPL & 31)) - 1u;
    u32 k0, k1;
    int s0, s1;
    route_lane_top2<EPL>(key, live, k0, s0, k1, s1);
    bool stale = false;
    for (int j = 0; j < k; ++j) {
        const u32 best = route_warp_umax(k0);
        // NOTE: an index of -1 ("none") is the largest unsigned value, so it loses every tie.
        const int id = (int)route_warp_umin(k0 == best && best != 0u ? (u32)(lane + 32 * s0) : 0xffffffffu);
        // NOTE: validation guarantees k candidates with finite selection scores; the guard
        // only keeps a corrupted state in bounds (expert 0, weight 0 without a bias).
        const int pick = id < 0 ? 0 : id;
        const int slot = pick >> 5, owner = pick & 31;
        float w;
        if constexpr (BIASED) {
            float own = 0.0f;
#pragma unroll
            for (int i = 0; i < EPL; ++i)
                if (i == slot) own = sc[i];
            w = __shfl_sync(ROUTE_FULL, own, owner);
        } else {
            w = best != 0u ? route_unkey(best) : 0.0f;
        }
        wsum += w;
        if (lane == j) {
            my_id = pick;
            my_w = w;
            my_ok = id >= 0;
        }
        const bool mine = id >= 0 && lane == owner;
        k0 = mine ? k1 : k0;
        s0 = mine ? s1 : s0;
        k1 = mine ? 0u : k1;
        if constexpr (EPL > 2) {
            live &= ~(mine ? 1u << slot : 0u);
            if (mine && stale) {
                route_lane_top2<EPL>(key, live, k0, s0, k1, s1);
                stale = false;
            } else {
                stale = stale || mine;
            }
        }
    }
}

// Route token t from its logits sc[i] (expert lane + 32·i; finite, 0 for absent experts): the
// scores, the group limit (gsel [E], gsc [G], gkeep [G]: the warp's shared work area, G > 0
// only), the top-k with ties to the lower index, and the stores of ids and weights.
template <int EPL>
__device__ __forceinline__ void route_reg_token(RouteLane<EPL>& s, float (&sc)[EPL], long long t, const i32* mask,
                                                i32* ids, float* weights, int E, int k, int softmax, int G,
                                                int topk_group, int renorm, float scaling, float* gsel, float* gsc,
                                                i32* gkeep, i32* acc_cnt) {
    const int lane = threadIdx.x & 31;
    const float ninf = route_neg_inf();
    const unsigned allowed = s.allowed;
    float sel[EPL];
    if (softmax) {
        float m = ninf;
#pragma unroll
        for (int i = 0; i < EPL; ++i)
            if ((allowed >> i) & 1u) m = fmaxf(m, sc[i]);
        m = route_unkey(route_warp_umax(route_key(m)));
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < EPL; ++i) {
            float v = ((allowed >> i) & 1u) ? expf(sc[i] - m) : 0.0f;
            sc[i] = v;
            sum += v;
        }
        sum = warp_sum(sum);
#pragma unroll
        for (int i = 0; i < EPL; ++i) sc[i] = sc[i] / sum;
    } else {
#pragma unroll
        for (int i = 0; i < EPL; ++i) sc[i] = ((allowed >> i) & 1u) ? route_sigmoid(sc[i]) : 0.0f;
    }
    // Selection scores (bias for selection only); masked and absent experts never compete.
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
        sel[i] = ((allowed >> i) & 1u) ? sc[i] + s.b[i] : ninf;
        s.lacc[i] += sc[i];
    }
    if (G > 0 && route_groups_in_registers<EPL>(E, G)) {
        const unsigned keep = route_keep_groups_reg<EPL>(sel, allowed, G, topk_group);
#pragma unroll
        for (int i = 0; i < EPL; ++i)
            if (!((keep >> i) & 1u)) sel[i] = ninf;
    } else if (G > 0) {
#pragma unroll
        for (int i = 0; i < EPL; ++i)
            if (lane + 32 * i < E) gsel[lane + 32 * i] = sel[i];
        __syncwarp();
        route_keep_groups(gsel, mask, E, G, topk_group, gsc, gkeep, lane);
        const int size = E / G;
#pragma unroll
        for (int i = 0; i < EPL; ++i) {
            const int e = lane + 32 * i;
            if (e < E && !gkeep[e / size]) sel[i] = ninf;
        }
    }
    float wsum = 0.0f, my_w = 0.0f;
    int my_id = 0, my_ok = 0;
    if (s.biased)
        route_reg_picks<EPL, true>(sel, sc, k, wsum, my_id, my_w, my_ok);
    else
        route_reg_picks<EPL, false>(sel, sc, k, wsum, my_id, my_w, my_ok);
    if (lane < k) {
        if (my_ok) atomicAdd(&acc_cnt[my_id], 1);
        route_store(ids, weights, t, k, lane, my_id, my_w, wsum, renorm, scaling);
    }
}

// Add the lane's load into the block's accumulator (shared memory).
template <int EPL>
__device__ __forceinline__ void route_lane_flush(const RouteLane<EPL>& s, float* acc_load, i32* acc_cnt, int E) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
        const int e = lane + 32 * i;
        if (e < E) {
            if (s.lacc[i] != 0.0f) atomicAdd(&acc_load[e], s.lacc[i]);
        }
    }
}

template <typename T, int EPL>
__device__ void route_reg_impl(const T* logits, const float* bias, const i32* mask, i32* ids, float* weights,
                               i32* counts, float* load, int tokens, int experts, int k, int softmax, int groups,
                               int topk_group, int renorm, float scaling, int splits, i32* rec) {
    extern __shared__ float route_smem[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wpb = blockDim.x >> 5;
    const int E = experts, G = groups;
    float* acc_load = route_smem;
    i32* acc_cnt = (i32*)(route_smem + E);
    float* gsel = route_smem + 2 * E + warp * (E + 2 * G);
    float* gsc = gsel + E;
    i32* gkeep = (i32*)(gsc + G);
    route_acc_zero(acc_load, acc_cnt, E);
    const long long gwarp = (long long)blockIdx.x * wpb + warp;
    RouteLane<EPL> s;
    route_lane_init<EPL>(s, bias, mask, E, gwarp < tokens, rec);
    __syncthreads();

    for (long long t = gwarp; t < tokens; t += (long long)gridDim.x * wpb) {
        const T* row = logits + t * E;
        float sc[EPL];
        if (splits == 1) {
            // One slice (cuBLASLt's gate, or logits given): plain loads, one finiteness test for
            // the row, and the per-value report only when it fails.
            bool bad = false;
#pragma unroll
            for (int i = 0; i < EPL; ++i) {
                const int e = lane + 32 * i;
                sc[i] = e < E ? to_f32(row[e]) : 0.0f;
                bad |= !route_finite(sc[i]);
            }
            if (bad) {
#pragma unroll
                for (int i = 0; i < EPL; ++i)
                    if (!route_finite(sc[i])) {
                        report_bad(rec, MOEKIT_BAD_ROUTE_NONFINITE, (int)(t * E + lane + 32 * i), 0, 0);
                        sc[i] = 0.0f;
                    }
            }
        } else {
#pragma unroll
            for (int i = 0; i < EPL; ++i) {
                const int e = lane + 32 * i;
                sc[i] = e < E ? route_logit(row, e, t, tokens, E, splits, rec) : 0.0f;
            }
        }
        route_reg_token<EPL>(s, sc, t, mask, ids, weights, E, k, softmax, G, topk_group, renorm, scaling, gsel, gsc,
                             gkeep, acc_cnt);
    }
    route_lane_flush<EPL>(s, acc_load, acc_cnt, E);
    __syncthreads();
    route_acc_flush(acc_load, acc_cnt, load, counts, E);
}

// route_r<EPL>_<dtype>: the register path for E <= 32·EPL.
#define ROUTE_REG_KERNEL(TY, SUFFIX, EPL)                                                                      \
    extern "C" __global__ void __launch_bounds__(256) route_r##EPL##_##SUFFIX(                                \
        const TY* logits, const float* bias, const i32* mask, i32* ids, float* weights, i32* counts,           \
        float* load, int tokens, int experts, int k, int softmax, int groups, int topk_group, int renorm,       \
        float scaling, int splits, i32* rec) {                                                                 \
        route_reg_impl<TY, EPL>(logits, bias, mask, ids, weights, counts, load, tokens, experts, k, softmax,  \
                                groups, topk_group, renorm, scaling, splits, rec);                             \
    }
#define ROUTE_REG_KERNELS(EPL)             \
    ROUTE_REG_KERNEL(float, f32, EPL)      \
    ROUTE_REG_KERNEL(f16, f16, EPL)        \
    ROUTE_REG_KERNEL(bf16, bf16, EPL)
ROUTE_REG_KERNELS(1)
ROUTE_REG_KERNELS(2)
ROUTE_REG_KERNELS(4)
ROUTE_REG_KERNELS(8)
ROUTE_REG_KERNELS(16)
ROUTE_REG_KERNELS(32)

// ---- routing, thread path (opt-in, MOEKIT_CUDA_ROUTE=thread): one thread per token, E <= 256,
// G <= 64, k <= 32 ----------------------------------------------------------------------------------
// The warp paths spend most of a token's time in warp-collective steps (a reduction per pick):
// ncu found route_r4 issue-bound at 60% of the SM's issue rate for 16384 tokens (run 19).
// NOTE: measured 1.7–2.1× slower than the register path at prefill sizes (run 19): one thread
// per token leaves ~4 warps per SM for 16384 tokens, each running thousands of dependent
// shared-memory steps. Kept opt-in and tested. Here
// a block of ROUTE_TPB threads routes tiles of ROUTE_TPB tokens (grid-strided): the tile's logits
// are staged in shared memory, token r's row at r·(E+1) (the pad keeps the threads' walks along
// their own rows on distinct banks), each thread turns its row into scores in place, the block
// sums the tile's scores per expert (one expert per thread, rows in order: the load), and each
// thread marks its experts that cannot be picked (masked, or outside the kept groups) with NaN,
// which no comparison takes, then picks its k experts by k scans of its row, ties to the lower
// index; a picked expert is marked too. Same rules as the warp paths (the f32 softmax sum runs
// in expert order instead of a warp tree, so weights may differ in the last bit).
// Dynamic shared memory (words): load [E], counts [E] i32, bias [E], allowed [E] i32, the rows
// [TPB][E+1], and with groups each thread's group scores [TPB][G+1].
#define ROUTE_TPB 64
template <typename T>
__device__ void route_t_impl(const T* logits, const float* bias, const i32* mask, i32* ids, float* weights,
                             i32* counts, float* load, int tokens, int experts, int k, int softmax, int groups,
                             int topk_group, int renorm, float scaling, int splits, i32* rec) {
    extern __shared__ float route_smem[];
    const int E = experts, G = groups, tid = threadIdx.x, stride = E + 1;
    const float ninf = route_neg_inf(), nan = __int_as_float(0x7fffffff);
    float* acc_load = route_smem;
    i32* acc_cnt = (i32*)(route_smem + E);
    float* bias_s = route_smem + 2 * E;
    i32* allowed_s = (i32*)(route_smem + 3 * E);
    float* rows = route_smem + 4 * E;
    float* gsc = rows + ROUTE_TPB * stride + tid * (G + 1);
    for (int e = tid; e < E; e += blockDim.x) {
        acc_load[e] = 0.0f;
        acc_cnt[e] = 0;
        allowed_s[e] = !mask || mask[e];
        float v = bias ? bias[e] : 0.0f;
        if (!route_finite(v)) {
            if (blockIdx.x == 0) report_bad(rec, MOEKIT_BAD_ROUTE_BIAS_NONFINITE, e, 0, 0);
            v = 0.0f;
        }
        bias_s[e] = v;
    }
    __syncthreads();
    const int size = G > 0 ? E / G : E;
    for (long long t0 = (long long)blockIdx.x * ROUTE_TPB; t0 < tokens; t0 += (long long)gridDim.x * ROUTE_TPB) {
        const int n = (int)min((long long)ROUTE_TPB, tokens - t0);
        for (int r = 0; r < n; ++r) {
            const long long t = t0 + r;
            for (int e = tid; e < E; e += blockDim.x)
                rows[r * stride + e] = route_logit(logits + t * E, e, t, tokens, E, splits, rec);
        }
        __syncthreads();
        float* row = rows + tid * stride;
        if (tid < n) {
            if (softmax) {
                float m = ninf;
                for (int e = 0; e < E; ++e)
                    if (allowed_s[e]) m = fmaxf(m, row[e]);
                float s = 0.0f;
                for (int e = 0; e < E; ++e) {
                    const float v = allowed_s[e] ? expf(row[e] - m) : 0.0f;
                    row[e] = v;
                    s += v;
                }
                for (int e = 0; e < E; ++e) row[e] = row[e] / s;
            } else {
                for (int e = 0; e < E; ++e) row[e] = allowed_s[e] ? route_sigmoid(row[e]) : 0.0f;
            }
        }
        __syncthreads();
        for (int e = tid; e < E; e += blockDim.x) {
            float s = 0.0f;
            for (int r = 0; r < n; ++r) s += rows[r * stride + e];
            acc_load[e] += s;
        }
        __syncthreads();  // the column sums read every row before the picks mark them
        if (tid < n) {
            const long long t = t0 + tid;
            unsigned long long keep = ~0ull;
            if (G > 0) {
                for (int g = 0; g < G; ++g) {
                    float b1 = ninf, b2 = ninf;
                    int c = 0;
                    for (int e = g * size; e < (g + 1) * size; ++e) {
                        if (!allowed_s[e]) continue;
                        const float v = row[e] + bias_s[e];
                        ++c;
                        if (v > b1) {
                            b2 = b1;
                            b1 = v;
                        } else if (v > b2) {
                            b2 = v;
                        }
                    }
                    gsc[g] = c == 0 ? ninf : (c == 1 ? b1 : b1 + b2);
                }
                keep = 0;
                for (int g = 0; g < G; ++g) {
                    const float v = gsc[g];
                    int rank = 0;
                    for (int g2 = 0; g2 < G; ++g2) {
                        const float u = gsc[g2];
                        rank += (u > v || (u == v && g2 < g)) ? 1 : 0;
                    }
                    if (rank < topk_group) keep |= 1ull << g;
                }
            }
            // Scores of pickable experts stay; the rest are marked.
            for (int g = 0, e0 = 0; e0 < E; ++g, e0 += size)
                for (int e = e0; e < e0 + size; ++e)
                    if (!allowed_s[e] || !((keep >> g) & 1ull)) row[e] = nan;
            float wsum = 0.0f;
            for (int j = 0; j < k; ++j) {
                float bv = ninf;
                int bi = -1;
                for (int e = 0; e < E; ++e) {
                    const float v = row[e] + bias_s[e];
                    if (v > bv) {
                        bv = v;
                        bi = e;
                    }
                }
                // NOTE: validation guarantees k pickable experts; the guard only keeps a
                // corrupted state in bounds.
                const int pick = bi < 0 ? 0 : bi;
                const float w = bi < 0 ? 0.0f : row[pick];
                wsum += w;
                ids[t * k + j] = pick;
                weights[t * k + j] = w;
                if (bi >= 0) {
                    row[pick] = nan;
                    atomicAdd(&acc_cnt[pick], 1);
                }
            }
            for (int j = 0; j < k; ++j) {
                float w = weights[t * k + j];
                // NOTE: a sum of 0 only happens when every chosen score underflowed; keep the zeros.
                if (renorm && wsum > 0.0f) w = w / wsum;
                weights[t * k + j] = w * scaling;
            }
        }
        __syncthreads();  // the next tile overwrites the rows
    }
    route_acc_flush(acc_load, acc_cnt, load, counts, E);
}
MOEKIT_FLOAT_KERNELS(route_t,
                     (const T* logits, const float* bias, const i32* mask, i32* ids, float* weights, i32* counts,
                      float* load, int tokens, int experts, int k, int softmax, int groups, int topk_group,
                      int renorm, float scaling, int splits, i32* rec),
                     (logits, bias, mask, ids, weights, counts, load, tokens, experts, k, softmax, groups,
                      topk_group, renorm, scaling, splits, rec))

// ---- aux-loss-free bias update: one block ------------------------------------------------------
// bias[e] += speed * sign(Σ_allowed counts − n_allowed · counts[e]) for allowed e: the exact
// integer form of sign(mean − counts[e]) the reference uses.
__device__ __forceinline__ long long route_block_sum_i64(long long v, long long* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(ROUTE_FULL, v, o);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : 0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(ROUTE_FULL, v, o);
    return v;
}

extern "C" __global__ void route_update_bias(float* bias, const i32* counts, const i32* mask, int experts,
                                             float speed) {
    __shared__ long long scratch[32];
    long long sum = 0, n = 0;
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        if (mask && !mask[e]) continue;
        sum += counts[e];
        n += 1;
    }
    sum = route_block_sum_i64(sum, scratch);
    n = route_block_sum_i64(n, scratch);
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        if (mask && !mask[e]) continue;
        long long d = sum - n * (long long)counts[e];
        float sign = d > 0 ? 1.0f : (d < 0 ? -1.0f : 0.0f);
        bias[e] = bias[e] + speed * sign;
    }
}
