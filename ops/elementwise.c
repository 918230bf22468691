/* Elementwise ops with NumPy broadcasting: arithmetic, comparisons, selection, unary math. */
#include "runtime/internal.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/ternary.h"

#include <math.h>
#include <string.h>

/* ---- kernels on the output's device ---------------------------------------------------- */

/* out = kop(a, b) over out's shape, a and b (of `dtype`) with strides broadcast to it. */
static ct_status run_binary(ct_binary_op kop, ct_dtype dtype, ct_tensor *out, const void *a, const int64_t *as,
                            const void *b, const int64_t *bs, double p0, double p1) {
    if (out->device.type == CT_DEVICE_CUDA)
        return CT_ON_CUDA(ct_cuda_binary(kop, dtype, out->ndim, out->shape, ct__data(out), out->strides, a, as, b, bs,
                                         p0, p1, ct__stream_for(out)));
    ct_cpu_binary_ex(kop, dtype, out->ndim, out->shape, ct__data(out), out->strides, a, as, b, bs, p0, p1);
    return CT_OK;
}

static ct_status run_unary(ct_unary_op kop, ct_tensor *out, const void *a, const int64_t *as, double p0, double p1) {
    if (out->device.type == CT_DEVICE_CUDA)
        return CT_ON_CUDA(ct_cuda_unary(kop, out->dtype, out->ndim, out->shape, ct__data(out), out->strides, a, as, p0,
                                        p1, ct__stream_for(out)));
    ct_cpu_unary(kop, out->dtype, out->ndim, out->shape, ct__data(out), out->strides, a, as, p0, p1);
    return CT_OK;
}

/* out = cond ? a : b over out's shape. */
static ct_status run_where(ct_tensor *out, const uint8_t *cond, const int64_t *cs, const void *a, const int64_t *as,
                           const void *b, const int64_t *bs) {
    if (out->device.type == CT_DEVICE_CUDA)
        return CT_ON_CUDA(ct_cuda_where(out->dtype, out->ndim, out->shape, ct__data(out), out->strides, cond, cs, a, as,
                                        b, bs, ct__stream_for(out)));
    ct_cpu_where(out->dtype, out->ndim, out->shape, ct__data(out), out->strides, cond, cs, a, as, b, bs);
    return CT_OK;
}

static ct_status run_ternary(ct_ternary_op kop, ct_tensor *out, const void *g, const int64_t *gs, const void *a,
                             const int64_t *as, const void *b, const int64_t *bs) {
    if (out->device.type == CT_DEVICE_CUDA)
        return CT_ON_CUDA(ct_cuda_ternary(kop, out->dtype, out->ndim, out->shape, ct__data(out), out->strides, g, gs, a,
                                          as, b, bs, ct__stream_for(out)));
    ct_cpu_ternary(kop, out->dtype, out->ndim, out->shape, ct__data(out), out->strides, g, gs, a, as, b, bs);
    return CT_OK;
}

/* A new output once its kernel ran: itself, or NULL (freed) when the kernel failed. */
static ct_tensor *filled(ct_tensor *out, ct_status st) {
    if (st == CT_OK)
        return out;
    ct_tensor_free(out);
    return NULL;
}

/* ---- shared plumbing ------------------------------------------------------------------ */

/* Run a binary kernel into a new output of the broadcast shape. */
static ct_tensor *binary_forward(const char *op, ct_binary_op kop, const ct_tensor *a, const ct_tensor *b,
                                 double p0) {
    if (!ct__check(op, "a", a) || !ct__check(op, "b", b))
        return NULL;
    if (!ct__same_device_dtype(op, a, b))
        return NULL;
    int ndim;
    int64_t shape[CT_MAX_DIMS], as[CT_MAX_DIMS], bs[CT_MAX_DIMS];
    if (!ct__broadcast_shape(op, a->ndim, a->shape, b->ndim, b->shape, &ndim, shape))
        return NULL;
    bool cmp = kop >= CT_BIN_EQ && kop <= CT_BIN_GE;
    ct_tensor *out = ct__new(cmp ? CT_U8 : a->dtype, a->device, ndim, shape);
    if (!out)
        return NULL;
    ct__broadcast_strides(a, ndim, shape, as);
    ct__broadcast_strides(b, ndim, shape, bs);
    return filled(out, run_binary(kop, a->dtype, out, ct__data(a), as, ct__data(b), bs, p0, 0));
}

