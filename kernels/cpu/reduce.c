/* CPU reductions.
 *
 * The dims are split into a kept group and a reduced group, each coalesced. When the
 * reduced group holds the innermost memory dim (or everything is reduced) each output is
 * one dot-product-like loop ("inner" case, parallel over outputs or, for a single output,
 * over chunks). Otherwise rows of the kept group are accumulated for each reduced index
 * ("outer" case, parallel over blocks of outputs), so memory is read in order. */
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/strided.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define PAR_THRESHOLD (1 << 15)

typedef struct group {
    int ndim;
    int64_t shape[CT_KMAX_DIMS], strides[CT_KMAX_DIMS];
    int64_t numel;
} group;

static int64_t group_offset(const group *g, int64_t linear) {
    int64_t off = 0;
    for (int d = g->ndim - 1; d >= 0; d--) {
        off += (linear % g->shape[d]) * g->strides[d];
        linear /= g->shape[d];
    }
    return off;
}

static void make_group(group *g, int ndim, const int64_t *shape, const int64_t *strides, const bool *mask, bool want) {
    g->ndim = 0;
    g->numel = 1;
    for (int d = 0; d < ndim; d++)
        if (mask[d] == want) {
            g->shape[g->ndim] = shape[d];
            g->strides[g->ndim++] = strides[d];
            g->numel *= shape[d];
        }
    int64_t *s[1] = {g->strides};
    g->ndim = ct_coalesce(g->ndim, g->shape, 1, s);
    if (g->ndim == 0) {
        g->ndim = 1;
        g->shape[0] = 1;
        g->strides[0] = 0;
    }
}

static inline double load(const char *base, ct_dtype dt, int64_t i) {
    switch (dt) {
    case CT_F32: return ((const float *)base)[i];
    case CT_F64: return ((const double *)base)[i];
    default: return ct_cpu_load(base, dt, i);
    }
}

static inline double combine(ct_reduce_op op, double acc, double x) {
    switch (op) {
    case CT_RED_SUM: return acc + x;
    case CT_RED_MAX: return (x > acc || x != x) ? x : acc;
    default: return (x < acc || x != x) ? x : acc;
    }
}

static double identity(ct_reduce_op op) {
    return op == CT_RED_SUM ? 0.0 : (op == CT_RED_MAX ? -INFINITY : INFINITY);
}

/* Reduce `n` elements at stride s starting at base; NaN propagates through max/min. */
static double reduce_row(ct_reduce_op op, ct_dtype dt, const char *base, int64_t n, int64_t s) {
    if (op == CT_RED_SUM && dt == CT_F32 && s == 1) {
        const float *x = (const float *)base;
        double acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < n; i++)
            acc += x[i];
        return acc;
    }
    if (op == CT_RED_SUM && dt == CT_F64 && s == 1) {
        const double *x = (const double *)base;
        double acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < n; i++)
            acc += x[i];
        return acc;
    }
    double acc = identity(op);
    for (int64_t i = 0; i < n; i++)
        acc = combine(op, acc, load(base, dt, i * s));
    return acc;
}

/* Reduce a whole group starting at `base`. */
static double reduce_group(ct_reduce_op op, ct_dtype dt, const char *base, const group *g) {
    int64_t inner = g->shape[g->ndim - 1], is = g->strides[g->ndim - 1];
    int64_t rows = g->numel / inner;
    size_t es = ct_dtype_size(dt);
    double acc = identity(op);
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = 0, lin = r;
        for (int d = g->ndim - 2; d >= 0; d--) {
            off += (lin % g->shape[d]) * g->strides[d];
            lin /= g->shape[d];
        }
        double part = reduce_row(op, dt, base + off * (int64_t)es, inner, is);
        acc = op == CT_RED_SUM ? acc + part : combine(op, acc, part);
    }
    return acc;
}

