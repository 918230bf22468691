/* Batch norm and layer norm, with their closed-form backward.
 *
 * The kernels see contiguous data: a strided x is copied once (outside the graph) and that
 * copy is what backward reads. On the CPU the per-channel (per-row) quantities are double
 * arrays and the saved statistics F64 tensors (kernels/cpu/norm.c); on CUDA, parameters and
 * statistics are F32 device tensors, the layout cuDNN's batch norm wants (kernels/cuda/norm.cu:
 * cuDNN for batch norm, hand-written kernels for layer norm). */
#include "runtime/internal.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/norm.h"

#include <math.h>
#include <string.h>

/* ---- shared helpers ---------------------------------------------------------------------- */

static bool is_half(ct_dtype dt) {
    return dt == CT_F16 || dt == CT_BF16;
}

/* x: not NULL, floating. */
static bool check_input(const char *op, const ct_tensor *x) {
    if (!ct__check(op, "x", x))
        return false;
    if (!ct_dtype_is_float(x->dtype)) {
        ct__set_error(CT_ERR_DTYPE, "%s: x must be a floating tensor, not %s", op, ct_dtype_name(x->dtype));
        return false;
    }
    return true;
}

/* An optional parameter p (NULL: absent) of shape (ndim, shape), on x's device, of x's dtype
 * or F32 when x is F16/BF16. */
static bool check_param(const char *op, const char *name, const ct_tensor *p, const ct_tensor *x, int ndim,
                        const int64_t *shape) {
    if (!p)
        return true;
    if (!ct__check(op, name, p))
        return false;
    if (!ct_device_equal(p->device, x->device)) {
        ct__set_error(CT_ERR_DEVICE, "%s: %s is on %s, x on %s", op, name, ct_device_name(p->device),
                      ct_device_name(x->device));
        return false;
    }
    if (p->dtype != x->dtype && !(is_half(x->dtype) && p->dtype == CT_F32)) {
        ct__set_error(CT_ERR_DTYPE, "%s: %s is %s but x is %s (parameters have x's dtype, or f32 for f16/bf16 x)", op,
                      name, ct_dtype_name(p->dtype), ct_dtype_name(x->dtype));
        return false;
    }
    if (p->ndim != ndim || memcmp(p->shape, shape, sizeof(int64_t) * (size_t)ndim) != 0) {
        ct__set_error(CT_ERR_SHAPE, "%s: %s must have shape %s, got %s", op, name, ct__shape_fmt(ndim, shape),
                      ct_shape_str(p));
        return false;
    }
    return true;
}

/* t's elements (row-major) as a malloc'd double array; NULL for a NULL t. *ok is cleared
 * when memory runs out. */
static double *to_doubles(const ct_tensor *t, bool *ok) {
    if (!t)
        return NULL;
    int64_t n = ct__numel(t->ndim, t->shape), strides[CT_MAX_DIMS];
    double *out = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!out) {
        ct__set_error(CT_ERR_MEMORY, "out of host memory (%lld doubles)", (long long)n);
        *ok = false;
        return NULL;
    }
    ct__contiguous_strides(t->ndim, t->shape, strides);
    ct_cpu_copy_cast(t->ndim, t->shape, out, CT_F64, strides, ct__data(t), t->dtype, t->strides);
    return out;
}

/* A new CPU tensor of (ndim, shape, dtype) holding the doubles v. */
static ct_tensor *from_doubles(const double *v, ct_dtype dtype, int ndim, const int64_t *shape) {
    ct_tensor *t = ct__new(dtype, CT_CPU, ndim, shape);
    if (t) {
        int64_t strides[CT_MAX_DIMS];
        ct__contiguous_strides(ndim, shape, strides);
        ct_cpu_copy_cast(ndim, shape, ct__data(t), dtype, t->strides, v, CT_F64, strides);
    }
    return t;
}

/* x itself when contiguous, else a contiguous copy made outside the graph. */
static ct_tensor *contiguous_data(const ct_tensor *x) {
    if (ct__is_contiguous(x))
        return (ct_tensor *)x;
    ct_no_grad_begin();
    ct_tensor *c = ct_contiguous((ct_tensor *)x);
    ct_no_grad_end();
    return c;
}

/* p as a contiguous F32 tensor on `device`, made outside the graph (p itself when it is one
 * already); when p is NULL, a tensor of (ndim, shape) filled with `fill`, or NULL when fill is
 * NAN. *ok is cleared on failure. */
