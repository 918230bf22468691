/* CPU elementwise kernels.
 *
 * The iteration space is coalesced first, so contiguous and simply broadcast operands
 * become long rows. Each row runs a tight loop per op over float or double (which the
 * compiler vectorizes); F16, BF16, I32 and U8 rows are converted through a small float /
 * double buffer. Rows are split between OpenMP threads above CT_PAR_THRESHOLD elements. */
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/strided.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#define CT_PAR_THRESHOLD (1 << 15)
#define CHUNK 512

/* Four stride variants of one loop; `E(x, y)` is the expression. */
#define ROW2(T, E)                                                                                          \
    do {                                                                                                    \
        if (os == 1 && as == 1 && bs == 1) {                                                                \
            for (int64_t i = 0; i < n; i++) {                                                               \
                T x = a[i], y = b[i];                                                                       \
                o[i] = E;                                                                                   \
            }                                                                                               \
        } else if (os == 1 && as == 1 && bs == 0) {                                                         \
            const T y = b[0];                                                                               \
            for (int64_t i = 0; i < n; i++) {                                                               \
                T x = a[i];                                                                                 \
                o[i] = E;                                                                                   \
            }                                                                                               \
        } else if (os == 1 && as == 0 && bs == 1) {                                                         \
            const T x = a[0];                                                                               \
            for (int64_t i = 0; i < n; i++) {                                                               \
                T y = b[i];                                                                                 \
                o[i] = E;                                                                                   \
            }                                                                                               \
        } else {                                                                                            \
            for (int64_t i = 0; i < n; i++) {                                                               \
                T x = a[i * as], y = b[i * bs];                                                             \
                o[i * os] = E;                                                                              \
            }                                                                                               \
        }                                                                                                   \
    } while (0)

#define ROW1(T, E)                                                                                          \
    do {                                                                                                    \
        if (os == 1 && as == 1) {                                                                           \
            for (int64_t i = 0; i < n; i++) {                                                               \
                T x = a[i];                                                                                 \
                o[i] = E;                                                                                   \
            }                                                                                               \
        } else {                                                                                            \
            for (int64_t i = 0; i < n; i++) {                                                               \
                T x = a[i * as];                                                                            \
                o[i * os] = E;                                                                              \
            }                                                                                               \
        }                                                                                                   \
    } while (0)

/* Clamp, and activations with their derivatives as PyTorch defines them, over T = float or
 * double. FN(name) names the T version of a libm function (expf / exp) or of these helpers. */
