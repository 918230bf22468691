// ctensor — elementwise kernels on the GPU: the ops of kernels/cpu/elementwise.h (binary,
// unary, the fused backward of unary ops) and kernels/cpu/ternary.h (where, the fused
// backward of maximum/minimum/pow), with the CPU's formulas, over broadcast and strided
// operands. One file so that the four share the iteration machinery below.
//
// F32, F16 and BF16 compute in float and round once to the output (RNE); I32 and U8 compute
// in double and store truncated and saturated, as the CPU does. Comparisons write U8.
//
// Each op is a template parameter, so every kernel is a straight loop. After coalescing
// the iteration space, one of two paths runs:
//  - contiguous (floating binary and unary ops): one dim, the output and every input with
//    stride 1 (a binary input may instead be a broadcast scalar, stride 0), 16-byte aligned.
//    Each thread step moves 16 bytes per input (float4, eight halves) through 128-bit loads
//    and stores; the last n % V elements take a scalar tail. This is the plain streaming
//    kernel that the copy-bandwidth target of issue 3 is measured on.
//  - strided: everything else (broadcast rows, transposes, steps, misaligned views,
//    integers), one element per thread step, offsets from the linear index. The index
//    arithmetic is 32-bit (a 64-bit division is a long software sequence, a 32-bit one a
//    few instructions): iterations over more than 2^31 - 1 elements are launched in pieces.
// Both are grid-stride loops over 256-thread blocks. Written without a GPU at hand: neither
// path has been timed yet, so no measurement backs these choices so far.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

#include <math.h>
#include <string.h>
#include <type_traits>