static ct_tensor *f32_operand(const ct_tensor *p, int ndim, const int64_t *shape, double fill, ct_device device,
                              bool *ok) {
    if (!*ok || (!p && isnan(fill)))
        return NULL;
    ct_tensor *t;
    ct_no_grad_begin();
    if (!p)
        t = ct_full(shape, ndim, fill, CT_F32, device);
    else if (p->dtype == CT_F32 && ct__is_contiguous(p))
        t = (ct_tensor *)p;
    else
        t = ct_contiguous(ct_cast(p, CT_F32));
    ct_no_grad_end();
    *ok = t != NULL;
    return t;
}

static void release_operand(const ct_tensor *p, ct_tensor *t) {
    if (t != p)
        ct_tensor_free(t);
}

/* A parameter gradient g (F32) in the parameter's dtype. */
static ct_tensor *as_param_grad(ct_tensor *g, ct_dtype dtype) {
    return g ? ct_cast(g, dtype) : NULL;
}

/* Free an op's intermediate tensors (the node keeps its own references to what it saved),
 * so that nothing is left behind when no scope is open. */
static void release_temporaries(const ct_tensor *x, ct_tensor *xc, ct_tensor *a, ct_tensor *b) {
    if (xc != x)
        ct_tensor_free(xc);
    ct_tensor_free(a);
    ct_tensor_free(b);
}

/* ---- batch norm ------------------------------------------------------------------------- */

typedef struct bn_dims {
    int64_t N, C, S, count; /* x as (N, C, S); count = N * S values per channel */
} bn_dims;

static bn_dims bn_dims_of(const ct_tensor *x) {
    bn_dims d = {x->shape[0], x->shape[1], 0, 0};
    int64_t numel = ct__numel(x->ndim, x->shape);
    d.S = d.N * d.C > 0 ? numel / (d.N * d.C) : 0;
    d.count = d.N * d.S;
    return d;
}

/* running = (1 - momentum) running + momentum * value, element c of a strided (C) tensor. */
static void blend(ct_tensor *running, int64_t c, double momentum, double value) {
    int64_t i = c * running->strides[0];
    double old = ct_cpu_load(ct__data(running), running->dtype, i);
    ct_cpu_store(ct__data(running), running->dtype, i, (1 - momentum) * old + momentum * value);
}

static ct_status bn_forward_cpu(const ct_tensor *xc, ct_tensor *running_mean, ct_tensor *running_var,
                                const ct_tensor *weight, const ct_tensor *bias, bool training, double momentum,
                                double eps, bn_dims d, ct_tensor *mean, ct_tensor *invstd, ct_tensor *y) {
    bool ok = true;
    double *wv = to_doubles(weight, &ok), *bv = ok ? to_doubles(bias, &ok) : NULL, *var = NULL;
    if (ok)
        var = training ? malloc(sizeof(double) * (size_t)(d.C ? d.C : 1)) : to_doubles(running_var, &ok);
    if (ok && !var)
        ok = !ct__set_error(CT_ERR_MEMORY, "ct_batch_norm: out of host memory");
    if (ok && !training)
        ct_cpu_copy_cast(1, &d.C, ct__data(mean), CT_F64, (const int64_t[]){1}, ct__data(running_mean),
                         running_mean->dtype, running_mean->strides);
    if (ok) {
        ct_cpu_batch_norm_forward(xc->dtype, d.N, d.C, d.S, ct__data(xc), training, eps, wv, bv, ct__data(mean), var,
                                  ct__data(invstd), ct__data(y));
        if (training && running_mean) {
            const double *m = ct__data(mean);
            double unbias = (double)d.count / (double)(d.count - 1);
            for (int64_t c = 0; c < d.C; c++) {
                blend(running_mean, c, momentum, m[c]);
                blend(running_var, c, momentum, var[c] * unbias);
            }
        }
    }
    free(wv);
    free(bv);
    free(var);
    return ok ? CT_OK : ct_last_error();
}