static ct_tensor *unary_forward(const char *op, ct_unary_op kop, const ct_tensor *a, double p0, double p1) {
    if (!ct__check(op, "a", a))
        return NULL;
    ct_tensor *out = ct__new(a->dtype, a->device, a->ndim, a->shape);
    if (!out)
        return NULL;
    return filled(out, run_unary(kop, out, ct__data(a), a->strides, p0, p1));
}

/* One fused backward pass over (grad, saved), same shape: the input gradient of a unary op. */
static ct_tensor *unary_grad(ct_binary_op kop, const ct_tensor *g, const ct_tensor *saved, double p0, double p1) {
    if (!ct__same_device_dtype("ct_backward", g, saved))
        return NULL;
    CT_ASSERT(g->ndim == saved->ndim && memcmp(g->shape, saved->shape, sizeof(int64_t) * (size_t)g->ndim) == 0,
              NULL);
    ct_tensor *out = ct__new(g->dtype, g->device, g->ndim, g->shape);
    if (!out)
        return NULL;
    return filled(out,
                  run_binary(kop, g->dtype, out, ct__data(g), g->strides, ct__data(saved), saved->strides, p0, p1));
}

/* One fused backward pass over (grad, a, b), with a and b broadcast to grad's shape (the
 * output's); the caller sums the result back to the input's shape. */
static ct_tensor *binary_grad(ct_ternary_op kop, const ct_tensor *g, const ct_tensor *a, const ct_tensor *b) {
    if (!ct__same_device_dtype("ct_backward", g, a))
        return NULL;
    int64_t as[CT_MAX_DIMS], bs[CT_MAX_DIMS];
    ct__broadcast_strides(a, g->ndim, g->shape, as);
    ct__broadcast_strides(b, g->ndim, g->shape, bs);
    ct_tensor *out = ct__new(g->dtype, g->device, g->ndim, g->shape);
    if (!out)
        return NULL;
    return filled(out, run_ternary(kop, out, ct__data(g), g->strides, ct__data(a), as, ct__data(b), bs));
}

/* Store a gradient for input i, summed back to that input's (pre-broadcast) shape. */
static ct_status give(ct_node *node, ct_tensor **gin, int i, ct_tensor *g) {
    if (!g)
        return ct_last_error();
    gin[i] = ct__sum_to_shape(g, node->in_ndim[i], node->in_shape[i]);
    return gin[i] ? CT_OK : ct_last_error();
}

/* ---- add / sub / add_scaled --------------------------------------------------------- */

static ct_status add_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    double alpha = node->dargs[0];
    ct_status st = CT_OK;
    if (node->needs_grad[0])
        st = give(node, gin, 0, gout[0]);
    if (st == CT_OK && node->needs_grad[1])
        st = give(node, gin, 1, alpha == 1.0 ? gout[0] : ct_mul_scalar(gout[0], alpha));
    return st;
}

ct_tensor *ct_add_scaled(const ct_tensor *a, const ct_tensor *b, double alpha) {
    ct_tensor *out = binary_forward("ct_add_scaled", alpha == 1.0 ? CT_BIN_ADD : CT_BIN_ADD_SCALED, a, b, alpha);
    ct_node *node = ct__record("ct_add_scaled", add_backward, out, 2, (const ct_tensor *const[]){a, b});
    if (node)
        node->dargs[0] = alpha;
    return out;
}

ct_tensor *ct_add(const ct_tensor *a, const ct_tensor *b) {
    ct_tensor *out = binary_forward("ct_add", CT_BIN_ADD, a, b, 0);
    ct_node *node = ct__record("ct_add", add_backward, out, 2, (const ct_tensor *const[]){a, b});
    if (node)
        node->dargs[0] = 1.0;
    return out;
}

