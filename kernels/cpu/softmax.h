/* ctensor — CPU softmax and log-softmax along one dim. */
#ifndef CT_KERNELS_CPU_SOFTMAX_H
#define CT_KERNELS_CPU_SOFTMAX_H

#include "ctensor/types.h"

/* Softmax (or log-softmax when `take_log`) of a strided input of (ndim, shape) along `dim`, into
 * `out`, contiguous with the same shape. F32, F16 and BF16 compute in float, F64 in double.
 * Stable: one pass finds the row's max and the sum of exp(x - max) together (the sum is
 * rescaled when the max grows), a second writes the result. A row of -inf gives NaN, like
 * PyTorch; -inf elements of other rows give 0 (log-softmax: -inf). */
void ct_cpu_softmax(ct_dtype dtype, bool take_log, int ndim, const int64_t *shape, const void *in,
                    const int64_t *in_strides, int dim, void *out);

/* Input gradient along `dim` from the forward output y and the output gradient g (both
 * strided, of dtype `dtype`), into contiguous `grad_in`:
 *   softmax:     y * (g - sum(g * y))
 *   log-softmax: g - exp(y) * sum(g)                                                    */
void ct_cpu_softmax_backward(ct_dtype dtype, bool take_log, int ndim, const int64_t *shape, const void *y,
                             const int64_t *y_strides, const void *g, const int64_t *g_strides, int dim,
                             void *grad_in);

#endif
