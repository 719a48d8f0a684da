#line 1 "attention_sm90_ws.cu"
// Attention forward on Hopper, warp-specialised: `attention_sm90ws_d{64,128,256}_{f16,bf16}` (the
// default on sm_90a; MOEKIT_CUDA_ATTN=sm90 picks attention_sm90.cu's kernel for D <= 128), and
// `attention_sm90ws3_d64_*` (three consumers; see the instantiations) with its banded form
// `attention_sm90ws3s_d64_*` (causal or windowed problems: SKIP and SPLIT in `aws_impl`); and
// their forms for FlashMask plans with causal blocks (CB: `attention_sm90wsc_d{128,256}_*`,
// `attention_sm90ws3sc_d64_*`, with AWS_CAUSAL_BLOCKS defined, in a module of their own).
// Its own module (src/runtime/sources.rs: after attention.cu and attention_sm90.cu with
// ATT_HELPERS_ONLY, which leaves their kernels out; the first call compiles 10 kernels, not 33):
// same work items, arguments and masking helpers, and the wgmma wrappers, descriptors, shared
// tile layout (64-column parts of the 128-byte swizzle, a tile's rows · 128 bytes apart) and
// accumulator fragments of attention_sm90.cu (read its header). What differs is who loads and
// when each warpgroup works, and the key tile: BN = 128 keys, 64 at D 256 (aws::BN_OF: O's 128
// accumulator registers per thread leave no room for a 128-key S and P, nor shared memory for
// 2 stages of 128-key tiles), with the wgmma shapes that needs (S m64n64k16, O m64n256k16).
//
// CTA: 384 threads = 3 warpgroups, one CTA per SM, persistent: it runs units (the 128 query rows
// of one item and query head) one after another, taken by ticket as it finishes the last
// (aws_next_unit), until none is left. One CTA per unit cost about 3 us a unit in loads, start-up
// and a drained pipeline (run 29 call B: causal D 64 429 -> 399 us, D 128 1.04 ms -> 970 us; by
// ticket rather than in fixed rounds: the image mask at D 64 520 -> 502 us, docs-varlen 213 ->
// 193 us; dense causal tiles favour fixed rounds by 1%: 395 and 956 us).
// - Warpgroup 0, the producer (setmaxnreg.dec to Regs::PRODUCER): thread 0 takes the units,
//   hands each one's index to the consumers through a slot, and loads its Q (two buffers, so
//   that the next unit's Q comes in while the consumers finish the last one) and then every key
//   tile's K and V through TMA (4-D tensor maps over [T, H, D] as (D, H, T, 1), box
//   (64, 1, BN, 1): BN token rows of 64 columns, 128-byte swizzled = one part of the tile), into
//   STAGES stages of K and of V (their rounds run on across units), each with a FULL barrier
//   (one expect_tx arrival + the bytes) and an EMPTY barrier (one arrival per consumer warp); a
//   Q buffer and its slot come back (Q_EMPTY) when the consumers have stored the unit through
//   it. The other producer threads are done.
// - Warpgroups 1 and 2, the consumers (setmaxnreg.inc to Regs::CONSUMER): consumer c owns rows
//   64c..64c+64, exactly as a warpgroup of attention_sm90.cu, with its intra-warpgroup overlap
//   (S_j = Q·K_j issued, then P_{j-1}·V_{j-1}; the softmax of S_j runs while the second is in
//   flight). A unit ends with its last P·V and its store; issuing that P·V behind the next
//   unit's first S instead (the store in place of that tile's O rescale) measured slower at D 64
//   (session 19, whose raw figures were lost: 415 against 404 us, the image mask -15%) and
//   spilled at D 128.
// - Ping-pong between the consumers (FlashAttention-3's inter-warpgroup schedule): a consumer
//   issues a tile's two wgmma groups only in its turn (named barrier SCHED + c, 256 threads: its
//   own 128 sync, the other's 128 arrive when they have issued theirs), so one consumer's
//   softmax runs while the other's matrix products keep the tensor cores busy. Consumer 1
//   arrives once at the start (consumer 0 goes first); each then arrives once per tile (both run
//   the same tiles of the same units), and consumer 0 syncs once more at the end to take the last
//   turn, so every phase completes.
// - Rescaling only when a row's maximum moves past RESCALE_LOG2 (log2 domain): below it the old
//   maximum stays the shift, P <= 2^RESCALE_LOG2 in f32 and in the 16-bit P (no overflow, the
//   same relative rounding), and O and l need no rescale; the final 1/l and the LSE use the same
//   shift, so the result is the same softmax.
//
// Keys past the sequence (a tile's rows lk - n..BN) come from the next sequence (or zeros past
// the tensor): their scores are masked to -inf, so p = 0, but 0 · (a non-finite v) is NaN, so each
// consumer zeroes those V rows in shared memory before its P·V reads them (both consumers write
// the same zeros; each fences its writes to the async proxy and syncs its warpgroup first).
// Query rows past the sequence are computed and never stored.
//
// FlashMask column ranges (`fm`, null without them; the host's plan, src/ops/flashmask.rs), three
// int4 arrays: `[items]` per work item (the index of its first key tile's stats, or -1 where the
// ranges skip none of its tiles and mask none of its rows in any: then they are not read, or -2
// where they hide exactly what causal hides, read by the CB kernels only: the item runs as a
// clear one with the causal flag; that tile's first key n0, the end n1 past its last tile, the end m1 of its rows), `[Tk]` (lts, lte,
// uts, ute) per packed key column, then `[tiles][2]` the minima and maxima of the four over each key tile's
// columns. An item's key tiles start at n0, in steps of BN (not 128-aligned: a document's tiles
// start at its first key); tile n has stats first + (n - n0) / BN. Its rows are m0..m1 (m1 - m0 <=
// BM: the host ends a block where a document ends); the CTA's other rows are computed and not
// stored. Every role runs only the key tiles in n0..n1 that the ranges do not mask for all of the
// item's rows (aws_fm_all: the producer loads none of those and the consumers' tile count leaves
// them out), and a consumer applies the ranges element by element only on the tiles where they
// may mask one of its rows (aws_fm_none), from a
// copy of the tile's BN column ranges in its shared memory (each thread loads one with the tile's
// other loads in flight; a loop of 32 loads per thread from global memory, each waited for,
// measured 15-18% over causal, run 27 call B).

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