static ct_status bn_forward_cuda(const ct_tensor *xc, ct_tensor *running_mean, ct_tensor *running_var,
                                 const ct_tensor *weight, const ct_tensor *bias, bool training, double momentum,
                                 double eps, bn_dims d, ct_tensor *mean, ct_tensor *invstd, ct_tensor *y) {
    bool ok = true;
    ct_tensor *w = f32_operand(weight, 1, &d.C, 1.0, xc->device, &ok);
    ct_tensor *b = f32_operand(bias, 1, &d.C, 0.0, xc->device, &ok);
    ct_tensor *rm = f32_operand(running_mean, 1, &d.C, NAN, xc->device, &ok);
    ct_tensor *rv = f32_operand(running_var, 1, &d.C, NAN, xc->device, &ok);
    ct_status st = ok ? CT_ON_CUDA(ct_cuda_batch_norm_forward(
                            xc->dtype, d.N, d.C, d.S, ct__data(xc), ct__data(w), ct__data(b), rm ? ct__data(rm) : NULL,
                            rv ? ct__data(rv) : NULL, training, momentum, eps, ct__data(mean), ct__data(invstd),
                            ct__data(y), ct__stream_for(xc)))
                      : ct_last_error();
    /* running stats that are not contiguous F32 were updated in a copy: write it back */
    ct_no_grad_begin();
    if (st == CT_OK && training && rm != running_mean)
        st = ct_copy_(running_mean, rm);
    if (st == CT_OK && training && rv != running_var)
        st = ct_copy_(running_var, rv);
    ct_no_grad_end();
    release_operand(weight, w);
    release_operand(bias, b);
    release_operand(running_mean, rm);
    release_operand(running_var, rv);
    return st;
}

static ct_status bn_backward_cpu(ct_node *node, bool training, bn_dims d, const ct_tensor *x, const ct_tensor *g,
                                 const ct_tensor *mean, const ct_tensor *invstd, const ct_tensor *w, ct_tensor **gin) {
    bool ok = true;
    double *wv = to_doubles(w, &ok), *dw = NULL, *db = NULL;
    if (ok && node->needs_grad[1])
        ok = (dw = malloc(sizeof(double) * (size_t)(d.C ? d.C : 1))) != NULL;
    if (ok && node->needs_grad[2])
        ok = (db = malloc(sizeof(double) * (size_t)(d.C ? d.C : 1))) != NULL;
    ct_tensor *dx = ok && node->needs_grad[0] ? ct__new(x->dtype, x->device, x->ndim, x->shape) : NULL;
    ct_status st = CT_OK;
    if (!ok) {
        st = ct_last_error() ? ct_last_error()
                             : ct__set_error(CT_ERR_MEMORY, "%s backward: out of host memory", node->name);
    } else if (node->needs_grad[0] && !dx) {
        st = ct_last_error();
    } else {
        ct_cpu_batch_norm_backward(x->dtype, d.N, d.C, d.S, ct__data(x), ct__data(g), ct__data(mean), ct__data(invstd),
                                   wv, training, dx ? ct__data(dx) : NULL, dw, db);
        gin[0] = dx;
        if (dw && !(gin[1] = from_doubles(dw, node->in_dtype[1], 1, &d.C)))
            st = ct_last_error();
        if (db && !(gin[2] = from_doubles(db, node->in_dtype[2], 1, &d.C)))
            st = ct_last_error();
    }
    free(wv);
    free(dw);
    free(db);
    return st;
}

/* cuDNN writes all three gradients; those not needed are dropped with the scope. */
static ct_status bn_backward_cuda(ct_node *node, bool training, bn_dims d, const ct_tensor *x, const ct_tensor *g,
                                  const ct_tensor *mean, const ct_tensor *invstd, const ct_tensor *w, ct_tensor **gin) {
    bool ok = true;
    ct_tensor *wf = f32_operand(w, 1, &d.C, 1.0, x->device, &ok);
    ct_tensor *dx = ok ? ct__new(x->dtype, x->device, x->ndim, x->shape) : NULL;
    ct_tensor *dw = dx ? ct__new(CT_F32, x->device, 1, &d.C) : NULL;
    ct_tensor *db = dw ? ct__new(CT_F32, x->device, 1, &d.C) : NULL;
    if (!db)
        return ct_last_error();
    ct_status st = CT_ON_CUDA(ct_cuda_batch_norm_backward(
        x->dtype, d.N, d.C, d.S, ct__data(x), ct__data(g), ct__data(wf), ct__data(mean), ct__data(invstd), training,
        node->dargs[0], ct__data(dx), ct__data(dw), ct__data(db), ct__stream_for(x)));
    if (st != CT_OK)
        return st;
    gin[0] = node->needs_grad[0] ? dx : NULL;
    if (node->needs_grad[1] && !(gin[1] = as_param_grad(dw, node->in_dtype[1])))
        return ct_last_error();
    if (node->needs_grad[2] && !(gin[2] = as_param_grad(db, node->in_dtype[2])))
        return ct_last_error();
    return CT_OK;
}