namespace {

constexpr int kThreads = 256;

// ---- dtypes ---------------------------------------------------------------------------

// clang-format off
template <typename T> struct compute_type { typedef float type; };
template <> struct compute_type<int32_t> { typedef double type; };
template <> struct compute_type<uint8_t> { typedef double type; };

template <typename O, typename C> __device__ __forceinline__ O store_c(C v);
template <> __device__ __forceinline__ float store_c<float, float>(float v) { return v; }
template <> __device__ __forceinline__ __half store_c<__half, float>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 store_c<__nv_bfloat16, float>(float v) {
    return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ int32_t store_c<int32_t, double>(double v) { return ct_from_double<int32_t>(v); }
template <> __device__ __forceinline__ uint8_t store_c<uint8_t, double>(double v) { return ct_from_double<uint8_t>(v); }
// Comparisons of floating inputs: 0 or 1.
template <> __device__ __forceinline__ uint8_t store_c<uint8_t, float>(float v) { return ct_from_double<uint8_t>(v); }

// ---- math in the compute type -----------------------------------------------------------

#define CT_MATH_PAIR(name)                                                                                   \
    __device__ __forceinline__ float m_##name(float x) { return name##f(x); }                               \
    __device__ __forceinline__ double m_##name(double x) { return name(x); }
CT_MATH_PAIR(exp)
CT_MATH_PAIR(expm1)
CT_MATH_PAIR(log)
CT_MATH_PAIR(log1p)
CT_MATH_PAIR(sqrt)
CT_MATH_PAIR(erf)
CT_MATH_PAIR(tanh)
CT_MATH_PAIR(fabs)
#undef CT_MATH_PAIR

// A product the compiler may not fuse into a following add: a + p0 * b rounds twice, as
// on the CPU (this matters for integers, which truncate the result).
__device__ __forceinline__ float mul_rn(float x, float y) { return __fmul_rn(x, y); }
__device__ __forceinline__ double mul_rn(double x, double y) { return __dmul_rn(x, y); }

__device__ __forceinline__ float m_pow(float x, float y) { return powf(x, y); }
// clang-format on
// Double is the compute type of the integer dtypes only, whose results are truncated: an
// ulp below an exact integer would lose one. For an integral exponent from 0 to 2^53 the
// power is taken by squaring, exact wherever the result is below 2^53 and saturating the
// same way above, like the CPU's correctly rounded pow; other exponents use pow.
__device__ __forceinline__ double m_pow(double x, double y) {
    if (!(y >= 0.0 && y <= 9007199254740992.0 && y == floor(y)))
        return pow(x, y);
    double result = 1.0;
    for (uint64_t e = (uint64_t)y; e != 0; e >>= 1) {
        if (e & 1)
            result *= x;
        x *= x;
    }
    return result;
}

// ---- the ops: kernels/cpu/elementwise.c, DEFINE_HELPERS and the row switches ------------

template <typename C> __device__ __forceinline__ C sigmoid(C x) {
    return (C)1 / ((C)1 + m_exp(-x));
}

template <typename C> __device__ __forceinline__ C clamp(C x, C lo, C hi) {
    C y = x < lo ? lo : x; // NaN stays NaN; hi wins when lo > hi
    return y > hi ? hi : y;
}

constexpr bool is_comparison(int op) {
    return op >= CT_BIN_EQ && op <= CT_BIN_GE;
}
// Integers have no gradient: the fused backward ops and the activations other than relu
// are defined on the floating dtypes only (the ops never ask for them on integers).
constexpr bool binary_on_integers(int op) {
    return op < CT_BIN_ABS_BW;
}
constexpr bool unary_on_integers(int op) {
    return op <= CT_UN_RELU;
}

// out = OP(x, y). For the *_BW ops x is the incoming gradient and y the saved tensor.
template <int OP, typename C> __device__ __forceinline__ C binary_op(C x, C y, C p0, C p1) {
    static_assert(0 <= OP && OP < CT_BIN_NUM_OPS, "unknown binary op");
    switch (OP) {
    case CT_BIN_ADD: return x + y;
    case CT_BIN_SUB: return x - y;
    case CT_BIN_MUL: return x * y;
    case CT_BIN_DIV: return x / y;
    case CT_BIN_POW: return m_pow(x, y);
    case CT_BIN_MAX: return (x != x || x > y) ? x : y; // NaN propagates
    case CT_BIN_MIN: return (x != x || x < y) ? x : y;
    case CT_BIN_ADD_SCALED: return x + mul_rn(p0, y);
    case CT_BIN_EQ: return (C)(x == y);
    case CT_BIN_NE: return (C)(x != y);
    case CT_BIN_LT: return (C)(x < y);
    case CT_BIN_LE: return (C)(x <= y);
    case CT_BIN_GT: return (C)(x > y);
    case CT_BIN_GE: return (C)(x >= y);
    case CT_BIN_ABS_BW: return y > 0 ? x : (y < 0 ? -x : (C)0);
    case CT_BIN_CLAMP_BW: return (y >= p0 && y <= p1) ? x : (C)0;
    case CT_BIN_RELU_BW: return y <= 0 ? (C)0 : x;
    case CT_BIN_LEAKY_RELU_BW: {
        C pos = y > 0 ? x : (C)0, neg = y > 0 ? (C)0 : x;
        return pos + p0 * neg;
    }
    case CT_BIN_ELU_BW: return y > 0 ? x : x * p0 * m_exp(y);
    case CT_BIN_GELU_ERF_BW: {
        C cdf = (C)0.5 * ((C)1 + m_erf(y * (C)M_SQRT1_2));
        C pdf = (C)(0.5 * M_2_SQRTPI * M_SQRT1_2) * m_exp((C)-0.5 * y * y);
        return x * (cdf + y * pdf);
    }
    case CT_BIN_GELU_TANH_BW: {
        C y_sq = y * y;
        C inner = (C)(M_SQRT2 * M_2_SQRTPI * 0.5) * (y + (C)0.044715 * y_sq * y);
        C tanh_inner = m_tanh(inner);
        C left_derivative = (C)0.5 * ((C)1 + tanh_inner);
        C right_derivative = (C)0.5 * y * ((C)1 - tanh_inner * tanh_inner) * (C)(M_SQRT2 * M_2_SQRTPI * 0.5) *
                             ((C)1 + (C)(3 * 0.044715) * y_sq);
        return x * (left_derivative + right_derivative);
    }
    case CT_BIN_SILU_BW: {
        C s = sigmoid(y);
        return x * s * ((C)1 + y * ((C)1 - s));
    }
    case CT_BIN_SIGMOID_BW: return x * y * ((C)1 - y); // y is the output
    case CT_BIN_TANH_BW: return x * ((C)1 - y * y);    // y is the output
    case CT_BIN_SOFTPLUS_BW: {
        C z = y * p0;
        return z > p1 ? x : x * sigmoid(z);
    }
    }
    return x; // not reached: the static_assert and the cases above cover every op
}

template <int OP, typename C> __device__ __forceinline__ C unary_op(C x, C p0, C p1) {
    static_assert(0 <= OP && OP < CT_UN_NUM_OPS, "unknown unary op");
    switch (OP) {
    case CT_UN_NEG: return -x;
    case CT_UN_EXP: return m_exp(x);
    case CT_UN_LOG: return m_log(x);
    case CT_UN_SQRT: return m_sqrt(x);
    case CT_UN_RSQRT: return (C)1 / m_sqrt(x); // not rsqrtf: 2 ulp, and the CPU divides
    case CT_UN_ABS: return m_fabs(x);
    case CT_UN_ADD_SCALAR: return x + p0;
    case CT_UN_MUL_SCALAR: return x * p0;
    case CT_UN_POW_SCALAR: return p0 == (C)2 ? x * x : m_pow(x, p0);
    case CT_UN_CLAMP: return clamp(x, p0, p1);
    case CT_UN_RELU: return x <= 0 ? (C)0 : x; // NaN propagates
    case CT_UN_LEAKY_RELU: {
        C pos = x <= 0 ? (C)0 : x, neg = x >= 0 ? (C)0 : x;
        return pos + p0 * neg;
    }
    case CT_UN_ELU: return x > 0 ? x : p0 * m_expm1(x);
    case CT_UN_GELU_ERF: return (C)0.5 * x * ((C)1 + m_erf(x * (C)M_SQRT1_2));
    case CT_UN_GELU_TANH: {
        C inner = (C)(M_SQRT2 * M_2_SQRTPI * 0.5) * (x + (C)0.044715 * x * x * x);
        return (C)0.5 * x * ((C)1 + m_tanh(inner));
    }
    case CT_UN_SILU: return x / ((C)1 + m_exp(-x));
    case CT_UN_SIGMOID: return sigmoid(x);
    case CT_UN_TANH: return m_tanh(x);
    case CT_UN_SOFTPLUS: { // max(z, 0) + log1p(exp(-|z|)), z = beta x; linear above the threshold
        C z = x * p0;
        if (z > p1)
            return x;
        return ((z > 0 ? z : (C)0) + m_log1p(m_exp(-m_fabs(z)))) / p0;
    }
    }
    return x; // not reached: the static_assert and the cases above cover every op
}

// ---- 16-byte packs --------------------------------------------------------------------

// raw_type, load_pack and store_pack are in common.cuh.
template <typename T> constexpr int kPack = 16 / (int)sizeof(T); // elements per 16 bytes

// Operand k of a one-dim iteration: stride 1 with `align`-byte aligned data (a vector
// access at every pack), or stride 0 (a broadcast scalar).
template <int NOPS> static bool is_flat(const ct_iter<NOPS> &it, int k, const void *data, size_t align) {
    return it.ndim == 1 && it.strides[k][0] == 1 && (uintptr_t)data % align == 0;
}
template <int NOPS> static bool is_scalar(const ct_iter<NOPS> &it, int k) {
    return it.ndim == 1 && it.strides[k][0] == 0;
}

// ---- strided iteration ---------------------------------------------------------------

// Offsets (in elements) of each operand at linear index i, row-major over it.shape
// (it.ndim >= 1). The index arithmetic is 32-bit; offsets are 64-bit. The outermost dim
// needs no division.
template <int NOPS>
__device__ __forceinline__ void strided_offsets(const ct_iter<NOPS> &it, uint32_t i, int64_t (&off)[NOPS]) {
#pragma unroll
    for (int k = 0; k < NOPS; k++)
        off[k] = 0;
    for (int d = it.ndim - 1; d > 0; d--) {
        const uint32_t size = (uint32_t)it.shape[d];
        const uint32_t q = i / size;
        const int64_t c = i - q * size;
        i = q;
#pragma unroll
        for (int k = 0; k < NOPS; k++)
            off[k] += c * it.strides[k][d];
    }
#pragma unroll
    for (int k = 0; k < NOPS; k++)
        off[k] += (int64_t)i * it.strides[k][0];
}

// Grid-stride loop over [0, n) for n <= INT32_MAX: i + step never wraps (step < 2^30).
#define CT_FOR_EACH_INDEX(i, n)                                                                                        \
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

// Calls launch(piece, count, data) on pieces of `it` (n elements) of at most INT32_MAX
// elements each, halving the outermost dim longer than one until they fit. A piece keeps
// the strides; data[k], operand k's first element, moves by esize[k] bytes per element.
template <int NOPS, typename Launch>
static ct_status in_32bit_pieces(const ct_iter<NOPS> &it, int64_t n, char *const (&data)[NOPS],
                                 const size_t (&esize)[NOPS], const Launch &launch) {
    if (n <= INT32_MAX)
        return launch(it, (uint32_t)n, data);
    int d = 0;
    while (it.shape[d] == 1)
        d++;
    ct_iter<NOPS> first = it, second = it;
    first.shape[d] = it.shape[d] / 2;
    second.shape[d] = it.shape[d] - first.shape[d];
    char *second_data[NOPS];
    for (int k = 0; k < NOPS; k++)
        second_data[k] = data[k] + first.shape[d] * it.strides[k][d] * (int64_t)esize[k];
    const int64_t inner = n / it.shape[d];
    ct_status st = in_32bit_pieces(first, inner * first.shape[d], data, esize, launch);
    return st != CT_OK ? st : in_32bit_pieces(second, inner * second.shape[d], second_data, esize, launch);
}

// An iteration space of one element (ct_iter_make coalesced it to 0 dims) as one dim.
template <int NOPS> static void at_least_one_dim(ct_iter<NOPS> *it) {
    if (it->ndim > 0)
        return;
    it->ndim = 1;
    it->shape[0] = 1;
    for (int k = 0; k < NOPS; k++)
        it->strides[k][0] = 1;
}

// ---- binary -----------------------------------------------------------------------------

// out[i] = OP(a[i], b[i]) over n contiguous elements; an input flagged scalar is a[0] for all i.
template <int OP, typename T, typename O>
__global__ void __launch_bounds__(kThreads)
    binary_contiguous(int64_t n, O *out, const T *a, bool a_scalar, const T *b, bool b_scalar,
                      typename compute_type<T>::type p0, typename compute_type<T>::type p1) {
    typedef typename compute_type<T>::type C;
    constexpr int V = kPack<T>;
    const int64_t start = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    const int64_t step = (int64_t)blockDim.x * gridDim.x;
    const int64_t packs = n / V;
    const C a0 = a_scalar ? ct_widen(a[0]) : (C)0, b0 = b_scalar ? ct_widen(b[0]) : (C)0;
    for (int64_t v = start; v < packs; v += step) {
        T xa[V], xb[V];
        O xo[V];
        if (!a_scalar)
            load_pack(a, v, xa);
        if (!b_scalar)
            load_pack(b, v, xb);
#pragma unroll
        for (int k = 0; k < V; k++)
            xo[k] = store_c<O>(binary_op<OP, C>(a_scalar ? a0 : ct_widen(xa[k]), b_scalar ? b0 : ct_widen(xb[k]), p0, p1));
        store_pack(out, v, xo);
    }
    const int64_t i = packs * V + start; // the tail: fewer than V elements, one per thread
    if (i < n)
        out[i] = store_c<O>(binary_op<OP, C>(a_scalar ? a0 : ct_widen(a[i]), b_scalar ? b0 : ct_widen(b[i]), p0, p1));
}

template <int OP, typename T, typename O>
__global__ void __launch_bounds__(kThreads)
    binary_strided(ct_iter<3> it, uint32_t n, O *out, const T *a, const T *b, typename compute_type<T>::type p0,
                   typename compute_type<T>::type p1) {
    typedef typename compute_type<T>::type C;
    CT_FOR_EACH_INDEX(i, n) {
        int64_t off[3];
        strided_offsets(it, i, off);
        out[off[0]] = store_c<O>(binary_op<OP, C>(ct_widen(a[off[1]]), ct_widen(b[off[2]]), p0, p1));
    }
}

template <int OP, typename T>
static ct_status binary_launch(const ct_iter<3> &it, int64_t n, void *out_ptr, const void *a_ptr, const void *b_ptr,
                               double p0_in, double p1_in, cudaStream_t s) {
    typedef typename compute_type<T>::type C;
    if constexpr (std::is_same_v<C, double> && !binary_on_integers(OP)) {
        return ct__set_error(CT_ERR_DTYPE, "ct_cuda_binary: op %d is defined for floating dtypes only", OP);
    } else {
        typedef std::conditional_t<is_comparison(OP), uint8_t, T> O;
        const C p0 = (C)p0_in, p1 = (C)p1_in;
        // Integers take the strided path (one dim costs it no division): a vector path would
        // unroll their double-precision math 4 or 16 times for ops that are rarely hot.
        if constexpr (std::is_same_v<C, float>) {
            const bool a_scalar = is_scalar(it, 1), b_scalar = is_scalar(it, 2);
            if (is_flat(it, 0, out_ptr, kPack<T> * sizeof(O)) && (a_scalar || is_flat(it, 1, a_ptr, 16)) &&
                (b_scalar || is_flat(it, 2, b_ptr, 16))) {
                const int64_t packs = n / kPack<T> > 0 ? n / kPack<T> : 1;
                binary_contiguous<OP, T, O><<<ct_grid_for(packs, kThreads), kThreads, 0, s>>>(
                    n, (O *)out_ptr, (const T *)a_ptr, a_scalar, (const T *)b_ptr, b_scalar, p0, p1);
                return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
            }
        }
        char *const data[3] = {(char *)out_ptr, (char *)a_ptr, (char *)b_ptr};
        const size_t esize[3] = {sizeof(O), sizeof(T), sizeof(T)};
        return in_32bit_pieces(it, n, data, esize, [&](const ct_iter<3> &piece, uint32_t count, char *const(&p)[3]) {
            binary_strided<OP, T, O><<<ct_grid_for(count, kThreads), kThreads, 0, s>>>(
                piece, count, (O *)p[0], (const T *)p[1], (const T *)p[2], p0, p1);
            return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
        });
    }
}

#define CT_BINARY_CASE(OP)                                                                                             \
    case OP: return binary_launch<OP, T>(it, n, out, a, b, p0, p1, s);

template <typename T>
static ct_status binary_dispatch(ct_binary_op op, const ct_iter<3> &it, int64_t n, void *out, const void *a,
                                 const void *b, double p0, double p1, cudaStream_t s) {
    // clang-format off
    switch (op) {
    CT_BINARY_CASE(CT_BIN_ADD)
    CT_BINARY_CASE(CT_BIN_SUB)
    CT_BINARY_CASE(CT_BIN_MUL)
    CT_BINARY_CASE(CT_BIN_DIV)
    CT_BINARY_CASE(CT_BIN_POW)
    CT_BINARY_CASE(CT_BIN_MAX)
    CT_BINARY_CASE(CT_BIN_MIN)
    CT_BINARY_CASE(CT_BIN_ADD_SCALED)
    CT_BINARY_CASE(CT_BIN_EQ)
    CT_BINARY_CASE(CT_BIN_NE)
    CT_BINARY_CASE(CT_BIN_LT)
    CT_BINARY_CASE(CT_BIN_LE)
    CT_BINARY_CASE(CT_BIN_GT)
    CT_BINARY_CASE(CT_BIN_GE)
    CT_BINARY_CASE(CT_BIN_ABS_BW)
    CT_BINARY_CASE(CT_BIN_CLAMP_BW)
    CT_BINARY_CASE(CT_BIN_RELU_BW)
    CT_BINARY_CASE(CT_BIN_LEAKY_RELU_BW)
    CT_BINARY_CASE(CT_BIN_ELU_BW)
    CT_BINARY_CASE(CT_BIN_GELU_ERF_BW)
    CT_BINARY_CASE(CT_BIN_GELU_TANH_BW)
    CT_BINARY_CASE(CT_BIN_SILU_BW)
    CT_BINARY_CASE(CT_BIN_SIGMOID_BW)
    CT_BINARY_CASE(CT_BIN_TANH_BW)
    CT_BINARY_CASE(CT_BIN_SOFTPLUS_BW)
    default: return ct__set_error(CT_ERR_INTERNAL, "ct_cuda_binary: unknown op %d", (int)op);
    }
    // clang-format on
}
#undef CT_BINARY_CASE

// ---- unary ------------------------------------------------------------------------------

template <int OP, typename T>
__global__ void __launch_bounds__(kThreads)
    unary_contiguous(int64_t n, T *out, const T *a, typename compute_type<T>::type p0,
                     typename compute_type<T>::type p1) {
    typedef typename compute_type<T>::type C;
    constexpr int V = kPack<T>;
    const int64_t start = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    const int64_t step = (int64_t)blockDim.x * gridDim.x;
    const int64_t packs = n / V;
    for (int64_t v = start; v < packs; v += step) {
        T x[V];
        load_pack(a, v, x);
#pragma unroll
        for (int k = 0; k < V; k++)
            x[k] = store_c<T>(unary_op<OP, C>(ct_widen(x[k]), p0, p1));
        store_pack(out, v, x);
    }
    const int64_t i = packs * V + start; // the tail: fewer than V elements, one per thread
    if (i < n)
        out[i] = store_c<T>(unary_op<OP, C>(ct_widen(a[i]), p0, p1));
}

template <int OP, typename T>
__global__ void __launch_bounds__(kThreads)
    unary_strided(ct_iter<2> it, uint32_t n, T *out, const T *a, typename compute_type<T>::type p0,
                  typename compute_type<T>::type p1) {
    typedef typename compute_type<T>::type C;
    CT_FOR_EACH_INDEX(i, n) {
        int64_t off[2];
        strided_offsets(it, i, off);
        out[off[0]] = store_c<T>(unary_op<OP, C>(ct_widen(a[off[1]]), p0, p1));
    }
}

template <int OP, typename T>
static ct_status unary_launch(const ct_iter<2> &it, int64_t n, void *out_ptr, const void *a_ptr, double p0_in,
                              double p1_in, cudaStream_t s) {
    typedef typename compute_type<T>::type C;
    if constexpr (std::is_same_v<C, double> && !unary_on_integers(OP)) {
        return ct__set_error(CT_ERR_DTYPE, "ct_cuda_unary: op %d is defined for floating dtypes only", OP);
    } else {
        const C p0 = (C)p0_in, p1 = (C)p1_in;
        if constexpr (std::is_same_v<C, float>) { // integers: strided, as in binary_launch
            if (is_flat(it, 0, out_ptr, 16) && is_flat(it, 1, a_ptr, 16)) {
                const int64_t packs = n / kPack<T> > 0 ? n / kPack<T> : 1;
                unary_contiguous<OP, T>
                    <<<ct_grid_for(packs, kThreads), kThreads, 0, s>>>(n, (T *)out_ptr, (const T *)a_ptr, p0, p1);
                return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
            }
        }
        char *const data[2] = {(char *)out_ptr, (char *)a_ptr};
        const size_t esize[2] = {sizeof(T), sizeof(T)};
        return in_32bit_pieces(it, n, data, esize, [&](const ct_iter<2> &piece, uint32_t count, char *const(&p)[2]) {
            unary_strided<OP, T>
                <<<ct_grid_for(count, kThreads), kThreads, 0, s>>>(piece, count, (T *)p[0], (const T *)p[1], p0, p1);
            return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
        });
    }
}

#define CT_UNARY_CASE(OP)                                                                                              \
    case OP: return unary_launch<OP, T>(it, n, out, a, p0, p1, s);

template <typename T>
static ct_status unary_dispatch(ct_unary_op op, const ct_iter<2> &it, int64_t n, void *out, const void *a, double p0,
                                double p1, cudaStream_t s) {
    // clang-format off
    switch (op) {
    CT_UNARY_CASE(CT_UN_NEG)
    CT_UNARY_CASE(CT_UN_EXP)
    CT_UNARY_CASE(CT_UN_LOG)
    CT_UNARY_CASE(CT_UN_SQRT)
    CT_UNARY_CASE(CT_UN_RSQRT)
    CT_UNARY_CASE(CT_UN_ABS)
    CT_UNARY_CASE(CT_UN_ADD_SCALAR)
    CT_UNARY_CASE(CT_UN_MUL_SCALAR)
    CT_UNARY_CASE(CT_UN_POW_SCALAR)
    CT_UNARY_CASE(CT_UN_CLAMP)
    CT_UNARY_CASE(CT_UN_RELU)
    CT_UNARY_CASE(CT_UN_LEAKY_RELU)
    CT_UNARY_CASE(CT_UN_ELU)
    CT_UNARY_CASE(CT_UN_GELU_ERF)
    CT_UNARY_CASE(CT_UN_GELU_TANH)
    CT_UNARY_CASE(CT_UN_SILU)
    CT_UNARY_CASE(CT_UN_SIGMOID)
    CT_UNARY_CASE(CT_UN_TANH)
    CT_UNARY_CASE(CT_UN_SOFTPLUS)
    default: return ct__set_error(CT_ERR_INTERNAL, "ct_cuda_unary: unknown op %d", (int)op);
    }
    // clang-format on
}
#undef CT_UNARY_CASE

// ---- where ------------------------------------------------------------------------------

// out = cond ? a : b, moving elements as unsigned integers of their size.
template <typename U>
__global__ void __launch_bounds__(kThreads)
    where_strided(ct_iter<4> it, uint32_t n, U *out, const uint8_t *cond, const U *a, const U *b) {
    CT_FOR_EACH_INDEX(i, n) {
        int64_t off[4];
        strided_offsets(it, i, off);
        out[off[0]] = cond[off[1]] ? a[off[2]] : b[off[3]];
    }
}

template <typename U>
static ct_status where_launch(const ct_iter<4> &it, int64_t n, void *out, const uint8_t *cond, const void *a,
                              const void *b, cudaStream_t s) {
    char *const data[4] = {(char *)out, (char *)cond, (char *)a, (char *)b};
    const size_t esize[4] = {sizeof(U), 1, sizeof(U), sizeof(U)};
    return in_32bit_pieces(it, n, data, esize, [&](const ct_iter<4> &piece, uint32_t count, char *const(&p)[4]) {
        where_strided<U><<<ct_grid_for(count, kThreads), kThreads, 0, s>>>(
            piece, count, (U *)p[0], (const uint8_t *)p[1], (const U *)p[2], (const U *)p[3]);
        return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
    });
}

// ---- fused gradients of binary ops ------------------------------------------------------

// kernels/cpu/ternary.c: g is the incoming gradient, a and b the op's inputs.
template <int OP> __device__ __forceinline__ float ternary_op(float g, float a, float b) {
    static_assert(0 <= OP && OP < CT_TER_NUM_OPS, "unknown ternary op");
    switch (OP) {
    case CT_TER_MAX_BW: return a < b ? 0.0f : (a == b ? g * 0.5f : g); // NaN: all of g
    case CT_TER_POW_BASE_BW: return b == 0 ? 0.0f : g * b * powf(a, b - 1.0f);
    case CT_TER_POW_EXP_BW: return (a == 0 && b >= 0) ? 0.0f : g * powf(a, b) * logf(a);
    }
    return g; // not reached: the static_assert and the cases above cover every op
}

template <int OP, typename T>
__global__ void __launch_bounds__(kThreads)
    ternary_strided(ct_iter<4> it, uint32_t n, T *out, const T *g, const T *a, const T *b) {
    CT_FOR_EACH_INDEX(i, n) {
        int64_t off[4];
        strided_offsets(it, i, off);
        out[off[0]] = store_c<T>(ternary_op<OP>(ct_widen(g[off[1]]), ct_widen(a[off[2]]), ct_widen(b[off[3]])));
    }
}

template <int OP, typename T>
static ct_status ternary_launch(const ct_iter<4> &it, int64_t n, void *out, const void *g, const void *a, const void *b,
                                cudaStream_t s) {
    char *const data[4] = {(char *)out, (char *)g, (char *)a, (char *)b};
    const size_t esize[4] = {sizeof(T), sizeof(T), sizeof(T), sizeof(T)};
    return in_32bit_pieces(it, n, data, esize, [&](const ct_iter<4> &piece, uint32_t count, char *const(&p)[4]) {
        ternary_strided<OP, T><<<ct_grid_for(count, kThreads), kThreads, 0, s>>>(
            piece, count, (T *)p[0], (const T *)p[1], (const T *)p[2], (const T *)p[3]);
        return CT_CUDA_CHECK_LAUNCH() ? CT_OK : ct_last_error();
    });
}

template <typename T>
static ct_status ternary_dispatch(ct_ternary_op op, const ct_iter<4> &it, int64_t n, void *out, const void *g,
                                  const void *a, const void *b, cudaStream_t s) {
    switch (op) {
    case CT_TER_MAX_BW: return ternary_launch<CT_TER_MAX_BW, T>(it, n, out, g, a, b, s);
    case CT_TER_POW_BASE_BW: return ternary_launch<CT_TER_POW_BASE_BW, T>(it, n, out, g, a, b, s);
    case CT_TER_POW_EXP_BW: return ternary_launch<CT_TER_POW_EXP_BW, T>(it, n, out, g, a, b, s);
    default: return ct__set_error(CT_ERR_INTERNAL, "ct_cuda_ternary: unknown op %d", (int)op);
    }
}

ct_status unsupported_dtype(const char *launcher, ct_dtype dtype) {
    return ct__set_error(CT_ERR_DTYPE, "%s: %s is not supported on CUDA (f32, f16, bf16, i32, u8)", launcher,
                         ct_dtype_name(dtype));
}

} // namespace

extern "C" ct_status ct_cuda_binary(ct_binary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                                    const int64_t *out_strides, const void *a, const int64_t *a_strides, const void *b,
                                    const int64_t *b_strides, double p0, double p1, ct_stream *stream) {
    ct_iter<3> it;
    const int64_t *strides[3] = {out_strides, a_strides, b_strides};
    int64_t n = ct_iter_make(&it, ndim, shape, strides);
    if (n == 0)
        return CT_OK;
    at_least_one_dim(&it);
    CT_LAUNCH_STREAM(s, stream);
    switch (dtype) {
    case CT_F32: return binary_dispatch<float>(op, it, n, out, a, b, p0, p1, s);
    case CT_F16: return binary_dispatch<__half>(op, it, n, out, a, b, p0, p1, s);
    case CT_BF16: return binary_dispatch<__nv_bfloat16>(op, it, n, out, a, b, p0, p1, s);
    case CT_I32: return binary_dispatch<int32_t>(op, it, n, out, a, b, p0, p1, s);
    case CT_U8: return binary_dispatch<uint8_t>(op, it, n, out, a, b, p0, p1, s);
    default: return unsupported_dtype("ct_cuda_binary", dtype);
    }
}

extern "C" ct_status ct_cuda_unary(ct_unary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                                   const int64_t *out_strides, const void *a, const int64_t *a_strides, double p0,
                                   double p1, ct_stream *stream) {
    ct_iter<2> it;
    const int64_t *strides[2] = {out_strides, a_strides};
    int64_t n = ct_iter_make(&it, ndim, shape, strides);
    if (n == 0)
        return CT_OK;
    at_least_one_dim(&it);
    CT_LAUNCH_STREAM(s, stream);
    switch (dtype) {
    case CT_F32: return unary_dispatch<float>(op, it, n, out, a, p0, p1, s);
    case CT_F16: return unary_dispatch<__half>(op, it, n, out, a, p0, p1, s);
    case CT_BF16: return unary_dispatch<__nv_bfloat16>(op, it, n, out, a, p0, p1, s);
    case CT_I32: return unary_dispatch<int32_t>(op, it, n, out, a, p0, p1, s);
    case CT_U8: return unary_dispatch<uint8_t>(op, it, n, out, a, p0, p1, s);
    default: return unsupported_dtype("ct_cuda_unary", dtype);
    }
}

extern "C" ct_status ct_cuda_where(ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                                   const int64_t *out_strides, const uint8_t *cond, const int64_t *cond_strides,
                                   const void *a, const int64_t *a_strides, const void *b, const int64_t *b_strides,
                                   ct_stream *stream) {
    ct_iter<4> it;
    const int64_t *strides[4] = {out_strides, cond_strides, a_strides, b_strides};
    int64_t n = ct_iter_make(&it, ndim, shape, strides);
    if (n == 0)
        return CT_OK;
    at_least_one_dim(&it);
    CT_LAUNCH_STREAM(s, stream);
    switch (dtype) {
    case CT_F32:
    case CT_I32: return where_launch<uint32_t>(it, n, out, cond, a, b, s);
    case CT_F16:
    case CT_BF16: return where_launch<uint16_t>(it, n, out, cond, a, b, s);
    case CT_U8: return where_launch<uint8_t>(it, n, out, cond, a, b, s);
    default: return unsupported_dtype("ct_cuda_where", dtype);
    }
}

extern "C" ct_status ct_cuda_ternary(ct_ternary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                                     const int64_t *out_strides, const void *g, const int64_t *g_strides, const void *a,
                                     const int64_t *a_strides, const void *b, const int64_t *b_strides,
                                     ct_stream *stream) {
    ct_iter<4> it;
    const int64_t *strides[4] = {out_strides, g_strides, a_strides, b_strides};
    int64_t n = ct_iter_make(&it, ndim, shape, strides);
    if (n == 0)
        return CT_OK;
    at_least_one_dim(&it);
    CT_LAUNCH_STREAM(s, stream);
    switch (dtype) {
    case CT_F32: return ternary_dispatch<float>(op, it, n, out, g, a, b, s);
    case CT_F16: return ternary_dispatch<__half>(op, it, n, out, g, a, b, s);
    case CT_BF16: return ternary_dispatch<__nv_bfloat16>(op, it, n, out, g, a, b, s);
    default:
        return ct__set_error(CT_ERR_DTYPE, "ct_cuda_ternary: needs f32, f16 or bf16 on CUDA, not %s",
                             ct_dtype_name(dtype));
    }
}