namespace aws {
// K and V stages each (their FULL / EMPTY barriers: 32 bytes a stage, after Q's 32, in
// BAR_BYTES). WS_D64_STAGES: a build switch for measurements (D 64 only; 4 needs 256 bytes of
// barriers: the host reads the switch from MOEKIT_CUDA_DEFINES for its layout).
#ifndef WS_D64_STAGES
#define WS_D64_STAGES 2
#endif
template <int D> constexpr int STAGES_OF = D == 64 ? WS_D64_STAGES : 2;
// Keys per K/V tile: 128, but 64 at D 256 (FlashAttention-3 takes 80 there). Registers per
// consumer thread: O D/2 + S BN/2 + P BN/4 f32, 176 at D 256 (224 with 128 keys, past the 240
// budget with the addresses); shared memory: a 128-row Q tile + 2 stages of K and V of BN rows,
// 192 KiB at D 256 (256 with 128 keys). Each tile's matrix work at D 256 × 64 keys equals that
// of D 128 × 128 keys; its softmax is half as large.
// WS_D64_BN: a build switch for measurements, the key tile at D 64 (128, or 192: S 96, P 48 and O
// 32 registers a consumer thread; the host reads it from MOEKIT_CUDA_DEFINES too). 192 keys
// halve no bottleneck: run 32 call D (interleaved, 2 rounds, the bench's reference check passing) causal
// S4096 399.5 -> 434.5 us, non-causal S8192 1.31 -> 1.32 ms, the image mask 500.5 -> 515.8 us,
// docs-varlen 191.2 -> 237.6 us (the wider diagonal and document-edge tiles, and 28 bytes more of
// spills, with nothing gained where no tile is masked).
#ifndef WS_D64_BN
#define WS_D64_BN 128
#endif
template <int D> constexpr int BN_OF = D > 128 ? 64 : D == 64 ? WS_D64_BN : 128;
// Q buffers: 2 at D <= 128, so that the producer loads a unit's Q while the consumers still run
// the one before (a persistent grid); 1 at D 256 (two 64 KiB Q tiles leave no room for the K/V
// stages), where the next Q waits for the last unit's store.
template <int D> constexpr int QBUF_OF = D > 128 ? 1 : 2;
// NC consumer warpgroups (2; see the instantiations for 3): BM = 64·NC query rows, 128·(1 + NC)
// threads.
template <int NC> struct Cfg {
    static constexpr int BM = 64 * NC, THREADS = 128 * (1 + NC);
    static constexpr int EMPTY_COUNT = 4 * NC;  // one arrival per consumer warp
    static constexpr int QHALF = BM * 128;      // bytes of one 64-column half of the Q tile
};
// Registers per thread after setmaxnreg: 128 · 24 + 256 · 240 = 64512 (NC 2), 128 · 24 + 384 · 160
// = 64512 (NC 3), <= 65536. The producer's unit loop spills ~40 words to L1 at 24 (it waits on
// the consumers' barriers anyway); 40 / 232 spilled none but left the consumers less.
template <int D, int NC> struct Regs {
    static constexpr int PRODUCER = 24;
    static constexpr int CONSUMER = NC == 3 ? 160 : 240;
    static_assert(128 * PRODUCER + 128 * NC * CONSUMER <= 65536, "the register file");
};
// Named barriers: SCHED + c is consumer c's turn; LOCAL + c syncs consumer c's warpgroup.
constexpr int SCHED = 1, LOCAL = 5;
constexpr float RESCALE_LOG2 = 8.0f;
// Bits of the kernel's `flags` (MOEKIT_CUDA_ATTN_PROBE, timing experiments; the result stays
// exact): NO_PINGPONG lets the consumers issue their wgmma without taking turns; EAGER_RESCALE
// moves a row's shift with every new maximum (as attention_sm90.cu does); NO_FOLD scales every
// score by its own multiply before the exponent's subtraction (as attention_sm90.cu does).
constexpr int NO_PINGPONG = 1, EAGER_RESCALE = 2, NO_FOLD = 4;
// Barriers: Q_FULL[2], Q_EMPTY[2], K_FULL[S], V_FULL[S], K_EMPTY[S], V_EMPTY[S], 8 bytes each (96),
// 128 reserved.
constexpr int BAR_BYTES = WS_D64_STAGES > 3 ? 256 : 128;
template <int D, int NC> struct Smem {
    static constexpr int BN = BN_OF<D>;
    // A K or V tile (BN rows of D columns: D/64 parts of 64 columns, CHUNK bytes apart), the Q
    // tile, and per consumer the column ranges of one key tile (BN int4), staged for its element
    // mask.
    static constexpr int TILE = BN * D * 2, CHUNK = BN * 128, QTILE = Cfg<NC>::BM * D * 2, RANGE_BYTES = BN * 16;
    // Q buffers, K stages, V stages, barriers, the consumers' column ranges and slack to align
    // the base to 1024 (keep in step with `Path::shared_bytes` in src/ops/attention.rs).
    static constexpr int BYTES = QTILE * QBUF_OF<D> + TILE * 2 * STAGES_OF<D> + BAR_BYTES + NC * RANGE_BYTES + 1024;
};
}  // namespace aws

// Calls f(AwsI<I>()) for I = 0..N - 1 in order: a loop whose index is a compile-time constant.
template <int I> struct AwsI {
    static constexpr int value = I;
};
template <int N, int I = 0, typename F> __device__ __forceinline__ void aws_parts(F&& f) {
    if constexpr (I < N) {
        f(AwsI<I>());
        aws_parts<N, I + 1>(f);
    }
}

// Whether the ranges of a key tile, minima `mn` and maxima `mx`, mask every column for every row
// r0..r1: all the lower intervals contain r0..r1, or all the upper ones do.
__device__ __forceinline__ bool aws_fm_all(int4 mn, int4 mx, int r0, int r1) {
    return (mx.x <= r0 && r1 < mn.y) || (mx.z <= r0 && r1 < mn.w);
}
// Whether they mask no row r0..r1 of any column: each interval starts past r1 or ends by r0 in
// every column.
__device__ __forceinline__ bool aws_fm_none(int4 mn, int4 mx, int r0, int r1) {
    return (r1 < mn.x || r0 >= mx.y) && (r1 < mn.z || r0 >= mx.w);
}

// The FlashMask tables of one work item (see the header), on a grid of BN-key tiles; `none` when
// there are no ranges.
template <int BN> struct AwsFm {
    const int4* cols;   // [Tk]: (lts, lte, uts, ute) per packed column
    const int4* tiles;  // this item's key tiles: [(n - n0) / BN][2] = minima, maxima (none: clear)
    int n0, n1, m1;     // the key tiles it may run: n = n0 + BN·i < n1; its rows end at m1
    __device__ __forceinline__ bool none() const { return cols == nullptr; }
    // No tile of the item is skipped or cut by the ranges (none, or the host's clear block, whose
    // stats are not read).
    __device__ __forceinline__ bool clear() const { return tiles == nullptr; }
    // The stats of key tile `n`.
    __device__ __forceinline__ const int4* stats(int n) const { return tiles + 2 * ((n - n0) / BN); }
    // Key tile `n` is masked for all rows r0..r1 (never without ranges).
    __device__ __forceinline__ bool skip(int n, int r0, int r1) const {
        if (clear()) return false;
        const int4* t = stats(n);
        return aws_fm_all(__ldg(t), __ldg(t + 1), r0, r1);
    }
    // The first key tile from `n` (on the item's grid) below `bhi` that is not skipped, else bhi.
    __device__ __forceinline__ int next(int n, int bhi, int r0, int r1) const {
        while (n < bhi && skip(n, r0, r1)) n += BN;
        return n;
    }
};
template <int BN> __device__ __forceinline__ AwsFm<BN> aws_fm(const i32* fm, int item, int n_items, int tk) {
    if (!fm) return AwsFm<BN>{nullptr, nullptr, 0, 0x7fffffff, 0x7fffffff};
    const int4* spans = reinterpret_cast<const int4*>(fm);
    const int4 sp = __ldg(spans + item);
    const int4* cols = spans + n_items;
    return AwsFm<BN>{cols, sp.x < 0 ? nullptr : cols + tk + 2 * sp.x, sp.y, sp.z, sp.w};
}

