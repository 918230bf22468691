/* ctensor — CPU batch-norm and layer-norm kernels.
 *
 * Data operands are contiguous buffers of `dtype` (F32, F64, F16, BF16); F64 computes in
 * double, the others in float with sums of chunks gathered in double. Per-channel and
 * per-row quantities (weights, statistics, parameter gradients) are double arrays: they are
 * small, and the op converts them to and from tensors. NULL weight means 1, NULL bias 0. */
#ifndef CT_KERNELS_CPU_NORM_H
#define CT_KERNELS_CPU_NORM_H

#include "ctensor/types.h"

/* Batch norm of x (N, C, S) into y (N, C, S), channel by channel (threads own channels).
 * training: mean[c] and var[c] (biased) are computed from the batch and written;
 * otherwise they are read (the running statistics). invstd[c] = 1 / sqrt(var[c] + eps). */
void ct_cpu_batch_norm_forward(ct_dtype dtype, int64_t N, int64_t C, int64_t S, const void *x, bool training,
                               double eps, const double *weight, const double *bias, double *mean, double *var,
                               double *invstd, void *y);

/* Gradients of batch norm from x and g (N, C, S) and the forward's mean and invstd (C):
 * dweight[c] = sum g * xhat, dbias[c] = sum g (each skipped when NULL), and into dx (when
 * not NULL)
 *   training:  dx = weight * invstd * (g - mean(g) - xhat * mean(g * xhat))
 *   otherwise: dx = weight * invstd * g
 * with xhat = (x - mean) * invstd and the means over the N * S elements of the channel. */
void ct_cpu_batch_norm_backward(ct_dtype dtype, int64_t N, int64_t C, int64_t S, const void *x, const void *g,
                                const double *mean, const double *invstd, const double *weight, bool training, void *dx,
                                double *dweight, double *dbias);

/* Layer norm of x (R, D) over each row into y (R, D); weight and bias are (D). Writes the
 * row statistics mean[r] and rstd[r] = 1 / sqrt(var + eps) (biased variance). */
void ct_cpu_layer_norm_forward(ct_dtype dtype, int64_t R, int64_t D, const void *x, const double *weight,
                               const double *bias, double eps, double *mean, double *rstd, void *y);

/* Gradients of layer norm from x and g (R, D) and the saved mean and rstd (R):
 *   dx = rstd * (gw - mean_row(gw) - xhat * mean_row(gw * xhat)),  gw = g * weight
 * into dx (when not NULL), and dweight[j] = sum_r g * xhat, dbias[j] = sum_r g (each
 * skipped when NULL). The column sums are formed per fixed block of rows and added in
 * order, so they do not depend on the number of threads. */
void ct_cpu_layer_norm_backward(ct_dtype dtype, int64_t R, int64_t D, const void *x, const void *g, const double *mean,
                                const double *rstd, const double *weight, void *dx, double *dweight, double *dbias);

#endif
