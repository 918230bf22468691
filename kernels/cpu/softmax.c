/* CPU softmax and log-softmax.
 *
 * Two layouts of work, both parallel over independent items:
 * - rows: row r is the r-th element, in row-major order, of the dims other than `dim`
 *   (coalesced per operand); its elements lie at the stride of `dim` and are read in
 *   chunks of CHUNK elements converted to the compute type, so half types and strided
 *   rows need no scratch beyond the stack. A contiguous last dim reads plain runs.
 * - lanes: when the dims after `dim` are one contiguous block (any contiguous input with
 *   `dim` not last), LANES neighbouring rows advance together and every step reads LANES
 *   contiguous elements. Measured on [4096, 1024] f32 over dim 0 (2 threads, shared
 *   machine): rows took 2.5-4x the time of the last-dim case, since each row touches a
 *   new cache line per element; lanes take about the same time as the last dim. */
#include "kernels/cpu/softmax.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/strided.h"

#include <math.h>

#define PAR_THRESHOLD (1 << 15)
#define CHUNK 256 /* elements of a row converted at a time */
#define LANES 64  /* rows advanced together on the lanes path */

typedef ct_dims rows; /* kernels/cpu/strided.h: ct_dims_rows, ct_dims_offset */

/* ---- loads and stores of a chunk -------------------------------------------------- */

static inline void gather_f(float *buf, const char *base, ct_dtype dt, int64_t s, int64_t n) {
    if (dt == CT_F16) {
        for (int64_t i = 0; i < n; i++)
            buf[i] = ct_f16_to_f32(((const uint16_t *)base)[i * s]);
    } else if (dt == CT_BF16) {
        for (int64_t i = 0; i < n; i++)
            buf[i] = ct_bf16_to_f32(((const uint16_t *)base)[i * s]);
    } else {
        for (int64_t i = 0; i < n; i++)
            buf[i] = ((const float *)base)[i * s];
    }
}

static inline void scatter_f(char *base, ct_dtype dt, int64_t s, const float *buf, int64_t n) {
    if (dt == CT_F16) {
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)base)[i * s] = ct_f32_to_f16(buf[i]);
    } else if (dt == CT_BF16) {
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)base)[i * s] = ct_f32_to_bf16(buf[i]);
    } else {
        for (int64_t i = 0; i < n; i++)
            ((float *)base)[i * s] = buf[i];
    }
}

static inline void gather_d(double *buf, const char *base, ct_dtype dt, int64_t s, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        buf[i] = ((const double *)base)[i * s];
}

static inline void scatter_d(char *base, ct_dtype dt, int64_t s, const double *buf, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        ((double *)base)[i * s] = buf[i];
}

/* ---- kernels in compute type T (float or double) ------------------------------------
 *
 * Rows (`dim` is innermost, or the layout is irregular): each row is read in chunks. The
 * chunk's max comes first (a vectorizable loop); when it exceeds the running max, the
 * running sum is rescaled by exp(old - new), so exp never sees a positive argument. While
 * the max is still -inf nothing is added: -inf elements contribute 0.
 *
 * Lanes (`dim` has contiguous dims after it): LANES neighbouring rows advance together,
 * each step reading LANES contiguous elements, with the same online max per lane (an
 * element of -inf adds nothing; one of +inf adds exp(inf - inf) = NaN, as on the rows). */
