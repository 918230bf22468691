/* Built-in modules: Linear, activations, Flatten, Sequential, and the helpers the
 * other module files share. */
#include "nn/modules_internal.h"

#include <math.h>
#include <string.h>

/* ---- shared helpers ---------------------------------------------------------------- */

ct_module *ct__layer_new(const ct_module_vtable *vt, const void *impl, size_t size) {
    void *copy = NULL;
    if (impl) {
        copy = malloc(size);
        if (!copy) {
            ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", vt->type_name);
            return NULL;
        }
        memcpy(copy, impl, size);
    }
    ct_module *m = ct_module_create(vt, copy);
    if (!m)
        free(copy);
    return m;
}

void ct__layer_free_impl(ct_module *m) {
    free(ct_module_impl(m));
}

ct_tensor *ct__layer_buffer(ct_module *m, const char *name, const int64_t *shape, int ndim, ct_dtype dtype) {
    ct_tensor *t = ct_zeros(shape, ndim, dtype, CT_CPU);
    if (!t)
        return NULL;
    if (ct_module_add_buffer(m, name, t) != CT_OK) {
        ct_tensor_free(t);
        return NULL;
    }
    return t;
}

ct_tensor *ct__layer_param(ct_module *m, const char *name, const int64_t *shape, int ndim) {
    ct_tensor *t = ct_empty(shape, ndim, CT_F32, CT_CPU);
    if (!t)
        return NULL;
    if (ct_module_add_parameter(m, name, t) != CT_OK) {
        ct_tensor_free(t);
        return NULL;
    }
    return t;
}

ct_status ct__layer_init_affine(ct_tensor *weight, ct_tensor *bias) {
    ct_status st = ct_init_kaiming_uniform(weight, sqrt(5.0), CT_FAN_IN, CT_NONLINEARITY_LEAKY_RELU);
    if (st != CT_OK || !bias)
        return st;
    int64_t fan_in;
    if ((st = ct_init_calculate_fans(weight, &fan_in, NULL)) != CT_OK)
        return st;
    double bound = fan_in > 0 ? 1.0 / sqrt((double)fan_in) : 0.0;
    return ct_init_uniform(bias, -bound, bound);
}

ct_tensor *ct__layer_identity(ct_tensor *x) {
    return ct_reshape(x, x->shape, x->ndim);
}

/* ---- Linear ------------------------------------------------------------------------ */

typedef struct linear_impl {
    int64_t in, out;
} linear_impl;

static ct_tensor *linear_forward(ct_module *m, ct_tensor *x) {
    const linear_impl *p = ct_module_impl(m);
    if (x->ndim < 1 || x->shape[x->ndim - 1] != p->in) {
        ct__set_error(CT_ERR_SHAPE, "Linear(%lld, %lld): x is %s, expected [*, %lld]", (long long)p->in,
                      (long long)p->out, ct_shape_str(x), (long long)p->in);
        return NULL;
    }
    ct_tensor *y = ct_matmul(x, ct_transpose(ct_module_param(m, "weight"), 0, 1));
    ct_tensor *bias = ct_module_param(m, "bias");
    return bias ? ct_add(y, bias) : y;
}

static void linear_describe(const ct_module *m, char *buf, size_t size) {
    const linear_impl *p = ct_module_impl(m);
    snprintf(buf, size, "%lld, %lld%s", (long long)p->in, (long long)p->out,
             ct_module_param(m, "bias") ? "" : ", bias=False");
}

static const ct_module_vtable linear_vt = {"Linear", linear_forward, linear_describe, ct__layer_free_impl};

