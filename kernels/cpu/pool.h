/* ctensor — CPU 2-D max and average pooling kernels on contiguous NCHW buffers of F32 or
 * F64 (half types are widened to F32 by the op). */
#ifndef CT_KERNELS_CPU_POOL_H
#define CT_KERNELS_CPU_POOL_H

#include "ctensor/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Input (N, C, H, W), output (N, C, oH, oW). Window (oh, ow) covers input rows
 * oh * stride_h - pad_h + kh * dilation_h for kh < kH (columns alike); positions outside
 * the input are padding. The op computes oH and oW with PyTorch's rules (ceil_mode
 * included), so a window may also reach past the right or bottom padding. Also the
 * geometry handed to the cuDNN launchers. */
typedef struct ct_pool2d_geom {
    int64_t N, C, H, W, oH, oW;
    int64_t kH, kW, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
    bool count_include_pad; /* average pooling: divide by the window size clipped to the
                               padded input (PyTorch's count_include_pad=True), or by the
                               number of input elements in the window */
} ct_pool2d_geom;

/* y = max over each window; indices (same shape as y, may be NULL) = the position h * W + w
 * in the input plane of the first maximum in row-major window order (NaN counts as the
 * maximum, as in PyTorch). */
void ct_cpu_max_pool2d_forward(ct_dtype dtype, const ct_pool2d_geom *g, const void *x, void *y, int32_t *indices);
/* gx (N, C, H, W) = sum of gy at the recorded positions (written, not accumulated). */
void ct_cpu_max_pool2d_backward(ct_dtype dtype, const ct_pool2d_geom *g, const void *gy, const int32_t *indices,
                                void *gx);

/* y = window sum / divisor (see count_include_pad); dilation must be 1. */
void ct_cpu_avg_pool2d_forward(ct_dtype dtype, const ct_pool2d_geom *g, const void *x, void *y);
/* gx (N, C, H, W) = the adjoint of the forward applied to gy (written). */
void ct_cpu_avg_pool2d_backward(ct_dtype dtype, const ct_pool2d_geom *g, const void *gy, void *gx);

#ifdef __cplusplus
}
#endif
#endif