#define SOFTMAX_KERNELS(T, SFX, EXP, LOG)                                                                    \
    static void softmax_row_##SFX(ct_dtype dt, bool take_log, const char *in, int64_t is, char *out,       \
                                  int64_t os, int64_t n) {                                                 \
        int64_t es = (int64_t)ct_dtype_size(dt);                                                           \
        T buf[CHUNK];                                                                                       \
        T max = -INFINITY, sum = 0;                                                                         \
        for (int64_t c = 0; c < n; c += CHUNK) {                                                            \
            int64_t len = n - c < CHUNK ? n - c : CHUNK;                                                    \
            gather_##SFX(buf, in + c * is * es, dt, is, len);                                               \
            T chunk_max = -INFINITY;                                                                        \
            for (int64_t i = 0; i < len; i++)                                                               \
                chunk_max = buf[i] > chunk_max ? buf[i] : chunk_max;                                        \
            if (chunk_max > max) {                                                                          \
                sum *= EXP(max - chunk_max);                                                                \
                max = chunk_max;                                                                            \
            }                                                                                               \
            if (max == -INFINITY) { /* nothing to add yet, but a NaN must still poison the row */             \
                for (int64_t i = 0; i < len; i++)                                                           \
                    if (buf[i] != buf[i])                                                                   \
                        sum = buf[i];                                                                       \
                continue;                                                                                   \
            }                                                                                               \
            T part = 0;                                                                                     \
            for (int64_t i = 0; i < len; i++)                                                               \
                part += EXP(buf[i] - max);                                                                  \
            sum += part;                                                                                    \
        }                                                                                                   \
        T log_sum = LOG(sum), inv_sum = 1 / sum;                                                            \
        for (int64_t c = 0; c < n; c += CHUNK) {                                                            \
            int64_t len = n - c < CHUNK ? n - c : CHUNK;                                                    \
            gather_##SFX(buf, in + c * is * es, dt, is, len);                                               \
            if (take_log) {                                                                                 \
                for (int64_t i = 0; i < len; i++)                                                           \
                    buf[i] = (buf[i] - max) - log_sum;                                                      \
            } else {                                                                                        \
                for (int64_t i = 0; i < len; i++)                                                           \
                    buf[i] = EXP(buf[i] - max) * inv_sum;                                                   \
            }                                                                                               \
            scatter_##SFX(out + c * os * es, dt, os, buf, len);                                             \
        }                                                                                                   \
    }                                                                                                       \
                                                                                                            \
    static void softmax_lanes_##SFX(ct_dtype dt, bool take_log, const char *in, int64_t is, char *out,     \
                                    int64_t os, int64_t n, int64_t lanes) {                                \
        int64_t es = (int64_t)ct_dtype_size(dt);                                                           \
        T buf[LANES], max[LANES], sum[LANES];                                                               \
        for (int64_t l = 0; l < lanes; l++) {                                                               \
            max[l] = -INFINITY;                                                                             \
            sum[l] = 0;                                                                                     \
        }                                                                                                   \
        for (int64_t j = 0; j < n; j++) {                                                                   \
            gather_##SFX(buf, in + j * is * es, dt, 1, lanes);                                              \
            for (int64_t l = 0; l < lanes; l++) {                                                           \
                if (buf[l] > max[l]) {                                                                      \
                    sum[l] = sum[l] * EXP(max[l] - buf[l]) + (isinf(buf[l]) ? (T)NAN : 1);                  \
                    max[l] = buf[l];                                                                        \
                } else if (buf[l] != -INFINITY) {                                                           \
                    sum[l] += EXP(buf[l] - max[l]);                                                         \
                }                                                                                           \
            }                                                                                               \
        }                                                                                                   \
        for (int64_t l = 0; l < lanes; l++)                                                                 \
            sum[l] = take_log ? LOG(sum[l]) : 1 / sum[l];                                                   \
        for (int64_t j = 0; j < n; j++) {                                                                   \
            gather_##SFX(buf, in + j * is * es, dt, 1, lanes);                                              \
            if (take_log) {                                                                                 \
                for (int64_t l = 0; l < lanes; l++)                                                         \
                    buf[l] = (buf[l] - max[l]) - sum[l];                                                    \
            } else {                                                                                        \
                for (int64_t l = 0; l < lanes; l++)                                                         \
                    buf[l] = EXP(buf[l] - max[l]) * sum[l];                                                 \
            }                                                                                               \
            scatter_##SFX(out + j * os * es, dt, 1, buf, lanes);                                            \
        }                                                                                                   \
    }                                                                                                       \
                                                                                                            \
    static void backward_row_##SFX(ct_dtype dt, bool take_log, const char *y, int64_t ys, const char *g,   \
                                   int64_t gs, char *out, int64_t os, int64_t n) {                         \
        int64_t es = (int64_t)ct_dtype_size(dt);                                                           \
        T yb[CHUNK], gb[CHUNK];                                                                             \
        T dot = 0; /* sum(g * y), or sum(g) for log-softmax */                                              \
        for (int64_t c = 0; c < n; c += CHUNK) {                                                            \
            int64_t len = n - c < CHUNK ? n - c : CHUNK;                                                    \
            gather_##SFX(gb, g + c * gs * es, dt, gs, len);                                                 \
            T part = 0;                                                                                     \
            if (take_log) {                                                                                 \
                for (int64_t i = 0; i < len; i++)                                                           \
                    part += gb[i];                                                                          \
            } else {                                                                                        \
                gather_##SFX(yb, y + c * ys * es, dt, ys, len);                                             \
                for (int64_t i = 0; i < len; i++)                                                           \
                    part += gb[i] * yb[i];                                                                  \
            }                                                                                               \
            dot += part;                                                                                    \
        }                                                                                                   \
        for (int64_t c = 0; c < n; c += CHUNK) {                                                            \
            int64_t len = n - c < CHUNK ? n - c : CHUNK;                                                    \
            gather_##SFX(gb, g + c * gs * es, dt, gs, len);                                                 \
            gather_##SFX(yb, y + c * ys * es, dt, ys, len);                                                 \
            if (take_log) {                                                                                 \
                for (int64_t i = 0; i < len; i++)                                                           \
                    gb[i] -= EXP(yb[i]) * dot;                                                              \
            } else {                                                                                        \
                for (int64_t i = 0; i < len; i++)                                                           \
                    gb[i] = yb[i] * (gb[i] - dot);                                                          \
            }                                                                                               \
            scatter_##SFX(out + c * os * es, dt, os, gb, len);                                              \
        }                                                                                                   \
    }                                                                                                       \
                                                                                                            \
    static void backward_lanes_##SFX(ct_dtype dt, bool take_log, const char *y, int64_t ys, const char *g, \
                                     int64_t gs, char *out, int64_t os, int64_t n, int64_t lanes) {        \
        int64_t es = (int64_t)ct_dtype_size(dt);                                                           \
        T yb[LANES], gb[LANES], dot[LANES] = {0};                                                           \
        for (int64_t j = 0; j < n; j++) {                                                                   \
            gather_##SFX(gb, g + j * gs * es, dt, 1, lanes);                                                \
            if (take_log) {                                                                                 \
                for (int64_t l = 0; l < lanes; l++)                                                         \
                    dot[l] += gb[l];                                                                        \
            } else {                                                                                        \
                gather_##SFX(yb, y + j * ys * es, dt, 1, lanes);                                            \
                for (int64_t l = 0; l < lanes; l++)                                                         \
                    dot[l] += gb[l] * yb[l];                                                                \
            }                                                                                               \
        }                                                                                                   \
        for (int64_t j = 0; j < n; j++) {                                                                   \
            gather_##SFX(gb, g + j * gs * es, dt, 1, lanes);                                                \
            gather_##SFX(yb, y + j * ys * es, dt, 1, lanes);                                                \
            if (take_log) {                                                                                 \
                for (int64_t l = 0; l < lanes; l++)                                                         \
                    gb[l] -= EXP(yb[l]) * dot[l];                                                           \
            } else {                                                                                        \
                for (int64_t l = 0; l < lanes; l++)                                                         \
                    gb[l] = yb[l] * (gb[l] - dot[l]);                                                       \
            }                                                                                               \
            scatter_##SFX(out + j * os * es, dt, 1, gb, lanes);                                             \
        }                                                                                                   \
    }