ct_tensor *ct_sub(const ct_tensor *a, const ct_tensor *b) {
    ct_tensor *out = binary_forward("ct_sub", CT_BIN_SUB, a, b, 0);
    ct_node *node = ct__record("ct_sub", add_backward, out, 2, (const ct_tensor *const[]){a, b});
    if (node)
        node->dargs[0] = -1.0;
    return out;
}

/* ---- mul / div ------------------------------------------------------------------------ */

static ct_status mul_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *a = ct__node_saved(node, 0), *b = ct__node_saved(node, 1);
    if (!a || !b)
        return ct_last_error();
    ct_status st = CT_OK;
    if (node->needs_grad[0])
        st = give(node, gin, 0, ct_mul(gout[0], b));
    if (st == CT_OK && node->needs_grad[1])
        st = give(node, gin, 1, ct_mul(gout[0], a));
    return st;
}

ct_tensor *ct_mul(const ct_tensor *a, const ct_tensor *b) {
    ct_tensor *out = binary_forward("ct_mul", CT_BIN_MUL, a, b, 0);
    ct_node *node = ct__record("ct_mul", mul_backward, out, 2, (const ct_tensor *const[]){a, b});
    if (node) {
        ct__node_save(node, a);
        ct__node_save(node, b);
    }
    return out;
}

/* d(a/b)/da = 1/b; d(a/b)/db = -a/b^2 = -out/b. */
static ct_status div_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *b = ct__node_saved(node, 0), *out = ct__node_saved(node, 1);
    if (!b || !out)
        return ct_last_error();
    ct_tensor *ga = ct_div(gout[0], b);
    ct_status st = CT_OK;
    if (node->needs_grad[0])
        st = give(node, gin, 0, ga);
    if (st == CT_OK && node->needs_grad[1])
        st = give(node, gin, 1, ct_neg(ct_mul(ga, out)));
    return st;
}

ct_tensor *ct_div(const ct_tensor *a, const ct_tensor *b) {
    ct_tensor *out = binary_forward("ct_div", CT_BIN_DIV, a, b, 0);
    ct_node *node = ct__record("ct_div", div_backward, out, 2, (const ct_tensor *const[]){a, b});
    if (node) {
        ct__node_save(node, b);
        ct__node_save(node, out);
    }
    return out;
}

/* ---- pow / maximum / minimum ---------------------------------------------------------- */

static ct_status pow_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *a = ct__node_saved(node, 0), *b = ct__node_saved(node, 1);
    if (!a || !b)
        return ct_last_error();
    ct_status st = CT_OK;
    if (node->needs_grad[0])
        st = give(node, gin, 0, binary_grad(CT_TER_POW_BASE_BW, gout[0], a, b));
    if (st == CT_OK && node->needs_grad[1])
        st = give(node, gin, 1, binary_grad(CT_TER_POW_EXP_BW, gout[0], a, b));
    return st;
}

ct_tensor *ct_pow(const ct_tensor *a, const ct_tensor *b) {
    ct_tensor *out = binary_forward("ct_pow", CT_BIN_POW, a, b, 0);
    ct_node *node = ct__record("ct_pow", pow_backward, out, 2, (const ct_tensor *const[]){a, b});
    if (node) {
        ct__node_save(node, a);
        ct__node_save(node, b);
    }
    return out;
}

/* The gradient goes to the larger input (the smaller for minimum), half to each on ties, and
 * whole to both where one is NaN, as in PyTorch. iargs[0] is 1 for minimum. */
static ct_status maxmin_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *a = ct__node_saved(node, 0), *b = ct__node_saved(node, 1);
    if (!a || !b)
        return ct_last_error();
    bool is_min = node->iargs[0] != 0;
    ct_status st = CT_OK;
    if (node->needs_grad[0])
        st = give(node, gin, 0, binary_grad(CT_TER_MAX_BW, gout[0], is_min ? b : a, is_min ? a : b));
    if (st == CT_OK && node->needs_grad[1])
        st = give(node, gin, 1, binary_grad(CT_TER_MAX_BW, gout[0], is_min ? a : b, is_min ? b : a));
    return st;
}