#define DEFINE_HELPERS(T, FN)                                                                                \
    /* max then min: NaN stays NaN, and hi wins when lo > hi */                                              \
    static inline T FN(clamp)(T x, T lo, T hi) {                                                             \
        T y = x < lo ? lo : x;                                                                               \
        return y > hi ? hi : y;                                                                              \
    }                                                                                                        \
    /* Written as selects of x or 0 followed by arithmetic, rather than `x > 0 ? x : x * slope`:             \
     * GCC does not if-convert a product that may trap (-ftrapping-math), so that form does not              \
     * vectorize and ran 3x slower. NaN still propagates. */                                               \
    static inline T FN(act_leaky_relu)(T x, T slope) {                                                       \
        T pos = x <= 0 ? (T)0 : x, neg = x >= 0 ? (T)0 : x;                                                  \
        return pos + slope * neg;                                                                            \
    }                                                                                                        \
    static inline T FN(act_leaky_relu_bw)(T g, T x, T slope) {                                               \
        T pos = x > 0 ? g : (T)0, neg = x > 0 ? (T)0 : g;                                                    \
        return pos + slope * neg;                                                                            \
    }                                                                                                        \
    static inline T FN(act_sigmoid)(T x) { return (T)1 / ((T)1 + FN(exp)(-x)); }                             \
    static inline T FN(act_elu)(T x, T alpha) { return x > 0 ? x : alpha * FN(expm1)(x); }                   \
    static inline T FN(act_elu_bw)(T g, T x, T alpha) { return x > 0 ? g : g * alpha * FN(exp)(x); }         \
    /* 0.5 x (1 + erf(x / sqrt 2)); derivative Phi(x) + x phi(x) */                                          \
    static inline T FN(act_gelu_erf)(T x) { return (T)0.5 * x * ((T)1 + FN(erf)(x * (T)M_SQRT1_2)); }        \
    static inline T FN(act_gelu_erf_bw)(T g, T x) {                                                          \
        T cdf = (T)0.5 * ((T)1 + FN(erf)(x * (T)M_SQRT1_2));                                                 \
        T pdf = (T)(0.5 * M_2_SQRTPI * M_SQRT1_2) * FN(exp)((T)-0.5 * x * x);                                \
        return g * (cdf + x * pdf);                                                                          \
    }                                                                                                        \
    /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */                                                    \
    static inline T FN(act_gelu_tanh)(T x) {                                                                 \
        T inner = (T)(M_SQRT2 * M_2_SQRTPI * 0.5) * (x + (T)0.044715 * x * x * x);                           \
        return (T)0.5 * x * ((T)1 + FN(tanh)(inner));                                                        \
    }                                                                                                        \
    static inline T FN(act_gelu_tanh_bw)(T g, T x) {                                                         \
        T x_sq = x * x;                                                                                      \
        T inner = (T)(M_SQRT2 * M_2_SQRTPI * 0.5) * (x + (T)0.044715 * x_sq * x);                            \
        T tanh_inner = FN(tanh)(inner);                                                                      \
        T left_derivative = (T)0.5 * ((T)1 + tanh_inner);                                                    \
        T right_derivative = (T)0.5 * x * ((T)1 - tanh_inner * tanh_inner) *                                 \
                             (T)(M_SQRT2 * M_2_SQRTPI * 0.5) * ((T)1 + (T)(3 * 0.044715) * x_sq);            \
        return g * (left_derivative + right_derivative);                                                     \
    }                                                                                                        \
    static inline T FN(act_silu)(T x) { return x / ((T)1 + FN(exp)(-x)); }                                   \
    static inline T FN(act_silu_bw)(T g, T x) {                                                              \
        T s = FN(act_sigmoid)(x);                                                                            \
        return g * s * ((T)1 + x * ((T)1 - s));                                                              \
    }                                                                                                        \
    /* log(1 + exp(z)) / beta with z = beta x, written max(z, 0) + log1p(exp(-|z|)) so that it               \
     * neither overflows nor loses the small values; linear above the threshold. */                          \
    static inline T FN(act_softplus)(T x, T beta, T threshold) {                                             \
        T z = x * beta;                                                                                      \
        if (z > threshold)                                                                                   \
            return x;                                                                                        \
        return ((z > 0 ? z : (T)0) + FN(log1p)(FN(exp)(-FN(fabs)(z)))) / beta;                               \
    }                                                                                                        \
    static inline T FN(act_softplus_bw)(T g, T x, T beta, T threshold) {                                     \
        T z = x * beta;                                                                                      \
        return z > threshold ? g : g * FN(act_sigmoid)(z);                                                   \
    }

/* Arithmetic rows, over T = float (suffix f) or double. Comparisons produce 0/1 in T.
 * The row pointers are not restrict-qualified: in-place ops pass o == a (and a += a also
 * o == b), which restrict would make undefined. GCC then guards each vector loop with an
 * overlap test of a few instructions per row that sends o == a down the vector path too; the
 * loop body is the same as with restrict. ct_add of f32 on one thread, medians of 4 runs of
 * 30 (with restrict in parentheses): 16M elements 5.3 to 5.8 ms (5.4 to 5.7 ms), 32K
 * elements 2.85 us (2.82 us); ct_add_ 16M 3.4 to 3.6 ms (3.6 to 4.7 ms). */
