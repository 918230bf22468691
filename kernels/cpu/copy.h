/* ctensor — CPU copy, cast and fill kernels over strided memory. */
#ifndef CT_KERNELS_CPU_COPY_H
#define CT_KERNELS_CPU_COPY_H

#include "ctensor/types.h"
#include "kernels/cpu/strided.h"

/* Float -> integer: truncate toward zero, saturate, NaN -> 0. Shared by the CPU and CUDA
 * conversions, so both give the same integers. */
static CT_HOST_DEVICE int32_t ct_saturate_i32(double v) {
    if (v != v)
        return 0;
    if (v >= 2147483647.0)
        return INT32_MAX;
    if (v <= -2147483648.0)
        return INT32_MIN;
    return (int32_t)v;
}
static CT_HOST_DEVICE uint8_t ct_saturate_u8(double v) {
    if (v != v || v <= 0.0)
        return 0;
    if (v >= 255.0)
        return 255;
    return (uint8_t)v;
}

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
