/* ctensor's CUDA emulator, device side (tests/emu/README.md). Included first in every
 * kernels/cuda/*.cu file that tests/emu/emu_source.pl has rewritten into C++, it makes the
 * kernels ordinary host functions: the builtins (threadIdx, blockIdx, ...) read the emulated
 * thread's context, __syncthreads and the warp shuffles switch between the block's threads
 * (tests/emu/cuda_emu.cpp runs each thread of a block as a fiber), atomics are host atomics,
 * and a launch queues the whole grid on its stream (or is recorded by a stream capture). */
#ifndef CT_TESTS_EMU_CUDA_EMU_H
#define CT_TESTS_EMU_CUDA_EMU_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

/* ---- declarations become host code ---------------------------------------------------- */
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __noinline__
#undef __shared__
#undef __constant__
#undef __launch_bounds__
#undef __restrict__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
/* One copy per host thread (each runs its own launches); a block's threads share it. Blocks
 * run one after the other, so a block sees what the previous block left there, as a GPU's
 * blocks may see garbage. */
#define __shared__ static thread_local
#define __constant__
#define __launch_bounds__(...)
#define __restrict__ __restrict

/* ---- the emulated thread's coordinates -------------------------------------------------- */
namespace ct_emu {
struct thread_context {
    uint3 thread_idx, block_idx;
    dim3 block_dim, grid_dim;
};
/* The running emulated thread's context (the fiber scheduler sets it at every switch). */
extern thread_local thread_context *current;

void syncthreads(const char *file, int line);
/* A __shared__ variable's declaration reached (emu_source.pl adds the call): the first thread
 * of a block to reach it fills it with 0xff bytes (NaN, -1), so that a read before any write
 * gives garbage, as on a GPU, not what the previous block left. */
void shared_fresh(void *p, size_t bytes);
void syncwarp(unsigned mask);
enum shuffle_kind { SHFL_IDX, SHFL_XOR, SHFL_DOWN, SHFL_UP };
/* The 8-byte value of the lane that `kind` and `arg` name, after every lane of `mask` has
 * arrived at the same shuffle. */
uint64_t shuffle(unsigned mask, uint64_t value, shuffle_kind kind, int arg, int width);
/* A launch: checks the configuration, then queues `body` to run in every thread of the grid
 * when the stream gets to it, or records it in the stream's capture. file/line: where the
 * launch is written. */
void launch(const char *file, int line, dim3 grid, dim3 block, size_t shared, cudaStream_t stream,
            std::function<void()> body);

/* Report a misuse the emulator found (what a GPU would fault on, hang on or get wrong), then
 * abort. */
[[noreturn]] void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The floating element types of the emulated libraries' operands, read and written as double
 * (a write rounds once, to nearest even). */
enum element { ELEM_F32, ELEM_F16, ELEM_BF16 };
size_t element_size(element t);
double load_element(const void *p, element t, int64_t i);
void store_element(void *p, element t, int64_t i, double v);

template <typename F> struct launch_site {
    const char *file;
    int line;
    F kernel;
    dim3 grid, block;
    size_t shared;
    cudaStream_t stream;
    template <typename... A> void operator()(A... args) const {
        F k = kernel;
        std::tuple<A...> bound(args...);
        launch(file, line, grid, block, shared, stream, [k, bound]() { std::apply(k, bound); });
    }
};
template <typename F>
launch_site<F> launcher(const char *file, int line, F kernel, dim3 grid, dim3 block, size_t shared = 0,
                        cudaStream_t stream = 0) {
    return launch_site<F>{file, line, kernel, grid, block, shared, stream};
}

template <typename T> uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type over 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    return b;
}
template <typename T> T from_bits(uint64_t b) {
    T v;
    memcpy(&v, &b, sizeof v);
    return v;
}
} // namespace ct_emu

#undef threadIdx
#undef blockIdx
#undef blockDim
#undef gridDim
#undef warpSize
#define threadIdx (::ct_emu::current->thread_idx)
#define blockIdx (::ct_emu::current->block_idx)
#define blockDim (::ct_emu::current->block_dim)
#define gridDim (::ct_emu::current->grid_dim)
static constexpr int warpSize = 32;