static ct_tensor *maxmin(const char *op, bool is_min, const ct_tensor *a, const ct_tensor *b) {
    ct_tensor *out = binary_forward(op, is_min ? CT_BIN_MIN : CT_BIN_MAX, a, b, 0);
    ct_node *node = ct__record(op, maxmin_backward, out, 2, (const ct_tensor *const[]){a, b});
    if (node) {
        node->iargs[0] = is_min;
        ct__node_save(node, a);
        ct__node_save(node, b);
    }
    return out;
}

ct_tensor *ct_maximum(const ct_tensor *a, const ct_tensor *b) { return maxmin("ct_maximum", false, a, b); }
ct_tensor *ct_minimum(const ct_tensor *a, const ct_tensor *b) { return maxmin("ct_minimum", true, a, b); }

/* ---- comparisons (U8, not differentiable) ------------------------------------------- */

ct_tensor *ct_eq(const ct_tensor *a, const ct_tensor *b) { return binary_forward("ct_eq", CT_BIN_EQ, a, b, 0); }
ct_tensor *ct_ne(const ct_tensor *a, const ct_tensor *b) { return binary_forward("ct_ne", CT_BIN_NE, a, b, 0); }
ct_tensor *ct_lt(const ct_tensor *a, const ct_tensor *b) { return binary_forward("ct_lt", CT_BIN_LT, a, b, 0); }
ct_tensor *ct_le(const ct_tensor *a, const ct_tensor *b) { return binary_forward("ct_le", CT_BIN_LE, a, b, 0); }
ct_tensor *ct_gt(const ct_tensor *a, const ct_tensor *b) { return binary_forward("ct_gt", CT_BIN_GT, a, b, 0); }
ct_tensor *ct_ge(const ct_tensor *a, const ct_tensor *b) { return binary_forward("ct_ge", CT_BIN_GE, a, b, 0); }

/* ---- unary ------------------------------------------------------------------------- */

static ct_status neg_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    gin[0] = ct_neg(gout[0]);
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_neg(const ct_tensor *a) {
    ct_tensor *out = unary_forward("ct_neg", CT_UN_NEG, a, 0, 0);
    ct__record("ct_neg", neg_backward, out, 1, (const ct_tensor *const[]){a});
    return out;
}

static ct_status exp_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *out = ct__node_saved(node, 0);
    gin[0] = out ? ct_mul(gout[0], out) : NULL;
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_exp(const ct_tensor *a) {
    ct_tensor *out = unary_forward("ct_exp", CT_UN_EXP, a, 0, 0);
    ct__node_save(ct__record("ct_exp", exp_backward, out, 1, (const ct_tensor *const[]){a}), out);
    return out;
}

static ct_status log_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *a = ct__node_saved(node, 0);
    gin[0] = a ? ct_div(gout[0], a) : NULL;
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_log(const ct_tensor *a) {
    ct_tensor *out = unary_forward("ct_log", CT_UN_LOG, a, 0, 0);
    ct__node_save(ct__record("ct_log", log_backward, out, 1, (const ct_tensor *const[]){a}), a);
    return out;
}

/* d sqrt(a) = g / (2 sqrt(a)) */
static ct_status sqrt_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *out = ct__node_saved(node, 0);
    gin[0] = out ? ct_div(ct_mul_scalar(gout[0], 0.5), out) : NULL;
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_sqrt(const ct_tensor *a) {
    ct_tensor *out = unary_forward("ct_sqrt", CT_UN_SQRT, a, 0, 0);
    ct__node_save(ct__record("ct_sqrt", sqrt_backward, out, 1, (const ct_tensor *const[]){a}), out);
    return out;
}

/* d a^-1/2 = -1/2 a^-3/2 = -0.5 * out^3 */
static ct_status rsqrt_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *out = ct__node_saved(node, 0);
    gin[0] = out ? ct_mul(ct_mul_scalar(gout[0], -0.5), ct_pow_scalar(out, 3.0)) : NULL;
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_rsqrt(const ct_tensor *a) {
    ct_tensor *out = unary_forward("ct_rsqrt", CT_UN_RSQRT, a, 0, 0);
    ct__node_save(ct__record("ct_rsqrt", rsqrt_backward, out, 1, (const ct_tensor *const[]){a}), out);
    return out;
}