SOFTMAX_KERNELS(float, f, expf, logf)
SOFTMAX_KERNELS(double, d, exp, log)

/* ---- drivers ---------------------------------------------------------------------------- */

static int64_t numel_of(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

static void contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        strides[d] = s;
        s *= shape[d];
    }
}

/* True when the dims after `dim` form one contiguous block (lanes at stride 1). */
static bool lanes_contiguous(int ndim, const int64_t *shape, const int64_t *strides, int dim) {
    int64_t expected = 1;
    for (int d = ndim - 1; d > dim; d--) {
        if (shape[d] != 1 && strides[d] != expected)
            return false;
        expected *= shape[d];
    }
    return true;
}

/* The shared geometry: n along dim, `inner` elements per step of dim, and the work items
 * (rows, or blocks of LANES lanes per outer index). */
typedef struct plan {
    int64_t numel, n, inner, blocks, items;
    bool lanes;
    int64_t out_strides[CT_KMAX_DIMS];
} plan;

static bool make_plan(plan *p, int ndim, const int64_t *shape, int dim, bool lanes) {
    p->numel = numel_of(ndim, shape);
    if (p->numel == 0)
        return false;
    p->n = shape[dim];
    p->inner = numel_of(ndim - dim - 1, shape + dim + 1);
    p->lanes = lanes && p->inner > 1;
    p->blocks = p->lanes ? (p->inner + LANES - 1) / LANES : 1;
    p->items = p->lanes ? p->numel / (p->n * p->inner) * p->blocks : p->numel / p->n;
    contiguous_strides(ndim, shape, p->out_strides);
    return true;
}

