// Dispatch (permute) and the weighted combine back (unpermute_combine). Launchers:
// src/ops/permute.rs.
//
// permute, deterministic and stable without a host sync, over the N = T·k slots in token-major
// order cut into chunks of PERMUTE_CHUNK consecutive slots:
//   1. permute_init: row_to_token[0..R) = -1; cc[e][c] = slots of chunk c that chose e.
//   2. permute_scan_chunks (one block per expert): cc[e][c] becomes the exclusive prefix over
//      chunks; offsets[e+1] = the aligned segment size roundup(count_e, align).
//   3. permute_scan_offsets (one block): offsets = the inclusive scan, offsets[0] = 0.
//   4. permute_scatter (one block per chunk): each slot's row = offsets[e] + cc[e][c] + its
//      rank among the earlier slots of the chunk with the same expert; writes
//      token_slot_to_row and row_to_token.
//   5. permute_copy_* (one block per row): copies hidden[row_to_token[r]] or writes zeros.
// The fast path replaces 1-3 with permute_hist and permute_scan, 4 with permute_scatter_smem and,
// with align = 1, 5 with the token-major copy (permute_copy_tok*_*). With align = 1 the permute op
// by default runs permute_copy_rank_* instead of 4 and 5: one block per token ranks its k slots
// within their chunks (the rows of step 4) and copies its row to them, so the op is three kernels.

#define PERMUTE_CHUNK 256
#define PERMUTE_FULL 0xffffffffu

extern "C" __global__ void permute_init(const i32* ids, i32* cc, i32* row_to_token, int slots, int rows,
                                        int experts, int chunks) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < rows) row_to_token[i] = -1;
    if (i < slots) {
        int e = ids[i];
        if (e >= 0 && e < experts) atomicAdd(&cc[(long long)e * chunks + i / PERMUTE_CHUNK], 1);
    }
}

// Inclusive scan over the block (blockDim.x a multiple of 32); `total` gets the block's sum.
// `warp_tot` holds 32 ints of shared memory. Every thread of the block must call it.
__device__ __forceinline__ int permute_block_scan(int v, int* warp_tot, int* total) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        int n = __shfl_up_sync(PERMUTE_FULL, v, o);
        if (lane >= o) v += n;
    }
    if (lane == 31) warp_tot[warp] = v;
    __syncthreads();
    if (warp == 0) {
        int w = lane < nw ? warp_tot[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            int n = __shfl_up_sync(PERMUTE_FULL, w, o);
            if (lane >= o) w += n;
        }
        warp_tot[lane] = w;
    }
    __syncthreads();
    if (warp > 0) v += warp_tot[warp - 1];
    *total = warp_tot[nw - 1];
    __syncthreads();
    return v;
}

extern "C" __global__ void permute_scan_chunks(i32* cc, i32* offsets, int chunks, int align) {
    __shared__ int warp_tot[32];
    const int e = blockIdx.x;
    i32* row = cc + (long long)e * chunks;
    long long carry = 0;
    for (int base = 0; base < chunks; base += blockDim.x) {
        int c = base + threadIdx.x;
        int v = c < chunks ? row[c] : 0;
        int total;
        int incl = permute_block_scan(v, warp_tot, &total);
        if (c < chunks) row[c] = (int)(carry + incl - v);
        carry += total;
    }
    if (threadIdx.x == 0) offsets[e + 1] = (int)((carry + align - 1) / align * align);
}

extern "C" __global__ void permute_scan_offsets(i32* offsets, int experts) {
    __shared__ int warp_tot[32];
    long long carry = 0;
    for (int base = 0; base < experts; base += blockDim.x) {
        int e = base + threadIdx.x;
        int v = e < experts ? offsets[e + 1] : 0;
        int total;
        int incl = permute_block_scan(v, warp_tot, &total);
        if (e < experts) offsets[e + 1] = (int)(carry + incl);
        carry += total;
    }
    if (threadIdx.x == 0) offsets[0] = 0;
}