static ct_status add_scalar_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    gin[0] = ct__view_of(gout[0], gout[0]->ndim, gout[0]->shape, gout[0]->strides, gout[0]->offset);
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_add_scalar(const ct_tensor *a, double s) {
    ct_tensor *out = unary_forward("ct_add_scalar", CT_UN_ADD_SCALAR, a, s, 0);
    ct__record("ct_add_scalar", add_scalar_backward, out, 1, (const ct_tensor *const[]){a});
    return out;
}

static ct_status mul_scalar_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    gin[0] = ct_mul_scalar(gout[0], node->dargs[0]);
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_mul_scalar(const ct_tensor *a, double s) {
    ct_tensor *out = unary_forward("ct_mul_scalar", CT_UN_MUL_SCALAR, a, s, 0);
    ct_node *node = ct__record("ct_mul_scalar", mul_scalar_backward, out, 1, (const ct_tensor *const[]){a});
    if (node)
        node->dargs[0] = s;
    return out;
}

/* d a^p = p a^(p-1); zero for p = 0, also at a = 0 where the formula gives 0 * inf (as PyTorch). */
static ct_status pow_scalar_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *a = ct__node_saved(node, 0);
    double p = node->dargs[0];
    if (!a)
        return ct_last_error();
    if (p == 0.0)
        gin[0] = ct_zeros_like(gout[0]);
    else
        gin[0] = p == 1.0 ? ct_clone(gout[0]) : ct_mul(gout[0], ct_mul_scalar(ct_pow_scalar(a, p - 1.0), p));
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_pow_scalar(const ct_tensor *a, double exponent) {
    ct_tensor *out = unary_forward("ct_pow_scalar", CT_UN_POW_SCALAR, a, exponent, 0);
    ct_node *node = ct__record("ct_pow_scalar", pow_scalar_backward, out, 1, (const ct_tensor *const[]){a});
    if (node) {
        node->dargs[0] = exponent;
        ct__node_save(node, a);
    }
    return out;
}

/* d|a| = g * sign(a) (0 at 0, like PyTorch). */
static ct_status abs_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *a = ct__node_saved(node, 0);
    gin[0] = a ? unary_grad(CT_BIN_ABS_BW, gout[0], a, 0, 0) : NULL;
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_abs(const ct_tensor *a) {
    ct_tensor *out = unary_forward("ct_abs", CT_UN_ABS, a, 0, 0);
    ct__node_save(ct__record("ct_abs", abs_backward, out, 1, (const ct_tensor *const[]){a}), a);
    return out;
}

/* The gradient passes where lo <= a <= hi (bounds included, as in PyTorch). */
static ct_status clamp_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *a = ct__node_saved(node, 0);
    gin[0] = a ? unary_grad(CT_BIN_CLAMP_BW, gout[0], a, node->dargs[0], node->dargs[1]) : NULL;
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_clamp(const ct_tensor *a, double lo, double hi) {
    if (!ct__check("ct_clamp", "a", a))
        return NULL;
    if (isnan(lo) || isnan(hi)) {
        ct__set_error(CT_ERR_VALUE, "ct_clamp: bounds must not be NaN (lo %g, hi %g)", lo, hi);
        return NULL;
    }
    ct_tensor *out = unary_forward("ct_clamp", CT_UN_CLAMP, a, lo, hi);
    ct_node *node = ct__record("ct_clamp", clamp_backward, out, 1, (const ct_tensor *const[]){a});
    if (node) {
        node->dargs[0] = lo;
        node->dargs[1] = hi;
        ct__node_save(node, a);
    }
    return out;
}

/* ---- where / masked_fill ------------------------------------------------------------------- */