/* Saved: 0 x (contiguous), 1 mean, 2 invstd, 3 weight (iargs[1]). iargs[0] = training,
 * dargs[0] = eps. */
static ct_status batch_norm_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    bool training = node->iargs[0], has_weight = node->iargs[1];
    ct_tensor *x = ct__node_saved(node, 0), *mean = ct__node_saved(node, 1), *invstd = ct__node_saved(node, 2);
    ct_tensor *w = has_weight ? ct__node_saved(node, 3) : NULL;
    if (!x || !mean || !invstd || (has_weight && !w))
        return ct_last_error();
    ct_tensor *g = contiguous_data(gout[0]);
    if (!g)
        return ct_last_error();
    bn_dims d = bn_dims_of(x);
    if (x->device.type == CT_DEVICE_CUDA)
        return bn_backward_cuda(node, training, d, x, g, mean, invstd, w, gin);
    return bn_backward_cpu(node, training, d, x, g, mean, invstd, w, gin);
}

ct_tensor *ct_batch_norm(const ct_tensor *x, ct_tensor *running_mean, ct_tensor *running_var, const ct_tensor *weight,
                         const ct_tensor *bias, bool training, double momentum, double eps) {
    const char *op = "ct_batch_norm";
    if (!check_input(op, x))
        return NULL;
    if (x->ndim < 2) {
        ct__set_error(CT_ERR_SHAPE, "%s: x must be (N, C) or (N, C, *), got shape %s", op, ct_shape_str(x));
        return NULL;
    }
    int64_t C = x->shape[1];
    if (!check_param(op, "weight", weight, x, 1, &C) || !check_param(op, "bias", bias, x, 1, &C) ||
        !check_param(op, "running_mean", running_mean, x, 1, &C) ||
        !check_param(op, "running_var", running_var, x, 1, &C))
        return NULL;
    if (!running_mean != !running_var) {
        ct__null_arg(op, running_mean ? "running_var" : "running_mean");
        return NULL;
    }
    if (!training && !running_mean) {
        ct__set_error(CT_ERR_VALUE, "%s: evaluation mode needs running_mean and running_var", op);
        return NULL;
    }
    if (!(momentum >= 0 && momentum <= 1) || !(eps >= 0 && isfinite(eps))) {
        ct__set_error(CT_ERR_VALUE, "%s: need momentum in [0, 1] and finite eps >= 0, got momentum %g, eps %g", op,
                      momentum, eps);
        return NULL;
    }
    bn_dims d = bn_dims_of(x);
    if (training && d.count <= 1) {
        ct__set_error(CT_ERR_SHAPE, "%s: training needs more than one value per channel, x is %s", op, ct_shape_str(x));
        return NULL;
    }
    bool cuda = x->device.type == CT_DEVICE_CUDA;
    ct_dtype stat_dtype = cuda ? CT_F32 : CT_F64;
    ct_tensor *xc = contiguous_data(x);
    ct_tensor *y = xc ? ct__new(x->dtype, x->device, x->ndim, x->shape) : NULL;
    ct_tensor *mean = y ? ct__new(stat_dtype, x->device, 1, &C) : NULL;
    ct_tensor *invstd = mean ? ct__new(stat_dtype, x->device, 1, &C) : NULL;
    ct_status st =
        !invstd ? ct_last_error()
        : cuda
            ? bn_forward_cuda(xc, running_mean, running_var, weight, bias, training, momentum, eps, d, mean, invstd, y)
            : bn_forward_cpu(xc, running_mean, running_var, weight, bias, training, momentum, eps, d, mean, invstd, y);
    if (st == CT_OK && training && running_mean) {
        ct__bump_version(running_mean);
        ct__bump_version(running_var);
    }
    ct_node *node =
        st == CT_OK ? ct__record(op, batch_norm_backward, y, 3, (const ct_tensor *const[]){x, weight, bias}) : NULL;
    if (node) {
        node->iargs[0] = training;
        node->iargs[1] = weight != NULL;
        node->dargs[0] = eps;
        ct__node_save(node, xc);
        ct__node_save(node, mean);
        ct__node_save(node, invstd);
        ct__node_save(node, weight);
    }
    release_temporaries(x, xc, mean, invstd);
    if (st != CT_OK) {
        ct_tensor_free(y);
        return NULL;
    }
    return y;
}

/* ---- layer norm ------------------------------------------------------------------------- */