// The units (work item, query head: the host's items heaviest first, times Hq) go to a grid of
// at most one CTA per SM (the kernel is persistent): each CTA takes unit blockIdx.x first, then,
// with a ticket counter (`tickets`, zero at launch), the next unit not yet taken, as an SM frees
// up, as the hardware would deal one CTA per unit (and as well for units whose costs the tile
// counts do not tell, e.g. the FlashMask patterns). Draws past the last unit end a CTA; there are
// exactly `units` draws, and the last one (ticket units - 1) sets the counter back to zero for the
// next launch. Without a counter (a graph recorded before the backend made one), round r of CTA
// b takes unit r·G + b in even rounds and r·G + G - 1 - b in odd ones (G CTAs): even sums of
// work for smoothly falling costs such as causal blocks.
__device__ __forceinline__ int aws_next_unit(int* tickets, int r, int units) {
    const int G = (int)gridDim.x, b = (int)blockIdx.x;
    if (r == 0 || !tickets) return r * G + ((r & 1) ? G - 1 - b : b);
    const int t = atomicAdd(tickets, 1);
    if (t == units - 1) atomicExch(tickets, 0);
    return G + t;
}

// What every role of the CTA derives from its unit `u`: the item's fields, its query head and
// K/V head, its FlashMask tables, the rows it stores (m0..rows) and the key tiles it runs (from
// nfirst, on its grid, below bhi; none when nfirst >= bhi).
template <int BN, int BM> struct AwsUnit {
    AwsFm<BN> fm;
    int h, kvh, q0, lq, k0, lk, m0, rows, last, bhi, nfirst;
    int causal;  // the problem's flag, or (CB) the host's causal block
    __device__ __forceinline__ bool has_tiles() const { return nfirst < bhi; }
};
template <int BN, int BM, bool CB>
__device__ __forceinline__ AwsUnit<BN, BM> aws_unit(int u, int units, const i32* items, const i32* fm_, int tk, int hq,
                                                    int hkv, int causal, long long wl, long long wr) {
    AwsUnit<BN, BM> w;
    const int item = u / hq;
    w.h = u % hq;
    w.kvh = w.h / (hq / hkv);
    const i32* itm = items + (size_t)item * 5;
    w.q0 = itm[0], w.lq = itm[1], w.k0 = itm[2], w.lk = itm[3], w.m0 = itm[4];
    // The item's rows end at `rows` (the sequence's end, or the host's m1 with ranges).
    w.fm = aws_fm<BN>(fm_, item, units / hq, tk);
    w.rows = min(w.lq, w.fm.m1);
    // CB (the kernels for plans with causal blocks): a causal block takes the causal flag. A
    // per-unit flag in every kernel cost 1% on the plain problems (run 36 call B: causal D 128
    // 918.7 -> 927.9 us, non-causal D 64 1.15 -> 1.16 ms), hence kernels of their own.
    w.causal = causal;
    if constexpr (CB) {
        // A causal block: its entry's first word -2 (a clear block, `tiles` none).
        if (fm_ && __ldg(fm_ + 4 * item) == -2) w.causal = 1;
    }
    // CTA key tiles: from the first row's lower bound to the last row's upper bound (with
    // ranges, from the host's n0 on its grid, which is inside those bounds).
    w.last = (w.m0 + BM < w.rows ? w.m0 + BM : w.rows) - 1;
    int blo, unused0, unused1;
    att_row_range(w.m0, w.lq, w.lk, w.causal, wl, wr, blo, unused0);
    att_row_range(w.last, w.lq, w.lk, w.causal, wl, wr, unused1, w.bhi);
    const int nstart = w.fm.none() ? (blo / BN) * BN : w.fm.n0;
    w.bhi = min(w.bhi, w.fm.n1);
    w.nfirst = w.fm.next(nstart, w.bhi, w.m0, w.last);
    return w;
}

// The CTA's unit slots in the ticket buffer: an i32 per Q buffer, 16 bytes apart, past the
// counter (the host's TICKET_* layout).
template <int QB> __device__ __forceinline__ int* aws_slot(int* tickets, int b) {
    return tickets + 4 + 4 * ((int)blockIdx.x * QB + b);
}

// Thread 0 of the producer, for each of the CTA's units in turn: once the consumers have stored
// the unit QBUF units back (its Q buffer and slot are free), the unit's index into its slot and
// Q into its buffer (NC boxes of 64 rows per 64-column half: the Q map's box is 64 rows; none
// for a unit without key tiles), then K and V of every key tile of the unit that `fm` does not
// skip for its rows m0..last (the CTA's j-th such tile, counted over all its units, in stage
// j % STAGES, round j / STAGES), D/64 boxes of BN rows each. Past the last unit, -1 in the slot.
// The slot is the CTA's own word in global memory, written before the buffer's FULL arrival
// (a release: the consumers read it after their wait, its acquire, from L2). A word in shared
// memory would serve as well by the memory model, but racecheck models neither that handoff nor
// one by bulk copy (st.async, the async proxy's direct store, needs a real cluster): it flagged
// both (sessions 19 and 20; run 29 call A: 20 reports on the bulk copy), so the word stays out
// of what it checks (run 29 call B: 0 hazards). Without tickets (static rounds) there are no
// slots: the consumers compute the units themselves.
template <int D, int NC, bool CB>
__device__ __forceinline__ void aws_produce(const HpTmap* qm, const HpTmap* km, const HpTmap* vm, u32 sQ, u32 sK,
                                            u32 sV, u32 bars, int* tickets, int units, const i32* items, const i32* fm_, int tk, int hq,
                                            int hkv, int causal, long long wl, long long wr) {
    using namespace aws;
    constexpr int STAGES = STAGES_OF<D>;
    constexpr int TILE = Smem<D, NC>::TILE, CHUNK = Smem<D, NC>::CHUNK, QTILE = Smem<D, NC>::QTILE, BN = BN_OF<D>,
                  HALVES = D / 64, QB = QBUF_OF<D>;
    const u32 q_full = bars, q_empty = bars + 16, k_full = bars + 32, v_full = k_full + 8 * STAGES,
              k_empty = v_full + 8 * STAGES, v_empty = k_empty + 8 * STAGES;
    hp_tma_prefetch(qm);
    hp_tma_prefetch(km);
    hp_tma_prefetch(vm);
    // Hands unit `v` (-1: none left) to the consumers in buffer b's slot, with `qbytes` of Q to
    // come on the same barrier.
    auto hand = [&](int b, int v, int qbytes) {
        *reinterpret_cast<volatile int*>(aws_slot<QB>(tickets, b)) = v;
        hp_bar_arrive_tx(q_full + 8 * b, (u32)qbytes);
    };
    int j = 0;
    for (int r = 0;; ++r) {
        const int u = aws_next_unit(tickets, r, units);
        const int b = r % QB;
        // Without tickets the consumers know the CTA's units as well: no slot, no end word.
        if (!tickets && u >= units) break;
        hp_bar_wait(q_empty + 8 * b, (u32)(((r / QB) & 1) ^ 1));
        if (u >= units) {
            hand(b, -1, 0);
            break;
        }
        const AwsUnit<BN, Cfg<NC>::BM> w = aws_unit<BN, Cfg<NC>::BM, CB>(u, units, items, fm_, tk, hq, hkv, causal, wl, wr);
        const int qbytes = w.has_tiles() ? QTILE : 0;
        if (tickets) {
            hand(b, u, qbytes);
        } else {
            hp_bar_arrive_tx(q_full + 8 * b, (u32)qbytes);
        }
        if (!w.has_tiles()) continue;
        const u32 sQb = sQ + b * QTILE;
#pragma unroll
        for (int c = 0; c < HALVES; ++c)
#pragma unroll
            for (int i = 0; i < NC; ++i)
                hp_tma4(sQb + c * Cfg<NC>::QHALF + i * 64 * 128, qm, 64 * c, w.h, w.q0 + w.m0 + 64 * i, 0, q_full + 8 * b);
        for (int n = w.nfirst; n < w.bhi; n = w.fm.next(n + BN, w.bhi, w.m0, w.last), ++j) {
            const int s = j % STAGES;
            const u32 parity = (u32)(((j / STAGES) & 1) ^ 1);
            hp_bar_wait(k_empty + 8 * s, parity);
            hp_bar_arrive_tx(k_full + 8 * s, TILE);
#pragma unroll
            for (int c = 0; c < HALVES; ++c)
                hp_tma4(sK + s * TILE + c * CHUNK, km, 64 * c, w.kvh, w.k0 + n, 0, k_full + 8 * s);
            hp_bar_wait(v_empty + 8 * s, parity);
            hp_bar_arrive_tx(v_full + 8 * s, TILE);
#pragma unroll
            for (int c = 0; c < HALVES; ++c)
                hp_tma4(sV + s * TILE + c * CHUNK, vm, 64 * c, w.kvh, w.k0 + n, 0, v_full + 8 * s);
        }
    }
}

