/* ctensor — CPU loss kernels.
 *
 * Classification losses see the input as (N, C, K) contiguous (K: the product of the dims
 * after the class dim), so sample s = n * K + k reads its classes at n * C * K + c * K + k,
 * and I32 targets as (N * K) contiguous. Per-sample results are double arrays. Pointwise
 * losses see contiguous operands of the same n elements. Everything computes in double. */
#ifndef CT_KERNELS_CPU_LOSS_H
#define CT_KERNELS_CPU_LOSS_H

#include "ctensor/types.h"

/* Cross-entropy from logits with class weights w (double (C), NULL for 1) and label
 * smoothing e. Per sample: lse[s] = log sum_c exp(x_c), and for target t != ignore_index
 *   loss[s] = (1 - e) w[t] (lse - x_t) + e / C sum_c w[c] (lse - x_c),   tw[s] = w[t]
 * (both 0 for ignored samples). Targets are trusted (checked by the op). */
void ct_cpu_cross_entropy_forward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const void *logits,
                                  const int32_t *targets, const double *weight, int ignore_index, double smoothing,
                                  double *lse, double *loss, double *tw);

/* Its gradient into grad (N, C, K) of dtype: for a sample with target t and scale gs[s]
 *   grad_c = gs[s] ((1 - e) w[t] (p_c - [c == t]) + e / C (W p_c - w[c])),
 * p_c = exp(x_c - lse[s]), W = sum_c w[c]; 0 for ignored samples. */
void ct_cpu_cross_entropy_backward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const void *logits,
                                   const int32_t *targets, const double *weight, int ignore_index, double smoothing,
                                   const double *lse, const double *gs, void *grad);

/* NLL: loss[s] = -w[t] input[t], tw[s] = w[t] (0 and 0 when ignored). */
void ct_cpu_nll_forward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const void *input, const int32_t *targets,
                        const double *weight, int ignore_index, double *loss, double *tw);
/* grad (N, C, K): -gs[s] w[t] at the target, 0 elsewhere. */
void ct_cpu_nll_backward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const int32_t *targets, const double *weight,
                         int ignore_index, const double *gs, void *grad);

typedef enum ct_pointwise_loss {
    CT_PLOSS_MSE,           /* (x - y)^2 */
    CT_PLOSS_L1,            /* |x - y| */
    CT_PLOSS_SMOOTH_L1,     /* param beta > 0 */
    CT_PLOSS_HUBER,         /* param delta > 0 */
    CT_PLOSS_BCE_LOGITS,    /* x logits, y targets, optional weight w and pos_weight pw */
    CT_PLOSS_KL,            /* x log-probabilities, y probabilities */
    CT_PLOSS_KL_LOG_TARGET, /* x log-probabilities, y log-probabilities */
} ct_pointwise_loss;

/* Elementwise losses of n contiguous elements of dtype (w and pw of the same dtype or F32,
 * NULL for none; BCE only): into out (dtype, when not NULL) and/or their sum into *total
 * (when not NULL; summed in fixed blocks, so independent of the thread count). */
void ct_cpu_pointwise_loss(ct_pointwise_loss kind, ct_dtype dtype, int64_t n, const void *x, const void *y,
                           ct_dtype wdtype, const void *w, const void *pw, double param, void *out, double *total);

/* Gradients: dx[i] = g_i dl/dx, dy[i] = g_i dl/dy (each skipped when NULL), with
 * g_i = scale * g[i * g_stride] (g of dtype; g_stride 0 for a reduced loss). */
void ct_cpu_pointwise_loss_backward(ct_pointwise_loss kind, ct_dtype dtype, int64_t n, const void *x, const void *y,
                                    ct_dtype wdtype, const void *w, const void *pw, double param, const void *g,
                                    int64_t g_stride, double scale, void *dx, void *dy);

#endif
