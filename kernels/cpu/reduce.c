/* CPU reductions.
 *
 * The dims are split into a kept group and a reduced group, each coalesced. When the
 * reduced group holds the innermost memory dim (or everything is reduced) each output is
 * one dot-product-like loop over rows ("inner" case, parallel over outputs or, for a
 * single output, over a fixed number of chunks). Otherwise rows of the kept group are
 * accumulated for each reduced index ("outer" case, parallel over blocks of lanes), so
 * memory is read in order.
 *
 * Every reduction is an accumulator with three operations: the statistics of one row,
 * a merge of two partial results (in a fixed order, so results do not depend on the
 * thread count) and a push of one element (the outer case). */
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/strided.h"

#include <math.h>
#include <string.h>

#define PAR_THRESHOLD (1 << 15)
#define CHUNK_MIN (1 << 14) /* elements per chunk when one output is split between threads */
#define MAX_CHUNKS 64
#define LANES 256 /* outputs accumulated together in the outer case */

/* The engine's operations: the public ones, and the variance. */
enum { RED_VAR = CT_RED_LOGSUMEXP + 1 };

typedef struct params {
    double scale;      /* SUM */
    double correction; /* VAR */
    bool take_sqrt;    /* VAR */
} params;

/* SUM: a = sum. MAX/MIN: a = extreme. VAR: a = count, b = mean, c = sum of squared
 * deviations. LOGSUMEXP: a = max, b = sum of exp(x - max). */
typedef struct acc {
    double a, b, c;
} acc;

typedef ct_dims group;

/* Offset of row `r` of a group (its innermost dim is the row). */
static int64_t row_offset(const group *g, int64_t r) {
    int64_t off = 0;
    for (int d = g->ndim - 2; d >= 0; d--) {
        off += (r % g->shape[d]) * g->strides[d];
        r /= g->shape[d];
    }
    return off;
}

static inline double load(const char *base, ct_dtype dt, int64_t i) {
    switch (dt) {
    case CT_F32: return ((const float *)base)[i];
    case CT_F64: return ((const double *)base)[i];
    default: return ct_cpu_load(base, dt, i);
    }
}

static inline double extreme(int op, double acc, double x) {
    if (op == CT_RED_MAX)
        return (x > acc || x != x) ? x : acc;
    return (x < acc || x != x) ? x : acc;
}

static acc identity(int op) {
    switch (op) {
    case CT_RED_MAX: return (acc){-INFINITY, 0, 0};
    case CT_RED_MIN: return (acc){INFINITY, 0, 0};
    case CT_RED_LOGSUMEXP: return (acc){-INFINITY, 0, 0};
    default: return (acc){0, 0, 0};
    }
}

/* Log-sum-exp state (max m, sum s): adding x or a partial (m2, s2). Equal maxima add
 * directly, so two infinities never meet in exp(inf - inf). */
static inline void lse_merge(acc *st, double m2, double s2) {
    if (st->a != st->a)
        return;
    if (m2 != m2) {
        st->a = m2;
    } else if (m2 > st->a) {
        st->b = st->b * exp(st->a - m2) + s2;
        st->a = m2;
    } else if (m2 == st->a) {
        st->b += s2;
    } else {
        st->b += s2 * exp(m2 - st->a);
    }
}

static void merge(int op, acc *st, acc t) {
    switch (op) {
    case CT_RED_SUM: st->a += t.a; break;
    case CT_RED_MAX:
    case CT_RED_MIN: st->a = extreme(op, st->a, t.a); break;
    case CT_RED_LOGSUMEXP: lse_merge(st, t.a, t.b); break;
    default: { /* Chan et al.: combine counts, means and squared deviations */
        if (t.a == 0)
            break;
        if (st->a == 0) {
            *st = t;
            break;
        }
        double n = st->a + t.a, delta = t.b - st->b;
        st->b += delta * (t.a / n);
        st->c += t.c + delta * delta * (st->a * t.a / n);
        st->a = n;
    }
    }
}

static inline void push(int op, acc *st, double x) {
    switch (op) {
    case CT_RED_SUM: st->a += x; break;
    case CT_RED_MAX:
    case CT_RED_MIN: st->a = extreme(op, st->a, x); break;
    case CT_RED_LOGSUMEXP: lse_merge(st, x, 1.0); break;
    default: { /* Welford */
        st->a += 1;
        double delta = x - st->b;
        st->b += delta / st->a;
        st->c += delta * (x - st->b);
    }
    }
}