// Zeroes rows `valid..BN` of the V tile at `vt` (all D columns, parts of 64 CHUNK bytes apart), by
// the 128 threads of one consumer warpgroup (thread `wt`), then fences them to the async proxy and
// syncs the warpgroup.
template <int D> __device__ __forceinline__ void aws_zero_tail(u32 vt, int valid, int wt, int local_bar) {
    constexpr int CPR = D / 8, BN = aws::BN_OF<D>, CHUNK = BN * 128;
    for (int idx = wt; idx < (BN - valid) * CPR; idx += 128) {
        const int r = valid + idx / CPR, c = idx % CPR;
        asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};" ::"r"(vt + (c >> 3) * CHUNK + r * 128 + (c & 7) * 16),
                     "r"(0u)
                     : "memory");
    }
    hp_fence_proxy_async();
    hp_named_sync(local_bar, 128);
}

// Online softmax with a lazy shift: as att_online_max, but a row keeps its old maximum as the
// shift (alpha = 1) while the new one exceeds it by at most `lazy` (RESCALE_LOG2; 0 with
// EAGER_RESCALE: a row keeps its shift only while its maximum stays).
__device__ __forceinline__ void aws_online_max(float* mx, float* mrow, float* mu, float* alpha, float lazy) {
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 1));
        mx[x] = fmaxf(mx[x], __shfl_xor_sync(0xffffffffu, mx[x], 2));
        const float mn = fmaxf(mrow[x], mx[x]);
        const bool keep = mrow[x] != ATT_NEG_INF && mn - mrow[x] <= lazy;
        const float m = keep ? mrow[x] : mn;
        // NOTE: a row with no allowed key yet keeps the max at -inf; shift by 0 then.
        mu[x] = m == ATT_NEG_INF ? 0.0f : m;
        alpha[x] = keep ? 1.0f : att_exp2(mrow[x] - mu[x]);
        mrow[x] = m;
    }
}

// The wgmma shapes the BN-key tiles need beyond attention_sm90.cu's (whose descriptors and
// fragments they share): S (64 × 64 keys) = Q · K^T as m64n64k16, and O (64 × 256) += P · V as
// m64n256k16 (128 accumulator registers).
#define AWS_SS64(TY)                                                                                 \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                      \
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " A90_R32               \
                 ", %32, %33, p, 1, 1, 0, 0;\n}\n"                                                \
                 : A90_D32                                                                          \
                 : "l"(da), "l"(db), "r"(acc))
#define AWS_D128 \
    A90_D64, "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), \
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
#define AWS_R128 \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, " \
    "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, " \
    "%62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, " \
    "%82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, " \
    "%101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, " \
    "%117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"
#define AWS_RS256(TY)                                                                                  \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"                                       \
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY " " AWS_R128                \
                 ", {%128, %129, %130, %131}, %132, p, 1, 1, 1;\n}\n"                              \
                 : AWS_D128                                                                           \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1))
template <> struct A90Pv<bf16, 256> {
    static __device__ __forceinline__ void run(float* d, const u32* a, unsigned long long db) { AWS_RS256("bf16"); }
};
template <> struct A90Pv<f16, 256> {
    static __device__ __forceinline__ void run(float* d, const u32* a, unsigned long long db) { AWS_RS256("f16"); }
};

// S (64 × 192 keys) = Q · K^T as m64n192k16 (96 accumulator registers), for WS_D64_BN 192.
#define AWS_D96 \
    A90_D64, "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
#define AWS_R96 \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
    "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, " \
    "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, " \
    "%62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, " \
    "%82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}"
#define AWS_SS192(TY)                                                                                \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"                                      \
                 "wgmma.mma_async.sync.aligned.m64n192k16.f32." TY "." TY " " AWS_R96              \
                 ", %96, %97, p, 1, 1, 0, 0;\n}\n"                                                \
                 : AWS_D96                                                                          \
                 : "l"(da), "l"(db), "r"(acc))

// One k step of S (64 × BN) (=|+=) Q · K^T; `acc` 0 overwrites.
template <typename T, int BN> struct AwsQk;
template <typename T> struct AwsQk<T, 128> {
    static __device__ __forceinline__ void run(float* d, unsigned long long da, unsigned long long db, int acc) {
        a90_qk<T>(d, da, db, acc);
    }
};
template <> struct AwsQk<bf16, 192> {
    static __device__ __forceinline__ void run(float* d, unsigned long long da, unsigned long long db, int acc) {
        AWS_SS192("bf16");
    }
};
template <> struct AwsQk<f16, 192> {
    static __device__ __forceinline__ void run(float* d, unsigned long long da, unsigned long long db, int acc) {
        AWS_SS192("f16");
    }
};
template <> struct AwsQk<bf16, 64> {
    static __device__ __forceinline__ void run(float* d, unsigned long long da, unsigned long long db, int acc) {
        AWS_SS64("bf16");
    }
};
template <> struct AwsQk<f16, 64> {
    static __device__ __forceinline__ void run(float* d, unsigned long long da, unsigned long long db, int acc) {
        AWS_SS64("f16");
    }
};

// o [D/2] += P (64 × BN keys: p [BN/4] registers) · V (the BN-row tile at shared address `vt`,
// its 64-column parts BN·128 bytes apart: the descriptor's LBO).
// Key steps KK0..KK0 + NK only (16 keys each; default all of them): a part of the tile's P·V.
template <typename T, int D, int BN, int KK0 = 0, int NK = BN / 16>
__device__ __forceinline__ void aws_pv(float* o, const u32* p, u32 vt) {
    const unsigned long long dv = a90_desc(vt, BN * 128, 1024);
#pragma unroll
    for (int kk = KK0; kk < KK0 + NK; ++kk) A90Pv<T, D>::run(o, p + 4 * kk, dv + ((kk * 16 * 128) >> 4));
}