#define DEFINE_BINARY_ROW(T, NAME, FN)                                                                       \
    static void NAME(ct_binary_op op, int64_t n, T *o, int64_t os, const T *a, int64_t as,                   \
                     const T *b, int64_t bs, T p0, T p1) {                                                   \
        switch (op) {                                                                                        \
        case CT_BIN_ADD: ROW2(T, x + y); break;                                                              \
        case CT_BIN_SUB: ROW2(T, x - y); break;                                                              \
        case CT_BIN_MUL: ROW2(T, x * y); break;                                                              \
        case CT_BIN_DIV: ROW2(T, x / y); break;                                                              \
        case CT_BIN_POW: ROW2(T, FN(pow)(x, y)); break;                                                      \
        case CT_BIN_MAX: ROW2(T, (x != x || x > y) ? x : y); break; /* NaN propagates */                     \
        case CT_BIN_MIN: ROW2(T, (x != x || x < y) ? x : y); break;                                          \
        case CT_BIN_ADD_SCALED: ROW2(T, x + p0 * y); break;                                                  \
        case CT_BIN_EQ: ROW2(T, (T)(x == y)); break;                                                         \
        case CT_BIN_NE: ROW2(T, (T)(x != y)); break;                                                         \
        case CT_BIN_LT: ROW2(T, (T)(x < y)); break;                                                          \
        case CT_BIN_LE: ROW2(T, (T)(x <= y)); break;                                                         \
        case CT_BIN_GT: ROW2(T, (T)(x > y)); break;                                                          \
        case CT_BIN_GE: ROW2(T, (T)(x >= y)); break;                                                         \
        /* backward: x is the gradient, y the saved tensor */                                                \
        case CT_BIN_ABS_BW: ROW2(T, y > 0 ? x : (y < 0 ? -x : (T)0)); break;                                 \
        case CT_BIN_CLAMP_BW: ROW2(T, (y >= p0 && y <= p1) ? x : (T)0); break;                               \
        case CT_BIN_RELU_BW: ROW2(T, y <= 0 ? (T)0 : x); break;                                              \
        case CT_BIN_LEAKY_RELU_BW: ROW2(T, FN(act_leaky_relu_bw)(x, y, p0)); break;                          \
        case CT_BIN_ELU_BW: ROW2(T, FN(act_elu_bw)(x, y, p0)); break;                                        \
        case CT_BIN_GELU_ERF_BW: ROW2(T, FN(act_gelu_erf_bw)(x, y)); break;                                  \
        case CT_BIN_GELU_TANH_BW: ROW2(T, FN(act_gelu_tanh_bw)(x, y)); break;                                \
        case CT_BIN_SILU_BW: ROW2(T, FN(act_silu_bw)(x, y)); break;                                          \
        case CT_BIN_SIGMOID_BW: ROW2(T, x * y * ((T)1 - y)); break;                                          \
        case CT_BIN_TANH_BW: ROW2(T, x * ((T)1 - y * y)); break;                                             \
        case CT_BIN_SOFTPLUS_BW: ROW2(T, FN(act_softplus_bw)(x, y, p0, p1)); break;                          \
        default: break;                                                                                      \
        }                                                                                                    \
    }

#define DEFINE_UNARY_ROW(T, NAME, FN)                                                                        \
    static void NAME(ct_unary_op op, int64_t n, T *o, int64_t os, const T *a, int64_t as,                    \
                     T p0, T p1) {                                                                           \
        switch (op) {                                                                                        \
        case CT_UN_NEG: ROW1(T, -x); break;                                                                  \
        case CT_UN_EXP: ROW1(T, FN(exp)(x)); break;                                                          \
        case CT_UN_LOG: ROW1(T, FN(log)(x)); break;                                                          \
        case CT_UN_SQRT: ROW1(T, FN(sqrt)(x)); break;                                                        \
        case CT_UN_RSQRT: ROW1(T, (T)1 / FN(sqrt)(x)); break;                                                \
        case CT_UN_ABS: ROW1(T, FN(fabs)(x)); break;                                                         \
        case CT_UN_ADD_SCALAR: ROW1(T, x + p0); break;                                                       \
        case CT_UN_MUL_SCALAR: ROW1(T, x * p0); break;                                                       \
        case CT_UN_POW_SCALAR:                                                                               \
            if (p0 == (T)2)                                                                                  \
                ROW1(T, x * x);                                                                              \
            else                                                                                             \
                ROW1(T, FN(pow)(x, p0));                                                                     \
            break;                                                                                           \
        case CT_UN_CLAMP: ROW1(T, FN(clamp)(x, p0, p1)); break;                                              \
        case CT_UN_RELU: ROW1(T, x <= 0 ? (T)0 : x); break; /* NaN propagates */                             \
        case CT_UN_LEAKY_RELU: ROW1(T, FN(act_leaky_relu)(x, p0)); break;                                    \
        case CT_UN_ELU: ROW1(T, FN(act_elu)(x, p0)); break;                                                  \
        case CT_UN_GELU_ERF: ROW1(T, FN(act_gelu_erf)(x)); break;                                            \
        case CT_UN_GELU_TANH: ROW1(T, FN(act_gelu_tanh)(x)); break;                                          \
        case CT_UN_SILU: ROW1(T, FN(act_silu)(x)); break;                                                    \
        case CT_UN_SIGMOID: ROW1(T, FN(act_sigmoid)(x)); break;                                              \
        case CT_UN_TANH: ROW1(T, FN(tanh)(x)); break;                                                        \
        case CT_UN_SOFTPLUS: ROW1(T, FN(act_softplus)(x, p0, p1)); break;                                    \
        default: break;                                                                                      \
        }                                                                                                    \
    }

