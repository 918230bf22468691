/* ctensor — built-in modules: the layers of CNNs and MLPs, named and initialized like
 * PyTorch's, so that checkpoints carry the same names and shapes.
 *
 * Every constructor returns a new module (train mode, F32 parameters on the CPU: move the
 * model with ct_module_to) that the caller frees with ct_module_free, or NULL with an error
 * recorded: CT_ERR_VALUE naming the argument for a bad size or probability, CT_ERR_NULL for
 * a missing array. Like ops, a constructor given a NULL module (from a constructor that
 * failed) returns NULL and keeps the first error, so a whole network can be built in one
 * expression and checked once:
 *
 *     ct_module *net = ct_sequential(4, (ct_module *[]){
 *         ct_flatten_layer(1, -1), ct_linear(784, 128, true), ct_relu_layer(), ct_linear(128, 10, true)});
 *     if (!net) fprintf(stderr, "%s\n", ct_last_error_message());
 *
 * Forward passes take the input as ops do (NULL propagates) and check its shape, naming the
 * layer: "Linear(784, 128): x is [32, 100], expected [*, 784]".
 */
#ifndef CTENSOR_MODULES_H
#define CTENSOR_MODULES_H

#include "conv.h"
#include "nn.h"
#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- affine ------------------------------------------------------------------------- */

/* y = x W^T + b over the last dim of x (*, in) -> (*, out). Parameters "weight" (out, in)
 * and, when `bias`, "bias" (out): both U(-1/sqrt(in), 1/sqrt(in)) (PyTorch's default). */
ct_module *ct_linear(int64_t in_features, int64_t out_features, bool bias);

/* ---- activations (no parameters) ----------------------------------------------------- */
ct_module *ct_relu_layer(void);
ct_module *ct_leaky_relu_layer(double negative_slope); /* PyTorch's default: 0.01 */
ct_module *ct_gelu_layer(ct_gelu_approx approximate);
ct_module *ct_silu_layer(void);
ct_module *ct_sigmoid_layer(void);
ct_module *ct_tanh_layer(void);
ct_module *ct_elu_layer(double alpha);                       /* PyTorch's default: 1 */
ct_module *ct_softplus_layer(double beta, double threshold); /* PyTorch's: 1, 20; beta > 0 */

/* ---- convolution ------------------------------------------------------------------------ */

/* 2-D convolution of (N, in_channels, H, W) with kernel[0] x kernel[1] windows (kH, kW;
 * ct_conv2d; opts NULL means CT_CONV2D_OPTS_DEFAULT, whose stride, padding and dilation are
 * per-axis pairs too, and groups must divide both channel counts). Parameters "weight"
 * (out_channels, in_channels / groups, kH, kW) and, when `bias`, "bias" (out_channels),
 * initialized like PyTorch's nn.Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in =
 * in_channels / groups * kH * kW. */
ct_module *ct_conv2d_layer_ex(int64_t in_channels, int64_t out_channels, const int kernel[2],
                              const ct_conv2d_opts *opts, bool bias);
/* The same with square kernel x kernel windows. */
ct_module *ct_conv2d_layer(int64_t in_channels, int64_t out_channels, int kernel, const ct_conv2d_opts *opts,
                           bool bias);

/* The transposed convolution (ct_conv_transpose2d), PyTorch's nn.ConvTranspose2d: "weight"
 * (in_channels, out_channels / groups, kH, kW), "bias" (out_channels), initialized with
 * PyTorch's fan_in = out_channels / groups * kH * kW. */
ct_module *ct_conv_transpose2d_layer_ex(int64_t in_channels, int64_t out_channels, const int kernel[2],
                                        const ct_conv_transpose2d_opts *opts, bool bias);
/* The same with square kernel x kernel windows. */
ct_module *ct_conv_transpose2d_layer(int64_t in_channels, int64_t out_channels, int kernel,
                                     const ct_conv_transpose2d_opts *opts, bool bias);

/* ---- pooling (no parameters; opts NULL means CT_POOL2D_OPTS_DEFAULT: 2x2, stride 2; kernel,
 * stride, padding and dilation are (height, width) pairs, so windows may be non-square) ---- */
ct_module *ct_maxpool2d_layer(const ct_pool2d_opts *opts);
ct_module *ct_avgpool2d_layer(const ct_pool2d_opts *opts); /* dilation must be 1 */
/* (N, C, H, W) -> (N, C, 1, 1), PyTorch's nn.AdaptiveAvgPool2d(1); follow it with
 * ct_flatten_layer(1, -1) for (N, C). */
ct_module *ct_global_avgpool2d_layer(void);

/* ---- normalization ------------------------------------------------------------------------ */