template <typename T, int D, int NC, int SPLIT, bool SKIP, bool CB>
__device__ __forceinline__ void aws_impl(T* o_, float* lse, const i32* items, const i32* fm_, int tq, int tk, int hq,
                                         int hkv, float scale, float softcap, int causal, long long wl, long long wr,
                                         int flags, int units, int* tickets, const HpTmap* qm, const HpTmap* km,
                                         const HpTmap* vm) {
    using namespace aws;
    constexpr int STAGES = STAGES_OF<D>;
    constexpr int TILE = Smem<D, NC>::TILE, CHUNK = Smem<D, NC>::CHUNK, KS = D / 16, ON = D / 2;
    // Keys per tile; S and P registers per thread.
    constexpr int BN = BN_OF<D>, SN = BN / 2, PN = BN / 4;
    constexpr int BM = Cfg<NC>::BM, QHALF = Cfg<NC>::QHALF, QTILE = Smem<D, NC>::QTILE, QB = QBUF_OF<D>;
    using Unit = AwsUnit<BN, BM>;
    extern __shared__ __align__(1024) unsigned char aws_smem[];
    const u32 smem = (att_smem_addr(aws_smem) + 1023u) & ~1023u;
    const u32 sQ = smem, sK = smem + QB * QTILE, sV = sK + STAGES * TILE, bars = sV + STAGES * TILE;
    const u32 ranges = bars + BAR_BYTES;  // NC copies of Smem::RANGE_BYTES
    const u32 q_full = bars, q_empty = bars + 16, k_full = bars + 32, v_full = k_full + 8 * STAGES,
              k_empty = v_full + 8 * STAGES, v_empty = k_empty + 8 * STAGES;
    const int tid = threadIdx.x;

    if (tid == 0) {
#pragma unroll
        for (int b = 0; b < QB; ++b) {
            hp_bar_init(q_full + 8 * b, 1);
            hp_bar_init(q_empty + 8 * b, Cfg<NC>::EMPTY_COUNT);
        }
#pragma unroll
        for (int s = 0; s < STAGES; ++s) {
            hp_bar_init(k_full + 8 * s, 1);
            hp_bar_init(v_full + 8 * s, 1);
            hp_bar_init(k_empty + 8 * s, Cfg<NC>::EMPTY_COUNT);
            hp_bar_init(v_empty + 8 * s, Cfg<NC>::EMPTY_COUNT);
        }
        hp_bar_init_fence();
    }
    __syncthreads();

    const int role = hp_uniform(tid / 128);
    if (role == 0) {
        hp_setmaxnreg_dec<Regs<D, NC>::PRODUCER>();
        if (tid == 0)
            aws_produce<D, NC, CB>(qm, km, vm, sQ, sK, sV, bars, tickets, units, items, fm_, tk, hq, hkv, causal, wl,
                               wr);
        return;
    }
    hp_setmaxnreg_inc<Regs<D, NC>::CONSUMER>();
    const int wg = role - 1, wt = tid - 128 * role, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wrow = 64 * wg + 16 * ((wt >> 5) & 3) + g;  // this thread's rows: wrow, wrow + 8
    const int sched_me = SCHED + wg, sched_next = SCHED + (wg + 1 == NC ? 0 : wg + 1), local = LOCAL + wg;
    const u32 sF = ranges + wg * Smem<D, NC>::RANGE_BYTES;
    const bool pingpong = !(flags & NO_PINGPONG);
    const float lazy = flags & EAGER_RESCALE ? 0.0f : RESCALE_LOG2;
    // Without a softcap and with a positive scale, max(s)·c = max(s·c) and the scale folds into
    // the exponent's subtraction as one fma (p = exp2(s·c - mu)); else the scores are mapped
    // first and mul is 1 (the fma is exact then).
    const bool fold = !(softcap > 0.0f) && scale > 0.0f && !(flags & NO_FOLD);
    const float mul = fold ? scale * ATT_LOG2E : 1.0f;
    const float scale_log2 = scale * ATT_LOG2E;
    // SEQ (three consumers, `attention_sm90ws3_*`): no intra-warpgroup overlap. A consumer's tile
    // is S_j, its softmax, then O += P_j·V_j, so S and P are never live together (the overlap holds
    // S_j, P_{j-1} and O at once: 128 registers at D 64, past 160 with the rest); the other two
    // consumers' matrix products cover its softmax instead.
    constexpr bool SEQ = NC == 3;
    static_assert(SEQ || (SPLIT == 1 && !SKIP), "the banded form (SPLIT, SKIP) needs three consumers");

    float s[SN], oacc[ON];
    u32 p[PN];
#pragma unroll
    for (int e = 0; e < SN; ++e) s[e] = 0.0f;
#pragma unroll
    for (int e = 0; e < ON; ++e) oacc[e] = 0.0f;
#pragma unroll
    for (int e = 0; e < PN; ++e) p[e] = 0u;
    float mrow[2] = {ATT_NEG_INF, ATT_NEG_INF}, lrow[2] = {0.0f, 0.0f};

    auto release = [&](u32 bar) {
        if (lane == 0) hp_bar_arrive(bar);
    };
    // Waits for the V tile of key tile j (at n, of a unit with lk keys) and zeroes its rows past
    // the sequence.
    auto wait_v = [&](int j, int n, int lk) {
        const int s_ = j % STAGES;
        hp_bar_wait(v_full + 8 * s_, (u32)((j / STAGES) & 1));
        if (n + BN > lk) aws_zero_tail<D>(sV + s_ * TILE, lk - n, wt, local);
    };
    // The finished unit `pu` (its Q buffer qb): O normalised by the row sums and stored with the
    // LSE through the warpgroup's own rows of the buffer (without key tiles Q was never loaded:
    // the rows are free too), then the buffer and slot handed back to the producer: every lane's
    // reads of them done and ordered before the async-proxy writes that refill them.
    auto store = [&](const Unit& pu, int qb) {
        a90_store_rows<T, D>(sQ + qb * QTILE, QHALF, local, wg, wt, wrow, t, oacc, lrow, mrow, o_, lse, pu.q0, pu.rows,
                             pu.m0, hq, pu.h, tq);
        hp_fence_proxy_async();
        __syncwarp();
        release(q_empty + 8 * qb);
    };

    // Consumer 0 goes first: the last consumer hands it the first turn (once for all the CTA's
    // units: both consumers run the same key tiles, so the turns alternate across units too).
    if (pingpong && wg == NC - 1) hp_named_arrive(SCHED, 256);

    // The CTA's units in turn, from the producer's slots. j counts the CTA's key tiles (the
    // stages' rounds run on across units).
    int j = 0;
    for (int r = 0;; ++r) {
        const int qb = r % QB;
        // The unit's slot and Q (or, without key tiles, the producer's word that the buffer is
        // free).
        int u;
        if (tickets) {
            hp_bar_wait(q_full + 8 * qb, (u32)((r / QB) & 1));
            u = __ldcg(aws_slot<QB>(tickets, qb));
            if (u < 0) break;
        } else {
            u = aws_next_unit(nullptr, r, units);
            if (u >= units) break;
            hp_bar_wait(q_full + 8 * qb, (u32)((r / QB) & 1));
        }
        const Unit w = aws_unit<BN, BM, CB>(u, units, items, fm_, tk, hq, hkv, causal, wl, wr);
        // A unit starts with O at zero and no row statistics.
#pragma unroll
        for (int e = 0; e < ON; ++e) oacc[e] = 0.0f;
#pragma unroll
        for (int x = 0; x < 2; ++x) mrow[x] = ATT_NEG_INF, lrow[x] = 0.0f;
        if (!w.has_tiles()) {
            store(w, qb);
            continue;
        }
        const int lk = w.lk, m0 = w.m0, rows = w.rows, k0 = w.k0;
        const AwsFm<BN>& fm = w.fm;

        // Keys every valid row of this warpgroup sees: [wlast_lo, wfirst_hi) (empty when it has
        // no valid row); tiles inside it skip the element mask.
        const int wfirst = m0 + 64 * wg;
        const int wlast = (wfirst + 64 < rows ? wfirst + 64 : rows) - 1;
        int wfirst_lo = 0, wfirst_hi = 0, wlast_lo = 0, wlast_hi = 0;
        if (wfirst < rows) {
            att_row_range(wfirst, w.lq, lk, w.causal, wl, wr, wfirst_lo, wfirst_hi);
            att_row_range(wlast, w.lq, lk, w.causal, wl, wr, wlast_lo, wlast_hi);
        } else {
            wlast_hi = -0x7fffffff;  // no valid row: every tile skipped (SKIP)
        }
        // This thread's rows m0 + wrow and m0 + wrow + 8: their keys (the same for every tile;
        // kept rather than lq, lk, the window and causal, which the loop needs for nothing else).
        int rlo[2], rhi[2];
        att_row_range(m0 + wrow, w.lq, lk, w.causal, wl, wr, rlo[0], rhi[0]);
        att_row_range(m0 + wrow + 8, w.lq, lk, w.causal, wl, wr, rlo[1], rhi[1]);
        // The ranges mask none of this warpgroup's valid rows in key tile n (no valid row: true).
        auto fm_clear = [&](int n) {
            if (wfirst >= rows) return true;
            const int4* tl = fm.stats(n);
            return aws_fm_none(__ldg(tl), __ldg(tl + 1), wfirst, wlast);
        };
        const unsigned long long dq = a90_desc(sQ + qb * QTILE + wg * 64 * 128, 16, 1024);

        // Key tile j at n, after the unit's tile j - 1 at nprev; FIRST (a compile-time flag: a
        // runtime one around the P·V wgmma makes ptxas serialise every wgmma, C7513): the unit's
        // first, no P·V pending.
        auto tile = [&](int n, int nprev, auto first_tag) {
            constexpr bool first = decltype(first_tag)::value;
            // The P·V of the previous tile runs behind this tile's S (not in SEQ).
            constexpr bool pv_prev = !first && !SEQ;
            const int ks_ = j % STAGES, vs_prev = (j + STAGES - 1) % STAGES;
            // Whether no row of the warpgroup needs the element mask in this tile, and this
            // thread's column range of the tile if the ranges need it (decided and loaded before
            // the waits, so that the loads overlap them).
            // `ranged` only where the ranges may mask a row of the warpgroup here: a causal
            // diagonal tile the ranges leave alone skips their staging and compares (run 33 call
            // D: the docs mask at D 128 339 -> 343 TFLOP/s).
            const bool clear = fm.clear() || fm_clear(n);
            const bool full = clear && n + BN <= lk && n >= wlast_lo && n + BN <= wfirst_hi;
            const bool ranged = !clear;
            int4 own = make_int4(0, 0, 0, 0), own2 = make_int4(0, 0, 0, 0);  // own2: column wt + 128 (BN 192)
            if (ranged && wt < BN && n + wt < lk) own = __ldg(fm.cols + k0 + n + wt);
            if constexpr (BN > 128) {
                if (ranged && wt + 128 < BN && n + wt + 128 < lk) own2 = __ldg(fm.cols + k0 + n + wt + 128);
            }
            hp_bar_wait(k_full + 8 * ks_, (u32)((j / STAGES) & 1));
            if constexpr (pv_prev) wait_v(j - 1, nprev, lk);

            // This consumer's turn: S_j = Q·K_j, then the previous tile's O += P·V behind it.
            if (pingpong) hp_named_sync(sched_me, 256);
            a90_mma_fence();
            const unsigned long long dk = a90_desc(sK + ks_ * TILE, 16, 1024);
#pragma unroll
            for (int ks = 0; ks < KS; ++ks) {
                const u32 offq = (u32)(((ks >> 2) * QHALF + (ks & 3) * 32) >> 4);
                const u32 offk = (u32)(((ks >> 2) * CHUNK + (ks & 3) * 32) >> 4);
                AwsQk<T, BN>::run(s, dq + offq, dk + offk, ks > 0 ? 1 : 0);
            }
            a90_mma_commit();
            if constexpr (pv_prev) {
                aws_pv<T, D, BN>(oacc, p, sV + vs_prev * TILE);
                a90_mma_commit();
            }
            if (pingpong) hp_named_arrive(sched_next, 256);
            if constexpr (pv_prev) {
                a90_mma_wait<1>();
            } else {
                a90_mma_wait<0>();
            }
            a90_fence_f<SN>(s);
            release(k_empty + 8 * ks_);  // S_j is done: K_j's stage is free

            // Scores in the log2 domain, masked (only tiles some row of the warpgroup sees
            // partly); online softmax, while the tensor cores finish the previous P·V.
            // NOTE: the row maxima and sums in 4 partial chains per row instead of one (the 32
            // dependent fmax / add of a row made 8) measured the same (run 26 call D).
            float mx[2] = {ATT_NEG_INF, ATT_NEG_INF};
            if (full && fold) {
#pragma unroll
                for (int e = 0; e < SN; ++e) mx[(e >> 1) & 1] = fmaxf(mx[(e >> 1) & 1], s[e]);
            } else if (full) {
#pragma unroll
                for (int e = 0; e < SN; ++e) {
                    const float sc = softcap > 0.0f ? att_score(s[e], scale, softcap) * ATT_LOG2E : s[e] * scale_log2;
                    s[e] = sc;
                    mx[(e >> 1) & 1] = fmaxf(mx[(e >> 1) & 1], sc);
                }
            } else {
                const int r = m0 + wrow;
                if (ranged) {
                    // The tile's ranges into this warpgroup's copy, once its readers of the
                    // previous one are done.
                    hp_named_sync(local, 128);
                    if (wt < BN)
                        asm volatile("st.shared.v4.s32 [%0], {%1, %2, %3, %4};" ::"r"(sF + 16 * wt), "r"(own.x),
                                     "r"(own.y), "r"(own.z), "r"(own.w)
                                     : "memory");
                    if constexpr (BN > 128) {
                        if (wt + 128 < BN)
                            asm volatile("st.shared.v4.s32 [%0], {%1, %2, %3, %4};" ::"r"(sF + 16 * (wt + 128)),
                                         "r"(own2.x), "r"(own2.y), "r"(own2.z), "r"(own2.w)
                                         : "memory");
                    }
                    hp_named_sync(local, 128);
                }
                // The scores mapped first (uniform branches: inside the element loop the
                // softcap's tanh was computed for every element whatever the branch, run 27), then
                // each of the thread's 32 keys: its ranges (none past the sequence), then its two
                // rows.
                if (!fold && softcap > 0.0f) {
#pragma unroll
                    for (int e = 0; e < SN; ++e) s[e] = att_score(s[e], scale, softcap) * ATT_LOG2E;
                } else if (!fold) {
#pragma unroll
                    for (int e = 0; e < SN; ++e) s[e] *= scale_log2;
                }
                // Each row's keys are one interval [rlo, rhi) (causal, the window, the sequence's
                // end), compared with each element's compile-time column offset, shifted to this
                // thread's first column; with RANGED, also the column's two row intervals
                // [lts, lte), [uts, ute) from the staged copy, each as one unsigned compare of
                // row - start against its length (0 when empty). A loop with the column, the
                // range test and the loads as runtime choices took ~1075 instructions a warp per
                // diagonal tile against ~465 for a whole one (ncu, run 33 call A); run 34 call A
                // (interleaved, 3 rounds) for the RANGED form against it: D 64 ranges 411.7 ->
                // 391.4 us, image 453.4 -> 433.0, docs 218.7 -> 194.6; D 128 -2% to -6%.
                const int c0 = n + 2 * t;
                const int lo[2] = {rlo[0] - c0, rlo[1] - c0}, hi[2] = {rhi[0] - c0, rhi[1] - c0};
                auto mask_tile = [&](auto ranged_tag) {
                    constexpr bool RANGED = decltype(ranged_tag)::value;
#pragma unroll
                    for (int kb = 0; kb < PN; ++kb) {
                        const int off = 8 * (kb >> 1) + (kb & 1);
                        int4 c = make_int4(0, 0, 0, 0);
                        u32 ll = 0, ul = 0;
                        if constexpr (RANGED) {
                            asm volatile("ld.shared.v4.s32 {%0, %1, %2, %3}, [%4];"
                                         : "=r"(c.x), "=r"(c.y), "=r"(c.z), "=r"(c.w)
                                         : "r"(sF + 16 * (off + 2 * t)));
                            ll = (u32)max(c.y - c.x, 0);
                            ul = (u32)max(c.w - c.z, 0);
                        }
#pragma unroll
                        for (int x = 0; x < 2; ++x) {
                            const int e = 4 * (kb >> 1) + 2 * x + (kb & 1), row = r + 8 * x;
                            bool hidden = off < lo[x] || off >= hi[x];
                            if constexpr (RANGED) hidden = hidden || (u32)(row - c.x) < ll || (u32)(row - c.z) < ul;
                            const float sc = hidden ? ATT_NEG_INF : s[e];
                            s[e] = sc;
                            mx[x] = fmaxf(mx[x], sc);
                        }
                    }
                };
                if (ranged) {
                    mask_tile(a90_flag<true>());
                } else {
                    mask_tile(a90_flag<false>());
                }
            }
            float alpha[2], mu[2];
            mx[0] *= mul;
            mx[1] *= mul;
            aws_online_max(mx, mrow, mu, alpha, lazy);
            // O rescaled where a row's shift moved (once the previous P·V is done).
            auto rescale_o = [&]() {
                // NOTE: warp-uniform vote: with the lazy shift most tiles skip this.
                if (!first && __any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
                    for (int e = 0; e < ON; ++e) oacc[e] *= alpha[(e >> 1) & 1];
                }
            };
            // NOTE: a quarter of these exp2 on the FMA pipe (range reduction and a degree-5
            // polynomial) instead of the MUFU ran slower: D 64 447 -> 461 us, D 128 1.02 -> 1.08 ms
            // (run 26 call G); the MUFU is busy but not the limit.
            if constexpr (SEQ && SPLIT > 1) {
                // The banded form: O += P_j·V_j now (outside the turns), done before the next
                // tile's S, in SPLIT parts of the keys, each part's P·V issued as soon as its
                // exponents are, so that the tensor cores run it while the next part's exponents
                // are computed: a consumer's chain per tile (S, softmax, P·V; the pace of the CTA
                // at D 64, where neither the tensor cores nor the MUFU are busy half the time) gets
                // shorter. Before the first part's P·V, O rescaled (the previous P·V is done) and V
                // waited for. Run 35 call C (interleaved, 3 rounds, with SKIP): causal D 64 345.8 ->
                // 344.3 / 334.2 / 329.7 us in 2 / 4 / 8 parts, docs 158.3 -> 144.3; without a band
                // (nothing skipped) slower: non-causal 1.15 -> 1.22 ms, the image mask 432.1 ->
                // 442.0 us, hence the host's choice of kernel.
                float rs[2] = {0.0f, 0.0f};
                aws_parts<SPLIT>([&](auto part_tag) {
                    constexpr int part = decltype(part_tag)::value, SE = SN / SPLIT, PE = PN / SPLIT;
#pragma unroll
                    for (int e = part * SE; e < (part + 1) * SE; ++e) {
                        s[e] = att_exp2(fmaf(s[e], mul, -mu[(e >> 1) & 1]));
                        rs[(e >> 1) & 1] += s[e];
                    }
                    if constexpr (part == 0) rescale_o();
#pragma unroll
                    for (int i = part * PE; i < (part + 1) * PE; ++i) p[i] = att_pack<T>(s[2 * i], s[2 * i + 1]);
                    if constexpr (part == 0) wait_v(j, n, lk);
                    a90_mma_fence();
                    aws_pv<T, D, BN, part * BN / 16 / SPLIT, BN / 16 / SPLIT>(oacc, p, sV + ks_ * TILE);
                    a90_mma_commit();
                });
#pragma unroll
                for (int x = 0; x < 2; ++x) lrow[x] = lrow[x] * alpha[x] + rs[x];
                a90_mma_wait<0>();
                a90_fence_f<ON>(oacc);
                a90_fence_u<PN>(p);
                release(v_empty + 8 * ks_);
                return;
            }
            float rs[2] = {0.0f, 0.0f};
#pragma unroll
            for (int e = 0; e < SN; ++e) {
                s[e] = att_exp2(fmaf(s[e], mul, -mu[(e >> 1) & 1]));
                rs[(e >> 1) & 1] += s[e];
            }
#pragma unroll
            for (int x = 0; x < 2; ++x) lrow[x] = lrow[x] * alpha[x] + rs[x];

            // The previous P·V is done: its V stage, O and p are free. Rescale O where a row's
            // shift moved, then P as the register A operand of the next P·V.
            if constexpr (pv_prev) {
                a90_mma_wait<0>();
                a90_fence_f<SN>(s);
                a90_fence_f<ON>(oacc);
                a90_fence_u<PN>(p);
                release(v_empty + 8 * vs_prev);
            }
            rescale_o();
#pragma unroll
            for (int i = 0; i < PN; ++i) p[i] = att_pack<T>(s[2 * i], s[2 * i + 1]);
            if constexpr (SEQ) {
                // O += P_j·V_j now (outside the turns), done before the next tile's S.
                wait_v(j, n, lk);
                a90_mma_fence();
                aws_pv<T, D, BN>(oacc, p, sV + ks_ * TILE);
                a90_mma_commit();
                a90_mma_wait<0>();
                a90_fence_f<ON>(oacc);
                a90_fence_u<PN>(p);
                release(v_empty + 8 * ks_);
            }
        };

        // SKIP (the banded form; with SEQ, so that a tile's work is all within it), with the turns:
        // this warpgroup skips the key tiles that hold no key any of its valid rows may see (it has
        // no valid row, or the tile lies before its first row's keys or past its last row's:
        // causal and the window leave no gap in the CTA's span, so those lead or trail the tiles
        // it runs, and other rows of the CTA need them). A skipped tile is its turn passed on and
        // its stages released, without waiting for them to fill (the wait loops spilled 44 bytes
        // more): a consumer's turn for tile j comes after every consumer has finished tile j - 2
        // (each finishes a tile before its next turn, and the turns go round in order), so its
        // releases count for tile j's round, and another consumer runs tile j, waiting for its
        // loads before the producer may refill the stage. Not the tiles that only the ranges mask
        // for its rows: every consumer might skip one of those, and none would wait for its loads.
        // The softmax state is as if those scores were all masked (p = 0). Skipping alone saves
        // little (the CTA waits for its slowest consumer, whose chain of S, softmax and P·V per
        // tile sets the pace: run 35 call A, causal D 64 344.7 -> 343.6 us); with SPLIT's shorter
        // chain it gains 9% (call C: 365.9 -> 334.2 us at 4 parts).
        auto pass = [&]() {
            hp_named_sync(sched_me, 256);
            hp_named_arrive(sched_next, 256);
            release(k_empty + 8 * (j % STAGES));
            release(v_empty + 8 * (j % STAGES));
            ++j;
        };
        int n = w.nfirst;
        if (SKIP && pingpong)
            for (; n < w.bhi && n + BN <= wfirst_lo; n = fm.next(n + BN, w.bhi, m0, w.last)) pass();
        const int nend = SKIP && pingpong ? min(w.bhi, wlast_hi) : w.bhi;
        if (n < nend) {
            tile(n, 0, a90_flag<true>());
            ++j;
            int nprev = n;
            for (n = fm.next(n + BN, w.bhi, m0, w.last); n < nend; n = fm.next(n + BN, w.bhi, m0, w.last)) {
                tile(n, nprev, a90_flag<false>());
                nprev = n;
                ++j;
            }
            // The last tile's P·V (outside the turns: nothing of the other consumer waits on it).
            if constexpr (!SEQ) {
                const int jl = j - 1;
                wait_v(jl, nprev, lk);
                a90_mma_fence();
                aws_pv<T, D, BN>(oacc, p, sV + (jl % STAGES) * TILE);
                a90_mma_commit();
                a90_mma_wait<0>();
                a90_fence_f<ON>(oacc);
                release(v_empty + 8 * (jl % STAGES));
            }
        }
        if (SKIP && pingpong)
            for (; n < w.bhi; n = fm.next(n + BN, w.bhi, m0, w.last)) pass();
        store(w, qb);
    }
    // Consumer 0 takes the turn consumer 1 handed over last (or at the start), so that both
    // barriers end balanced.
    if (pingpong && wg == 0) hp_named_sync(SCHED, 256);
}

