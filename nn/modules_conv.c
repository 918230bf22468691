/* Convolution and pooling modules, and the ResNet basic block. */
#include "nn/modules_internal.h"

#include <string.h>

/* "3" for a square pair, "(3, 1)" otherwise. */
static const char *pair(char *buf, size_t size, const int v[2]) {
    if (v[0] == v[1])
        snprintf(buf, size, "%d", v[0]);
    else
        snprintf(buf, size, "(%d, %d)", v[0], v[1]);
    return buf;
}

static bool positive_pair(const int v[2]) {
    return v[0] >= 1 && v[1] >= 1;
}
static bool nonnegative_pair(const int v[2]) {
    return v[0] >= 0 && v[1] >= 0;
}

/* ---- Conv2d and ConvTranspose2d ------------------------------------------------------ */

typedef struct conv_impl {
    bool transposed;
    int64_t in, out;
    int kernel[2];                  /* (kH, kW) */
    ct_conv2d_opts opts;            /* Conv2d */
    ct_conv_transpose2d_opts topts; /* ConvTranspose2d */
} conv_impl;

static ct_tensor *conv_forward(ct_module *m, ct_tensor *x) {
    const conv_impl *p = ct_module_impl(m);
    if (x->ndim != 4 || x->shape[1] != p->in) {
        ct__set_error(CT_ERR_SHAPE, "%s(%lld, %lld): x is %s, expected (N, %lld, H, W)", ct_module_type(m),
                      (long long)p->in, (long long)p->out, ct_shape_str(x), (long long)p->in);
        return NULL;
    }
    ct_tensor *w = ct_module_param(m, "weight"), *b = ct_module_param(m, "bias");
    return p->transposed ? ct_conv_transpose2d(x, w, b, &p->topts) : ct_conv2d(x, w, b, &p->opts);
}

static void conv_describe(const ct_module *m, char *buf, size_t size) {
    const conv_impl *p = ct_module_impl(m);
    const int *stride = p->transposed ? p->topts.stride : p->opts.stride;
    const int *padding = p->transposed ? p->topts.padding : p->opts.padding;
    const int *dilation = p->transposed ? p->topts.dilation : p->opts.dilation;
    int groups = p->transposed ? p->topts.groups : p->opts.groups;
    char k[32], s[32], pd[32], d[32], op[32];
    int n =
        snprintf(buf, size, "%lld, %lld, kernel_size=%s, stride=%s, padding=%s", (long long)p->in, (long long)p->out,
                 pair(k, sizeof k, p->kernel), pair(s, sizeof s, stride), pair(pd, sizeof pd, padding));
    if (p->transposed && (p->topts.output_padding[0] || p->topts.output_padding[1]) && n >= 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, ", output_padding=%s", pair(op, sizeof op, p->topts.output_padding));
    if ((dilation[0] != 1 || dilation[1] != 1) && n >= 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, ", dilation=%s", pair(d, sizeof d, dilation));
    if (groups != 1 && n >= 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, ", groups=%d", groups);
    if (!ct_module_param(m, "bias") && n >= 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, ", bias=False");
}

static const ct_module_vtable conv2d_vt = {"Conv2d", conv_forward, conv_describe, ct__layer_free_impl};
static const ct_module_vtable conv_transpose2d_vt = {"ConvTranspose2d", conv_forward, conv_describe,
                                                     ct__layer_free_impl};