#define FN_F(name) name##f
#define FN_D(name) name
DEFINE_HELPERS(float, FN_F)
DEFINE_HELPERS(double, FN_D)
DEFINE_BINARY_ROW(float, binary_row_f, FN_F)
DEFINE_BINARY_ROW(double, binary_row_d, FN_D)
DEFINE_UNARY_ROW(float, unary_row_f, FN_F)
DEFINE_UNARY_ROW(double, unary_row_d, FN_D)

static bool is_comparison(ct_binary_op op) { return op >= CT_BIN_EQ && op <= CT_BIN_GE; }

/* Load n elements (stride s) of a non-native dtype into float / double buffers. */
static void load_f(const void *src, ct_dtype dt, int64_t s, int64_t n, float *dst) {
    switch (dt) {
    case CT_F16: for (int64_t i = 0; i < n; i++) dst[i] = ct_f16_to_f32(((const uint16_t *)src)[i * s]); break;
    case CT_BF16: for (int64_t i = 0; i < n; i++) dst[i] = ct_bf16_to_f32(((const uint16_t *)src)[i * s]); break;
    default: for (int64_t i = 0; i < n; i++) dst[i] = (float)ct_cpu_load(src, dt, i * s); break;
    }
}
static void store_f(void *dst, ct_dtype dt, int64_t s, int64_t n, const float *src) {
    switch (dt) {
    case CT_F16: for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i * s] = ct_f32_to_f16(src[i]); break;
    case CT_BF16: for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i * s] = ct_f32_to_bf16(src[i]); break;
    default: for (int64_t i = 0; i < n; i++) ct_cpu_store(dst, dt, i * s, src[i]); break;
    }
}
static void load_d(const void *src, ct_dtype dt, int64_t s, int64_t n, double *dst) {
    for (int64_t i = 0; i < n; i++)
        dst[i] = ct_cpu_load(src, dt, i * s);
}
static void store_d(void *dst, ct_dtype dt, int64_t s, int64_t n, const double *src) {
    for (int64_t i = 0; i < n; i++)
        ct_cpu_store(dst, dt, i * s, src[i]);
}

typedef struct row_job {
    bool binary;
    int op;
    ct_dtype dtype, out_dtype;
    double p0, p1;
} row_job;

/* One row of n elements. Pointers are at the row's first element; strides in elements. */
static void run_row(const row_job *job, int64_t n, char *o, int64_t os, const char *a, int64_t as, const char *b,
                    int64_t bs) {
    ct_dtype dt = job->dtype;
    if (dt == CT_F32 && job->out_dtype == CT_F32) {
        if (job->binary)
            binary_row_f(job->op, n, (float *)o, os, (const float *)a, as, (const float *)b, bs, (float)job->p0,
                         (float)job->p1);
        else
            unary_row_f(job->op, n, (float *)o, os, (const float *)a, as, (float)job->p0, (float)job->p1);
        return;
    }
    if (dt == CT_F64 && job->out_dtype == CT_F64) {
        if (job->binary)
            binary_row_d(job->op, n, (double *)o, os, (const double *)a, as, (const double *)b, bs, job->p0,
                         job->p1);
        else
            unary_row_d(job->op, n, (double *)o, os, (const double *)a, as, job->p0, job->p1);
        return;
    }
    size_t ies = ct_dtype_size(dt), oes = ct_dtype_size(job->out_dtype);
    bool use_double = dt == CT_F64 || dt == CT_I32 || dt == CT_U8;
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t m = n - start < CHUNK ? n - start : CHUNK;
        const char *ap = a + (size_t)(start * as) * ies;
        const char *bp = job->binary ? b + (size_t)(start * bs) * ies : NULL;
        char *op = o + (size_t)(start * os) * oes;
        if (use_double) {
            double xa[CHUNK], xb[CHUNK], xo[CHUNK];
            load_d(ap, dt, as, m, xa);
            if (job->binary) {
                load_d(bp, dt, bs, m, xb);
                binary_row_d(job->op, m, xo, 1, xa, 1, xb, 1, job->p0, job->p1);
            } else {
                unary_row_d(job->op, m, xo, 1, xa, 1, job->p0, job->p1);
            }
            store_d(op, job->out_dtype, os, m, xo);
        } else {
            float xa[CHUNK], xb[CHUNK], xo[CHUNK];
            load_f(ap, dt, as, m, xa);
            if (job->binary) {
                load_f(bp, dt, bs, m, xb);
                binary_row_f(job->op, m, xo, 1, xa, 1, xb, 1, (float)job->p0, (float)job->p1);
            } else {
                unary_row_f(job->op, m, xo, 1, xa, 1, (float)job->p0, (float)job->p1);
            }
            store_f(op, job->out_dtype, os, m, xo);
        }
    }
}