// Instantiates `attention_sm90ws_dD_f16` and `..._bf16`: 384 threads, one CTA per SM; the
// arguments of the other attention kernels (q, k, v are read through the tensor maps only; the
// FlashMask tables `fm` in place of the column ranges), the probe flags, then the maps of q, k and
// v by value.
#define AWS_KERNEL_1(NAME, DIM, NC, SPLIT, SKIP, CB, TY, SUFFIX)                                               \
    namespace NAME##_d##DIM##_##SUFFIX##_ns {                                                                  \
    using T = TY;                                                                                              \
    extern "C" __global__ void __launch_bounds__(aws::Cfg<NC>::THREADS, 1) NAME##_d##DIM##_##SUFFIX(           \
        const T* q, const T* k, const T* v, T* o, float* lse, const i32* items, const i32* fm, int tq, int tk, \
        int hq, int hkv, float scale, float softcap, int causal, long long wl, long long wr, int flags,       \
        int units, int* tickets, const __grid_constant__ HpTmap q_map, const __grid_constant__ HpTmap k_map,                           \
        const __grid_constant__ HpTmap v_map) {                                                                \
        aws_impl<TY, DIM, NC, SPLIT, SKIP, CB>(o, lse, items, fm, tq, tk, hq, hkv, scale, softcap, causal, wl, \
                                               wr, flags, units, tickets, &q_map, &k_map, &v_map);             \
    }                                                                                                          \
    }
