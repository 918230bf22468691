// ctensor — helpers shared by the .cu files: dtype conversion, launch geometry, strided
// iteration over up to CT_KMAX_DIMS dims for up to four operands.
#ifndef CT_KERNELS_CUDA_COMMON_CUH
#define CT_KERNELS_CUDA_COMMON_CUH

#include "kernels/cpu/copy.h"
#include "kernels/cpu/strided.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/stream_internal.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// Geometry of a strided N-d iteration passed to kernels by value.
template <int NOPS>
struct ct_iter {
    int ndim;
    int64_t shape[CT_KMAX_DIMS];
    int64_t strides[NOPS][CT_KMAX_DIMS];
};

// Element offsets of each operand at linear index i (row-major over shape).
template <int NOPS>
__device__ __forceinline__ void ct_iter_offsets(const ct_iter<NOPS> &it, int64_t i, int64_t *off) {
#pragma unroll
    for (int k = 0; k < NOPS; k++)
        off[k] = 0;
    for (int d = it.ndim - 1; d >= 0; d--) {
        int64_t c = i % it.shape[d];
        i /= it.shape[d];
#pragma unroll
        for (int k = 0; k < NOPS; k++)
            off[k] += c * it.strides[k][d];
    }
}

// Build an iteration from host arrays, coalescing dims. Returns the element count.
template <int NOPS>
static int64_t ct_iter_make(ct_iter<NOPS> *it, int ndim, const int64_t *shape, const int64_t *const *strides) {
    int64_t s[NOPS][CT_KMAX_DIMS];
    int64_t *sp[NOPS];
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        it->shape[d] = shape[d];
        n *= shape[d];
    }
    for (int k = 0; k < NOPS; k++) {
        for (int d = 0; d < ndim; d++)
            s[k][d] = strides[k][d];
        sp[k] = s[k];
    }
    it->ndim = ct_coalesce(ndim, it->shape, NOPS, sp);
    for (int k = 0; k < NOPS; k++)
        for (int d = 0; d < it->ndim; d++)
            it->strides[k][d] = s[k][d];
    return n;
}

// Conversions with the CPU's rules (RNE, saturating integers, NaN -> 0). NaNs are built
// bit by bit as x86 and kernels/cpu/half.h build them (sign and payload kept, quiet bit
// set): the GPU's own cvt instructions return a canonical NaN instead.

// float <-> the half types, exactly as kernels/cpu/half.h converts them.
__device__ __forceinline__ float ct_half_to_float(__half x) {
    unsigned short h = __half_as_ushort(x);
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu))
        return __uint_as_float(((uint32_t)(h & 0x8000u) << 16) | 0x7fc00000u | ((uint32_t)(h & 0x3ffu) << 13));
    return __half2float(x);
}
__device__ __forceinline__ float ct_bf16_to_float(__nv_bfloat16 x) {
    unsigned short b = __bfloat16_as_ushort(x);
    if ((b & 0x7f80u) == 0x7f80u && (b & 0x7fu))
        return __uint_as_float(((uint32_t)b << 16) | 0x400000u);
    return __bfloat162float(x);
}
__device__ __forceinline__ __half ct_float_to_half(float x) {
    if (x != x) {
        uint32_t f = __float_as_uint(x);
        return __ushort_as_half((unsigned short)(((f >> 16) & 0x8000u) | 0x7e00u | ((f >> 13) & 0x3ffu)));
    }
    return __float2half_rn(x);
}
__device__ __forceinline__ __nv_bfloat16 ct_float_to_bf16(float x) {
    return x != x ? __ushort_as_bfloat16((unsigned short)((__float_as_uint(x) >> 16) | 0x40u)) : __float2bfloat16_rn(x);
}

