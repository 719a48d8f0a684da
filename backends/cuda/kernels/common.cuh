// moekit CUDA common prelude, prepended to every kernel source before NVRTC compiles it.
// NOTE: no toolkit header is included: NVRTC finds none by itself, and every conversion a
// kernel needs is one PTX instruction. So the kernels compile wherever libnvrtc loads.

typedef int i32;
typedef unsigned int u32;
typedef unsigned short u16;

// Storage types for the low-precision dtypes: raw bits, converted through PTX `cvt`.
struct bf16 { u16 bits; };
struct f16 { u16 bits; };

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __uint_as_float(((u32)x.bits) << 16); }
__device__ __forceinline__ float to_f32(f16 x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
}

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) {
    bf16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
    return r;
}
template <> __device__ __forceinline__ f16 from_f32<f16>(float x) {
    f16 r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
    return r;
}

// Instantiates `NAME<T>` as three extern "C" kernels `NAME_f32`, `NAME_f16`, `NAME_bf16`.
// Usage: MOEKIT_FLOAT_KERNELS(rms_norm, (const T* x, T* y, int n), (x, y, n))
// NOTE: the namespace gives `PARAMS` its `T`; extern "C" keeps the kernel name unmangled.
#define MOEKIT_FLOAT_KERNEL_1(NAME, TY, SUFFIX, PARAMS, ARGS)                      \
    namespace NAME##_##SUFFIX##_ns {                                               \
    using T = TY;                                                                  \
    extern "C" __global__ void NAME##_##SUFFIX PARAMS { NAME##_impl<TY> ARGS; }    \
    }
#define MOEKIT_FLOAT_KERNELS(NAME, PARAMS, ARGS)          \
    MOEKIT_FLOAT_KERNEL_1(NAME, float, f32, PARAMS, ARGS) \
    MOEKIT_FLOAT_KERNEL_1(NAME, f16, f16, PARAMS, ARGS)   \
    MOEKIT_FLOAT_KERNEL_1(NAME, bf16, bf16, PARAMS, ARGS)

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a block of `blockDim.x` threads (a multiple of 32, at most 1024); every thread
// gets the result. `scratch` holds 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int nw = blockDim.x >> 5;
    v = lane < nw ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// Deferred content errors (see src/flag.rs; keep the codes in step with `moekit_ops::check::BadIndex`). A kernel
// that meets a bad index records the first one in `rec = [code, index, value, hi]` and goes
// on in bounds (reading zeros, skipping the write).
#define MOEKIT_BAD_PERMUTE_IDS 1
#define MOEKIT_BAD_COMBINE_ROWS 2
#define MOEKIT_BAD_GEMM_OFFSETS 3
#define MOEKIT_BAD_GEMM_COUNTS 4
#define MOEKIT_BAD_GEMM_GATHER 5
#define MOEKIT_BAD_EMBEDDING_IDS 6
#define MOEKIT_BAD_ROUTE_NONFINITE 7
#define MOEKIT_BAD_ROUTE_BIAS_NONFINITE 8

__device__ __forceinline__ void report_bad(i32* rec, int code, int index, int value, int hi) {
    if (atomicCAS(rec, 0, code) == 0) {
        rec[1] = index;
        rec[2] = value;
        rec[3] = hi;
    }
}