#ifndef AWS_CAUSAL_BLOCKS
AWS_KERNEL_1(attention_sm90ws, 64, 2, 1, false, false, f16, f16)
AWS_KERNEL_1(attention_sm90ws, 64, 2, 1, false, false, bf16, bf16)
AWS_KERNEL_1(attention_sm90ws, 128, 2, 1, false, false, f16, f16)
AWS_KERNEL_1(attention_sm90ws, 128, 2, 1, false, false, bf16, bf16)
AWS_KERNEL_1(attention_sm90ws, 256, 2, 1, false, false, f16, f16)
AWS_KERNEL_1(attention_sm90ws, 256, 2, 1, false, false, bf16, bf16)
// Three consumers at D 64 (`attention_sm90ws3_d64_*`, 192 rows, 512 threads; the default there,
// MOEKIT_CUDA_ATTN=ws2 takes the two-consumer kernel): the softmax weighs twice as much against
// the matrix products there. With the intra-warpgroup overlap it spilled 44 bytes at 160 registers
// and ran slower (run 26: 468 against 442 us on B4 H16 S4096 causal; 336 bytes of spills in
// session 25's source); without it (SEQ) S and P are never live together. It lost to two
// consumers on causal shapes while the diagonal tiles' general mask loop cost ~2.3x a whole tile
// (192-row blocks have more of them); with the interval loop (run 33) it wins at D 64
// (run 33 call B: causal S4096 376 -> 342 us, non-causal S8192 1.33 -> 1.15 ms; call D: ranges
// +5%, image +10%) but on the docs mask (-6.5%; run 34 call B, with the ranged tiles' interval
// loop and causal ranges as the flag, docs too: 164.7 against 173.6 us).
AWS_KERNEL_1(attention_sm90ws3, 64, 3, 1, false, false, f16, f16)
AWS_KERNEL_1(attention_sm90ws3, 64, 3, 1, false, false, bf16, bf16)
// Their banded form (`attention_sm90ws3s_d64_*`, the host's choice for causal or windowed
// problems): each consumer skips the key tiles outside its rows' band, and a tile's exponents and
// P·V run in 8 parts (run 35 call C: causal D 64 345.8 -> 329.7 us, 1.02x SDPA-cuDNN in its record).
AWS_KERNEL_1(attention_sm90ws3s, 64, 3, 8, true, false, f16, f16)
AWS_KERNEL_1(attention_sm90ws3s, 64, 3, 8, true, false, bf16, bf16)
#else
// The FlashMask plans with causal blocks (flashmask.rs: blocks whose ranges are causal over their
// span run as clear blocks with the causal flag) on kernels of their own (CB; the host's choice
// where the plan has any; the module with AWS_CAUSAL_BLOCKS defined holds these only), `attention_sm90wsc_*` at D 128 and 256 and the banded form at D 64,
// `attention_sm90ws3sc_d64_*` (its causal blocks skip as causal ones do). Run 36 call B
// (interleaved, 3 rounds): the image mask at D 64 430.3 -> 404.2 us (412.4 on the three-consumer
// kernel without the band), at D 128 1.16 -> 1.12 ms.
AWS_KERNEL_1(attention_sm90wsc, 128, 2, 1, false, true, f16, f16)
AWS_KERNEL_1(attention_sm90wsc, 128, 2, 1, false, true, bf16, bf16)
AWS_KERNEL_1(attention_sm90wsc, 256, 2, 1, false, true, f16, f16)
AWS_KERNEL_1(attention_sm90wsc, 256, 2, 1, false, true, bf16, bf16)
AWS_KERNEL_1(attention_sm90ws3sc, 64, 3, 8, true, true, f16, f16)
AWS_KERNEL_1(attention_sm90ws3sc, 64, 3, 8, true, true, bf16, bf16)
#endif

#endif  // __CUDA_ARCH_FEAT_SM90_ALL