// One block of PERMUTE_CHUNK threads per chunk, one slot per thread. The warps of the block take
// turns (in slot order) so that ranks follow slot order: a warp reads the running base of each
// of its experts, ranks its slots with __match_any_sync, and the last slot of each expert
// advances the base. The bases are this chunk's own entries of cc, so no other block races.
extern "C" __global__ void permute_scatter(const i32* ids, i32* cc, const i32* offsets,
                                           i32* token_slot_to_row, i32* row_to_token, int slots, int experts,
                                           int k, int chunks, i32* rec) {
    const int c = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const long long s = (long long)c * PERMUTE_CHUNK + threadIdx.x;
    const bool valid = s < slots;
    const int e = valid ? ids[s] : -1;
    const bool ok = valid && e >= 0 && e < experts;
    if (valid && !ok) {
        report_bad(rec, MOEKIT_BAD_PERMUTE_IDS, (int)s, e, experts);
        token_slot_to_row[s] = -1;
    }
    const unsigned peers = __match_any_sync(PERMUTE_FULL, ok ? e : -1);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    const int last = 31 - __clz(peers);
    const long long idx = ok ? (long long)e * chunks + c : 0;
    for (int w = 0; w < nw; ++w) {
        if (warp == w) {
            int base = ok ? cc[idx] : 0;
            __syncwarp();
            if (ok) {
                int r = offsets[e] + base + rank;
                token_slot_to_row[s] = r;
                row_to_token[r] = (int)(s / k);
                if (lane == last) cc[idx] = base + __popc(peers);
            }
        }
        __syncthreads();
    }
}

// The fast path's scatter: as permute_scatter, but the running bases of the chunk live in shared
// memory (dynamic, E i32), so a warp's turn costs a shared-memory round trip instead of a global
// one, and cc (the chunk prefixes from permute_scan) is only read; offsets[e] and cc[e][c] are
// read before the turns so their latency overlaps them. Same rows as permute_scatter.
// One chunk c of the stable scatter, PERMUTE_CHUNK threads with a slot each: the rows of the
// chunk's valid slots from offsets (global, or the cooperative kernel's shared copy) and the chunk
// prefixes cc, with `base` (E i32 of shared memory) holding the warps' running per-expert bases.
// Used by permute_scatter_smem and by phase 4 of permute_index_coop.
__device__ __forceinline__ void permute_scatter_chunk(const i32* ids, const i32* cc, const i32* offsets,
                                                      i32* token_slot_to_row, i32* row_to_token, int slots,
                                                      int experts, int k, int chunks, int c, int* base, i32* rec) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const long long s = (long long)c * PERMUTE_CHUNK + threadIdx.x;
    const bool valid = s < slots;
    const int e = valid ? ids[s] : -1;
    const bool ok = valid && e >= 0 && e < experts;
    const int start = ok ? offsets[e] + cc[(long long)e * chunks + c] : 0;
    if (valid && !ok) {
        report_bad(rec, MOEKIT_BAD_PERMUTE_IDS, (int)s, e, experts);
        token_slot_to_row[s] = -1;
    }
    for (int i = threadIdx.x; i < experts; i += blockDim.x) base[i] = 0;
    const unsigned peers = __match_any_sync(PERMUTE_FULL, ok ? e : -1);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    const int last = 31 - __clz(peers);
    __syncthreads();
    int before = 0;
    for (int w = 0; w < nw; ++w) {
        if (warp == w) {
            if (ok) before = base[e];
            // NOTE: every lane of the group reads the base before its last lane advances it.
            __syncwarp();
            if (ok && lane == last) base[e] = before + __popc(peers);
        }
        __syncthreads();
    }
    if (ok) {
        const int r = start + before + rank;
        token_slot_to_row[s] = r;
        row_to_token[r] = (int)(s / k);
    }
}

extern "C" __global__ void permute_scatter_smem(const i32* ids, const i32* cc, const i32* offsets,
                                                i32* token_slot_to_row, i32* row_to_token, int slots, int experts,
                                                int k, int chunks, i32* rec) {
    extern __shared__ int permute_base[];
    permute_scatter_chunk(ids, cc, offsets, token_slot_to_row, row_to_token, slots, experts, k, chunks, blockIdx.x,
                          permute_base, rec);
}