static ct_module *conv_module(const char *op, conv_impl *impl, const int *stride, const int *padding,
                              const int *dilation, int groups, bool bias) {
    if (impl->in <= 0 || impl->out <= 0 || !positive_pair(impl->kernel)) {
        char k[32];
        ct__set_error(CT_ERR_VALUE, "%s: channels and kernel size must be positive, got %lld, %lld, kernel %s", op,
                      (long long)impl->in, (long long)impl->out, pair(k, sizeof k, impl->kernel));
        return NULL;
    }
    if (!positive_pair(stride) || !nonnegative_pair(padding) || !positive_pair(dilation) || groups < 1) {
        ct__set_error(CT_ERR_VALUE,
                      "%s: need stride >= 1, padding >= 0, dilation >= 1 and groups >= 1, got stride "
                      "(%d, %d), padding (%d, %d), dilation (%d, %d), groups %d",
                      op, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups);
        return NULL;
    }
    if (impl->in % groups || impl->out % groups) {
        ct__set_error(CT_ERR_VALUE, "%s: groups %d must divide in_channels %lld and out_channels %lld", op, groups,
                      (long long)impl->in, (long long)impl->out);
        return NULL;
    }
    ct_module *m = ct__layer_new(impl->transposed ? &conv_transpose2d_vt : &conv2d_vt, impl, sizeof *impl);
    if (!m)
        return NULL;
    int64_t wshape[4] = {impl->out, impl->in / groups, impl->kernel[0], impl->kernel[1]};
    if (impl->transposed) {
        wshape[0] = impl->in;
        wshape[1] = impl->out / groups;
    }
    ct_tensor *w = ct__layer_param(m, "weight", wshape, 4);
    ct_tensor *b = w && bias ? ct__layer_param(m, "bias", &impl->out, 1) : NULL;
    if (!w || (bias && !b) || ct__layer_init_affine(w, b) != CT_OK) {
        ct_module_free(m);
        return NULL;
    }
    return m;
}

ct_module *ct_conv2d_layer_ex(int64_t in_channels, int64_t out_channels, const int kernel[2],
                              const ct_conv2d_opts *opts, bool bias) {
    if (!kernel) {
        ct__set_error(CT_ERR_NULL, "ct_conv2d_layer_ex: kernel is NULL");
        return NULL;
    }
    conv_impl impl = {false,
                      in_channels,
                      out_channels,
                      {kernel[0], kernel[1]},
                      opts ? *opts : CT_CONV2D_OPTS_DEFAULT,
                      CT_CONV_TRANSPOSE2D_OPTS_DEFAULT};
    return conv_module("ct_conv2d_layer", &impl, impl.opts.stride, impl.opts.padding, impl.opts.dilation,
                       impl.opts.groups, bias);
}

ct_module *ct_conv2d_layer(int64_t in_channels, int64_t out_channels, int kernel, const ct_conv2d_opts *opts,
                           bool bias) {
    return ct_conv2d_layer_ex(in_channels, out_channels, (const int[]){kernel, kernel}, opts, bias);
}

ct_module *ct_conv_transpose2d_layer_ex(int64_t in_channels, int64_t out_channels, const int kernel[2],
                                        const ct_conv_transpose2d_opts *opts, bool bias) {
    if (!kernel) {
        ct__set_error(CT_ERR_NULL, "ct_conv_transpose2d_layer_ex: kernel is NULL");
        return NULL;
    }
    conv_impl impl = {true,
                      in_channels,
                      out_channels,
                      {kernel[0], kernel[1]},
                      CT_CONV2D_OPTS_DEFAULT,
                      opts ? *opts : CT_CONV_TRANSPOSE2D_OPTS_DEFAULT};
    const ct_conv_transpose2d_opts *o = &impl.topts;
    for (int i = 0; i < 2; i++)
        if (o->output_padding[i] < 0 ||
            o->output_padding[i] >= (o->stride[i] > o->dilation[i] ? o->stride[i] : o->dilation[i])) {
            ct__set_error(CT_ERR_VALUE,
                          "ct_conv_transpose2d_layer: output_padding (%d, %d) must be >= 0 and below max(stride, "
                          "dilation)",
                          o->output_padding[0], o->output_padding[1]);
            return NULL;
        }
    return conv_module("ct_conv_transpose2d_layer", &impl, o->stride, o->padding, o->dilation, o->groups, bias);
}

