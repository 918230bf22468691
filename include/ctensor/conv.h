/* ctensor — convolution and pooling over NCHW images.
 *
 * Semantics, shapes and output sizes are PyTorch's (torch.nn.functional.conv2d,
 * conv_transpose2d, max_pool2d, avg_pool2d, adaptive_avg_pool2d(x, 1)). Inputs are 4-D
 * (N, C, H, W) tensors of F32, F64 (CPU only), F16 or BF16 on one device; any strides are
 * accepted (non-contiguous inputs are copied first). Half types are computed with f32
 * accumulation. Results are new tensors registered in the innermost scope, differentiable
 * in every floating input (first order). Errors follow ops.h: NULL with CT_ERR_NULL,
 * CT_ERR_SHAPE (wrong ndim, channel or group mismatch, a window larger than the padded
 * input), CT_ERR_VALUE (stride, dilation or groups below 1, negative padding),
 * CT_ERR_DTYPE or CT_ERR_DEVICE, each message naming the op and the shapes.
 *
 *     ct_conv2d_opts o = CT_CONV2D_OPTS_DEFAULT;
 *     o.padding[0] = o.padding[1] = 1;
 *     ct_tensor *y = ct_relu(ct_conv2d(x, w, b, &o));          (N, O, H, W)
 *     ct_tensor *p = ct_max_pool2d(y, NULL, NULL);              2x2, stride 2
 */
#ifndef CTENSOR_CONV_H
#define CTENSOR_CONV_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- convolution ------------------------------------------------------------------- */

/* Pairs are (height, width). Padding is zeros, added on both sides. */
typedef struct ct_conv2d_opts {
    int stride[2];   /* ≥ 1 */
    int padding[2];  /* ≥ 0 */
    int dilation[2]; /* ≥ 1: atrous convolution spaces the taps `dilation` apart */
    int groups;      /* ≥ 1, divides C and O: groups == C is a depthwise convolution */
} ct_conv2d_opts;
#define CT_CONV2D_OPTS_DEFAULT ((ct_conv2d_opts){{1, 1}, {0, 0}, {1, 1}, 1})

/* Cross-correlation of x (N, C, H, W) with w (O, C / groups, kH, kW), plus bias (O) when
 * not NULL, giving (N, O, oH, oW) with
 *     oH = floor((H + 2 padding - dilation (kH - 1) - 1) / stride) + 1     (oW alike).
 * opts NULL means CT_CONV2D_OPTS_DEFAULT. A separable convolution is a depthwise one
 * (groups == C, w (C * m, 1, kH, kW)) followed by a 1x1 one. */
ct_tensor *ct_conv2d(const ct_tensor *x, const ct_tensor *w, const ct_tensor *bias, const ct_conv2d_opts *opts);

typedef struct ct_conv_transpose2d_opts {
    int stride[2];         /* ≥ 1 */
    int padding[2];        /* ≥ 0: removed from each side of the full output */
    int output_padding[2]; /* ≥ 0 and < max(stride, dilation): added to one side, to pick
                              among the output sizes that a strided conv2d maps alike */
    int dilation[2];       /* ≥ 1 */
    int groups;            /* ≥ 1, divides C and O */
} ct_conv_transpose2d_opts;
#define CT_CONV_TRANSPOSE2D_OPTS_DEFAULT ((ct_conv_transpose2d_opts){{1, 1}, {0, 0}, {0, 0}, {1, 1}, 1})

/* The transpose (adjoint, "deconvolution") of conv2d: x (N, C, H, W), w (C, O / groups,
 * kH, kW), bias (O) or NULL, giving (N, O, oH, oW) with
 *     oH = (H - 1) stride - 2 padding + dilation (kH - 1) + output_padding + 1.
 * conv_transpose2d(y, w) is the gradient of conv2d(x, w) with respect to x, for the conv2d
 * that maps an (oH, oW) image to (H, W) with the same options. opts NULL means
 * CT_CONV_TRANSPOSE2D_OPTS_DEFAULT. */
ct_tensor *ct_conv_transpose2d(const ct_tensor *x, const ct_tensor *w, const ct_tensor *bias,
                               const ct_conv_transpose2d_opts *opts);

/* ---- pooling ----------------------------------------------------------------------- */

typedef struct ct_pool2d_opts {
    int kernel[2];          /* ≥ 1 */
    int stride[2];          /* ≥ 1, or 0 for the kernel size (PyTorch's stride=None) */
    int padding[2];         /* ≥ 0 and ≤ kernel / 2 (max: -inf, average: zeros) */
    int dilation[2];        /* ≥ 1; max pooling only (average pooling needs 1) */
    bool ceil_mode;         /* round output sizes up: a last, partial window is kept when
                               it starts inside the input or the left padding */
    bool count_include_pad; /* average pooling: padding counts in the divisor */
} ct_pool2d_opts;
/* 2x2 windows, stride 2: the usual downsampling step. */
#define CT_POOL2D_OPTS_DEFAULT ((ct_pool2d_opts){{2, 2}, {0, 0}, {0, 0}, {1, 1}, false, true})

/* Maximum over each window of x (N, C, H, W), giving (N, C, oH, oW) with
 *     oH = floor((H + 2 padding - dilation (kH - 1) - 1 + (ceil_mode ? stride - 1 : 0)) / stride) + 1,
 * less one when ceil_mode makes the last window start past the input and left padding.
 * opts NULL means CT_POOL2D_OPTS_DEFAULT. When `indices` is not NULL it receives an I32
 * tensor of the output's shape holding, for each output, the position h * W + w in its
 * input plane of the first maximum (PyTorch's return_indices); the caller releases it like
 * any tensor. The gradient goes to that position. NaN counts as the maximum. */
ct_tensor *ct_max_pool2d(const ct_tensor *x, const ct_pool2d_opts *opts, ct_tensor **indices);

/* Mean over each window of x (N, C, H, W), output sizes as ct_max_pool2d (dilation must be
 * 1). The divisor is the window size clipped to the padded input when count_include_pad,
 * else the number of input elements in the window. opts NULL means CT_POOL2D_OPTS_DEFAULT. */
ct_tensor *ct_avg_pool2d(const ct_tensor *x, const ct_pool2d_opts *opts);

/* Mean over each whole plane: (N, C, H, W) -> (N, C, 1, 1), PyTorch's
 * adaptive_avg_pool2d(x, 1). */
ct_tensor *ct_global_avg_pool2d(const ct_tensor *x);

#ifdef __cplusplus
}
#endif
#endif
