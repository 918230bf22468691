/* The optimizer update rules on the CPU: one OpenMP loop per parameter that reads the
 * gradient and the state and writes the parameter and the state once, with no temporaries.
 *
 * Each rule mirrors PyTorch 1.13's single-tensor implementation, operation by operation, in
 * the parameter's dtype (the hyper-parameters are rounded to it first, as PyTorch rounds its
 * Python-float scalars), so that an F32 run tracks PyTorch's to a few ulps and an F64 run
 * to rounding. kernels/cuda/optim.cu repeats these loops for CUDA in the same order. */
#include "nn/optim_internal.h"

#include <math.h>

/* Below this many elements a parameter is updated by one thread: waking the team costs
 * more than the loop (a 10-element bias, a 3x3 depthwise kernel). */
#define PARALLEL_MIN 32768

/* NaN-propagating maximum, like torch.maximum. */
#define MAXIMUM(a, b) ((a) != (a) ? (a) : ((b) != (b) ? (b) : ((a) > (b) ? (a) : (b))))

/* clang-format cannot lay out _Pragma inside a macro. */
/* clang-format off */
#define DEFINE_RULES(T, SQRT)                                                                                     \
    static void sgd_##T(const ct_optim_hyper *h, const ct_optim_slot *s) {                                        \
        T *p = s->param, *buf = s->state[0];                                                                      \
        const T *g = s->grad;                                                                                     \
        const T wd = (T)h->weight_decay, mom = (T)h->momentum, keep = (T)(1.0 - h->dampening);                    \
        const T neg_lr = (T)-h->lr;                                                                               \
        const bool first = s->scalar[0] != 0.0, use_momentum = h->momentum != 0.0, nesterov = h->nesterov;        \
        const bool decay = h->weight_decay != 0.0;                                                                \
        _Pragma("omp parallel for schedule(static) if (s->numel >= PARALLEL_MIN)")                                \
        for (int64_t i = 0; i < s->numel; i++) {                                                                   \
            T d = g[i];                                                                                           \
            if (decay)                                                                                            \
                d = d + wd * p[i];                                                                                \
            if (use_momentum) {                                                                                   \
                T b = first ? d : buf[i] * mom + keep * d;                                                        \
                buf[i] = b;                                                                                       \
                d = nesterov ? d + mom * b : b;                                                                   \
            }                                                                                                     \
            p[i] = p[i] + neg_lr * d;                                                                             \
        }                                                                                                         \
    }                                                                                                             \
                                                                                                                  \
    static void adam_##T(const ct_optim_hyper *h, const ct_optim_slot *s) {                                       \
        T *p = s->param, *m = s->state[0], *v = s->state[1], *vmax = s->state[2];                                 \
        const T *g = s->grad;                                                                                     \
        const bool adamw = h->rule == CT_RULE_ADAMW, amsgrad = h->amsgrad;                                        \
        const bool coupled = !adamw && h->weight_decay != 0.0;                                                    \
        const T wd = (T)h->weight_decay, shrink = (T)(1.0 - h->lr * h->weight_decay);                             \
        const T b1 = (T)h->beta1, omb1 = (T)(1.0 - h->beta1), b2 = (T)h->beta2, omb2 = (T)(1.0 - h->beta2);       \
        const T neg_step_size = (T)-s->scalar[0], bc2_sqrt = (T)s->scalar[1], eps = (T)h->eps;                    \
        _Pragma("omp parallel for schedule(static) if (s->numel >= PARALLEL_MIN)")                                \
        for (int64_t i = 0; i < s->numel; i++) {                                                                   \
            T gi = g[i], pi = p[i];                                                                               \
            if (coupled)                                                                                          \
                gi = gi + wd * pi;                                                                                \
            if (adamw)                                                                                            \
                pi = pi * shrink;                                                                                 \
            T mi = m[i] * b1 + omb1 * gi;                                                                         \
            T vi = v[i] * b2 + omb2 * gi * gi;                                                                    \
            m[i] = mi;                                                                                            \
            v[i] = vi;                                                                                            \
            if (amsgrad) {                                                                                        \
                vi = MAXIMUM(vmax[i], vi);                                                                        \
                vmax[i] = vi;                                                                                     \
            }                                                                                                     \
            T denom = SQRT(vi) / bc2_sqrt + eps;                                                                  \
            p[i] = pi + neg_step_size * (mi / denom);                                                             \
        }                                                                                                         \
    }                                                                                                             \
                                                                                                                  \
    static void rmsprop_##T(const ct_optim_hyper *h, const ct_optim_slot *s) {                                    \
        T *p = s->param, *sq = s->state[0], *buf = s->state[1], *gavg = s->state[2];                              \
        const T *g = s->grad;                                                                                     \
        const bool decay = h->weight_decay != 0.0, centered = h->centered, use_momentum = h->momentum > 0.0;      \
        const T wd = (T)h->weight_decay, alpha = (T)h->alpha, oma = (T)(1.0 - h->alpha), eps = (T)h->eps;         \
        const T mom = (T)h->momentum, neg_lr = (T)-h->lr;                                                         \
        _Pragma("omp parallel for schedule(static) if (s->numel >= PARALLEL_MIN)")                                \
        for (int64_t i = 0; i < s->numel; i++) {                                                                   \
            T gi = g[i];                                                                                          \
            if (decay)                                                                                            \
                gi = gi + wd * p[i];                                                                              \
            T si = sq[i] * alpha + oma * gi * gi;                                                                 \
            sq[i] = si;                                                                                           \
            T avg;                                                                                                \
            if (centered) {                                                                                       \
                T ai = gavg[i] * alpha + oma * gi;                                                                \
                gavg[i] = ai;                                                                                     \
                avg = SQRT(si + (T)-1 * ai * ai);                                                                 \
            } else {                                                                                              \
                avg = SQRT(si);                                                                                   \
            }                                                                                                     \
            avg = avg + eps;                                                                                      \
            if (use_momentum) {                                                                                   \
                T b = buf[i] * mom + gi / avg;                                                                    \
                buf[i] = b;                                                                                       \
                p[i] = p[i] + neg_lr * b;                                                                         \
            } else {                                                                                              \
                p[i] = p[i] + neg_lr * (gi / avg);                                                                \
            }                                                                                                     \
        }                                                                                                         \
    }                                                                                                             \
                                                                                                                  \
    static void adagrad_##T(const ct_optim_hyper *h, const ct_optim_slot *s) {                                    \
        T *p = s->param, *sum = s->state[0];                                                                      \
        const T *g = s->grad;                                                                                     \
        const bool decay = h->weight_decay != 0.0;                                                                \
        const T wd = (T)h->weight_decay, eps = (T)h->eps, neg_clr = (T)-s->scalar[0];                             \
        _Pragma("omp parallel for schedule(static) if (s->numel >= PARALLEL_MIN)")                                \
        for (int64_t i = 0; i < s->numel; i++) {                                                                   \
            T gi = g[i];                                                                                          \
            if (decay)                                                                                            \
                gi = gi + wd * p[i];                                                                              \
            T si = sum[i] + gi * gi;                                                                              \
            sum[i] = si;                                                                                          \
            p[i] = p[i] + neg_clr * (gi / (SQRT(si) + eps));                                                      \
        }                                                                                                         \
    }                                                                                                             \
                                                                                                                  \
    static void update_##T(const ct_optim_hyper *h, const ct_optim_slot *s) {                                     \
        switch (h->rule) {                                                                                        \
        case CT_RULE_SGD: sgd_##T(h, s); break;                                                                   \
        case CT_RULE_ADAM:                                                                                        \
        case CT_RULE_ADAMW: adam_##T(h, s); break;                                                                \
        case CT_RULE_RMSPROP: rmsprop_##T(h, s); break;                                                           \
        case CT_RULE_ADAGRAD: adagrad_##T(h, s); break;                                                           \
        }                                                                                                         \
    }
/* clang-format on */

DEFINE_RULES(float, sqrtf)
DEFINE_RULES(double, sqrt)

void ct__optim_cpu_update(const ct_optim_hyper *h, ct_dtype dtype, const ct_optim_slot *slot) {
    if (dtype == CT_F64)
        update_double(h, slot);
    else
        update_float(h, slot);
}