ct_module *ct_conv_transpose2d_layer(int64_t in_channels, int64_t out_channels, int kernel,
                                     const ct_conv_transpose2d_opts *opts, bool bias) {
    return ct_conv_transpose2d_layer_ex(in_channels, out_channels, (const int[]){kernel, kernel}, opts, bias);
}

/* ---- pooling ------------------------------------------------------------------------- */

typedef enum pool_kind { POOL_MAX, POOL_AVG, POOL_GLOBAL_AVG } pool_kind;

typedef struct pool_impl {
    pool_kind kind;
    ct_pool2d_opts opts;
} pool_impl;

static ct_tensor *pool_forward(ct_module *m, ct_tensor *x) {
    const pool_impl *p = ct_module_impl(m);
    switch (p->kind) {
    case POOL_MAX: return ct_max_pool2d(x, &p->opts, NULL);
    case POOL_AVG: return ct_avg_pool2d(x, &p->opts);
    case POOL_GLOBAL_AVG: return ct_global_avg_pool2d(x);
    }
    ct__set_error(CT_ERR_INTERNAL, "internal error: pool kind %d", (int)p->kind);
    return NULL;
}

static void pool_describe(const ct_module *m, char *buf, size_t size) {
    const pool_impl *p = ct_module_impl(m);
    const ct_pool2d_opts *o = &p->opts;
    if (p->kind == POOL_GLOBAL_AVG) {
        buf[0] = '\0';
        return;
    }
    char k[32], s[32], pd[32], d[32];
    int stride[2] = {o->stride[0] ? o->stride[0] : o->kernel[0], o->stride[1] ? o->stride[1] : o->kernel[1]};
    int n = snprintf(buf, size, "kernel_size=%s, stride=%s, padding=%s", pair(k, sizeof k, o->kernel),
                     pair(s, sizeof s, stride), pair(pd, sizeof pd, o->padding));
    if (p->kind == POOL_MAX && (o->dilation[0] != 1 || o->dilation[1] != 1) && n >= 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, ", dilation=%s", pair(d, sizeof d, o->dilation));
    if (o->ceil_mode && n >= 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, ", ceil_mode=True");
    if (p->kind == POOL_AVG && !o->count_include_pad && n >= 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, ", count_include_pad=False");
}

static const ct_module_vtable maxpool2d_vt = {"MaxPool2d", pool_forward, pool_describe, ct__layer_free_impl};
static const ct_module_vtable avgpool2d_vt = {"AvgPool2d", pool_forward, pool_describe, ct__layer_free_impl};
static const ct_module_vtable global_avgpool2d_vt = {"GlobalAvgPool2d", pool_forward, pool_describe,
                                                     ct__layer_free_impl};

static ct_module *pool_module(const char *op, const ct_module_vtable *vt, pool_kind kind, const ct_pool2d_opts *opts) {
    pool_impl impl = {kind, opts ? *opts : CT_POOL2D_OPTS_DEFAULT};
    const ct_pool2d_opts *o = &impl.opts;
    if (!positive_pair(o->kernel) || !nonnegative_pair(o->stride) || !nonnegative_pair(o->padding) ||
        !positive_pair(o->dilation) || o->padding[0] > o->kernel[0] / 2 || o->padding[1] > o->kernel[1] / 2) {
        ct__set_error(CT_ERR_VALUE,
                      "%s: need kernel >= 1, stride >= 0 (0: the kernel size), 0 <= padding <= kernel / 2 and "
                      "dilation >= 1, got kernel (%d, %d), stride (%d, %d), padding (%d, %d), dilation (%d, %d)",
                      op, o->kernel[0], o->kernel[1], o->stride[0], o->stride[1], o->padding[0], o->padding[1],
                      o->dilation[0], o->dilation[1]);
        return NULL;
    }
    if (kind == POOL_AVG && (o->dilation[0] != 1 || o->dilation[1] != 1)) {
        ct__set_error(CT_ERR_VALUE, "%s: average pooling needs dilation 1, got (%d, %d)", op, o->dilation[0],
                      o->dilation[1]);
        return NULL;
    }
    return ct__layer_new(vt, &impl, sizeof impl);
}

