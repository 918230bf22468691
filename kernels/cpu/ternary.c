/* CPU kernels over three operands: where, and fused gradients of maximum / minimum / pow.
 *
 * Same scheme as elementwise.c: coalesce the iteration space, then run tight loops over
 * rows, split between OpenMP threads above CT_PAR_THRESHOLD elements. `where` moves
 * elements by size (1, 2, 4 or 8 bytes), so it serves every dtype without conversion;
 * both sides are loaded before the select so that the contiguous loop vectorizes. */
#include "kernels/cpu/ternary.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/strided.h"

#include <math.h>
#include <omp.h>
#include <stdbool.h>

#define CT_PAR_THRESHOLD (1 << 15)
#define CHUNK 512

typedef struct ternary_job {
    bool select; /* where (operand 1 is the U8 condition) or a ct_ternary_op */
    ct_ternary_op op;
    ct_dtype dtype;
    size_t esize[4]; /* element sizes of out, operand 1, operand 2, operand 3 */
} ternary_job;

/* ---- where ------------------------------------------------------------------------- */

#define SELECT_ROW(U)                                                                                       \
    do {                                                                                                    \
        U *restrict out = (U *)o;                                                                           \
        const U *restrict pa = (const U *)a, *restrict pb = (const U *)b;                                   \
        if (os == 1 && cs == 1 && as == 1 && bs == 1) {                                                     \
            for (int64_t i = 0; i < n; i++) {                                                               \
                U va = pa[i], vb = pb[i];                                                                   \
                out[i] = c[i] ? va : vb;                                                                    \
            }                                                                                               \
        } else if (os == 1 && cs == 1 && as == 0 && bs == 1) { /* masked_fill */                            \
            const U va = pa[0];                                                                             \
            for (int64_t i = 0; i < n; i++) {                                                               \
                U vb = pb[i];                                                                               \
                out[i] = c[i] ? va : vb;                                                                    \
            }                                                                                               \
        } else if (os == 1 && cs == 1 && as == 1 && bs == 0) {                                              \
            const U vb = pb[0];                                                                             \
            for (int64_t i = 0; i < n; i++) {                                                               \
                U va = pa[i];                                                                               \
                out[i] = c[i] ? va : vb;                                                                    \
            }                                                                                               \
        } else {                                                                                            \
            for (int64_t i = 0; i < n; i++) {                                                               \
                U va = pa[i * as], vb = pb[i * bs];                                                         \
                out[i * os] = c[i * cs] ? va : vb;                                                          \
            }                                                                                               \
        }                                                                                                   \
    } while (0)

static void select_row(size_t esize, int64_t n, char *o, int64_t os, const uint8_t *restrict c, int64_t cs,
                       const char *a, int64_t as, const char *b, int64_t bs) {
    switch (esize) {
    case 1: SELECT_ROW(uint8_t); break;
    case 2: SELECT_ROW(uint16_t); break;
    case 4: SELECT_ROW(uint32_t); break;
    default: SELECT_ROW(uint64_t); break;
    }
}

/* ---- fused gradients ----------------------------------------------------------------- */

#define ROW3(T, E)                                                                                          \
    do {                                                                                                    \
        if (os == 1 && gs == 1 && as == 1 && bs == 1) {                                                     \
            for (int64_t i = 0; i < n; i++) {                                                               \
                T x = g[i], y = a[i], z = b[i];                                                             \
                o[i] = E;                                                                                   \
            }                                                                                               \
        } else {                                                                                            \
            for (int64_t i = 0; i < n; i++) {                                                               \
                T x = g[i * gs], y = a[i * as], z = b[i * bs];                                              \
                o[i * os] = E;                                                                              \
            }                                                                                               \
        }                                                                                                   \
    } while (0)

/* x is the gradient, y and z the inputs a and b. */
#define DEFINE_TERNARY_ROW(T, NAME, FN)                                                                     \
    static void NAME(ct_ternary_op op, int64_t n, T *restrict o, int64_t os, const T *restrict g,          \
                     int64_t gs, const T *restrict a, int64_t as, const T *restrict b, int64_t bs) {        \
        switch (op) {                                                                                       \
        case CT_TER_MAX_BW: ROW3(T, y < z ? (T)0 : (y == z ? x * (T)0.5 : x)); break;                       \
        case CT_TER_POW_BASE_BW: ROW3(T, z == 0 ? (T)0 : x * z * FN(pow)(y, z - (T)1)); break;              \
        case CT_TER_POW_EXP_BW: ROW3(T, (y == 0 && z >= 0) ? (T)0 : x * FN(pow)(y, z) * FN(log)(y)); break; \
        default: break;                                                                                     \
        }                                                                                                   \
    }

#define FN_F(name) name##f
#define FN_D(name) name
DEFINE_TERNARY_ROW(float, ternary_row_f, FN_F)
DEFINE_TERNARY_ROW(double, ternary_row_d, FN_D)

static void load_half(const char *src, ct_dtype dt, int64_t s, int64_t n, float *dst) {
    const uint16_t *p = (const uint16_t *)src;
    if (dt == CT_F16)
        for (int64_t i = 0; i < n; i++)
            dst[i] = ct_f16_to_f32(p[i * s]);
    else
        for (int64_t i = 0; i < n; i++)
            dst[i] = ct_bf16_to_f32(p[i * s]);
}