static ct_status ln_forward(const ct_tensor *xc, const ct_tensor *weight, const ct_tensor *bias, double eps, int64_t R,
                            int64_t D, ct_tensor *mean, ct_tensor *rstd, ct_tensor *y) {
    bool ok = true;
    ct_status st = CT_OK;
    if (xc->device.type == CT_DEVICE_CUDA) {
        int nd = weight ? weight->ndim : 0;
        ct_tensor *w = f32_operand(weight, nd, weight ? weight->shape : NULL, NAN, xc->device, &ok);
        ct_tensor *b = f32_operand(bias, nd, bias ? bias->shape : NULL, NAN, xc->device, &ok);
        st = ok ? CT_ON_CUDA(ct_cuda_layer_norm_forward(xc->dtype, R, D, ct__data(xc), w ? ct__data(w) : NULL,
                                                        b ? ct__data(b) : NULL, eps, ct__data(mean), ct__data(rstd),
                                                        ct__data(y), ct__stream_for(xc)))
                : ct_last_error();
        release_operand(weight, w);
        release_operand(bias, b);
        return st;
    }
    double *wv = to_doubles(weight, &ok), *bv = ok ? to_doubles(bias, &ok) : NULL;
    if (ok && R * D > 0)
        ct_cpu_layer_norm_forward(xc->dtype, R, D, ct__data(xc), wv, bv, eps, ct__data(mean), ct__data(rstd),
                                  ct__data(y));
    free(wv);
    free(bv);
    return ok ? CT_OK : ct_last_error();
}

static ct_status ln_backward_cpu(ct_node *node, int nd, const ct_tensor *x, const ct_tensor *g, const ct_tensor *mean,
                                 const ct_tensor *rstd, const ct_tensor *w, ct_tensor **gin) {
    const int64_t *pshape = x->shape + x->ndim - nd;
    int64_t D = ct__numel(nd, pshape), R = ct__numel(x->ndim - nd, x->shape);
    bool ok = true;
    double *wv = to_doubles(w, &ok), *dw = NULL, *db = NULL;
    if (ok && node->needs_grad[1])
        ok = (dw = malloc(sizeof(double) * (size_t)(D ? D : 1))) != NULL;
    if (ok && node->needs_grad[2])
        ok = (db = malloc(sizeof(double) * (size_t)(D ? D : 1))) != NULL;
    ct_tensor *dx = ok && node->needs_grad[0] ? ct__new(x->dtype, x->device, x->ndim, x->shape) : NULL;
    ct_status st = CT_OK;
    if (!ok) {
        st = ct_last_error() ? ct_last_error()
                             : ct__set_error(CT_ERR_MEMORY, "%s backward: out of host memory", node->name);
    } else if (node->needs_grad[0] && !dx) {
        st = ct_last_error();
    } else {
        ct_cpu_layer_norm_backward(x->dtype, R, D, ct__data(x), ct__data(g), ct__data(mean), ct__data(rstd), wv,
                                   dx ? ct__data(dx) : NULL, dw, db);
        gin[0] = dx;
        if (dw && !(gin[1] = from_doubles(dw, node->in_dtype[1], nd, pshape)))
            st = ct_last_error();
        if (db && !(gin[2] = from_doubles(db, node->in_dtype[2], nd, pshape)))
            st = ct_last_error();
    }
    free(wv);
    free(dw);
    free(db);
    return st;
}