/* Element offset of work item w in an operand described by `w_rows` (rows: all dims but
 * dim; lanes: the dims before dim), and the number of lanes it covers. */
static int64_t item_offset(const plan *p, const rows *r, int64_t w, int64_t *lanes) {
    if (!p->lanes) {
        *lanes = 1;
        return ct_dims_offset(r, w);
    }
    int64_t lane0 = (w % p->blocks) * LANES;
    *lanes = p->inner - lane0 < LANES ? p->inner - lane0 : LANES;
    return ct_dims_offset(r, w / p->blocks) + lane0;
}

void ct_cpu_softmax(ct_dtype dt, bool take_log, int ndim, const int64_t *shape, const void *in,
                    const int64_t *in_strides, int dim, void *out) {
    plan p;
    if (!make_plan(&p, ndim, shape, dim, lanes_contiguous(ndim, shape, in_strides, dim)))
        return;
    rows rin, rout;
    ct_dims_rows(&rin, ndim, shape, in_strides, dim, p.lanes);
    ct_dims_rows(&rout, ndim, shape, p.out_strides, dim, p.lanes);
    int64_t es = (int64_t)ct_dtype_size(dt), is = in_strides[dim], os = p.out_strides[dim];
#pragma omp parallel for schedule(static) if (p.numel >= PAR_THRESHOLD)
    for (int64_t w = 0; w < p.items; w++) {
        int64_t lanes;
        const char *src = (const char *)in + item_offset(&p, &rin, w, &lanes) * es;
        char *dst = (char *)out + item_offset(&p, &rout, w, &lanes) * es;
        if (p.lanes && dt == CT_F64)
            softmax_lanes_d(dt, take_log, src, is, dst, os, p.n, lanes);
        else if (p.lanes)
            softmax_lanes_f(dt, take_log, src, is, dst, os, p.n, lanes);
        else if (dt == CT_F64)
            softmax_row_d(dt, take_log, src, is, dst, os, p.n);
        else
            softmax_row_f(dt, take_log, src, is, dst, os, p.n);
    }
}

void ct_cpu_softmax_backward(ct_dtype dt, bool take_log, int ndim, const int64_t *shape, const void *y,
                             const int64_t *y_strides, const void *g, const int64_t *g_strides, int dim,
                             void *grad_in) {
    plan p;
    bool lanes = lanes_contiguous(ndim, shape, y_strides, dim) && lanes_contiguous(ndim, shape, g_strides, dim);
    if (!make_plan(&p, ndim, shape, dim, lanes))
        return;
    rows ry, rg, rout;
    ct_dims_rows(&ry, ndim, shape, y_strides, dim, p.lanes);
    ct_dims_rows(&rg, ndim, shape, g_strides, dim, p.lanes);
    ct_dims_rows(&rout, ndim, shape, p.out_strides, dim, p.lanes);
    int64_t es = (int64_t)ct_dtype_size(dt), ys = y_strides[dim], gs = g_strides[dim], os = p.out_strides[dim];
#pragma omp parallel for schedule(static) if (p.numel >= PAR_THRESHOLD)
    for (int64_t w = 0; w < p.items; w++) {
        int64_t lanes;
        const char *yw = (const char *)y + item_offset(&p, &ry, w, &lanes) * es;
        const char *gw = (const char *)g + item_offset(&p, &rg, w, &lanes) * es;
        char *dst = (char *)grad_in + item_offset(&p, &rout, w, &lanes) * es;
        if (p.lanes && dt == CT_F64)
            backward_lanes_d(dt, take_log, yw, ys, gw, gs, dst, os, p.n, lanes);
        else if (p.lanes)
            backward_lanes_f(dt, take_log, yw, ys, gw, gs, dst, os, p.n, lanes);
        else if (dt == CT_F64)
            backward_row_d(dt, take_log, yw, ys, gw, gs, dst, os, p.n);
        else
            backward_row_f(dt, take_log, yw, ys, gw, gs, dst, os, p.n);
    }
}
