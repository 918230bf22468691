/* CPU loss kernels (see loss.h): per-sample loops for the classification losses, one
 * elementwise formula (value and both partial derivatives, kernels/cpu/loss_point.h) for the
 * pointwise ones. */
#include "kernels/cpu/loss.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/loss_point.h"

#include <math.h>

#define PAR_THRESHOLD 32768
#define MAX_BLOCKS    256  /* partial sums of a pointwise loss */
#define MIN_BLOCK     4096 /* elements per partial sum, at least */

static inline double ld(ct_dtype dt, const void *p, int64_t i) {
    switch (dt) {
    case CT_F32: return ((const float *)p)[i];
    case CT_F64: return ((const double *)p)[i];
    case CT_F16: return ct_f16_to_f32(((const uint16_t *)p)[i]);
    default: return ct_bf16_to_f32(((const uint16_t *)p)[i]);
    }
}

static inline void st(ct_dtype dt, void *p, int64_t i, double v) {
    switch (dt) {
    case CT_F32: ((float *)p)[i] = (float)v; break;
    case CT_F64: ((double *)p)[i] = v; break;
    case CT_F16: ((uint16_t *)p)[i] = ct_f64_to_f16(v); break;
    default: ((uint16_t *)p)[i] = ct_f64_to_bf16(v); break;
    }
}

/* ---- cross-entropy and NLL ------------------------------------------------------------------ */

void ct_cpu_cross_entropy_forward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const void *logits,
                                  const int32_t *targets, const double *weight, int ignore_index, double smoothing,
                                  double *lse, double *loss, double *tw) {
#pragma omp parallel for schedule(static) if (N * C * K >= PAR_THRESHOLD)
    for (int64_t s = 0; s < N * K; s++) {
        int64_t base = (s / K) * C * K + s % K;
        double m = -INFINITY, sum = 0;
        for (int64_t c = 0; c < C; c++) {
            double v = ld(dtype, logits, base + c * K);
            m = v > m || isnan(v) ? v : m;
        }
        for (int64_t c = 0; c < C; c++)
            sum += exp(ld(dtype, logits, base + c * K) - m);
        lse[s] = m + log(sum);
        int32_t t = targets[s];
        if (t == ignore_index) {
            loss[s] = tw[s] = 0;
            continue;
        }
        double wt = weight ? weight[t] : 1.0, l = (1 - smoothing) * wt * (lse[s] - ld(dtype, logits, base + t * K));
        if (smoothing > 0) {
            double smooth = 0;
            for (int64_t c = 0; c < C; c++)
                smooth += (weight ? weight[c] : 1.0) * (lse[s] - ld(dtype, logits, base + c * K));
            l += smoothing / (double)C * smooth;
        }
        loss[s] = l;
        tw[s] = wt;
    }
}

void ct_cpu_cross_entropy_backward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const void *logits,
                                   const int32_t *targets, const double *weight, int ignore_index, double smoothing,
                                   const double *lse, const double *gs, void *grad) {
    double W = (double)C;
    if (weight) {
        W = 0;
        for (int64_t c = 0; c < C; c++)
            W += weight[c];
    }
#pragma omp parallel for schedule(static) if (N * C * K >= PAR_THRESHOLD)
    for (int64_t s = 0; s < N * K; s++) {
        int64_t base = (s / K) * C * K + s % K;
        int32_t t = targets[s];
        if (t == ignore_index) {
            for (int64_t c = 0; c < C; c++)
                st(dtype, grad, base + c * K, 0.0);
            continue;
        }
        double g = gs[s], wt = weight ? weight[t] : 1.0, hard = (1 - smoothing) * wt, soft = smoothing / (double)C;
        for (int64_t c = 0; c < C; c++) {
            double p = exp(ld(dtype, logits, base + c * K) - lse[s]);
            double d = hard * (p - (c == t ? 1.0 : 0.0));
            if (smoothing > 0)
                d += soft * (W * p - (weight ? weight[c] : 1.0));
            st(dtype, grad, base + c * K, g * d);
        }
    }
}

void ct_cpu_nll_forward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const void *input, const int32_t *targets,
                        const double *weight, int ignore_index, double *loss, double *tw) {
    for (int64_t s = 0; s < N * K; s++) {
        int32_t t = targets[s];
        if (t == ignore_index) {
            loss[s] = tw[s] = 0;
            continue;
        }
        tw[s] = weight ? weight[t] : 1.0;
        loss[s] = -tw[s] * ld(dtype, input, (s / K) * C * K + t * K + s % K);
    }
}

void ct_cpu_nll_backward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const int32_t *targets, const double *weight,
                         int ignore_index, const double *gs, void *grad) {
#pragma omp parallel for schedule(static) if (N * C * K >= PAR_THRESHOLD)
    for (int64_t s = 0; s < N * K; s++) {
        int64_t base = (s / K) * C * K + s % K;
        int32_t t = targets[s];
        for (int64_t c = 0; c < C; c++)
            st(dtype, grad, base + c * K, c == t && t != ignore_index ? -gs[s] * (weight ? weight[t] : 1.0) : 0.0);
    }
}

/* ---- pointwise losses ------------------------------------------------------------------------ */

void ct_cpu_pointwise_loss(ct_pointwise_loss kind, ct_dtype dtype, int64_t n, const void *x, const void *y,
                           ct_dtype wdtype, const void *w, const void *pw, double param, void *out, double *total) {
    int64_t block = (n + MAX_BLOCKS - 1) / MAX_BLOCKS;
    block = block < MIN_BLOCK ? MIN_BLOCK : block;
    int64_t blocks = (n + block - 1) / block;
    double partial[MAX_BLOCKS];
#pragma omp parallel for schedule(static) if (n >= PAR_THRESHOLD)
    for (int64_t b = 0; b < blocks; b++) {
        double sum = 0, dx = 0, dy = 0;
        int64_t end = (b + 1) * block < n ? (b + 1) * block : n;
        for (int64_t i = b * block; i < end; i++) {
            double l = ct_loss_point(kind, ld(dtype, x, i), ld(dtype, y, i), w ? ld(wdtype, w, i) : 1.0,
                                     pw ? ld(wdtype, pw, i) : 1.0, param, &dx, &dy);
            if (out)
                st(dtype, out, i, l);
            sum += l;
        }
        partial[b] = sum;
    }
    if (total) {
        *total = 0;
        for (int64_t b = 0; b < blocks; b++)
            *total += partial[b];
    }
}

void ct_cpu_pointwise_loss_backward(ct_pointwise_loss kind, ct_dtype dtype, int64_t n, const void *x, const void *y,
                                    ct_dtype wdtype, const void *w, const void *pw, double param, const void *g,
                                    int64_t g_stride, double scale, void *dx, void *dy) {
#pragma omp parallel for schedule(static) if (n >= PAR_THRESHOLD)
    for (int64_t i = 0; i < n; i++) {
        double gx = 0, gy = 0, gi = scale * ld(dtype, g, i * g_stride);
        ct_loss_point(kind, ld(dtype, x, i), ld(dtype, y, i), w ? ld(wdtype, w, i) : 1.0, pw ? ld(wdtype, pw, i) : 1.0,
                      param, &gx, &gy);
        if (dx)
            st(dtype, dx, i, gi * gx);
        if (dy)
            st(dtype, dy, i, gi * gy);
    }
}
