/* Dropout with the Philox mask of random.h's bernoulli scheme.
 *
 * The mask is never stored: the node records the (seed, offset) the forward drew from, and
 * backward regenerates the same decisions (one Philox block per four elements is cheaper
 * than reading a byte mask back on both backends, and saves N bytes per activation). The CPU
 * (kernels/cpu/dropout.c) and CUDA (kernels/cuda/dropout.cu) kernels drop the same elements. */
#include "runtime/internal.h"
#include "kernels/cpu/dropout.h"

/* out = in * scale where the Philox stream at (seed, offset) keeps the element, else 0; both
 * contiguous, on one device. */
static ct_status apply_mask(const ct_tensor *in, ct_tensor *out, uint64_t seed, uint64_t offset, double keep,
                            double scale) {
    int64_t n = ct__numel(in->ndim, in->shape);
    if (in->device.type == CT_DEVICE_CUDA)
        return CT_ON_CUDA(
            ct_cuda_dropout(in->dtype, n, ct__data(in), ct__data(out), seed, offset, keep, scale, ct__stream_for(in)));
    ct_cpu_dropout(in->dtype, n, ct__data(in), ct__data(out), seed, offset, keep, scale);
    return CT_OK;
}

/* The CUDA graph being captured on t's device by this thread (0: none, or a CPU tensor). */
static uint64_t capture_id(const ct_tensor *t) {
    return t->device.type == CT_DEVICE_CUDA ? ct__cuda_capture_id(t->device.index) : 0;
}

/* iargs[0] seed, iargs[1] offset (bit patterns of the uint64 values); dargs[0] keep
 * probability, dargs[1] scale. iargs[2] = 1 for the p == 1 case (gradient 0). iargs[3]: the
 * CUDA graph capture the forward ran in (0: none). A mask drawn in a capture is redrawn at
 * each replay, so its backward must run in the same capture: anywhere else it would rebuild
 * the capture-time mask, not the one the replay used. */
static ct_status dropout_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *g = gout[0];
    if (node->iargs[2]) {
        gin[0] = ct_zeros(g->shape, g->ndim, g->dtype, g->device);
        return gin[0] ? CT_OK : ct_last_error();
    }
    if ((uint64_t)node->iargs[3] != capture_id(g))
        return ct__set_error(CT_ERR_STATE, "ct_dropout backward: %s", node->iargs[3]
                                 ? "the forward was captured in a CUDA graph, whose replays draw a new mask each "
                                   "time; capture the backward in the same graph"
                                 : "the forward ran outside the CUDA graph being captured; capture both or neither");
    ct_tensor *gc = ct_contiguous(g);
    ct_tensor *dx = gc ? ct__new(g->dtype, g->device, g->ndim, g->shape) : NULL;
    if (!dx)
        return ct_last_error();
    gin[0] = dx;
    return apply_mask(gc, dx, (uint64_t)node->iargs[0], (uint64_t)node->iargs[1], node->dargs[0], node->dargs[1]);
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
    ct_status st = apply_mask(xc, out, seed, offset, keep, scale);
    if (xc != x)
        ct_tensor_free(xc);
    if (st != CT_OK) {
        ct_tensor_free(out);
        return NULL;
    }
    ct_node *node = ct__record(op, dropout_backward, out, 1, (const ct_tensor *const[]){x});
    if (node) {
        node->iargs[0] = (int64_t)seed;
        node->iargs[1] = (int64_t)offset;
        node->iargs[3] = (int64_t)capture_id(x);
        node->dargs[0] = keep;
        node->dargs[1] = scale;
    }
    return out;
}