// ---- the whole index in one cooperative launch (opt-in: MOEKIT_CUDA_PERMUTE=coop) ---------------
// permute_index_coop runs hist, scan and scatter as three phases of one kernel launched with
// cuLaunchCooperativeKernel (every block resident), separated by two grid barriers, instead of
// three launches. Blocks stride over chunks (hist, scatter) and experts (scan). cc is [E, chunks]
// followed by E segment sizes; bar is two u32 (arrivals, generation) that persist across calls
// and return to zero arrivals after each barrier. Dynamic shared memory: 2E + 1 i32.
__device__ __forceinline__ void permute_grid_sync(unsigned* bar) {
    __syncthreads();
    if (threadIdx.x == 0) {
        volatile unsigned* gen = bar + 1;
        const unsigned g = *gen;
        // NOTE: the fence publishes this block's writes before its arrival; the last block to
        // arrive resets the count and then moves the generation that the others wait on.
        __threadfence();
        if (atomicAdd(bar, 1u) == gridDim.x - 1) {
            atomicExch(bar, 0u);
            __threadfence();
            atomicAdd(bar + 1, 1u);
        } else {
            while (*gen == g) __nanosleep(64);
        }
        __threadfence();
    }
    __syncthreads();
}

extern "C" __global__ void permute_index_coop(const i32* ids, i32* cc, i32* offsets, i32* token_slot_to_row,
                                              i32* row_to_token, int slots, int rows, int experts, int k,
                                              int chunks, int align, unsigned* bar, i32* rec) {
    extern __shared__ int permute_coop_smem[];
    __shared__ int warp_tot[32];
    int* hist = permute_coop_smem;             // [E]: phase 1 counts, phase 3 running bases
    int* off = permute_coop_smem + experts;    // [E + 1]: the offsets, in every block
    i32* sizes = cc + (long long)experts * chunks;

    // Phase 1: row_to_token = -1; each chunk's column of counts.
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < rows;
         i += (long long)gridDim.x * blockDim.x)
        row_to_token[i] = -1;
    for (int c = blockIdx.x; c < chunks; c += gridDim.x) {
        for (int e = threadIdx.x; e < experts; e += blockDim.x) hist[e] = 0;
        __syncthreads();
        for (int j = threadIdx.x; j < PERMUTE_CHUNK; j += blockDim.x) {
            const long long s = (long long)c * PERMUTE_CHUNK + j;
            if (s < slots) {
                const int e = ids[s];
                if (e >= 0 && e < experts) atomicAdd(&hist[e], 1);
            }
        }
        __syncthreads();
        for (int e = threadIdx.x; e < experts; e += blockDim.x) cc[(long long)e * chunks + c] = hist[e];
        __syncthreads();
    }
    permute_grid_sync(bar);

    // Phase 2: each expert's row becomes its exclusive prefix over chunks; sizes[e] the aligned
    // segment size.
    for (int e = blockIdx.x; e < experts; e += gridDim.x) {
        i32* row = cc + (long long)e * chunks;
        long long carry = 0;
        for (int base = 0; base < chunks; base += blockDim.x) {
            const int c = base + threadIdx.x;
            const int v = c < chunks ? row[c] : 0;
            int total;
            const int incl = permute_block_scan(v, warp_tot, &total);
            if (c < chunks) row[c] = (int)(carry + incl - v);
            carry += total;
        }
        if (threadIdx.x == 0) sizes[e] = (int)((carry + align - 1) / align * align);
    }
    permute_grid_sync(bar);

    // Phase 3: every block scans the sizes into its own offsets; block 0 also writes them out.
    {
        long long run = 0;
        for (int b = 0; b < experts; b += blockDim.x) {
            const int i = b + threadIdx.x;
            const int v = i < experts ? sizes[i] : 0;
            int total;
            const int incl = permute_block_scan(v, warp_tot, &total);
            if (i < experts) off[i + 1] = (int)(run + incl);
            run += total;
        }
        if (threadIdx.x == 0) off[0] = 0;
        __syncthreads();
        if (blockIdx.x == 0)
            for (int i = threadIdx.x; i <= experts; i += blockDim.x) offsets[i] = off[i];
    }

    // Phase 4: the scatter of permute_scatter_smem, chunk by chunk (PERMUTE_CHUNK threads).
    for (int c = blockIdx.x; c < chunks; c += gridDim.x) {
        permute_scatter_chunk(ids, cc, off, token_slot_to_row, row_to_token, slots, experts, k, chunks, c, hist, rec);
        __syncthreads();
    }
}