static double finish(int op, acc st, const params *p) {
    switch (op) {
    case CT_RED_SUM: return st.a * p->scale;
    case CT_RED_MAX:
    case CT_RED_MIN: return st.a;
    case CT_RED_LOGSUMEXP: return (st.a != st.a || isinf(st.a)) ? st.a : st.a + log(st.b);
    default: {
        double divisor = st.a - p->correction;
        /* a tiny negative from rounding becomes 0; NaN stays NaN */
        double var = (st.c != st.c ? st.c : (st.c > 0 ? st.c : 0.0)) / (divisor > 0 ? divisor : 0.0);
        return p->take_sqrt ? sqrt(var) : var;
    }
    }
}

/* ---- one row: n elements at stride s ----------------------------------------------- */

/* The library is built for the x86-64 baseline, where widening floats to double for the sum
 * goes two at a time (SSE2) and ct_sum was compute-bound at about 47 GB/s, 74% of memcpy.
 * target_clones builds AVX-512 and AVX2 versions too and picks one at load time: 3.9 ms
 * instead of 5.6 ms for 64 Mi f32, 96% of memcpy (bench/results/2026-11-22-cpu.md). The last
 * bits of a sum may then differ between CPUs (the lanes change the order of additions). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(CT_SANITIZE_BUILD)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static double row_sum(ct_dtype dt, const char *base, int64_t n, int64_t s) {
    double sum = 0;
    if (dt == CT_F32 && s == 1) {
        const float *x = (const float *)base;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < n; i++)
            sum += x[i];
    } else if (dt == CT_F64 && s == 1) {
        const double *x = (const double *)base;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < n; i++)
            sum += x[i];
    } else {
        for (int64_t i = 0; i < n; i++)
            sum += load(base, dt, i * s);
    }
    return sum;
}

static double row_extreme(int op, ct_dtype dt, const char *base, int64_t n, int64_t s) {
    double best = identity(op).a;
    for (int64_t i = 0; i < n; i++)
        best = extreme(op, best, load(base, dt, i * s));
    return best;
}

/* Two passes: the mean, then squared deviations with the correction term of Chan, Golub
 * and LeVeque (the sum of deviations, zero in exact arithmetic) that absorbs the mean's
 * rounding error; the same term refines the mean that later merges use. */
static acc row_var(ct_dtype dt, const char *base, int64_t n, int64_t s) {
    double mean = row_sum(dt, base, n, s) / (double)n;
    double m2 = 0, dev = 0;
    if (dt == CT_F32 && s == 1) {
        const float *x = (const float *)base;
#pragma omp simd reduction(+ : m2, dev)
        for (int64_t i = 0; i < n; i++) {
            double d = x[i] - mean;
            m2 += d * d;
            dev += d;
        }
    } else if (dt == CT_F64 && s == 1) {
        const double *x = (const double *)base;
#pragma omp simd reduction(+ : m2, dev)
        for (int64_t i = 0; i < n; i++) {
            double d = x[i] - mean;
            m2 += d * d;
            dev += d;
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            double d = load(base, dt, i * s) - mean;
            m2 += d * d;
            dev += d;
        }
    }
    return (acc){(double)n, mean + dev / (double)n, m2 - dev * dev / (double)n};
}

/* The max first, then the shifted sum: no exp ever overflows. */
static acc row_lse(ct_dtype dt, const char *base, int64_t n, int64_t s) {
    double m = row_extreme(CT_RED_MAX, dt, base, n, s);
    if (m != m || isinf(m))
        return (acc){m, 1.0, 0};
    double sum = 0;
    if (dt == CT_F32 && s == 1) {
        const float *x = (const float *)base;
        for (int64_t i = 0; i < n; i++)
            sum += exp(x[i] - m);
    } else {
        for (int64_t i = 0; i < n; i++)
            sum += exp(load(base, dt, i * s) - m);
    }
    return (acc){m, sum, 0};
}

static acc reduce_row(int op, ct_dtype dt, const char *base, int64_t n, int64_t s) {
    switch (op) {
    case CT_RED_SUM: return (acc){row_sum(dt, base, n, s), 0, 0};
    case CT_RED_MAX:
    case CT_RED_MIN: return (acc){row_extreme(op, dt, base, n, s), 0, 0};
    case CT_RED_LOGSUMEXP: return row_lse(dt, base, n, s);
    default: return row_var(dt, base, n, s);
    }
}