/* Batch normalization over channel dim 1 (ct_batch_norm): BatchNorm1d takes (N, C) or
 * (N, C, L), BatchNorm2d (N, C, H, W). Parameters "weight" (C, ones) and "bias" (C, zeros)
 * when affine; buffers "running_mean" (C, zeros), "running_var" (C, ones) and
 * "num_batches_tracked" (0-dim I32), as in PyTorch, so checkpoints carry PyTorch's names
 * (affine=False has no weight or bias entries). In train mode a forward normalizes with the
 * batch statistics, updates the running ones and counts the batch; in eval mode it
 * normalizes with the running statistics and changes nothing. */
typedef struct ct_batchnorm_opts {
    double eps;              /* added to the variance; finite and >= 0 (PyTorch's 1e-5) */
    double momentum;         /* in [0, 1]: running = (1 - momentum) running + momentum batch */
    bool cumulative_average; /* PyTorch's momentum=None: the running statistics are the plain
                                average of every batch seen (momentum 1 / num_batches_tracked,
                                this batch counted); `momentum` is then ignored. Each training
                                forward reads the count on the host (synchronizes on CUDA) */
    bool affine;             /* learnable weight and bias; false: y is only normalized */
} ct_batchnorm_opts;
#define CT_BATCHNORM_OPTS_DEFAULT                                                                                      \
    ((ct_batchnorm_opts){.eps = 1e-5, .momentum = 0.1, .cumulative_average = false, .affine = true})

/* opts NULL means CT_BATCHNORM_OPTS_DEFAULT. */
ct_module *ct_batchnorm1d_ex(int64_t num_features, const ct_batchnorm_opts *opts);
ct_module *ct_batchnorm2d_ex(int64_t num_features, const ct_batchnorm_opts *opts);
/* The same with affine parameters and an exponential running average of `momentum`
 * (PyTorch's default 0.1). */
ct_module *ct_batchnorm1d(int64_t num_features, double eps, double momentum);
ct_module *ct_batchnorm2d(int64_t num_features, double eps, double momentum);

/* Layer normalization over the trailing `ndim` dims, which must equal normalized_shape
 * (ct_layer_norm). With elementwise_affine, parameters "weight" (ones) and "bias" (zeros)
 * of normalized_shape. */
ct_module *ct_layernorm(const int64_t *normalized_shape, int ndim, double eps, bool elementwise_affine);

/* ---- embedding ---------------------------------------------------------------------------- */

/* A lookup table: I32 indices of any shape -> (*indices, embedding_dim) (ct_embedding).
 * Parameter "weight" (num_embeddings, embedding_dim) drawn from N(0, 1) as in PyTorch; the row
 * padding_idx (in [0, num_embeddings), or -1 for none) is zeroed and receives no gradient. */
ct_module *ct_embedding_layer(int64_t num_embeddings, int64_t embedding_dim, int padding_idx);

/* ---- regularization and reshaping ----------------------------------------------------- */

/* Dropout with drop probability p in [0, 1): zeroes elements with probability p and scales
 * the rest by 1 / (1 - p) in train mode; the identity in eval mode. */
ct_module *ct_dropout_layer(double p);

/* Collapse dims start_dim..end_dim (negative counts from the end) into one; PyTorch's
 * nn.Flatten() is ct_flatten_layer(1, -1). */
ct_module *ct_flatten_layer(int start_dim, int end_dim);

/* ---- containers ------------------------------------------------------------------------ */

/* Run `n` modules in order. The children are named "0", "1", ... as in PyTorch, so their
 * parameters are "0.weight", "2.bias". The sequential takes ownership of all `n` modules,
 * also when it fails (it then frees the non-NULL ones), so nested constructor calls never
 * leak; a module that already belongs to another parent is an error (CT_ERR_VALUE) and is
 * left to that parent. n = 0 gives the identity. */
ct_module *ct_sequential(int n, ct_module **modules);
/* Append `module` as the next numbered child of a module made by ct_sequential. On error
 * (not a Sequential, NULL module) ownership is NOT taken, as with ct_module_add_child. */
ct_status ct_sequential_append(ct_module *sequential, ct_module *module);

/* ---- blocks ------------------------------------------------------------------------------ */

/* The ResNet basic block (He et al. 2016; torchvision's BasicBlock, expansion 1):
 *     out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
 * conv1 is 3x3 with `stride` (1 or 2 in practice, >= 1), conv2 3x3, both padding 1 and no
 * bias; the shortcut is the identity, or, when stride != 1 or in_channels != out_channels,
 * "downsample" = Sequential(1x1 conv with `stride` and no bias, BatchNorm2d). Children are
 * named conv1, bn1, conv2, bn2, downsample.0, downsample.1 like torchvision's, so their
 * checkpoints' tensor names match. (N, in_channels, H, W) -> (N, out_channels, ceil(H /
 * stride), ceil(W / stride)). */
ct_module *ct_residual_block(int64_t in_channels, int64_t out_channels, int stride);

#ifdef __cplusplus
}
#endif
#endif
