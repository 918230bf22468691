/* Dropout with the Philox mask of random.h's bernoulli scheme.
 *
 * The mask is never stored: the node records the (seed, offset) the forward drew from, and
 * backward regenerates the same decisions (one Philox block per four elements is cheaper
 * than reading a byte mask back on both backends, and saves N bytes per activation). */
#include "runtime/internal.h"
#include "kernels/cpu/dropout.h"

/* iargs[0] seed, iargs[1] offset (bit patterns of the uint64 values); dargs[0] keep
 * probability, dargs[1] scale. iargs[2] = 1 for the p == 1 case (gradient 0). */
static ct_status dropout_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *g = gout[0];
    if (node->iargs[2]) {
        gin[0] = ct_zeros(g->shape, g->ndim, g->dtype, g->device);
        return gin[0] ? CT_OK : ct_last_error();
    }
    ct_tensor *gc = ct_contiguous(g);
    ct_tensor *dx = gc ? ct__new(g->dtype, g->device, g->ndim, g->shape) : NULL;
    if (!dx)
        return ct_last_error();
    if (!ct__require_cpu(node->name, g))
        return ct_last_error();
    ct_cpu_dropout(g->dtype, ct__numel(g->ndim, g->shape), ct__data(gc), ct__data(dx), (uint64_t)node->iargs[0],
                   (uint64_t)node->iargs[1], node->dargs[0], node->dargs[1]);
    gin[0] = dx;
    return CT_OK;
}

static ct_status identity_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *g = gout[0];
    gin[0] = ct__view_of(g, g->ndim, g->shape, g->strides, g->offset);
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_dropout(const ct_tensor *x, double p, bool training) {
    const char *op = "ct_dropout";
    if (!ct__check(op, "x", x))
        return NULL;
    if (!ct_dtype_is_float(x->dtype)) {
        ct__set_error(CT_ERR_DTYPE, "%s: x must be a floating tensor, not %s", op, ct_dtype_name(x->dtype));
        return NULL;
    }
    if (!(p >= 0 && p <= 1)) {
        ct__set_error(CT_ERR_VALUE, "%s: p must be in [0, 1], got %g", op, p);
        return NULL;
    }
    if (!training || p == 0) {
        ct_tensor *out = ct__view_of(x, x->ndim, x->shape, x->strides, x->offset);
        ct__record(op, identity_backward, out, 1, (const ct_tensor *const[]){x});
        return out;
    }
    if (p == 1) {
        ct_tensor *out = ct_zeros(x->shape, x->ndim, x->dtype, x->device);
        ct_node *node = ct__record(op, dropout_backward, out, 1, (const ct_tensor *const[]){x});
        if (node)
            node->iargs[2] = 1;
        return out;
    }
    if (!ct__require_cpu(op, x))
        return NULL;
    int64_t n = ct__numel(x->ndim, x->shape);
    ct_tensor *xc = ct__is_contiguous(x) ? (ct_tensor *)x : NULL;
    if (!xc) {
        ct_no_grad_begin();
        xc = ct_contiguous((ct_tensor *)x);
        ct_no_grad_end();
    }
    ct_tensor *out = xc ? ct__new(x->dtype, x->device, x->ndim, x->shape) : NULL;
    if (!out) {
        if (xc != x)
            ct_tensor_free(xc);
        return NULL;
    }
    uint64_t seed, offset = ct__philox_reserve((uint64_t)n, &seed);
    double keep = 1.0 - p, scale = 1.0 / keep;
    ct_cpu_dropout(x->dtype, n, ct__data(xc), ct__data(out), seed, offset, keep, scale);
    if (xc != x)
        ct_tensor_free(xc);
    ct_node *node = ct__record(op, dropout_backward, out, 1, (const ct_tensor *const[]){x});
    if (node) {
        node->iargs[0] = (int64_t)seed;
        node->iargs[1] = (int64_t)offset;
        node->dargs[0] = keep;
        node->dargs[1] = scale;
    }
    return out;
}