// One block per row r of [R, words]: hidden[row_to_token[r]] or zeros, as words of type W.
template <typename W>
__device__ void permute_copy_impl(const W* hidden, const i32* row_to_token, W* out, int words) {
    long long r = blockIdx.x;
    int t = row_to_token[r];
    W* dst = out + r * words;
    if (t >= 0) {
        const W* src = hidden + (long long)t * words;
        for (int i = threadIdx.x; i < words; i += blockDim.x) dst[i] = src[i];
    } else {
        const W zero = W();
        for (int i = threadIdx.x; i < words; i += blockDim.x) dst[i] = zero;
    }
}

struct alignas(16) permute_w16 { u32 a, b, c, d; };
struct alignas(8) permute_w8 { u32 a, b; };

extern "C" __global__ void permute_copy_w16(const permute_w16* hidden, const i32* rtt, permute_w16* out, int words) {
    permute_copy_impl<permute_w16>(hidden, rtt, out, words);
}
extern "C" __global__ void permute_copy_w8(const permute_w8* hidden, const i32* rtt, permute_w8* out, int words) {
    permute_copy_impl<permute_w8>(hidden, rtt, out, words);
}
extern "C" __global__ void permute_copy_w4(const u32* hidden, const i32* rtt, u32* out, int words) {
    permute_copy_impl<u32>(hidden, rtt, out, words);
}
extern "C" __global__ void permute_copy_w2(const u16* hidden, const i32* rtt, u16* out, int words) {
    permute_copy_impl<u16>(hidden, rtt, out, words);
}

// ---- fast index path: histogram (+ row_to_token fill), one fused scan, scatter above ----------
// cc is [E, chunks] i32 followed by one i32 counter (the fused scan's arrival count).
//   permute_hist (one block of PERMUTE_CHUNK threads per chunk, dynamic shared E i32): counts
//     the chunk's slots per expert in shared memory and writes its whole column cc[.][c] (so cc
//     needs no zeroing); the blocks also fill row_to_token[0..R) = -1 grid-stride, and block 0
//     zeroes the counter.
//   permute_scan (one block per expert): as permute_scan_chunks, then the last block to arrive
//     (counter) scans offsets[1..=E] in place, as permute_scan_offsets.
extern "C" __global__ void permute_hist(const i32* ids, i32* cc, i32* row_to_token, int slots, int rows,
                                        int experts, int chunks) {
    extern __shared__ int permute_hist_smem[];
    const int c = blockIdx.x;
    for (int e = threadIdx.x; e < experts; e += blockDim.x) permute_hist_smem[e] = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < rows;
         i += (long long)gridDim.x * blockDim.x)
        row_to_token[i] = -1;
    if (c == 0 && threadIdx.x == 0) cc[(long long)experts * chunks] = 0;
    __syncthreads();
    const long long s = (long long)c * PERMUTE_CHUNK + threadIdx.x;
    if (c < chunks && threadIdx.x < PERMUTE_CHUNK && s < slots) {
        int e = ids[s];
        if (e >= 0 && e < experts) atomicAdd(&permute_hist_smem[e], 1);
    }
    __syncthreads();
    if (c < chunks)
        for (int e = threadIdx.x; e < experts; e += blockDim.x) cc[(long long)e * chunks + c] = permute_hist_smem[e];
}

extern "C" __global__ void permute_scan(i32* cc, i32* offsets, int chunks, int experts, int align) {
    __shared__ int warp_tot[32];
    __shared__ int is_last;
    const int e = blockIdx.x;
    i32* row = cc + (long long)e * chunks;
    long long carry = 0;
    for (int base = 0; base < chunks; base += blockDim.x) {
        int c = base + threadIdx.x;
        int v = c < chunks ? row[c] : 0;
        int total;
        int incl = permute_block_scan(v, warp_tot, &total);
        if (c < chunks) row[c] = (int)(carry + incl - v);
        carry += total;
    }
    if (threadIdx.x == 0) {
        offsets[e + 1] = (int)((carry + align - 1) / align * align);
        // NOTE: the fence orders this block's offsets write before its arrival; the last block
        // to arrive then sees every segment size.
        __threadfence();
        is_last = atomicAdd(&cc[(long long)experts * chunks], 1) == experts - 1;
    }
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    volatile i32* off = offsets;
    long long run = 0;
    for (int b = 0; b < experts; b += blockDim.x) {
        int i = b + threadIdx.x;
        int v = i < experts ? off[i + 1] : 0;
        int total;
        int incl = permute_block_scan(v, warp_tot, &total);
        if (i < experts) off[i + 1] = (int)(run + incl);
        run += total;
    }
    if (threadIdx.x == 0) off[0] = 0;
}