// Through double. Half types widen exactly through float; narrowing from double rounds
// once (__double2half), a NaN goes through float for its bits.
template <typename T> __device__ __forceinline__ double ct_to_double(T x) { return (double)x; }
template <> __device__ __forceinline__ double ct_to_double<float>(float x) {
    if (x != x) { // x86 keeps sign and payload, shifted into the double's mantissa
        uint32_t b = __float_as_uint(x);
        return __longlong_as_double((long long)(((uint64_t)(b & 0x80000000u) << 32) | 0x7ff8000000000000ull |
                                                ((uint64_t)(b & 0x003fffffu) << 29)));
    }
    return (double)x;
}
template <> __device__ __forceinline__ double ct_to_double<__half>(__half x) {
    return ct_to_double<float>(ct_half_to_float(x));
}
template <> __device__ __forceinline__ double ct_to_double<__nv_bfloat16>(__nv_bfloat16 x) {
    return ct_to_double<float>(ct_bf16_to_float(x));
}
template <typename T> __device__ __forceinline__ T ct_from_double(double v) { return (T)v; }
template <> __device__ __forceinline__ float ct_from_double<float>(double v) {
    if (v != v) { // sign, quiet bit and the payload's top bits, as x86 keeps them
        uint64_t d = (uint64_t)__double_as_longlong(v);
        return __uint_as_float((uint32_t)((d >> 32) & 0x80000000u) | 0x7fc00000u | (uint32_t)((d >> 29) & 0x3fffffu));
    }
    return (float)v;
}
template <> __device__ __forceinline__ __half ct_from_double<__half>(double v) {
    return v != v ? ct_float_to_half(ct_from_double<float>(v)) : __double2half(v);
}
template <> __device__ __forceinline__ __nv_bfloat16 ct_from_double<__nv_bfloat16>(double v) {
    return v != v ? ct_float_to_bf16(ct_from_double<float>(v)) : __double2bfloat16(v);
}
template <> __device__ __forceinline__ int32_t ct_from_double<int32_t>(double v) { return ct_saturate_i32(v); }
template <> __device__ __forceinline__ uint8_t ct_from_double<uint8_t>(double v) { return ct_saturate_u8(v); }

// Conversion between two element types with the CPU's results: through double, except
// where one rounding from float gives the same bits faster (float <-> half types).
template <typename D, typename S> __device__ __forceinline__ D ct_convert(S x) {
    return ct_from_double<D>(ct_to_double<S>(x));
}
template <> __device__ __forceinline__ __nv_bfloat16 ct_convert<__nv_bfloat16, float>(float x) {
    return ct_float_to_bf16(x);
}
template <> __device__ __forceinline__ __half ct_convert<__half, float>(float x) { return ct_float_to_half(x); }
template <> __device__ __forceinline__ float ct_convert<float, __half>(__half x) { return ct_half_to_float(x); }
template <> __device__ __forceinline__ float ct_convert<float, __nv_bfloat16>(__nv_bfloat16 x) {
    return ct_bf16_to_float(x);
}

// The compute type of kernels that work in float: floating values widen to float (F32
// accumulation for the half types), integers to double (exact); results narrow back with
// round-to-nearest-even, like the CPU's conversions. (ct_widen is host code too, for the
// host-side tests of kernels/cuda/reduce_plan.cuh.)
CT_HOST_DEVICE float ct_widen(float x) { return x; }
CT_HOST_DEVICE float ct_widen(__half x) { return __half2float(x); }
CT_HOST_DEVICE float ct_widen(__nv_bfloat16 x) { return __bfloat162float(x); }
CT_HOST_DEVICE double ct_widen(int32_t x) { return x; }
CT_HOST_DEVICE double ct_widen(uint8_t x) { return x; }
template <typename T> __device__ __forceinline__ T ct_narrow(float x);
template <> __device__ __forceinline__ float ct_narrow<float>(float x) { return x; }
template <> __device__ __forceinline__ __half ct_narrow<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 ct_narrow<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// ---- packs: N elements moved as one 2-, 4-, 8- or 16-byte access -----------------------
template <int Bytes> struct raw_type;
template <> struct raw_type<16> { typedef uint4 type; };
template <> struct raw_type<8> { typedef uint2 type; };
template <> struct raw_type<4> { typedef uint32_t type; };
template <> struct raw_type<2> { typedef uint16_t type; };