static void store_half(char *dst, ct_dtype dt, int64_t s, int64_t n, const float *src) {
    uint16_t *p = (uint16_t *)dst;
    if (dt == CT_F16)
        for (int64_t i = 0; i < n; i++)
            p[i * s] = ct_f32_to_f16(src[i]);
    else
        for (int64_t i = 0; i < n; i++)
            p[i * s] = ct_f32_to_bf16(src[i]);
}

static void compute_row(const ternary_job *job, int64_t n, char *o, int64_t os, const char *g, int64_t gs,
                        const char *a, int64_t as, const char *b, int64_t bs) {
    switch (job->dtype) {
    case CT_F32:
        ternary_row_f(job->op, n, (float *)o, os, (const float *)g, gs, (const float *)a, as, (const float *)b, bs);
        return;
    case CT_F64:
        ternary_row_d(job->op, n, (double *)o, os, (const double *)g, gs, (const double *)a, as,
                      (const double *)b, bs);
        return;
    case CT_F16:
    case CT_BF16:
        for (int64_t start = 0; start < n; start += CHUNK) {
            int64_t m = n - start < CHUNK ? n - start : CHUNK;
            float xg[CHUNK], xa[CHUNK], xb[CHUNK], xo[CHUNK];
            load_half(g + 2 * start * gs, job->dtype, gs, m, xg);
            load_half(a + 2 * start * as, job->dtype, as, m, xa);
            load_half(b + 2 * start * bs, job->dtype, bs, m, xb);
            ternary_row_f(job->op, m, xo, 1, xg, 1, xa, 1, xb, 1);
            store_half(o + 2 * start * os, job->dtype, os, m, xo);
        }
        return;
    default: return; /* integer dtypes have no gradient; the ops never ask */
    }
}

static void run_row(const ternary_job *job, int64_t n, char *o, int64_t os, const char *x, int64_t xs,
                    const char *a, int64_t as, const char *b, int64_t bs) {
    if (job->select)
        select_row(job->esize[0], n, o, os, (const uint8_t *)x, xs, a, as, b, bs);
    else
        compute_row(job, n, o, os, x, xs, a, as, b, bs);
}

/* ---- driver ------------------------------------------------------------------------------ */

static void run(const ternary_job *job, int ndim, const int64_t *shape_in, void *out, const int64_t *const *strides_in,
                const void *const *operands) {
    int64_t shape[CT_KMAX_DIMS], st[4][CT_KMAX_DIMS];
    int64_t total = 1;
    for (int d = 0; d < ndim; d++) {
        shape[d] = shape_in[d];
        for (int k = 0; k < 4; k++)
            st[k][d] = strides_in[k][d];
        total *= shape[d];
    }
    if (total == 0)
        return;
    int64_t *strides[4] = {st[0], st[1], st[2], st[3]};
    ndim = ct_coalesce(ndim, shape, 4, strides);
    if (ndim == 0) {
        shape[0] = 1;
        for (int k = 0; k < 4; k++)
            st[k][0] = 1;
        ndim = 1;
    }
    int64_t inner = shape[ndim - 1], rows = total / inner;
    int64_t is[4];
    for (int k = 0; k < 4; k++)
        is[k] = st[k][ndim - 1];
    const char *base[4] = {(const char *)out, operands[0], operands[1], operands[2]};
    if (rows == 1) {
        /* One long row: split it into per-thread pieces (multiples of 16 elements). */
        int nthreads = total >= CT_PAR_THRESHOLD ? omp_get_max_threads() : 1;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
        {
            int nt = omp_get_num_threads(), t = omp_get_thread_num();
            int64_t chunk = ((inner + nt - 1) / nt + 15) & ~(int64_t)15;
            int64_t begin = chunk * t, end = begin + chunk < inner ? begin + chunk : inner;
            const char *p[4];
            for (int k = 0; k < 4; k++)
                p[k] = base[k] + (size_t)(begin * is[k]) * job->esize[k];
            if (begin < end)
                run_row(job, end - begin, (char *)p[0], is[0], p[1], is[1], p[2], is[2], p[3], is[3]);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (total >= CT_PAR_THRESHOLD)
    for (int64_t r = 0; r < rows; r++) {
        int64_t off[4];
        const char *p[4];
        ct_outer_offsets(ndim, shape, 4, strides, r, off);
        for (int k = 0; k < 4; k++)
            p[k] = base[k] + off[k] * (int64_t)job->esize[k];
        run_row(job, inner, (char *)p[0], is[0], p[1], is[1], p[2], is[2], p[3], is[3]);
    }
}

void ct_cpu_where(ct_dtype dtype, int ndim, const int64_t *shape, void *out, const int64_t *out_strides,
                  const uint8_t *cond, const int64_t *cond_strides, const void *a, const int64_t *a_strides,
                  const void *b, const int64_t *b_strides) {
    size_t es = ct_dtype_size(dtype);
    ternary_job job = {true, CT_TER_NUM_OPS, dtype, {es, 1, es, es}};
    const int64_t *strides[4] = {out_strides, cond_strides, a_strides, b_strides};
    run(&job, ndim, shape, out, strides, (const void *const[]){cond, a, b});
}

void ct_cpu_ternary(ct_ternary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                    const int64_t *out_strides, const void *g, const int64_t *g_strides, const void *a,
                    const int64_t *a_strides, const void *b, const int64_t *b_strides) {
    size_t es = ct_dtype_size(dtype);
    ternary_job job = {false, op, dtype, {es, es, es, es}};
    const int64_t *strides[4] = {out_strides, g_strides, a_strides, b_strides};
    run(&job, ndim, shape, out, strides, (const void *const[]){g, a, b});
}