ct_module *ct_linear(int64_t in_features, int64_t out_features, bool bias) {
    if (in_features <= 0 || out_features <= 0) {
        ct__set_error(CT_ERR_VALUE, "ct_linear: in_features and out_features must be positive, got %lld and %lld",
                      (long long)in_features, (long long)out_features);
        return NULL;
    }
    ct_module *m = ct__layer_new(&linear_vt, &(linear_impl){in_features, out_features}, sizeof(linear_impl));
    if (!m)
        return NULL;
    ct_tensor *w = ct__layer_param(m, "weight", (int64_t[]){out_features, in_features}, 2);
    ct_tensor *b = bias ? ct__layer_param(m, "bias", (int64_t[]){out_features}, 1) : NULL;
    if (!w || (bias && !b) || ct__layer_init_affine(w, b) != CT_OK) {
        ct_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- activations ------------------------------------------------------------------- */

typedef enum activation_kind {
    ACT_RELU,
    ACT_LEAKY_RELU,
    ACT_GELU,
    ACT_SILU,
    ACT_SIGMOID,
    ACT_TANH,
    ACT_ELU,
    ACT_SOFTPLUS,
} activation_kind;

typedef struct activation_impl {
    activation_kind kind;
    double p0, p1; /* slope | alpha | beta, threshold | the GELU approximation */
} activation_impl;

static ct_tensor *activation_forward(ct_module *m, ct_tensor *x) {
    const activation_impl *p = ct_module_impl(m);
    switch (p->kind) {
    case ACT_RELU: return ct_relu(x);
    case ACT_LEAKY_RELU: return ct_leaky_relu(x, p->p0);
    case ACT_GELU: return ct_gelu(x, (ct_gelu_approx)p->p0);
    case ACT_SILU: return ct_silu(x);
    case ACT_SIGMOID: return ct_sigmoid(x);
    case ACT_TANH: return ct_tanh(x);
    case ACT_ELU: return ct_elu(x, p->p0);
    case ACT_SOFTPLUS: return ct_softplus(x, p->p0, p->p1);
    }
    ct__set_error(CT_ERR_INTERNAL, "internal error: activation kind %d", (int)p->kind);
    return NULL;
}

static void activation_describe(const ct_module *m, char *buf, size_t size) {
    const activation_impl *p = ct_module_impl(m);
    switch (p->kind) {
    case ACT_LEAKY_RELU: snprintf(buf, size, "negative_slope=%g", p->p0); break;
    case ACT_GELU: snprintf(buf, size, "approximate='%s'", p->p0 == CT_GELU_TANH ? "tanh" : "none"); break;
    case ACT_ELU: snprintf(buf, size, "alpha=%g", p->p0); break;
    case ACT_SOFTPLUS: snprintf(buf, size, "beta=%g, threshold=%g", p->p0, p->p1); break;
    default: buf[0] = '\0';
    }
}

#define ACTIVATION_VT(var, name)                                                                                       \
    static const ct_module_vtable var = {name, activation_forward, activation_describe, ct__layer_free_impl}
ACTIVATION_VT(relu_vt, "ReLU");
ACTIVATION_VT(leaky_relu_vt, "LeakyReLU");
ACTIVATION_VT(gelu_vt, "GELU");
ACTIVATION_VT(silu_vt, "SiLU");
ACTIVATION_VT(sigmoid_vt, "Sigmoid");
ACTIVATION_VT(tanh_vt, "Tanh");
ACTIVATION_VT(elu_vt, "ELU");
ACTIVATION_VT(softplus_vt, "Softplus");

static ct_module *activation(const ct_module_vtable *vt, activation_kind kind, double p0, double p1) {
    return ct__layer_new(vt, &(activation_impl){kind, p0, p1}, sizeof(activation_impl));
}

ct_module *ct_relu_layer(void) {
    return activation(&relu_vt, ACT_RELU, 0, 0);
}
ct_module *ct_silu_layer(void) {
    return activation(&silu_vt, ACT_SILU, 0, 0);
}
ct_module *ct_sigmoid_layer(void) {
    return activation(&sigmoid_vt, ACT_SIGMOID, 0, 0);
}
ct_module *ct_tanh_layer(void) {
    return activation(&tanh_vt, ACT_TANH, 0, 0);
}

ct_module *ct_leaky_relu_layer(double negative_slope) {
    if (!isfinite(negative_slope)) {
        ct__set_error(CT_ERR_VALUE, "ct_leaky_relu_layer: negative_slope must be finite, got %g", negative_slope);
        return NULL;
    }
    return activation(&leaky_relu_vt, ACT_LEAKY_RELU, negative_slope, 0);
}

ct_module *ct_gelu_layer(ct_gelu_approx approximate) {
    if (approximate != CT_GELU_ERF && approximate != CT_GELU_TANH) {
        ct__set_error(CT_ERR_VALUE, "ct_gelu_layer: approximate must be CT_GELU_ERF or CT_GELU_TANH, got %d",
                      (int)approximate);
        return NULL;
    }
    return activation(&gelu_vt, ACT_GELU, (double)approximate, 0);
}

ct_module *ct_elu_layer(double alpha) {
    if (!isfinite(alpha)) {
        ct__set_error(CT_ERR_VALUE, "ct_elu_layer: alpha must be finite, got %g", alpha);
        return NULL;
    }
    return activation(&elu_vt, ACT_ELU, alpha, 0);
}

ct_module *ct_softplus_layer(double beta, double threshold) {
    if (!(beta > 0) || !isfinite(beta) || isnan(threshold)) {
        ct__set_error(CT_ERR_VALUE,
                      "ct_softplus_layer: need a finite beta > 0 and a threshold, got beta %g, threshold %g", beta,
                      threshold);
        return NULL;
    }
    return activation(&softplus_vt, ACT_SOFTPLUS, beta, threshold);
}

/* ---- Flatten ----------------------------------------------------------------------- */

typedef struct flatten_impl {
    int start, end;
} flatten_impl;

static ct_tensor *flatten_forward(ct_module *m, ct_tensor *x) {
    const flatten_impl *p = ct_module_impl(m);
    return ct_flatten(x, p->start, p->end);
}

static void flatten_describe(const ct_module *m, char *buf, size_t size) {
    const flatten_impl *p = ct_module_impl(m);
    snprintf(buf, size, "start_dim=%d, end_dim=%d", p->start, p->end);
}

static const ct_module_vtable flatten_vt = {"Flatten", flatten_forward, flatten_describe, ct__layer_free_impl};

ct_module *ct_flatten_layer(int start_dim, int end_dim) {
    if ((start_dim >= 0) == (end_dim >= 0) && start_dim > end_dim) {
        ct__set_error(CT_ERR_VALUE, "ct_flatten_layer: start_dim %d comes after end_dim %d", start_dim, end_dim);
        return NULL;
    }
    return ct__layer_new(&flatten_vt, &(flatten_impl){start_dim, end_dim}, sizeof(flatten_impl));
}

/* ---- Sequential -------------------------------------------------------------------- */

static ct_tensor *sequential_forward(ct_module *m, ct_tensor *x) {
    int n = ct_module_num_children(m);
    if (n == 0)
        return ct__layer_identity(x);
    for (int i = 0; i < n && x; i++)
        x = ct_module_forward(ct_module_child_at(m, i), x);
    return x;
}

static const ct_module_vtable sequential_vt = {"Sequential", sequential_forward, NULL, NULL};

ct_status ct_sequential_append(ct_module *sequential, ct_module *module) {
    if (!sequential || !module)
        return ct__null_arg("ct_sequential_append", sequential ? "module" : "sequential");
    if (ct_module_type(sequential) != sequential_vt.type_name)
        return ct__set_error(CT_ERR_VALUE, "ct_sequential_append: the container is a %s, not a Sequential",
                             ct_module_type(sequential));
    char name[16];
    snprintf(name, sizeof name, "%d", ct_module_num_children(sequential));
    return ct_module_add_child(sequential, name, module);
}

ct_module *ct_sequential(int n, ct_module **modules) {
    ct_module *seq = NULL;
    int taken = 0;
    if (n < 0 || (n > 0 && !modules)) {
        ct__set_error(n < 0 ? CT_ERR_VALUE : CT_ERR_NULL, "ct_sequential: need n >= 0 modules, got n = %d%s", n,
                      n > 0 ? " and a NULL array" : "");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!modules[i]) {
            ct__null_arg("ct_sequential", "a module");
            goto fail;
        }
    if (!(seq = ct_module_create(&sequential_vt, NULL)))
        goto fail;
    for (; taken < n; taken++)
        if (ct_sequential_append(seq, modules[taken]) != CT_OK) {
            /* With fresh names, adoption fails only for a module that already has a parent
             * (CT_ERR_VALUE): that one stays its parent's, the others are ours to free. */
            if (ct_last_error() == CT_ERR_VALUE)
                taken++;
            goto fail;
        }
    return seq;
fail:
    ct_module_free(seq);
    for (int i = taken; i < n; i++)
        ct_module_free(modules[i]);
    return NULL;
}