/* Rows [begin, end) of group g starting at `base`, merged in order. */
static acc reduce_rows(int op, ct_dtype dt, const char *base, const group *g, int64_t begin, int64_t end) {
    int64_t inner = g->shape[g->ndim - 1], is = g->strides[g->ndim - 1];
    size_t es = ct_dtype_size(dt);
    acc st = identity(op);
    for (int64_t r = begin; r < end; r++)
        merge(op, &st, reduce_row(op, dt, base + row_offset(g, r) * (int64_t)es, inner, is));
    return st;
}

/* The whole group into one result. Large groups are split into a number of chunks that
 * depends on the size only, reduced in parallel and merged in order. */
static acc reduce_all(int op, ct_dtype dt, const char *base, const group *g) {
    int64_t inner = g->shape[g->ndim - 1], is = g->strides[g->ndim - 1];
    int64_t rows = g->numel / inner;
    if (g->numel < PAR_THRESHOLD)
        return reduce_rows(op, dt, base, g, 0, rows);
    int64_t chunks = g->numel / CHUNK_MIN < MAX_CHUNKS ? g->numel / CHUNK_MIN : MAX_CHUNKS;
    if (rows > 1 && chunks > rows)
        chunks = rows;
    acc parts[MAX_CHUNKS];
    size_t es = ct_dtype_size(dt);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; c++) {
        if (rows == 1) { /* one long row: split its elements */
            int64_t begin = inner * c / chunks, end = inner * (c + 1) / chunks;
            parts[c] = reduce_row(op, dt, base + begin * is * (int64_t)es, end - begin, is);
        } else {
            parts[c] = reduce_rows(op, dt, base, g, rows * c / chunks, rows * (c + 1) / chunks);
        }
    }
    acc st = parts[0];
    for (int64_t c = 1; c < chunks; c++)
        merge(op, &st, parts[c]);
    return st;
}

static void reduce_engine(int op, ct_dtype dt, int ndim, const int64_t *shape, const void *in,
                          const int64_t *in_strides, const bool *reduce_mask, void *out, const params *p) {
    group kept, red;
    ct_dims_group(&kept, ndim, shape, in_strides, reduce_mask, false);
    ct_dims_group(&red, ndim, shape, in_strides, reduce_mask, true);
    int64_t K = kept.numel, R = red.numel;
    size_t es = ct_dtype_size(dt);
    const char *x = in;
    if (K == 0)
        return;
    if (R == 0) {
        double empty = (op == CT_RED_MAX || op == CT_RED_MIN) ? NAN : finish(op, identity(op), p);
        for (int64_t k = 0; k < K; k++)
            ct_cpu_store(out, dt, k, empty);
        return;
    }
    if (K == 1) {
        ct_cpu_store(out, dt, 0, finish(op, reduce_all(op, dt, x, &red), p));
        return;
    }
    int64_t red_inner_stride = red.strides[red.ndim - 1];
    int64_t kept_inner_stride = kept.strides[kept.ndim - 1];
    if (red_inner_stride == 1 || kept_inner_stride != 1) {
        int64_t rows = R / red.shape[red.ndim - 1];
#pragma omp parallel for schedule(static) if (K * R >= PAR_THRESHOLD)
        for (int64_t k = 0; k < K; k++) {
            acc st = reduce_rows(op, dt, x + ct_dims_offset(&kept, k) * (int64_t)es, &red, 0, rows);
            ct_cpu_store(out, dt, k, finish(op, st, p));
        }
        return;
    }
    /* Outer case: the kept innermost dim is contiguous; walk the reduced indices and
     * accumulate blocks of LANES outputs, each block one unit of parallel work. */
    int64_t inner = kept.shape[kept.ndim - 1];
    int64_t krows = K / inner, blocks = (inner + LANES - 1) / LANES;
#pragma omp parallel for schedule(static) if (K * R >= PAR_THRESHOLD)
    for (int64_t w = 0; w < krows * blocks; w++) {
        int64_t kr = w / blocks, lane0 = (w % blocks) * LANES;
        int64_t n = inner - lane0 < LANES ? inner - lane0 : LANES;
        int64_t kbase = row_offset(&kept, kr) + lane0;
        acc init = identity(op);
        double A[LANES], B[LANES], C[LANES];
        for (int64_t i = 0; i < n; i++) {
            A[i] = init.a;
            B[i] = init.b;
            C[i] = init.c;
        }
        for (int64_t r = 0; r < R; r++) {
            const char *row = x + (kbase + ct_dims_offset(&red, r)) * (int64_t)es;
            if (op == CT_RED_SUM && dt == CT_F32) {
                const float *f = (const float *)row;
#pragma omp simd
                for (int64_t i = 0; i < n; i++)
                    A[i] += f[i];
            } else if (op == CT_RED_SUM && dt == CT_F64) {
                const double *f = (const double *)row;
#pragma omp simd
                for (int64_t i = 0; i < n; i++)
                    A[i] += f[i];
            } else {
                for (int64_t i = 0; i < n; i++) {
                    acc st = {A[i], B[i], C[i]};
                    push(op, &st, load(row, dt, i));
                    A[i] = st.a;
                    B[i] = st.b;
                    C[i] = st.c;
                }
            }
        }
        for (int64_t i = 0; i < n; i++)
            ct_cpu_store(out, dt, kr * inner + lane0 + i, finish(op, (acc){A[i], B[i], C[i]}, p));
    }
}

