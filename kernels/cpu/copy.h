/* ctensor — CPU copy, cast and fill kernels over strided memory. */
#ifndef CT_KERNELS_CPU_COPY_H
#define CT_KERNELS_CPU_COPY_H

#include "ctensor/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dst[i] = (dst_dtype) src[i] over an N-d index space; strides in elements.
 * Float -> integer truncates toward zero and saturates (NaN -> 0). */
void ct_cpu_copy_cast(int ndim, const int64_t *shape, void *dst, ct_dtype dst_dtype, const int64_t *dst_strides,
                      const void *src, ct_dtype src_dtype, const int64_t *src_strides);
/* dst[i] = value (rounded to the dtype). */
void ct_cpu_fill(int ndim, const int64_t *shape, void *dst, ct_dtype dtype, const int64_t *strides, double value);
/* Element i of a buffer of `dtype`, as a double. */
double ct_cpu_load(const void *base, ct_dtype dtype, int64_t i);
/* Store `value` as element i (rounded / saturated like ct_cpu_copy_cast). */
void ct_cpu_store(void *base, ct_dtype dtype, int64_t i, double value);

#ifdef __cplusplus
}
#endif
#endif
