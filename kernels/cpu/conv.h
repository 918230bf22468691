/* ctensor — CPU 2-D convolution kernels (im2col + OpenBLAS GEMM, col2im for the input
 * gradient), on contiguous NCHW buffers of F32 or F64. Half types are widened to F32 by
 * the op before they get here. */
#ifndef CT_KERNELS_CPU_CONV_H
#define CT_KERNELS_CPU_CONV_H

#include "ctensor/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One convolution, described as the forward conv2d: an input (N, C, H, W), a weight
 * (O, C / groups, kH, kW) and an output (N, O, oH, oW). oH and oW are given rather than
 * derived, so that a transposed convolution with output_padding (whose output is this
 * convolution's input) can use the same kernels: output rows beyond the usual formula
 * simply receive nothing. Also the geometry handed to the cuDNN launchers. */
typedef struct ct_conv2d_geom {
    int64_t N, C, H, W;
    int64_t O, oH, oW;
    int64_t kH, kW;
    int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
    int64_t groups;
} ct_conv2d_geom;

/* A split of the batch into chunks whose activations, (n, C, H, W) and (n, O, oH, oW), each
 * hold at most max_elems elements: cuDNN's legacy descriptors take at most INT_MAX elements
 * per tensor (int sizes and strides), so the CUDA passes run chunk by chunk. Every chunk but
 * the last holds `images` images; the last holds `last` (1 <= last <= images). A batch that
 * fits is one chunk, an empty batch too (images = last = 0). */
/* The elements per tensor of one chunk that the CUDA passes give cuDNN: 2^28, a margin under
 * cuDNN's INT_MAX that PyTorch keeps too (256 Mi elements for its forward pass), since not all
 * of cuDNN's kernels are known to handle tensors near 2^31 elements. An image larger than that
 * runs alone, up to INT_MAX. */
#define CT_CUDNN_CHUNK_ELEMS ((int64_t)1 << 28)

typedef struct ct_conv2d_batch_split {
    int64_t images, chunks, last;
} ct_conv2d_batch_split;

/* The split of g's batch, with as few chunks as possible; false when one image alone holds
 * more than max_elems elements (no split helps). */
static inline bool ct_conv2d_split_batch(const ct_conv2d_geom *g, int64_t max_elems, ct_conv2d_batch_split *s) {
    int64_t in = g->C * g->H * g->W, out = g->O * g->oH * g->oW, image = in > out ? in : out;
    if (image > max_elems)
        return false;
    s->images = image == 0 || g->N <= max_elems / image ? g->N : max_elems / image;
    s->chunks = s->images == 0 ? 1 : (g->N + s->images - 1) / s->images;
    s->last = g->N - (s->chunks - 1) * s->images;
    return true;
}

/* y = conv(x, w) + bias:
 *   x (N, C, H, W), w (O, C/groups, kH, kW), bias (O) or NULL, y (N, O, oH, oW) written.
 * Returns false only when scratch memory could not be allocated (y is then undefined). */
bool ct_cpu_conv2d_forward(ct_dtype dtype, const ct_conv2d_geom *g, const void *x, const void *w, const void *bias,
                           void *y);

/* Gradients of the convolution from gy (N, O, oH, oW); either output may be NULL when not
 * wanted:
 *   gx (N, C, H, W)           = the adjoint of the convolution applied to gy (uses w)
 *   gw (O, C/groups, kH, kW)  = sum over the batch of gy (x) im2col(x)^T  (uses x)
 * Outputs are overwritten, not accumulated. Returns false only when scratch memory could
 * not be allocated. */
bool ct_cpu_conv2d_backward(ct_dtype dtype, const ct_conv2d_geom *g, const void *x, const void *w, const void *gy,
                            void *gx, void *gw);

/* out (C) = sum of t (N, C, L) over N and L: the bias gradient. */
void ct_cpu_conv2d_channel_sum(ct_dtype dtype, int64_t N, int64_t C, int64_t L, const void *t, void *out);
/* y (N, C, L) += bias (C) broadcast: the bias of a transposed convolution. */
void ct_cpu_conv2d_add_bias(ct_dtype dtype, int64_t N, int64_t C, int64_t L, void *y, const void *bias);

#ifdef __cplusplus
}
#endif
#endif
