/* CPU batch norm and layer norm (see norm.h).
 *
 * Batch norm: a thread owns whole channels and does everything for one channel before the
 * next: the mean pass, the variance pass around that mean, then y; or, backward, the sums
 * of g and g * (x - mean), then dx. A channel of the Fashion-MNIST CNN's activations
 * ((128, 32, 28, 28) f32) is 400 KB, so the passes after the first read it from L2.
 * Layer norm: threads own rows, and column blocks for the parameter gradients.
 * The kernel bodies live in norm_body.h, compiled once for float and once for double.
 *
 * Measured on the 2-core machine (2 threads, f32, best of 100 calls): (128, 32, 28, 28)
 * forward 0.6 ms, backward 1.5 ms; (128, 64, 14, 14) 0.25 and 0.65 ms. PyTorch 1.13 takes
 * 2.3 and 2.9 ms, 1.1 and 1.2 ms. The backward is bound by its first pass, which reads x
 * and g (25.6 MB) from L3 at about 27 GB/s. Walking the second pass backwards (to start with
 * what L2 still holds) changed nothing measurable; AVX2 code took 30% off the forward only,
 * not worth a second build of the kernels and a CPU dispatch. */
#include "kernels/cpu/norm.h"
#include "kernels/cpu/half.h"

#include <math.h>

#define CHUNK         1024  /* elements converted or processed at a time */
#define LANES         16    /* independent accumulators of a sum */
#define PAR_THRESHOLD 32768 /* elements below which a call stays on one thread */
#define COLUMN_BLOCK  64    /* columns per task of the layer-norm parameter gradients */

#define T      float
#define SFX    f
#define NATIVE CT_F32
#include "kernels/cpu/norm_body.h"
#undef T
#undef SFX
#undef NATIVE

#define T      double
#define SFX    d
#define NATIVE CT_F64
#include "kernels/cpu/norm_body.h"
#undef T
#undef SFX
#undef NATIVE

void ct_cpu_batch_norm_forward(ct_dtype dtype, int64_t N, int64_t C, int64_t S, const void *x, bool training,
                               double eps, const double *weight, const double *bias, double *mean, double *var,
                               double *invstd, void *y) {
#pragma omp parallel for schedule(static) if (N * C * S >= PAR_THRESHOLD)
    for (int64_t c = 0; c < C; c++) {
        if (dtype == CT_F64)
            bn_forward_channel_d(dtype, N, C, S, x, c, training, eps, weight, bias, mean, var, invstd, y);
        else
            bn_forward_channel_f(dtype, N, C, S, x, c, training, eps, weight, bias, mean, var, invstd, y);
    }
}

void ct_cpu_batch_norm_backward(ct_dtype dtype, int64_t N, int64_t C, int64_t S, const void *x, const void *g,
                                const double *mean, const double *invstd, const double *weight, bool training, void *dx,
                                double *dweight, double *dbias) {
#pragma omp parallel for schedule(static) if (N * C * S >= PAR_THRESHOLD)
    for (int64_t c = 0; c < C; c++) {
        if (dtype == CT_F64)
            bn_backward_channel_d(dtype, N, C, S, x, g, c, mean, invstd, weight, training, dx, dweight, dbias);
        else
            bn_backward_channel_f(dtype, N, C, S, x, g, c, mean, invstd, weight, training, dx, dweight, dbias);
    }
}

void ct_cpu_layer_norm_forward(ct_dtype dtype, int64_t R, int64_t D, const void *x, const double *weight,
                               const double *bias, double eps, double *mean, double *rstd, void *y) {
#pragma omp parallel for schedule(static) if (R * D >= PAR_THRESHOLD)
    for (int64_t r = 0; r < R; r++) {
        if (dtype == CT_F64)
            ln_forward_row_d(dtype, D, x, r, weight, bias, eps, mean, rstd, y);
        else
            ln_forward_row_f(dtype, D, x, r, weight, bias, eps, mean, rstd, y);
    }
}

void ct_cpu_layer_norm_backward(ct_dtype dtype, int64_t R, int64_t D, const void *x, const void *g, const double *mean,
                                const double *rstd, const double *weight, void *dx, double *dweight, double *dbias) {
    bool par = R * D >= PAR_THRESHOLD;
    if (dx) {
#pragma omp parallel for schedule(static) if (par)
        for (int64_t r = 0; r < R; r++) {
            if (dtype == CT_F64)
                ln_backward_row_d(dtype, D, x, g, r, mean, rstd, weight, dx);
            else
                ln_backward_row_f(dtype, D, x, g, r, mean, rstd, weight, dx);
        }
    }
    if (!dweight && !dbias)
        return;
    int64_t blocks = (D + COLUMN_BLOCK - 1) / COLUMN_BLOCK;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t j0 = b * COLUMN_BLOCK, len = D - j0 < COLUMN_BLOCK ? D - j0 : COLUMN_BLOCK;
        if (dtype == CT_F64)
            ln_backward_columns_d(dtype, R, D, x, g, j0, len, mean, rstd, dweight, dbias);
        else
            ln_backward_columns_f(dtype, R, D, x, g, j0, len, mean, rstd, dweight, dbias);
    }
}