static bool check_mask(const char *op, const char *name, const ct_tensor *mask, const ct_tensor *t) {
    if (mask->dtype != CT_U8) {
        ct__set_error(CT_ERR_DTYPE, "%s: %s must be u8 (0 or nonzero), not %s (make one with a comparison such as ct_gt)",
                      op, name, ct_dtype_name(mask->dtype));
        return false;
    }
    if (!ct_device_equal(mask->device, t->device)) {
        ct__set_error(CT_ERR_DEVICE, "%s: %s is on %s, the data on %s", op, name, ct_device_name(mask->device),
                      ct_device_name(t->device));
        return false;
    }
    return true;
}

/* out = (mask ? value : t) or, with `invert`, (mask ? t : value); out has the broadcast shape
 * of mask and t. Not recorded for autograd. */
static ct_tensor *select_scalar(const char *op, const ct_tensor *mask, const ct_tensor *t, double value,
                                bool invert) {
    int ndim;
    int64_t shape[CT_MAX_DIMS], ms[CT_MAX_DIMS], ts[CT_MAX_DIMS], zero[CT_MAX_DIMS] = {0};
    if (!ct__broadcast_shape(op, mask->ndim, mask->shape, t->ndim, t->shape, &ndim, shape))
        return NULL;
    ct_tensor *out = ct__new(t->dtype, t->device, ndim, shape);
    if (!out)
        return NULL;
    ct_tensor *fill = ct_scalar(value, t->dtype, t->device); /* one element, read with stride 0 */
    if (!fill)
        return filled(out, ct_last_error());
    ct__broadcast_strides(mask, ndim, shape, ms);
    ct__broadcast_strides(t, ndim, shape, ts);
    ct_status st = invert ? run_where(out, ct__data(mask), ms, ct__data(t), ts, ct__data(fill), zero)
                          : run_where(out, ct__data(mask), ms, ct__data(fill), zero, ct__data(t), ts);
    ct_tensor_free(fill);
    return filled(out, st);
}

/* Input 0 is a, input 1 is b; the condition is saved. */
static ct_status where_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *cond = ct__node_saved(node, 0);
    if (!cond)
        return ct_last_error();
    ct_status st = CT_OK;
    if (node->needs_grad[0])
        st = give(node, gin, 0, select_scalar("ct_where", cond, gout[0], 0.0, true));
    if (st == CT_OK && node->needs_grad[1])
        st = give(node, gin, 1, select_scalar("ct_where", cond, gout[0], 0.0, false));
    return st;
}

ct_tensor *ct_where(const ct_tensor *cond, const ct_tensor *a, const ct_tensor *b) {
    const char *op = "ct_where";
    if (!ct__check(op, "cond", cond) || !ct__check(op, "a", a) || !ct__check(op, "b", b))
        return NULL;
    if (!ct__same_device_dtype(op, a, b) || !check_mask(op, "cond", cond, a))
        return NULL;
    int ab_ndim, ndim;
    int64_t ab_shape[CT_MAX_DIMS], shape[CT_MAX_DIMS], cs[CT_MAX_DIMS], as[CT_MAX_DIMS], bs[CT_MAX_DIMS];
    if (!ct__broadcast_shape(op, a->ndim, a->shape, b->ndim, b->shape, &ab_ndim, ab_shape) ||
        !ct__broadcast_shape(op, cond->ndim, cond->shape, ab_ndim, ab_shape, &ndim, shape)) {
        ct__set_error(CT_ERR_SHAPE, "%s: cond %s, a %s and b %s cannot be broadcast together", op,
                      ct_shape_str(cond), ct_shape_str(a), ct_shape_str(b));
        return NULL;
    }
    ct_tensor *out = ct__new(a->dtype, a->device, ndim, shape);
    if (!out)
        return NULL;
    ct__broadcast_strides(cond, ndim, shape, cs);
    ct__broadcast_strides(a, ndim, shape, as);
    ct__broadcast_strides(b, ndim, shape, bs);
    if (!filled(out, run_where(out, ct__data(cond), cs, ct__data(a), as, ct__data(b), bs)))
        return NULL;
    ct__node_save(ct__record(op, where_backward, out, 2, (const ct_tensor *const[]){a, b}), cond);
    return out;
}