// ---- token-major row copy (align = 1): one block per token ---------------------------------------
// Reads hidden[t] once and writes it to each of its k rows token_slot_to_row[t, .] (rows outside
// 0..R, i.e. bad slots already recorded by the scatter, are skipped). With align = 1 and valid ids
// every row of R = T·k is some slot's, so no row needs zeros.
// `permute_copy_tok_*` stores plainly, `permute_copy_tokcs_*` (the default since run 20,
// MOEKIT_CUDA_PERMUTE_COPY in src/ops/permute.rs) with streaming stores (st.global.cs:
// evict-first; the written rows are not read back soon). Same output.
template <typename W>
__device__ __forceinline__ void permute_store(W* p, const W& v, bool cs) {
    if (!cs) {
        *p = v;
    } else if constexpr (sizeof(W) == 16) {
        __stcs((int4*)p, *(const int4*)&v);
    } else if constexpr (sizeof(W) == 8) {
        __stcs((int2*)p, *(const int2*)&v);
    } else if constexpr (sizeof(W) == 4) {
        __stcs((unsigned int*)p, *(const unsigned int*)&v);
    } else {
        __stcs((unsigned short*)p, *(const unsigned short*)&v);
    }
}

// Token t's row copied to its k rows `slot_rows[0..k)` (global or shared), skipping rows outside
// 0..R.
template <typename W, bool CS>
__device__ __forceinline__ void permute_copy_tok_rows(const W* hidden, const i32* slot_rows, W* out, int words,
                                                      int k, int rows) {
    const long long t = blockIdx.x;
    const W* src = hidden + t * words;
    for (int i = threadIdx.x; i < words; i += blockDim.x) {
        const W v = src[i];
        for (int j = 0; j < k; ++j) {
            int r = slot_rows[j];
            if (r >= 0 && r < rows) permute_store(out + (long long)r * words + i, v, CS);
        }
    }
}

template <typename W, bool CS>
__device__ void permute_copy_tok_impl(const W* hidden, const i32* tsr, W* out, int words, int k, int rows) {
    permute_copy_tok_rows<W, CS>(hidden, tsr + (long long)blockIdx.x * k, out, words, k, rows);
}

#define PERMUTE_COPY_TOK(NAME, CS)                                                                              \
    extern "C" __global__ void NAME##_w16(const permute_w16* hidden, const i32* tsr, permute_w16* out,            \
                                          int words, int k, int rows) {                                          \
        permute_copy_tok_impl<permute_w16, CS>(hidden, tsr, out, words, k, rows);                                \
    }                                                                                                            \
    extern "C" __global__ void NAME##_w8(const permute_w8* hidden, const i32* tsr, permute_w8* out, int words,    \
                                         int k, int rows) {                                                      \
        permute_copy_tok_impl<permute_w8, CS>(hidden, tsr, out, words, k, rows);                                 \
    }                                                                                                            \
    extern "C" __global__ void NAME##_w4(const u32* hidden, const i32* tsr, u32* out, int words, int k, int rows) { \
        permute_copy_tok_impl<u32, CS>(hidden, tsr, out, words, k, rows);                                        \
    }                                                                                                            \
    extern "C" __global__ void NAME##_w2(const u16* hidden, const i32* tsr, u16* out, int words, int k, int rows) { \
        permute_copy_tok_impl<u16, CS>(hidden, tsr, out, words, k, rows);                                        \
    }
PERMUTE_COPY_TOK(permute_copy_tok, false)
PERMUTE_COPY_TOK(permute_copy_tokcs, true)