ct_module *ct_maxpool2d_layer(const ct_pool2d_opts *opts) {
    return pool_module("ct_maxpool2d_layer", &maxpool2d_vt, POOL_MAX, opts);
}
ct_module *ct_avgpool2d_layer(const ct_pool2d_opts *opts) {
    return pool_module("ct_avgpool2d_layer", &avgpool2d_vt, POOL_AVG, opts);
}
ct_module *ct_global_avgpool2d_layer(void) {
    return pool_module("ct_global_avgpool2d_layer", &global_avgpool2d_vt, POOL_GLOBAL_AVG, NULL);
}

/* ---- the ResNet basic block ---------------------------------------------------------- */

typedef struct residual_impl {
    int64_t in, out;
    int stride;
} residual_impl;

static ct_tensor *residual_forward(ct_module *m, ct_tensor *x) {
    ct_tensor *out = ct_module_forward(ct_module_child(m, "conv1"), x);
    out = ct_relu(ct_module_forward(ct_module_child(m, "bn1"), out));
    out = ct_module_forward(ct_module_child(m, "conv2"), out);
    out = ct_module_forward(ct_module_child(m, "bn2"), out);
    ct_module *downsample = ct_module_child(m, "downsample");
    ct_tensor *shortcut = downsample ? ct_module_forward(downsample, x) : x;
    return ct_relu(ct_add(out, shortcut));
}

static void residual_describe(const ct_module *m, char *buf, size_t size) {
    const residual_impl *p = ct_module_impl(m);
    snprintf(buf, size, "%lld, %lld, stride=%d", (long long)p->in, (long long)p->out, p->stride);
}

static const ct_module_vtable residual_vt = {"BasicBlock", residual_forward, residual_describe, ct__layer_free_impl};

static ct_module *conv_no_bias(int64_t in, int64_t out, int kernel, int stride, int padding) {
    ct_conv2d_opts o = CT_CONV2D_OPTS_DEFAULT;
    o.stride[0] = o.stride[1] = stride;
    o.padding[0] = o.padding[1] = padding;
    return ct_conv2d_layer(in, out, kernel, &o, false);
}

ct_module *ct_residual_block(int64_t in_channels, int64_t out_channels, int stride) {
    if (in_channels <= 0 || out_channels <= 0 || stride < 1) {
        ct__set_error(CT_ERR_VALUE,
                      "ct_residual_block: need positive channel counts and stride >= 1, got %lld, %lld, stride %d",
                      (long long)in_channels, (long long)out_channels, stride);
        return NULL;
    }
    ct_module *m =
        ct__layer_new(&residual_vt, &(residual_impl){in_channels, out_channels, stride}, sizeof(residual_impl));
    if (!m)
        return NULL;
    struct {
        const char *name;
        ct_module *child;
    } children[] = {
        {"conv1", conv_no_bias(in_channels, out_channels, 3, stride, 1)},
        {"bn1", ct_batchnorm2d(out_channels, 1e-5, 0.1)},
        {"conv2", conv_no_bias(out_channels, out_channels, 3, 1, 1)},
        {"bn2", ct_batchnorm2d(out_channels, 1e-5, 0.1)},
        {"downsample", NULL},
    };
    int n = 4;
    if (stride != 1 || in_channels != out_channels) {
        children[4].child = ct_sequential(2, (ct_module *[]){conv_no_bias(in_channels, out_channels, 1, stride, 0),
                                                             ct_batchnorm2d(out_channels, 1e-5, 0.1)});
        n = 5;
    }
    bool ok = true;
    for (int i = 0; i < n; i++) {
        if (ok && children[i].child && ct_module_add_child(m, children[i].name, children[i].child) == CT_OK)
            continue;
        ok = false; /* a child failed: free the ones not yet adopted */
        ct_module_free(children[i].child);
    }
    if (!ok) {
        ct_module_free(m);
        return NULL;
    }
    return m;
}