static ct_status masked_fill_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *mask = ct__node_saved(node, 0);
    gin[0] = mask ? select_scalar("ct_masked_fill", mask, gout[0], 0.0, false) : NULL;
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_masked_fill(const ct_tensor *t, const ct_tensor *mask, double value) {
    const char *op = "ct_masked_fill";
    if (!ct__check(op, "t", t) || !ct__check(op, "mask", mask))
        return NULL;
    if (!check_mask(op, "mask", mask, t))
        return NULL;
    int ndim;
    int64_t shape[CT_MAX_DIMS];
    if (!ct__broadcast_shape(op, mask->ndim, mask->shape, t->ndim, t->shape, &ndim, shape) || ndim != t->ndim ||
        memcmp(shape, t->shape, sizeof(int64_t) * (size_t)ndim) != 0) {
        ct__set_error(CT_ERR_SHAPE, "%s: mask of shape %s does not broadcast to t of shape %s", op,
                      ct_shape_str(mask), ct_shape_str(t));
        return NULL;
    }
    ct_tensor *out = select_scalar(op, mask, t, value, false);
    ct__node_save(ct__record(op, masked_fill_backward, out, 1, (const ct_tensor *const[]){t}), mask);
    return out;
}

/* ---- in place -------------------------------------------------------------------------- */

/* a op= b with b broadcast to a's shape. `instead` names the out-of-place op. The checks are
 * the same on every device: the update is not recorded by autograd, and a must not alias
 * itself or partially overlap b (the kernels would read elements they already wrote). */
static ct_status binary_inplace(const char *op, const char *instead, ct_binary_op kop, ct_tensor *a, const ct_tensor *b,
                                double p0) {
    if (!ct__check(op, "a", a) || !ct__check(op, "b", b))
        return ct_last_error();
    if (!ct__same_device_dtype(op, a, b) || !ct__check_inplace(op, a) || !ct__check_inplace_source(op, b, instead))
        return ct_last_error();
    int ndim;
    int64_t shape[CT_MAX_DIMS], bs[CT_MAX_DIMS];
    if (!ct__broadcast_shape(op, a->ndim, a->shape, b->ndim, b->shape, &ndim, shape))
        return ct_last_error();
    if (ndim != a->ndim || memcmp(shape, a->shape, sizeof(int64_t) * (size_t)ndim) != 0)
        return ct__set_error(CT_ERR_SHAPE, "%s: b of shape %s does not broadcast to a of shape %s", op,
                             ct_shape_str(b), ct_shape_str(a));
    if (!ct__check_writable(op, a) || !ct__check_no_partial_overlap(op, a, b))
        return ct_last_error();
    ct__broadcast_strides(b, ndim, shape, bs);
    ct_status st = run_binary(kop, a->dtype, a, ct__data(a), a->strides, ct__data(b), bs, p0, 0);
    if (st == CT_OK)
        ct__bump_version(a);
    return st;
}

ct_status ct_add_(ct_tensor *a, const ct_tensor *b) {
    return binary_inplace("ct_add_", "ct_add", CT_BIN_ADD, a, b, 0);
}
ct_status ct_add_scaled_(ct_tensor *a, const ct_tensor *b, double alpha) {
    return binary_inplace("ct_add_scaled_", "ct_add_scaled", CT_BIN_ADD_SCALED, a, b, alpha);
}
ct_status ct_mul_(ct_tensor *a, const ct_tensor *b) {
    return binary_inplace("ct_mul_", "ct_mul", CT_BIN_MUL, a, b, 0);
}

ct_status ct_mul_scalar_(ct_tensor *a, double s) {
    if (!ct__check("ct_mul_scalar_", "a", a))
        return ct_last_error();
    if (!ct__check_inplace("ct_mul_scalar_", a) || !ct__check_writable("ct_mul_scalar_", a))
        return ct_last_error();
    ct_status st = run_unary(CT_UN_MUL_SCALAR, a, ct__data(a), a->strides, s, 0);
    if (st == CT_OK)
        ct__bump_version(a);
    return st;
}