static ct_status ln_backward_cuda(ct_node *node, int nd, const ct_tensor *x, const ct_tensor *g, const ct_tensor *mean,
                                  const ct_tensor *rstd, const ct_tensor *w, ct_tensor **gin) {
    const int64_t *pshape = x->shape + x->ndim - nd;
    int64_t D = ct__numel(nd, pshape), R = ct__numel(x->ndim - nd, x->shape);
    bool ok = true, params = node->needs_grad[1] || node->needs_grad[2];
    ct_tensor *wf = f32_operand(w, nd, pshape, NAN, x->device, &ok);
    ct_tensor *dx = ok && node->needs_grad[0] ? ct__new(x->dtype, x->device, x->ndim, x->shape) : NULL;
    ct_tensor *dw = ok && node->needs_grad[1] ? ct__new(CT_F32, x->device, nd, pshape) : NULL;
    ct_tensor *db = ok && node->needs_grad[2] ? ct__new(CT_F32, x->device, nd, pshape) : NULL;
    int64_t ws_size = 2 * CT_CUDA_LN_CHUNKS * D;
    ct_tensor *ws = ok && params ? ct__new(CT_F32, x->device, 1, &ws_size) : NULL;
    if (!ok || (node->needs_grad[0] && !dx) || (node->needs_grad[1] && !dw) || (node->needs_grad[2] && !db) ||
        (params && !ws))
        return ct_last_error();
    ct_status st = CT_ON_CUDA(
        ct_cuda_layer_norm_backward(x->dtype, R, D, ct__data(x), ct__data(g), ct__data(mean), ct__data(rstd),
                                    wf ? ct__data(wf) : NULL, dx ? ct__data(dx) : NULL, dw ? ct__data(dw) : NULL,
                                    db ? ct__data(db) : NULL, ws ? ct__data(ws) : NULL, ct__stream_for(x)));
    if (st != CT_OK)
        return st;
    gin[0] = dx;
    if (dw && !(gin[1] = as_param_grad(dw, node->in_dtype[1])))
        return ct_last_error();
    if (db && !(gin[2] = as_param_grad(db, node->in_dtype[2])))
        return ct_last_error();
    return CT_OK;
}

/* Saved: 0 x (contiguous), 1 mean, 2 rstd, 3 weight (iargs[1]). iargs[0] = normalized_ndim. */
static ct_status layer_norm_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    int nd = (int)node->iargs[0];
    bool has_weight = node->iargs[1];
    ct_tensor *x = ct__node_saved(node, 0), *mean = ct__node_saved(node, 1), *rstd = ct__node_saved(node, 2);
    ct_tensor *w = has_weight ? ct__node_saved(node, 3) : NULL;
    if (!x || !mean || !rstd || (has_weight && !w))
        return ct_last_error();
    ct_tensor *g = contiguous_data(gout[0]);
    if (!g)
        return ct_last_error();
    if (x->device.type == CT_DEVICE_CUDA)
        return ln_backward_cuda(node, nd, x, g, mean, rstd, w, gin);
    return ln_backward_cpu(node, nd, x, g, mean, rstd, w, gin);
}

ct_tensor *ct_layer_norm(const ct_tensor *x, int normalized_ndim, const ct_tensor *weight, const ct_tensor *bias,
                         double eps) {
    const char *op = "ct_layer_norm";
    if (!check_input(op, x))
        return NULL;
    if (normalized_ndim < 1 || normalized_ndim > x->ndim) {
        ct__set_error(CT_ERR_DIM, "%s: normalized_ndim must be in [1, %d] for x of shape %s, got %d", op, x->ndim,
                      ct_shape_str(x), normalized_ndim);
        return NULL;
    }
    const int64_t *pshape = x->shape + x->ndim - normalized_ndim;
    if (!check_param(op, "weight", weight, x, normalized_ndim, pshape) ||
        !check_param(op, "bias", bias, x, normalized_ndim, pshape))
        return NULL;
    if (!(eps >= 0 && isfinite(eps))) {
        ct__set_error(CT_ERR_VALUE, "%s: eps must be finite and >= 0, got %g", op, eps);
        return NULL;
    }
    int64_t D = ct__numel(normalized_ndim, pshape), R = ct__numel(x->ndim - normalized_ndim, x->shape);
    ct_dtype stat_dtype = x->device.type == CT_DEVICE_CUDA ? CT_F32 : CT_F64;
    ct_tensor *xc = contiguous_data(x);
    ct_tensor *y = xc ? ct__new(x->dtype, x->device, x->ndim, x->shape) : NULL;
    ct_tensor *mean = y ? ct__new(stat_dtype, x->device, 1, &R) : NULL;
    ct_tensor *rstd = mean ? ct__new(stat_dtype, x->device, 1, &R) : NULL;
    ct_status st = rstd ? ln_forward(xc, weight, bias, eps, R, D, mean, rstd, y) : ct_last_error();
    ct_node *node =
        st == CT_OK ? ct__record(op, layer_norm_backward, y, 3, (const ct_tensor *const[]){x, weight, bias}) : NULL;
    if (node) {
        node->iargs[0] = normalized_ndim;
        node->iargs[1] = weight != NULL;
        ct__node_save(node, xc);
        ct__node_save(node, mean);
        ct__node_save(node, rstd);
        ct__node_save(node, weight);
    }
    release_temporaries(x, xc, mean, rstd);
    if (st != CT_OK) {
        ct_tensor_free(y);
        return NULL;
    }
    return y;
}