// ---- scatter fused into the token-major copy (align = 1): one block per token -------------------
// After permute_hist and permute_scan, block t finds the rows of its k slots s = t·k + j as
// permute_scatter_chunk does: offsets[e] + cc[e][c] + the rank of s among the earlier slots of
// its chunk c = s / PERMUTE_CHUNK with the same expert e (so a token whose slots straddle two
// chunks ranks each slot in its own). Warp w takes j = w, w + nwarps, ... and counts the equal
// ids below s with coalesced loads and __ballot_sync (at most PERMUTE_CHUNK - 1 ids, which the
// chunk's other blocks read too). A bad id equals no valid e, so it is never counted; its slot
// gets row -1 and is recorded. The block writes token_slot_to_row and row_to_token, keeps the k
// rows in dynamic shared memory (k i32, rounded up to 16 bytes: the compiler reads the rows four
// at a time) and copies hidden[t] to them as permute_copy_tokcs_*.
// blockDim.x is a multiple of 32.
template <typename W>
__device__ void permute_copy_rank_impl(const W* hidden, const i32* ids, const i32* cc, const i32* offsets,
                                       i32* tsr, i32* row_to_token, W* out, int words, int k, int experts,
                                       int chunks, int rows, i32* rec) {
    extern __shared__ int permute_rank_rows[];
    const long long t = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    // The row's first word per thread is loaded before the ranks, so its latency overlaps them.
    const W* src = hidden + t * words;
    const int i0 = threadIdx.x;
    W v0{};
    if (i0 < words) v0 = src[i0];
    for (int j = warp; j < k; j += nw) {
        const long long s = t * k + j;
        const int e = ids[s];
        int r = -1;
        if (e >= 0 && e < experts) {
            const long long c = s / PERMUTE_CHUNK;
            const int start = offsets[e] + cc[(long long)e * chunks + c];
            // NOTE: all the chunk's ids below s are loaded before the first ballot, so the loads
            // overlap; -1 (past s) equals no valid e.
            int v[PERMUTE_CHUNK / 32];
#pragma unroll
            for (int q = 0; q < PERMUTE_CHUNK / 32; ++q) {
                const long long i = c * PERMUTE_CHUNK + q * 32 + lane;
                v[q] = i < s ? ids[i] : -1;
            }
            int rank = 0;
#pragma unroll
            for (int q = 0; q < PERMUTE_CHUNK / 32; ++q) rank += __popc(__ballot_sync(PERMUTE_FULL, v[q] == e));
            r = start + rank;
            if (lane == 0) {
                tsr[s] = r;
                row_to_token[r] = (int)t;
            }
        } else if (lane == 0) {
            report_bad(rec, MOEKIT_BAD_PERMUTE_IDS, (int)s, e, experts);
            tsr[s] = -1;
        }
        if (lane == 0) permute_rank_rows[j] = r;
    }
    __syncthreads();
    for (int i = i0; i < words; i += blockDim.x) {
        const W v = i == i0 ? v0 : src[i];
        for (int j = 0; j < k; ++j) {
            const int r = permute_rank_rows[j];
            if (r >= 0 && r < rows) permute_store(out + (long long)r * words + i, v, true);
        }
    }
}

#define PERMUTE_COPY_RANK(SUFFIX, W)                                                                            \
    extern "C" __global__ void permute_copy_rank_##SUFFIX(const W* hidden, const i32* ids, const i32* cc,         \
                                                         const i32* offsets, i32* tsr, i32* row_to_token, W* out, \
                                                         int words, int k, int experts, int chunks, int rows,     \
                                                         i32* rec) {                                              \
        permute_copy_rank_impl<W>(hidden, ids, cc, offsets, tsr, row_to_token, out, words, k, experts, chunks,    \
                                  rows, rec);                                                                     \
    }
PERMUTE_COPY_RANK(w16, permute_w16)
PERMUTE_COPY_RANK(w8, permute_w8)
PERMUTE_COPY_RANK(w4, u32)
PERMUTE_COPY_RANK(w2, u16)