static void run(const row_job *job, int ndim, const int64_t *shape_in, void *out, const int64_t *os_in,
                const void *a, const int64_t *as_in, const void *b, const int64_t *bs_in) {
    int64_t shape[CT_KMAX_DIMS], os[CT_KMAX_DIMS], as[CT_KMAX_DIMS], bs[CT_KMAX_DIMS];
    int64_t total = 1;
    for (int d = 0; d < ndim; d++) {
        shape[d] = shape_in[d];
        os[d] = os_in[d];
        as[d] = as_in[d];
        bs[d] = b ? bs_in[d] : 0;
        total *= shape[d];
    }
    if (total == 0)
        return;
    int64_t *strides[3] = {os, as, bs};
    ndim = ct_coalesce(ndim, shape, 3, strides);
    if (ndim == 0) {
        shape[0] = 1;
        os[0] = as[0] = bs[0] = 1;
        ndim = 1;
    }
    size_t ies = ct_dtype_size(job->dtype), oes = ct_dtype_size(job->out_dtype);
    int64_t inner = shape[ndim - 1];
    int64_t rows = total / inner;
    int64_t ios = os[ndim - 1], ias = as[ndim - 1], ibs = bs[ndim - 1];
    if (rows == 1) {
        /* One long row: split it into per-thread pieces (cache-line aligned for contiguous output). */
        int nthreads = total >= CT_PAR_THRESHOLD ? omp_get_max_threads() : 1;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
        {
            int nt = omp_get_num_threads(), t = omp_get_thread_num();
            int64_t chunk = ((inner + nt - 1) / nt + 15) & ~(int64_t)15;
            int64_t begin = chunk * t, end = begin + chunk < inner ? begin + chunk : inner;
            if (begin < end)
                run_row(job, end - begin, (char *)out + (size_t)(begin * ios) * oes, ios,
                        (const char *)a + (size_t)(begin * ias) * ies, ias,
                        b ? (const char *)b + (size_t)(begin * ibs) * ies : NULL, ibs);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (total >= CT_PAR_THRESHOLD)
    for (int64_t r = 0; r < rows; r++) {
        int64_t off[3];
        ct_outer_offsets(ndim, shape, 3, strides, r, off);
        run_row(job, inner, (char *)out + off[0] * (int64_t)oes, ios, (const char *)a + off[1] * (int64_t)ies, ias,
                b ? (const char *)b + off[2] * (int64_t)ies : NULL, ibs);
    }
}

void ct_cpu_binary(ct_binary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                   const int64_t *out_strides, const void *a, const int64_t *a_strides, const void *b,
                   const int64_t *b_strides, double p0) {
    row_job job = {true, op, dtype, is_comparison(op) ? CT_U8 : dtype, p0, 0};
    run(&job, ndim, shape, out, out_strides, a, a_strides, b, b_strides);
}

void ct_cpu_binary_ex(ct_binary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                      const int64_t *out_strides, const void *a, const int64_t *a_strides, const void *b,
                      const int64_t *b_strides, double p0, double p1) {
    row_job job = {true, op, dtype, is_comparison(op) ? CT_U8 : dtype, p0, p1};
    run(&job, ndim, shape, out, out_strides, a, a_strides, b, b_strides);
}

void ct_cpu_unary(ct_unary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                  const int64_t *out_strides, const void *a, const int64_t *a_strides, double p0, double p1) {
    row_job job = {false, op, dtype, dtype, p0, p1};
    run(&job, ndim, shape, out, out_strides, a, a_strides, NULL, NULL);
}
