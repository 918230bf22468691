/* ctensor — loss functions, with PyTorch's definitions and reductions.
 *
 * Every loss returns a 0-dim tensor (reductions MEAN, SUM, BATCHMEAN) or a tensor of the
 * per-element (per-sample for the classification losses) losses (NONE), in the input's
 * dtype; F16 and BF16 inputs compute in F32 and round once. Gradients flow to the input
 * (logits, log-probabilities, predictions) and, where noted, to a floating target; class
 * weights, `weight` and `pos_weight` are constants. Inputs must share device and dtype
 * (targets of the classification losses are I32). Errors: NULL inputs (CT_ERR_NULL, the
 * first error kept), shapes that do not fit (CT_ERR_SHAPE), wrong dtypes (CT_ERR_DTYPE), a
 * class target outside [0, C) that is not ignore_index (CT_ERR_DIM, naming the value), bad
 * options (CT_ERR_VALUE). Computed stably: log-sum-exp for softmax, the log1p(exp(-|x|))
 * form for logistic losses.
 */
#ifndef CTENSOR_LOSS_H
#define CTENSOR_LOSS_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ct_reduction {
    CT_REDUCTION_MEAN = 0,      /* the mean over elements (class losses: weighted, see below) */
    CT_REDUCTION_SUM = 1,       /* the sum */
    CT_REDUCTION_NONE = 2,      /* no reduction */
    CT_REDUCTION_BATCHMEAN = 3, /* the sum divided by the batch size (size of dim 0); kl_div only */
} ct_reduction;

/* Options of ct_cross_entropy; start from CT_CROSS_ENTROPY_OPTS_DEFAULT (NULL opts mean
 * the defaults). */
typedef struct ct_cross_entropy_opts {
    const ct_tensor *weight; /* (C) class weights, or NULL for all 1 */
    int ignore_index;        /* targets equal to it add nothing and count nothing (-100) */
    ct_reduction reduction;  /* MEAN, SUM or NONE (MEAN) */
    double label_smoothing;  /* in [0, 1] (0) */
} ct_cross_entropy_opts;
#define CT_CROSS_ENTROPY_OPTS_DEFAULT                                                                                  \
    { .weight = NULL, .ignore_index = -100, .reduction = CT_REDUCTION_MEAN, .label_smoothing = 0.0 }

/* Cross-entropy from logits (N, C) or (N, C, d1, ...) against I32 class targets (N) or
 * (N, d1, ...), with the class on dim 1. For sample i with target t, log-probabilities
 * lp = log_softmax(logits_i), weights w (1 without `weight`) and smoothing e:
 *   loss_i = (1 - e) * w[t] * -lp[t] + e / C * sum_c w[c] * -lp[c]
 * and 0 where t == ignore_index. MEAN divides the sum by the sum of w[t] over the samples
 * that are not ignored (NaN when there are none), as PyTorch does. lp follows the rules of
 * ct_log_softmax (ops.h): a sample whose logits hold a NaN or a +inf has a NaN loss (unless
 * ignored), as in PyTorch, on every device. The backward is fused:
 * softmax minus the (smoothed, weighted) one-hot target, from the saved log-sum-exp. */
ct_tensor *ct_cross_entropy(const ct_tensor *logits, const ct_tensor *targets, const ct_cross_entropy_opts *opts);

/* Options of ct_nll_loss (NULL means the defaults). */
typedef struct ct_nll_loss_opts {
    const ct_tensor *weight; /* (C) class weights, or NULL */
    int ignore_index;        /* (-100) */
    ct_reduction reduction;  /* MEAN, SUM or NONE (MEAN) */
} ct_nll_loss_opts;
#define CT_NLL_LOSS_OPTS_DEFAULT                                                                                       \
    { .weight = NULL, .ignore_index = -100, .reduction = CT_REDUCTION_MEAN }

/* Negative log-likelihood of log-probabilities (N, C) or (N, C, d1, ...) at I32 targets:
 * loss_i = -w[t] * log_probs[i, t]; MEAN divides by the sum of w[t] of the samples that
 * are not ignored. */
ct_tensor *ct_nll_loss(const ct_tensor *log_probs, const ct_tensor *targets, const ct_nll_loss_opts *opts);

/* Binary cross-entropy from logits x against targets y in [0, 1] (same shape, floating):
 *   loss = weight * ((1 - y) * x + (1 + (pos_weight - 1) * y) * (log1p(exp(-|x|)) + max(-x, 0)))
 * weight and pos_weight (NULL for 1) broadcast to x's shape (pos_weight is usually (C),
 * along the last dim). MEAN divides by the number of elements. Gradients flow to x and y. */
ct_tensor *ct_bce_with_logits(const ct_tensor *logits, const ct_tensor *targets, const ct_tensor *weight,
                              const ct_tensor *pos_weight, ct_reduction reduction);

/* Elementwise regression losses of d = input - target (same shape); MEAN divides by the
 * number of elements. Gradients flow to input and target.
 *   mse:       d^2
 *   l1:        |d|                          (gradient sign(d), 0 at 0)
 *   smooth_l1: 0.5 d^2 / beta if |d| < beta, else |d| - 0.5 beta     (beta >= 0; 0 is l1)
 *   huber:     0.5 d^2 if |d| < delta, else delta (|d| - 0.5 delta)  (delta > 0)        */
ct_tensor *ct_mse_loss(const ct_tensor *input, const ct_tensor *target, ct_reduction reduction);
ct_tensor *ct_l1_loss(const ct_tensor *input, const ct_tensor *target, ct_reduction reduction);
ct_tensor *ct_smooth_l1_loss(const ct_tensor *input, const ct_tensor *target, ct_reduction reduction, double beta);
ct_tensor *ct_huber_loss(const ct_tensor *input, const ct_tensor *target, ct_reduction reduction, double delta);

/* Kullback-Leibler divergence with log-probabilities `input` and the target distribution
 * (probabilities, or log-probabilities when log_target), same shape, as torch.nn.functional.
 * kl_div: pointwise target * (log target - input) (0 where target is 0) or, with log_target,
 * exp(target) * (target - input). Reductions: MEAN (over elements), SUM, NONE and
 * BATCHMEAN (the mathematically correct KL when dim 0 is the batch). Gradients flow to
 * input and target. */
ct_tensor *ct_kl_div(const ct_tensor *input, const ct_tensor *target, ct_reduction reduction, bool log_target);

/* Knowledge distillation: KL(softmax(teacher / T) || softmax(student / T)) * T^2, with
 * the class on dim 1 of the (N, C) or (N, C, d1, ...) logits and BATCHMEAN reduction (Hinton
 * et al., 2015: the T^2 keeps gradient magnitudes comparable across temperatures).
 * temperature > 0. Gradients flow to both logits (detach the teacher to train the student
 * only). */
ct_tensor *ct_distillation_loss(const ct_tensor *student_logits, const ct_tensor *teacher_logits, double temperature);

#ifdef __cplusplus
}
#endif
#endif