/* ---- synchronization and warp functions ---------------------------------------------------- */
/* The call site goes with it: all threads of a block must wait at the same __syncthreads. */
#define __syncthreads() ::ct_emu::syncthreads(__FILE__, __LINE__)
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::ct_emu::syncwarp(mask); }
template <typename T> T __shfl_sync(unsigned mask, T v, int lane, int width = 32) {
    return ::ct_emu::from_bits<T>(::ct_emu::shuffle(mask, ::ct_emu::to_bits(v), ::ct_emu::SHFL_IDX, lane, width));
}
template <typename T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return ::ct_emu::from_bits<T>(
        ::ct_emu::shuffle(mask, ::ct_emu::to_bits(v), ::ct_emu::SHFL_XOR, lane_mask, width));
}
template <typename T> T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return ::ct_emu::from_bits<T>(
        ::ct_emu::shuffle(mask, ::ct_emu::to_bits(v), ::ct_emu::SHFL_DOWN, (int)delta, width));
}
template <typename T> T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return ::ct_emu::from_bits<T>(::ct_emu::shuffle(mask, ::ct_emu::to_bits(v), ::ct_emu::SHFL_UP, (int)delta, width));
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/* ---- atomics: host atomics (kernels on other host threads' streams may share memory) ------- */
template <typename T> T ct_emu_atomic_add_float(T *p, T v) {
    typedef typename std::conditional<sizeof(T) == 8, uint64_t, uint32_t>::type U;
    U old_bits = __atomic_load_n((U *)p, __ATOMIC_RELAXED), new_bits;
    T old;
    do {
        memcpy(&old, &old_bits, sizeof old);
        T sum = old + v;
        memcpy(&new_bits, &sum, sizeof sum);
    } while (!__atomic_compare_exchange_n((U *)p, &old_bits, new_bits, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    return old;
}
inline float atomicAdd(float *p, float v) { return ct_emu_atomic_add_float(p, v); }
inline double atomicAdd(double *p, double v) { return ct_emu_atomic_add_float(p, v); }
inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
/* The half types: the exact sum (in double) rounded once to nearest even, as the GPU adds. */
template <typename H> H ct_emu_atomic_add_half(H *p, H v, H (*round)(double), float (*widen)(H)) {
    uint16_t old_bits = __atomic_load_n((uint16_t *)p, __ATOMIC_RELAXED), new_bits;
    H old;
    do {
        memcpy(&old, &old_bits, 2);
        H sum = round((double)widen(old) + (double)widen(v));
        memcpy(&new_bits, &sum, 2);
    } while (!__atomic_compare_exchange_n((uint16_t *)p, &old_bits, new_bits, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    return old;
}
inline __half ct_emu_half_round(double x) { return __double2half(x); }
inline float ct_emu_half_widen(__half x) { return __half2float(x); }
inline __nv_bfloat16 ct_emu_bf16_round(double x) { return __double2bfloat16(x); }
inline float ct_emu_bf16_widen(__nv_bfloat16 x) { return __bfloat162float(x); }
inline __half atomicAdd(__half *p, __half v) {
    return ct_emu_atomic_add_half(p, v, ct_emu_half_round, ct_emu_half_widen);
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16 *p, __nv_bfloat16 v) {
    return ct_emu_atomic_add_half(p, v, ct_emu_bf16_round, ct_emu_bf16_widen);
}
template <typename T> T ct_emu_atomic_cas(T *p, T compare, T value) {
    __atomic_compare_exchange_n(p, &compare, value, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare; /* the old value, whether or not it was swapped */
}
inline int atomicCAS(int *p, int c, int v) { return ct_emu_atomic_cas(p, c, v); }
inline unsigned atomicCAS(unsigned *p, unsigned c, unsigned v) { return ct_emu_atomic_cas(p, c, v); }
inline unsigned long long atomicCAS(unsigned long long *p, unsigned long long c, unsigned long long v) {
    return ct_emu_atomic_cas(p, c, v);
}
inline unsigned short atomicCAS(unsigned short *p, unsigned short c, unsigned short v) {
    return ct_emu_atomic_cas(p, c, v);
}
inline int atomicMax(int *p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline int atomicExch(int *p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicExch(unsigned *p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }

/* ---- arithmetic intrinsics: the correctly rounded host operations ------------------------- */
inline float __uint_as_float(unsigned x) { return ::ct_emu::from_bits<float>(x); }
inline unsigned __float_as_uint(float x) { return (unsigned)::ct_emu::to_bits(x); }
inline int __float_as_int(float x) { return (int)::ct_emu::to_bits(x); }
inline float __int_as_float(int x) { return ::ct_emu::from_bits<float>((uint32_t)x); }
inline double __longlong_as_double(long long x) { return ::ct_emu::from_bits<double>((uint64_t)x); }
inline long long __double_as_longlong(double x) { return (long long)::ct_emu::to_bits(x); }
/* The rounded operations: each product or sum is rounded on its own and never fused into a
 * neighbouring operation, also where the kernels are built with FMA contraction as nvcc builds
 * them (CT_EMU_FMA): the value passes through a volatile, which the compiler cannot fuse. */
template <typename T> inline T ct_emu_rounded(T v) {
    volatile T r = v;
    return r;
}
inline float __fmul_rn(float a, float b) { return ct_emu_rounded(a * b); }
inline float __fadd_rn(float a, float b) { return ct_emu_rounded(a + b); }
inline double __dmul_rn(double a, double b) { return ct_emu_rounded(a * b); }
inline double __dadd_rn(double a, double b) { return ct_emu_rounded(a + b); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
/* The approximate intrinsics as the GPU computes them (PTX: ex2.approx.ftz and lg2.approx.ftz
 * after or before a scaling rounded to float, a reciprocal for __fdividef): what dominates
 * their error for large |x|, the rounded scaling, is reproduced, and subnormal arguments and
 * results are flushed to zero; the hardware's last ulp or two are not. */
inline float ct_emu_ftz(float x) { return std::fabs(x) < 1.17549435e-38f ? std::copysign(0.0f, x) : x; }
inline float __expf(float x) { return ct_emu_ftz(exp2f(ct_emu_rounded(ct_emu_ftz(x) * 1.44269502f))); }
inline float __logf(float x) { return ct_emu_rounded(log2f(ct_emu_ftz(x))) * 0.693147182f; }
/* For 2^126 < |b| < 2^128 the GPU's __fdividef gives 0 (NaN for an infinite a). */
inline float __fdividef(float a, float b) {
    float m = std::fabs(b);
    if (m > 8.50705917e37f && m < INFINITY)
        return std::isinf(a) ? NAN : std::copysign(0.0f, a) * std::copysign(1.0f, b);
    return a * ct_emu_rounded(1.0f / b);
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
template <typename T> inline T __ldg(const T *p) { return *p; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }

/* The device overloads of min and max that CUDA code calls unqualified. */
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

/* ---- the one CUB call (kernels/cuda/random.cu): a stable sort of (key, value) pairs by the
 * key's bits [begin_bit, end_bit), as cub::DeviceRadixSort::SortPairs, queued on the stream
 * as a host sort (or recorded by a capture). Temporary storage: CUB's contract (a size query with NULL
 * storage, then the call with at least that much), checked. */
namespace ct_emu {
/* Queue `work` on the stream (it runs when the stream gets to it), or record it in the
 * stream's capture. */
void run_on_stream(cudaStream_t stream, std::function<void()> work);
/* Is [p, p + bytes) device memory (or page-locked host memory, which a GPU can address)? A
 * range that starts in an allocation and runs past its end is fatal. */
bool device_accessible(const void *p, size_t bytes);
/* Would a call that CUDA forbids while a capture is underway (allocation, device-wide
 * synchronization) break one? If so the captures concerned are invalidated and the caller
 * must fail. */
bool capture_forbids_unsafe_call();
}
namespace cub {
struct DeviceRadixSort {
    template <typename K, typename V>
    static cudaError_t SortPairs(void *temp, size_t &temp_bytes, const K *keys_in, K *keys_out, const V *values_in,
                                 V *values_out, int64_t n, int begin_bit = 0, int end_bit = sizeof(K) * 8,
                                 cudaStream_t stream = 0) {
        const size_t need = (size_t)(n > 0 ? n : 1) * sizeof(int64_t) + 256;
        if (!temp) {
            temp_bytes = need;
            return cudaSuccess;
        }
        if (temp_bytes < need || n < 0 || begin_bit < 0 || end_bit > (int)sizeof(K) * 8 || begin_bit >= end_bit)
            return cudaErrorInvalidValue;
        run_on_stream_sort(keys_in, keys_out, values_in, values_out, n, begin_bit, end_bit, stream);
        return cudaSuccess;
    }
    template <typename K, typename V>
    static void run_on_stream_sort(const K *keys_in, K *keys_out, const V *values_in, V *values_out, int64_t n,
                                   int begin_bit, int end_bit, cudaStream_t stream) {
        ::ct_emu::run_on_stream(stream, [=]() {
            const int width = end_bit - begin_bit;
            const uint64_t mask = width >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << width) - 1);
            std::vector<int64_t> order((size_t)n);
            for (int64_t i = 0; i < n; i++)
                order[(size_t)i] = i;
            std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
                return (((uint64_t)keys_in[a] >> begin_bit) & mask) < (((uint64_t)keys_in[b] >> begin_bit) & mask);
            });
            std::vector<K> k((size_t)n);
            std::vector<V> v((size_t)n);
            for (int64_t i = 0; i < n; i++) {
                k[(size_t)i] = keys_in[order[(size_t)i]];
                v[(size_t)i] = values_in[order[(size_t)i]];
            }
            std::copy(k.begin(), k.end(), keys_out);
            std::copy(v.begin(), v.end(), values_out);
        });
    }
};
} // namespace cub

#endif
