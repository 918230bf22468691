/* ctensor — CPU reductions. */
#ifndef CT_KERNELS_CPU_REDUCE_H
#define CT_KERNELS_CPU_REDUCE_H

#include "ctensor/types.h"

typedef enum ct_reduce_op {
    CT_RED_SUM, /* scale * sum (scale = 1/n gives the mean) */
    CT_RED_MAX,
    CT_RED_MIN,
} ct_reduce_op;

/* Reduce the dims with reduce_mask[d] of a strided input of (ndim, shape) into `out`, a
 * contiguous buffer over the kept dims in order. Accumulates in double. */
void ct_cpu_reduce(ct_reduce_op op, ct_dtype dtype, int ndim, const int64_t *shape, const void *in,
                   const int64_t *in_strides, const bool *reduce_mask, void *out, double scale);

#endif