// ---- unpermute_combine: one block per token (and slice of H) ------------------------------------
// out[t] = add[t] + Σ_j weights[t, j] · y[token_slot_to_row[t, j]], f32 accumulation in slot
// order, rounded once. Each thread handles V consecutive elements (V = 16 bytes of T when H
// allows; else 1). A row outside 0..R is recorded and its term skipped.
// combine_<dtype>: one block per token (prefill). combine_sliced_<dtype>: block (t, y) takes slice
// y of gridDim.y equal slices of the row's packs, so a decode step's few tokens spread over the
// GPU (one deepseek-v3 token took 16 µs in one block); slice 0 records bad rows. Two kernels,
// not one: the slice arithmetic raised the one-block kernel from 32 to 40 registers (6 blocks
// per SM instead of 8) and the prefill combine 8-12% slower (run 20).
template <typename T, int V>
struct alignas(sizeof(T) * V) combine_pack {
    T v[V];
};

template <typename T, int V, bool SLICED>
__device__ void combine_body(const T* y, const float* w, const i32* tsr, const T* add, T* out, int k, int rows,
                             int h) {
    typedef combine_pack<T, V> P;
    const long long t = blockIdx.x;
    const int packs = h / V;
    int first = 0, count = packs;
    if (SLICED) {
        const int per = (packs + gridDim.y - 1) / gridDim.y;
        first = blockIdx.y * per;
        count = min(packs - first, per);
    }
    const int end = first + count;
    for (int i = first + threadIdx.x; i < end; i += blockDim.x) {
        float acc[V];
        if (add) {
            P a = ((const P*)(add + t * h))[i];
#pragma unroll
            for (int q = 0; q < V; ++q) acc[q] = to_f32(a.v[q]);
        } else {
#pragma unroll
            for (int q = 0; q < V; ++q) acc[q] = 0.0f;
        }
        for (int j = 0; j < k; ++j) {
            int r = tsr[t * k + j];
            if (r < 0 || r >= rows) continue;
            float wj = w[t * k + j];
            P yv = ((const P*)(y + (long long)r * h))[i];
#pragma unroll
            for (int q = 0; q < V; ++q) acc[q] = fmaf(wj, to_f32(yv.v[q]), acc[q]);
        }
        P o;
#pragma unroll
        for (int q = 0; q < V; ++q) o.v[q] = from_f32<T>(acc[q]);
        ((P*)(out + t * h))[i] = o;
    }
}

template <typename T, bool SLICED>
__device__ void combine_run(const T* y, const float* w, const i32* tsr, const T* add, T* out, int tokens, int k,
                             int rows, int h, int vec, i32* rec) {
    if ((long long)blockIdx.x >= tokens) return;
    const long long t = blockIdx.x;
    if (!SLICED || blockIdx.y == 0) {
        for (int j = threadIdx.x; j < k; j += blockDim.x) {
            int r = tsr[t * k + j];
            if (r < 0 || r >= rows) report_bad(rec, MOEKIT_BAD_COMBINE_ROWS, (int)(t * k + j), r, rows);
        }
    }
    if (vec) {
        combine_body<T, 16 / sizeof(T), SLICED>(y, w, tsr, add, out, k, rows, h);
    } else {
        combine_body<T, 1, SLICED>(y, w, tsr, add, out, k, rows, h);
    }
}
template <typename T>
__device__ void combine_impl(const T* y, const float* w, const i32* tsr, const T* add, T* out, int tokens, int k,
                             int rows, int h, int vec, i32* rec) {
    combine_run<T, false>(y, w, tsr, add, out, tokens, k, rows, h, vec, rec);
}
template <typename T>
__device__ void combine_sliced_impl(const T* y, const float* w, const i32* tsr, const T* add, T* out, int tokens,
                                    int k, int rows, int h, int vec, i32* rec) {
    combine_run<T, true>(y, w, tsr, add, out, tokens, k, rows, h, vec, rec);
}
MOEKIT_FLOAT_KERNELS(combine,
                     (const T* y, const float* w, const i32* tsr, const T* add, T* out, int tokens, int k, int rows,
                      int h, int vec, i32* rec),
                     (y, w, tsr, add, out, tokens, k, rows, h, vec, rec))
MOEKIT_FLOAT_KERNELS(combine_sliced,
                     (const T* y, const float* w, const i32* tsr, const T* add, T* out, int tokens, int k, int rows,
                      int h, int vec, i32* rec),
                     (y, w, tsr, add, out, tokens, k, rows, h, vec, rec))
