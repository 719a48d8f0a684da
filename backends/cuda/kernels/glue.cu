// Model glue: RMSNorm (fused residual), rotary (1-D and 3-D), SwiGLU, embedding gather.

// One block per row. With a residual, s = round(x + residual) is written to res_out and the
// rounded s is normalised (as the reference does).
template <typename T>
__device__ void rms_norm_impl(const T* x, const T* w, const T* res, T* y, T* res_out, int rows, int h,
                              float eps) {
    __shared__ float scratch[32];
    int row = blockIdx.x;
    if (row >= rows) return;
    const T* xr = x + (size_t)row * h;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < h; i += blockDim.x) {
        float v = to_f32(xr[i]);
        if (res) {
            T s = from_f32<T>(v + to_f32(res[(size_t)row * h + i]));
            res_out[(size_t)row * h + i] = s;
            v = to_f32(s);
        }
        ss += v * v;
    }
    float total = block_sum(ss, scratch);
    float inv = rsqrtf(total / (float)h + eps);
    const T* src = res ? res_out + (size_t)row * h : xr;
    for (int i = threadIdx.x; i < h; i += blockDim.x) {
        y[(size_t)row * h + i] = from_f32<T>(to_f32(src[i]) * inv * to_f32(w[i]));
    }
}
MOEKIT_FLOAT_KERNELS(rms_norm, (const T* x, const T* w, const T* res, T* y, T* res_out, int rows, int h, float eps),
                     (x, w, res, y, res_out, rows, h, eps))

// One thread per (token, head, pair f < D/2). Angles in f64 so long positions keep their phase.
template <typename T>
__device__ void rotary_impl(const T* x, const i32* pos, T* out, int tokens, int heads, int d, float theta, int s0,
                            int s1, int three_d) {
    int half = d / 2;
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long total = (long long)tokens * heads * half;
    if (idx >= total) return;
    int f = (int)(idx % half);
    long long th = idx / half;
    int t = (int)(th / heads);
    int axis = !three_d ? 0 : (f < s0 ? 0 : (f < s0 + s1 ? 1 : 2));
    double p = (double)pos[(size_t)axis * tokens + t];
    double inv_freq = pow((double)theta, -2.0 * (double)f / (double)d);
    double s, c;
    sincos(p * inv_freq, &s, &c);
    const T* xr = x + th * d;
    T* o = out + th * d;
    float a = to_f32(xr[f]), b = to_f32(xr[f + half]);
    o[f] = from_f32<T>((float)(a * c - b * s));
    o[f + half] = from_f32<T>((float)(b * c + a * s));
}
MOEKIT_FLOAT_KERNELS(rotary,
                     (const T* x, const i32* pos, T* out, int tokens, int heads, int d, float theta, int s0, int s1,
                      int three_d),
                     (x, pos, out, tokens, heads, d, theta, s0, s1, three_d))

// y[r, i] = silu(x[r, i]) * x[r, I + i], one thread per output element.
template <typename T>
__device__ void swiglu_impl(const T* x, T* y, int rows, int inter) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)rows * inter) return;
    long long r = idx / inter;
    int i = (int)(idx % inter);
    float g = to_f32(x[r * 2 * inter + i]);
    float u = to_f32(x[r * 2 * inter + inter + i]);
    y[idx] = from_f32<T>(silu(g) * u);
}
MOEKIT_FLOAT_KERNELS(swiglu, (const T* x, T* y, int rows, int inter), (x, y, rows, inter))

// out[t] = table[ids[t]], one block per token; an id outside 0..V is recorded and gives zeros.
template <typename T>
__device__ void embedding_impl(const T* table, const i32* ids, T* out, int tokens, int vocab, int h, i32* rec) {
    int t = blockIdx.x;
    if (t >= tokens) return;
    int id = ids[t];
    bool ok = id >= 0 && id < vocab;
    if (!ok && threadIdx.x == 0) report_bad(rec, MOEKIT_BAD_EMBEDDING_IDS, t, id, vocab);
    for (int i = threadIdx.x; i < h; i += blockDim.x) {
        out[(size_t)t * h + i] = ok ? table[(size_t)id * h + i] : from_f32<T>(0.0f);
    }
}
MOEKIT_FLOAT_KERNELS(embedding, (const T* table, const i32* ids, T* out, int tokens, int vocab, int h, i32* rec),
                     (table, ids, out, tokens, vocab, h, rec))

// The benchmark's cache flush by reading (`MOEKIT_BENCH_FLUSH_READ=1`, src/backend.rs): each
// 16-byte word of `p` loaded once, so that L2 holds the flush buffer's clean lines and the timed
// run writes none back (the zeroing write leaves up to the L2's 50 MB dirty, which the next run
// writes back while it reads). `sink` is written only if the words XOR to a value the zeroed
// buffer never gives, so the loads stay.
extern "C" __global__ void bench_read_flush(const uint4* p, long long n, unsigned* sink) {
    unsigned acc = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const uint4 v = p[i];
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x9e3779b9u) *sink = acc;
}
