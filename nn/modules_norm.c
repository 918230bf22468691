/* Normalization modules: BatchNorm1d/2d and LayerNorm. */
#include "nn/modules_internal.h"

#include <math.h>

/* ---- BatchNorm ----------------------------------------------------------------------- */

typedef struct batchnorm_impl {
    bool two_d; /* BatchNorm2d: (N, C, H, W); BatchNorm1d: (N, C) or (N, C, L) */
    int64_t C;
    ct_batchnorm_opts opts;
} batchnorm_impl;

/* Count a training batch: num_batches_tracked += 1, outside the graph. */
static ct_status count_batch(ct_tensor *count) {
    ct_no_grad_begin();
    ct_scope_begin();
    ct_status st = ct_copy_(count, ct_add_scalar(count, 1));
    ct_scope_end();
    ct_no_grad_end();
    return st;
}

/* The blend factor of this training batch. The cumulative average of k batches is the
 * running average with factor 1 / k, the batch being the k-th: the count is read before it
 * is incremented (on the host: a synchronization on CUDA, as PyTorch's
 * float(num_batches_tracked) is). Without the buffer (a state loaded without it) the
 * statistics stay as they are, PyTorch's factor 0. */
static bool blend_factor(const ct_module *m, const batchnorm_impl *p, ct_tensor *count, double *factor) {
    if (!p->opts.cumulative_average) {
        *factor = p->opts.momentum;
        return true;
    }
    if (!count) {
        *factor = 0;
        return true;
    }
    double seen = ct_item(count);
    if (isnan(seen))
        return false;
    if (seen < 0) {
        ct__set_error(CT_ERR_VALUE, "%s(%lld): num_batches_tracked is %g, cannot average", ct_module_type(m),
                      (long long)p->C, seen);
        return false;
    }
    *factor = 1 / (seen + 1);
    return true;
}

static ct_tensor *batchnorm_forward(ct_module *m, ct_tensor *x) {
    const batchnorm_impl *p = ct_module_impl(m);
    bool two_d = p->two_d;
    bool ndim_ok = two_d ? x->ndim == 4 : (x->ndim == 2 || x->ndim == 3);
    if (!ndim_ok || x->shape[1] != p->C) {
        ct__set_error(CT_ERR_SHAPE, "%s(%lld): x is %s, expected %s", ct_module_type(m), (long long)p->C,
                      ct_shape_str(x),
                      two_d ? "(N, C, H, W) with C = num_features" : "(N, C) or (N, C, L) with C = num_features");
        return NULL;
    }
    bool training = ct_module_is_training(m);
    ct_tensor *count = ct_module_buffer(m, "num_batches_tracked");
    double factor = 0;
    if (training && !blend_factor(m, p, count, &factor))
        return NULL;
    ct_tensor *y =
        ct_batch_norm(x, ct_module_buffer(m, "running_mean"), ct_module_buffer(m, "running_var"),
                      ct_module_param(m, "weight"), ct_module_param(m, "bias"), training, factor, p->opts.eps);
    /* a batch the op refused is not counted */
    if (y && training && count && count_batch(count) != CT_OK)
        return NULL;
    return y;
}

static void batchnorm_describe(const ct_module *m, char *buf, size_t size) {
    const batchnorm_impl *p = ct_module_impl(m);
    char momentum[32];
    if (p->opts.cumulative_average)
        snprintf(momentum, sizeof momentum, "None");
    else
        snprintf(momentum, sizeof momentum, "%g", p->opts.momentum);
    snprintf(buf, size, "%lld, eps=%g, momentum=%s%s", (long long)p->C, p->opts.eps, momentum,
             p->opts.affine ? "" : ", affine=False");
}

static const ct_module_vtable batchnorm1d_vt = {"BatchNorm1d", batchnorm_forward, batchnorm_describe,
                                                ct__layer_free_impl};
static const ct_module_vtable batchnorm2d_vt = {"BatchNorm2d", batchnorm_forward, batchnorm_describe,
                                                ct__layer_free_impl};

static ct_module *batchnorm(const char *op, bool two_d, int64_t C, const ct_batchnorm_opts *opts) {
    batchnorm_impl impl = {two_d, C, opts ? *opts : CT_BATCHNORM_OPTS_DEFAULT};
    const ct_batchnorm_opts *o = &impl.opts;
    if (C <= 0 || !(o->eps >= 0 && isfinite(o->eps)) ||
        (!o->cumulative_average && !(o->momentum >= 0 && o->momentum <= 1))) {
        ct__set_error(
            CT_ERR_VALUE,
            "%s: need num_features > 0, finite eps >= 0 and momentum in [0, 1], got %lld, eps %g, momentum %g", op,
            (long long)C, o->eps, o->momentum);
        return NULL;
    }
    ct_module *m = ct__layer_new(two_d ? &batchnorm2d_vt : &batchnorm1d_vt, &impl, sizeof impl);
    if (!m)
        return NULL;
    /* PyTorch's order: weight, bias, then the buffers; affine=False has no weight or bias */
    ct_tensor *w = o->affine ? ct__layer_param(m, "weight", &C, 1) : NULL;
    ct_tensor *b = w ? ct__layer_param(m, "bias", &C, 1) : NULL;
    bool params_ok = !o->affine || (b && ct_init_ones(w) == CT_OK && ct_init_zeros(b) == CT_OK);
    ct_tensor *mean = params_ok ? ct__layer_buffer(m, "running_mean", &C, 1, CT_F32) : NULL;
    ct_tensor *var = mean ? ct__layer_buffer(m, "running_var", &C, 1, CT_F32) : NULL;
    ct_tensor *count = var ? ct__layer_buffer(m, "num_batches_tracked", NULL, 0, CT_I32) : NULL;
    if (!count || ct_init_ones(var) != CT_OK) { /* buffers start as zeros */
        ct_module_free(m);
        return NULL;
    }
    return m;
}

