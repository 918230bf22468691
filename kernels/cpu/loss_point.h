/* ctensor — the pointwise loss formulas, shared by the CPU kernels and the CUDA kernels so
 * that both backends compute the same thing (header-only, like philox.h). */
#ifndef CT_KERNELS_CPU_LOSS_POINT_H
#define CT_KERNELS_CPU_LOSS_POINT_H

#include "kernels/cpu/loss.h"

#include <math.h>

#ifdef __CUDACC__
#define CT_LOSS_FN __host__ __device__ static inline
#else
#define CT_LOSS_FN static inline
#endif

/* sigmoid(-x), without cancellation on either side. */
CT_LOSS_FN double ct_sigmoid_neg(double x) {
    if (x >= 0) {
        double e = exp(-x);
        return e / (1 + e);
    }
    return 1 / (1 + exp(x));
}

/* The loss at (x, y) and its partial derivatives dl/dx, dl/dy. w and pw are BCE's weight
 * and pos_weight (1 when absent); param is smooth L1's beta or Huber's delta. */
CT_LOSS_FN double ct_loss_point(ct_pointwise_loss kind, double x, double y, double w, double pw, double param,
                                double *dx, double *dy) {
    double d = x - y, ad = fabs(d), sign = d > 0 ? 1.0 : (d < 0 ? -1.0 : 0.0);
    switch (kind) {
    case CT_PLOSS_MSE:
        *dx = 2 * d;
        *dy = -*dx;
        return d * d;
    case CT_PLOSS_L1:
        *dx = sign;
        *dy = -sign;
        return ad;
    case CT_PLOSS_SMOOTH_L1:
        if (ad < param) {
            *dx = d / param;
            *dy = -*dx;
            return 0.5 * d * d / param;
        }
        *dx = sign;
        *dy = -sign;
        return ad - 0.5 * param;
    case CT_PLOSS_HUBER:
        if (ad < param) {
            *dx = d;
            *dy = -d;
            return 0.5 * d * d;
        }
        *dx = param * sign;
        *dy = -*dx;
        return param * (ad - 0.5 * param);
    case CT_PLOSS_BCE_LOGITS: {
        double sp = log1p(exp(-fabs(x))) + (x < 0 ? -x : 0); /* softplus(-x) */
        double lw = 1 + (pw - 1) * y;
        *dx = w * ((1 - y) - lw * ct_sigmoid_neg(x));
        *dy = w * (-x + (pw - 1) * sp);
        return w * ((1 - y) * x + lw * sp);
    }
    case CT_PLOSS_KL:
        /* target * log(target) is 0 at target 0, and so is its gradient (PyTorch >= 2.0;
         * 1.13 gives NaN there) */
        *dx = -y;
        *dy = y == 0 ? 0.0 : log(y) + 1 - x;
        return (y == 0 ? 0.0 : y * log(y)) - y * x;
    case CT_PLOSS_KL_LOG_TARGET: {
        double ey = exp(y);
        *dx = -ey;
        *dy = ey * (y - x + 1);
        return ey * (y - x);
    }
    }
    return NAN;
}

#endif