// Pack v of N elements at p (p aligned to N * sizeof(T)).
template <typename T, int N> __device__ __forceinline__ void load_pack(const T *p, int64_t v, T (&x)[N]) {
    typedef typename raw_type<sizeof(T) * N>::type R;
    R raw = reinterpret_cast<const R *>(p)[v];
    memcpy(x, &raw, sizeof raw);
}
template <typename T, int N> __device__ __forceinline__ void store_pack(T *p, int64_t v, const T (&x)[N]) {
    typedef typename raw_type<sizeof(T) * N>::type R;
    R raw;
    memcpy(&raw, x, sizeof raw);
    reinterpret_cast<R *>(p)[v] = raw;
}

// VEC elements as one value, loaded or stored with one VEC * sizeof(T)-byte access.
template <typename T, int VEC> struct alignas(sizeof(T) * VEC) ct_pack {
    T v[VEC];
};

static inline int64_t ct_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The least power of two >= n, at most cap (itself a power of two).
static inline int ct_pow2_at_least(int64_t n, int cap) {
    int p = 1;
    while (p < cap && p < n)
        p *= 2;
    return p;
}

// Launch geometry for a grid-stride loop over n elements.
static inline unsigned ct_grid_for(int64_t n, int threads) {
    int64_t blocks = (n + threads - 1) / threads;
    const int64_t max_blocks = 65535LL * 32;
    return (unsigned)(blocks < 1 ? 1 : (blocks > max_blocks ? max_blocks : blocks));
}

// A launcher's stream. Ops pass ct__stream_for(t), which is NULL only when it failed and
// recorded why: then nothing is launched (never on the legacy stream 0 instead) and the
// launcher returns that error. CT_LAUNCH_STREAM(s, stream) declares `cudaStream_t s`.
static inline ct_status ct__cuda_no_stream(const char *launcher) {
    ct_status st = ct_last_error();
    return st != CT_OK ? st : ct__set_error(CT_ERR_INTERNAL, "%s: called without a stream", launcher);
}
#define CT_LAUNCH_STREAM(var, stream)                                                                   \
    if (!(stream))                                                                                      \
        return ct__cuda_no_stream(__func__);                                                            \
    cudaStream_t var = (stream)->handle

// Check the launch that just happened.
#define CT_CUDA_CHECK_LAUNCH() CT_CUDA_CHECK(cudaGetLastError())

// Call F<T>(args...) with T the C++ type of a ctensor dtype.
#define CT_DISPATCH_DTYPE(dtype, T, ...)                                                                 \
    switch (dtype) {                                                                                     \
    case CT_F32: { typedef float T; __VA_ARGS__; } break;                                               \
    case CT_F64: { typedef double T; __VA_ARGS__; } break;                                              \
    case CT_F16: { typedef __half T; __VA_ARGS__; } break;                                              \
    case CT_BF16: { typedef __nv_bfloat16 T; __VA_ARGS__; } break;                                      \
    case CT_I32: { typedef int32_t T; __VA_ARGS__; } break;                                             \
    case CT_U8: { typedef uint8_t T; __VA_ARGS__; } break;                                              \
    default: break;                                                                                      \
    }

// Random kernels captured in a CUDA graph take their Philox seed and offset at replay time
// from `base` ({seed, offset} written before each replay; the captured offset is relative to
// it); outside a capture `base` is NULL and the arguments are used as they are.
__device__ __forceinline__ void ct_philox_rebase(const uint64_t *base, uint64_t *seed, uint64_t *offset) {
    if (base) {
        *seed = base[0];
        *offset += base[1];
    }
}

#endif
