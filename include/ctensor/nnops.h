/* ctensor — neural-network ops: normalization, dropout, embedding, padding.
 *
 * Like every op (see ops.h), these return a new tensor in the innermost scope or NULL with
 * an error recorded, propagate a NULL input without replacing the first error, and are
 * differentiable in their floating inputs unless said otherwise. They run on the CPU and on
 * CUDA (F64 on the CPU only). Half-precision inputs (F16, BF16) compute in F32 and round the
 * result once.
 *
 * Per-channel parameters (weight, bias, running statistics) have the input's dtype, or F32
 * when the input is F16 or BF16 (mixed precision keeps parameters in F32).
 */
#ifndef CTENSOR_NNOPS_H
#define CTENSOR_NNOPS_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Batch normalization over every dim but the channel dim 1 of x, (N, C) or (N, C, *):
 *   y = (x - mean) / sqrt(var + eps) * weight + bias          (weight, bias: (C) or NULL)
 * Training: mean and the biased variance of the batch normalize x; when running_mean and
 * running_var are given (both (C), or both NULL) they are updated in place, outside the
 * autograd graph, as PyTorch does:
 *   running_mean = (1 - momentum) * running_mean + momentum * mean
 *   running_var  = (1 - momentum) * running_var  + momentum * var * n / (n - 1)
 * with n = N * prod(*) (the unbiased variance), and their version counters are bumped.
 * PyTorch's momentum=None (a cumulative average) is momentum = 1 / k for the k-th batch,
 * which is what ct_batchnorm2d_ex's cumulative_average passes.
 * Training needs n > 1 (CT_ERR_SHAPE otherwise). Evaluation (!training) normalizes with the
 * running statistics, which are then required. Gradients flow to x, weight and bias (the
 * closed-form batch-norm backward); running statistics never receive gradients.
 * momentum in [0, 1], eps >= 0 (CT_ERR_VALUE). */
ct_tensor *ct_batch_norm(const ct_tensor *x, ct_tensor *running_mean, ct_tensor *running_var, const ct_tensor *weight,
                         const ct_tensor *bias, bool training, double momentum, double eps);

/* Layer normalization over the last `normalized_ndim` dims of x (1 ≤ normalized_ndim ≤
 * ndim): each row is normalized by its mean and biased variance, then scaled by weight and
 * shifted by bias (both of those trailing dims' shape, or NULL). */
ct_tensor *ct_layer_norm(const ct_tensor *x, int normalized_ndim, const ct_tensor *weight, const ct_tensor *bias,
                         double eps);

/* Dropout: in training, each element is kept with probability 1 - p and scaled by
 * 1 / (1 - p), else zeroed. The mask comes from the global Philox generator exactly as
 * ct_bernoulli(shape, 1 - p) would draw it (element i, in row-major order, is kept when
 * uniform_f32(word i) < 1 - p), so CPU and CUDA drop the same elements for the same seed
 * and offset; it consumes ceil(numel / 4) Philox blocks. Backward regenerates the same
 * mask from the (seed, offset) it recorded. The identity (a new handle on x's data, no
 * random numbers drawn) when !training or p == 0; zeros (none drawn) when p == 1.
 * p must lie in [0, 1] (CT_ERR_VALUE). */
ct_tensor *ct_dropout(const ct_tensor *x, double p, bool training);

/* Rows of weight (V, D) picked by I32 indices of any shape: the result is (*indices, D).
 * An index outside [0, V) is CT_ERR_DIM naming it (nothing is read). The gradient of
 * weight is the scatter-add of the output gradient into a (V, D) zero tensor; the row
 * `padding_idx` (in [0, V), or -1 for none) receives no gradient. Not differentiable in
 * the indices. */
ct_tensor *ct_embedding(const ct_tensor *weight, const ct_tensor *indices, int padding_idx);

typedef enum ct_pad_mode {
    CT_PAD_CONSTANT = 0,  /* fill with `value` */
    CT_PAD_REFLECT = 1,   /* mirror without repeating the edge: [a b c] -> b | a b c | b */
    CT_PAD_REPLICATE = 2, /* repeat the edge: [a b c] -> a | a b c | c */
} ct_pad_mode;

/* Pad the trailing dims of x. `pads` holds npads (even, ≤ 2 * ndim) sizes in PyTorch's
 * order: the last dim first, (left, right), then the one before it, and so on. Constant
 * mode accepts negative sizes (they crop); reflect needs 0 ≤ pad < the dim's size and
 * replicate 0 ≤ pad with a non-empty dim. Every mode runs on the CPU and on CUDA. The
 * gradient of reflect and replicate padding sums, for each input element, the output
 * gradients that read it, in row-major output order (F32 accumulation for half types), so
 * it repeats bit for bit and is the same on both devices for F32. */
ct_tensor *ct_pad(const ct_tensor *x, const int64_t *pads, int npads, ct_pad_mode mode, double value);

#ifdef __cplusplus
}
#endif
#endif