void ct_cpu_reduce(ct_reduce_op op, ct_dtype dt, int ndim, const int64_t *shape, const void *in,
                   const int64_t *in_strides, const bool *reduce_mask, void *out, double scale) {
    group kept, red;
    make_group(&kept, ndim, shape, in_strides, reduce_mask, false);
    make_group(&red, ndim, shape, in_strides, reduce_mask, true);
    int64_t K = kept.numel, R = red.numel;
    size_t es = ct_dtype_size(dt);
    const char *x = in;
    if (K == 0)
        return;
    if (R == 0) {
        for (int64_t k = 0; k < K; k++)
            ct_cpu_store(out, dt, k, op == CT_RED_SUM ? 0.0 : NAN);
        return;
    }
    if (op != CT_RED_SUM)
        scale = 1.0;
    int64_t red_inner_stride = red.strides[red.ndim - 1];
    int64_t kept_inner_stride = kept.strides[kept.ndim - 1];
    bool inner_case = red_inner_stride == 1 || kept_inner_stride != 1;
    if (K == 1) {
        /* One output: split the reduced elements between threads. */
        double acc = identity(op);
        if (red.ndim == 1 && K * R >= PAR_THRESHOLD) {
            int64_t n = red.shape[0], s = red.strides[0];
#pragma omp parallel
            {
                int nt = omp_get_num_threads(), t = omp_get_thread_num();
                int64_t chunk = (n + nt - 1) / nt, begin = chunk * t, end = begin + chunk < n ? begin + chunk : n;
                double part = begin < end ? reduce_row(op, dt, x + begin * s * (int64_t)es, end - begin, s)
                                          : identity(op);
#pragma omp critical
                acc = op == CT_RED_SUM ? acc + part : combine(op, acc, part);
            }
        } else {
            acc = reduce_group(op, dt, x + group_offset(&kept, 0) * (int64_t)es, &red);
        }
        ct_cpu_store(out, dt, 0, acc * scale);
        return;
    }
    if (inner_case) {
#pragma omp parallel for schedule(static) if (K * R >= PAR_THRESHOLD)
        for (int64_t k = 0; k < K; k++) {
            double acc = reduce_group(op, dt, x + group_offset(&kept, k) * (int64_t)es, &red);
            ct_cpu_store(out, dt, k, acc * scale);
        }
        return;
    }
    /* Outer case: kept innermost dim is contiguous; walk reduced indices, accumulate rows. */
    int64_t inner = kept.shape[kept.ndim - 1];
    int64_t krows = K / inner;
#pragma omp parallel if (K * R >= PAR_THRESHOLD)
    {
        double *acc = malloc((size_t)inner * sizeof(double));
#pragma omp for schedule(static)
        for (int64_t kr = 0; kr < krows; kr++) {
            int64_t kbase = 0, lin = kr;
            for (int d = kept.ndim - 2; d >= 0; d--) {
                kbase += (lin % kept.shape[d]) * kept.strides[d];
                lin /= kept.shape[d];
            }
            if (!acc) { /* no scratch memory: reduce each output on its own */
                for (int64_t i = 0; i < inner; i++)
                    ct_cpu_store(out, dt, kr * inner + i,
                                 reduce_group(op, dt, x + (kbase + i) * (int64_t)es, &red) * scale);
                continue;
            }
            for (int64_t i = 0; i < inner; i++)
                acc[i] = identity(op);
            for (int64_t r = 0; r < R; r++) {
                const char *row = x + (kbase + group_offset(&red, r)) * (int64_t)es;
                if (op == CT_RED_SUM && dt == CT_F32) {
                    const float *f = (const float *)row;
#pragma omp simd
                    for (int64_t i = 0; i < inner; i++)
                        acc[i] += f[i];
                } else {
                    for (int64_t i = 0; i < inner; i++)
                        acc[i] = combine(op, acc[i], load(row, dt, i));
                }
            }
            for (int64_t i = 0; i < inner; i++)
                ct_cpu_store(out, dt, kr * inner + i, acc[i] * scale);
        }
        free(acc);
    }
}