void ct_cpu_reduce(ct_reduce_op op, ct_dtype dt, int ndim, const int64_t *shape, const void *in,
                   const int64_t *in_strides, const bool *reduce_mask, void *out, double scale) {
    params p = {.scale = op == CT_RED_SUM ? scale : 1.0};
    reduce_engine(op, dt, ndim, shape, in, in_strides, reduce_mask, out, &p);
}

void ct_cpu_reduce_var(ct_dtype dt, int ndim, const int64_t *shape, const void *in, const int64_t *in_strides,
                       const bool *reduce_mask, void *out, double correction, bool take_sqrt) {
    params p = {.scale = 1.0, .correction = correction, .take_sqrt = take_sqrt};
    reduce_engine(RED_VAR, dt, ndim, shape, in, in_strides, reduce_mask, out, &p);
}

/* ---- extreme and its position along one dim --------------------------------------- */

/* True when x replaces the current best: strictly better, or the first NaN. */
static inline bool arg_better(int op, double x, double best) {
    if (best != best)
        return false;
    if (x != x)
        return true;
    return op == CT_RED_MAX ? x > best : x < best;
}

void ct_cpu_reduce_arg(ct_reduce_op op, ct_dtype dt, int ndim, const int64_t *shape, const void *in,
                       const int64_t *in_strides, int dim, void *values, int32_t *indices) {
    bool mask[CT_KMAX_DIMS] = {false};
    mask[dim] = true;
    group kept;
    ct_dims_group(&kept, ndim, shape, in_strides, mask, false);
    int64_t K = kept.numel, n = shape[dim], s = in_strides[dim];
    size_t es = ct_dtype_size(dt);
    const char *x = in;
    if (K == 0 || n == 0) /* callers reject an empty dim; nothing to write */
        return;
    if (s == 1 || kept.strides[kept.ndim - 1] != 1) {
#pragma omp parallel for schedule(static) if (K * n >= PAR_THRESHOLD)
        for (int64_t k = 0; k < K; k++) {
            const char *base = x + ct_dims_offset(&kept, k) * (int64_t)es;
            double best = load(base, dt, 0);
            int64_t at = 0;
            for (int64_t j = 1; j < n; j++) {
                double v = load(base, dt, j * s);
                if (arg_better(op, v, best)) {
                    best = v;
                    at = j;
                }
            }
            if (values)
                ct_cpu_store(values, dt, k, best);
            if (indices)
                indices[k] = (int32_t)at;
        }
        return;
    }
    /* Outer case: blocks of contiguous kept lanes, scanning j in memory order. */
    int64_t inner = kept.shape[kept.ndim - 1];
    int64_t krows = K / inner, blocks = (inner + LANES - 1) / LANES;
#pragma omp parallel for schedule(static) if (K * n >= PAR_THRESHOLD)
    for (int64_t w = 0; w < krows * blocks; w++) {
        int64_t kr = w / blocks, lane0 = (w % blocks) * LANES;
        int64_t m = inner - lane0 < LANES ? inner - lane0 : LANES;
        const char *base = x + (row_offset(&kept, kr) + lane0) * (int64_t)es;
        double best[LANES];
        int32_t at[LANES];
        for (int64_t i = 0; i < m; i++) {
            best[i] = load(base, dt, i);
            at[i] = 0;
        }
        for (int64_t j = 1; j < n; j++) {
            const char *row = base + j * s * (int64_t)es;
            for (int64_t i = 0; i < m; i++) {
                double v = load(row, dt, i);
                if (arg_better(op, v, best[i])) {
                    best[i] = v;
                    at[i] = (int32_t)j;
                }
            }
        }
        for (int64_t i = 0; i < m; i++) {
            if (values)
                ct_cpu_store(values, dt, kr * inner + lane0 + i, best[i]);
            if (indices)
                indices[kr * inner + lane0 + i] = at[i];
        }
    }
}
