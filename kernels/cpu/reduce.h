/* ctensor — CPU reductions. */
#ifndef CT_KERNELS_CPU_REDUCE_H
#define CT_KERNELS_CPU_REDUCE_H

#include "ctensor/types.h"

typedef enum ct_reduce_op {
    CT_RED_SUM,       /* scale * sum (scale = 1/n gives the mean) */
    CT_RED_MAX,       /* NaN propagates */
    CT_RED_MIN,       /* NaN propagates */
    CT_RED_LOGSUMEXP, /* max + log(sum(exp(x - max))); -inf over nothing, ±inf when the max is */
} ct_reduce_op;

/* Reduce the dims with reduce_mask[d] of a strided input of (ndim, shape) into `out`, a
 * contiguous buffer over the kept dims in order. Accumulates in double; the result does
 * not depend on the number of threads. An empty reduction gives 0 * scale for SUM, NaN for
 * MAX and MIN, -inf for LOGSUMEXP. `scale` is used by SUM only. */
void ct_cpu_reduce(ct_reduce_op op, ct_dtype dtype, int ndim, const int64_t *shape, const void *in,
                   const int64_t *in_strides, const bool *reduce_mask, void *out, double scale);

/* Variance over the masked dims, sum((x - mean)^2) / max(0, n - correction), or its square
 * root when `take_sqrt` (standard deviation). Two-pass within contiguous rows, merged with
 * Chan's formula, Welford's update when rows are read across; all in double. */
void ct_cpu_reduce_var(ct_dtype dtype, int ndim, const int64_t *shape, const void *in, const int64_t *in_strides,
                       const bool *reduce_mask, void *out, double correction, bool take_sqrt);

/* Maximum (op CT_RED_MAX) or minimum (CT_RED_MIN) along `dim`, which must not be empty:
 * `values` (of `dtype`) and/or `indices` (I32) of the first extreme, each contiguous over
 * the other dims in order (NULL skips one). NaN counts as the extreme (the first NaN wins). */
void ct_cpu_reduce_arg(ct_reduce_op op, ct_dtype dtype, int ndim, const int64_t *shape, const void *in,
                       const int64_t *in_strides, int dim, void *values, int32_t *indices);

#endif