ct_module *ct_batchnorm1d_ex(int64_t num_features, const ct_batchnorm_opts *opts) {
    return batchnorm("ct_batchnorm1d", false, num_features, opts);
}
ct_module *ct_batchnorm2d_ex(int64_t num_features, const ct_batchnorm_opts *opts) {
    return batchnorm("ct_batchnorm2d", true, num_features, opts);
}
ct_module *ct_batchnorm1d(int64_t num_features, double eps, double momentum) {
    ct_batchnorm_opts o = CT_BATCHNORM_OPTS_DEFAULT;
    o.eps = eps;
    o.momentum = momentum;
    return ct_batchnorm1d_ex(num_features, &o);
}
ct_module *ct_batchnorm2d(int64_t num_features, double eps, double momentum) {
    ct_batchnorm_opts o = CT_BATCHNORM_OPTS_DEFAULT;
    o.eps = eps;
    o.momentum = momentum;
    return ct_batchnorm2d_ex(num_features, &o);
}

/* ---- LayerNorm ----------------------------------------------------------------------- */

typedef struct layernorm_impl {
    int ndim;
    int64_t shape[CT_MAX_DIMS];
    double eps;
    bool affine;
} layernorm_impl;

static ct_tensor *layernorm_forward(ct_module *m, ct_tensor *x) {
    const layernorm_impl *p = ct_module_impl(m);
    bool fits = x->ndim >= p->ndim;
    for (int d = 0; fits && d < p->ndim; d++)
        fits = x->shape[x->ndim - p->ndim + d] == p->shape[d];
    if (!fits) {
        ct__set_error(CT_ERR_SHAPE, "LayerNorm(%s): x is %s, expected trailing dims %s",
                      ct__shape_fmt(p->ndim, p->shape), ct_shape_str(x), ct__shape_fmt(p->ndim, p->shape));
        return NULL;
    }
    return ct_layer_norm(x, p->ndim, ct_module_param(m, "weight"), ct_module_param(m, "bias"), p->eps);
}

static void layernorm_describe(const ct_module *m, char *buf, size_t size) {
    const layernorm_impl *p = ct_module_impl(m);
    snprintf(buf, size, "%s, eps=%g%s", ct__shape_fmt(p->ndim, p->shape), p->eps,
             p->affine ? "" : ", elementwise_affine=False");
}

static const ct_module_vtable layernorm_vt = {"LayerNorm", layernorm_forward, layernorm_describe, ct__layer_free_impl};

ct_module *ct_layernorm(const int64_t *normalized_shape, int ndim, double eps, bool elementwise_affine) {
    const char *op = "ct_layernorm";
    if (!normalized_shape) {
        ct__set_error(CT_ERR_NULL, "%s: normalized_shape is NULL", op);
        return NULL;
    }
    if (ndim < 1 || ndim > CT_MAX_DIMS) {
        ct__set_error(CT_ERR_VALUE, "%s: normalized_shape needs 1 to %d dims, got %d", op, CT_MAX_DIMS, ndim);
        return NULL;
    }
    layernorm_impl impl = {ndim, {0}, eps, elementwise_affine};
    for (int d = 0; d < ndim; d++) {
        if (normalized_shape[d] <= 0) {
            ct__set_error(CT_ERR_VALUE, "%s: normalized_shape %s must have positive sizes", op,
                          ct__shape_fmt(ndim, normalized_shape));
            return NULL;
        }
        impl.shape[d] = normalized_shape[d];
    }
    if (!(eps >= 0 && isfinite(eps))) {
        ct__set_error(CT_ERR_VALUE, "%s: eps must be finite and >= 0, got %g", op, eps);
        return NULL;
    }
    ct_module *m = ct__layer_new(&layernorm_vt, &impl, sizeof impl);
    if (!m || !elementwise_affine)
        return m;
    ct_tensor *w = ct__layer_param(m, "weight", impl.shape, ndim);
    ct_tensor *b = w ? ct__layer_param(m, "bias", impl.shape, ndim) : NULL;
    if (!b || ct_init_ones(w) != CT_OK || ct_init_zeros(b) != CT_OK) {
        ct_module_free(m);
        return NULL;
    }
    return m;
}
