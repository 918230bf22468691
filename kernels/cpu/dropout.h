/* ctensor — CPU dropout kernel. */
#ifndef CT_KERNELS_CPU_DROPOUT_H
#define CT_KERNELS_CPU_DROPOUT_H

#include "ctensor/types.h"

/* y[i] = x[i] * scale where element i is kept, else 0, over n contiguous elements of
 * `dtype` (floating). Element i is kept when uniform_f32(word i of the Philox stream at
 * (seed, offset)) < keep_prob: the bernoulli scheme of random.h. F32/F16/BF16 multiply in
 * float, F64 in double. Used for the forward (x) and the backward (the output gradient). */
void ct_cpu_dropout(ct_dtype dtype, int64_t n, const void *x, void *y, uint64_t seed, uint64_t offset, double keep_prob,
                    double scale);

#endif
