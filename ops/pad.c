/* Padding of the trailing dims: constant (any device: a fill and a copy through views),
 * reflect and replicate (kernels/cpu/pad.c and kernels/cuda/pad.cu, over contiguous data). */
#include "runtime/internal.h"
#include "kernels/cpu/pad.h"

#include <inttypes.h>
#include <string.h>

/* The part of the input that survives in the output, per dim: input [in0, in0 + len) lands
 * at output [out0, out0 + len) (negative constant pads crop). */
typedef struct overlap {
    int64_t in0[CT_MAX_DIMS], out0[CT_MAX_DIMS], len[CT_MAX_DIMS];
    bool empty;
} overlap;

static overlap overlap_of(int ndim, const int64_t *in_shape, const int64_t *left, const int64_t *right) {
    overlap v = {.empty = false};
    for (int d = 0; d < ndim; d++) {
        v.in0[d] = left[d] < 0 ? -left[d] : 0;
        v.out0[d] = left[d] > 0 ? left[d] : 0;
        v.len[d] = in_shape[d] - v.in0[d] - (right[d] < 0 ? -right[d] : 0);
        if (v.len[d] <= 0)
            v.empty = true;
    }
    return v;
}

/* dst[region at dst0] = src[region at src0], both of `len` per dim, outside the graph. */
static ct_status copy_region(ct_tensor *dst, const int64_t *dst0, const ct_tensor *src, const int64_t *src0,
                             const int64_t *len) {
    int ndim = dst->ndim;
    int64_t doff = dst->offset, soff = src->offset;
    for (int d = 0; d < ndim; d++) {
        doff += dst0[d] * dst->strides[d];
        soff += src0[d] * src->strides[d];
    }
    ct_no_grad_begin();
    ct_tensor *dv = ct__view_of(dst, ndim, len, dst->strides, doff);
    ct_tensor *sv = dv ? ct__view_of(src, ndim, len, src->strides, soff) : NULL;
    ct_status st = sv ? ct_copy_(dv, sv) : ct_last_error();
    ct_no_grad_end();
    ct_tensor_free(dv);
    ct_tensor_free(sv);
    return st;
}

/* The node's ctx: the left and right pads of every dim (iargs[0] holds the mode). */
typedef struct pad_ctx {
    int64_t left[CT_MAX_DIMS], right[CT_MAX_DIMS];
} pad_ctx;

static ct_status pad_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    const pad_ctx *pc = node->ctx;
    ct_tensor *g = gout[0];
    int ndim = node->in_ndim[0];
    const int64_t *in_shape = node->in_shape[0];
    ct_pad_mode mode = (ct_pad_mode)node->iargs[0];
    if (mode == CT_PAD_CONSTANT) {
        overlap v = overlap_of(ndim, in_shape, pc->left, pc->right);
        ct_tensor *dx = ct_zeros(in_shape, ndim, g->dtype, g->device);
        if (!dx)
            return ct_last_error();
        if (!v.empty && copy_region(dx, v.in0, g, v.out0, v.len) != CT_OK)
            return ct_last_error();
        gin[0] = dx;
        return CT_OK;
    }
    bool reflect = mode == CT_PAD_REFLECT;
    if (g->device.type == CT_DEVICE_CUDA) {
        /* A gather that writes every element: no zeroed buffer, no F32 copy of g. */
        ct_tensor *gc = ct_contiguous(g);
        ct_tensor *dx = gc ? ct__new(g->dtype, g->device, ndim, in_shape) : NULL;
        if (!dx)
            return ct_last_error();
        ct_status st = CT_ON_CUDA(ct_cuda_pad_backward(reflect, g->dtype, ndim, in_shape, ct__data(dx), g->shape,
                                                       ct__data(gc), pc->left, ct__stream_for(g)));
        if (st != CT_OK)
            return st;
        gin[0] = dx;
        return CT_OK;
    }
    /* Accumulate in F32 (F64 for F64) and round once. */
    ct_dtype work = g->dtype == CT_F64 ? CT_F64 : CT_F32;
    ct_tensor *gc = ct_contiguous(ct_cast(g, work));
    ct_tensor *acc = gc ? ct_zeros(in_shape, ndim, work, g->device) : NULL;
    if (!acc)
        return ct_last_error();
    ct_cpu_pad_backward(reflect, work, ndim, in_shape, ct__data(acc), g->shape, ct__data(gc), pc->left);
    gin[0] = ct_cast(acc, g->dtype);
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_pad(const ct_tensor *x, const int64_t *pads, int npads, ct_pad_mode mode, double value) {
    const char *op = "ct_pad";
    if (!ct__check(op, "x", x))
        return NULL;
    if (mode != CT_PAD_CONSTANT && mode != CT_PAD_REFLECT && mode != CT_PAD_REPLICATE) {
        ct__set_error(CT_ERR_VALUE, "%s: unknown mode %d", op, (int)mode);
        return NULL;
    }
    if (npads < 0 || npads % 2 != 0 || npads > 2 * x->ndim || (npads > 0 && !pads)) {
        ct__set_error(CT_ERR_VALUE, "%s: need an even number of pads, at most 2 per dim (%d for x of shape %s), got %d",
                      op, 2 * x->ndim, ct_shape_str(x), npads);
        return NULL;
    }
    pad_ctx pc = {{0}, {0}};
    int64_t shape[CT_MAX_DIMS];
    bool padded = false;
    for (int d = 0; d < x->ndim; d++) {
        int k = x->ndim - 1 - d; /* pads[2k], pads[2k + 1] belong to dim d */
        if (2 * k < npads) {
            pc.left[d] = pads[2 * k];
            pc.right[d] = pads[2 * k + 1];
        }
        int64_t n = x->shape[d], l = pc.left[d], r = pc.right[d];
        padded = padded || l != 0 || r != 0;
        shape[d] = n + l + r;
        if (shape[d] < 0) {
            ct__set_error(CT_ERR_SHAPE, "%s: pads (%" PRId64 ", %" PRId64 ") leave dim %d of size %" PRId64 " negative",
                          op, l, r, d, n);
            return NULL;
        }
        if (mode == CT_PAD_REFLECT && (l < 0 || r < 0 || l >= n || r >= n)) {
            ct__set_error(CT_ERR_VALUE,
                          "%s: reflect pads must be in [0, size) of their dim; dim %d has size %" PRId64
                          ", pads (%" PRId64 ", %" PRId64 ")",
                          op, d, n, l, r);
            return NULL;
        }
        if (mode == CT_PAD_REPLICATE && (l < 0 || r < 0 || (n == 0 && l + r > 0))) {
            ct__set_error(CT_ERR_VALUE,
                          "%s: replicate pads must be >= 0 on a non-empty dim; dim %d has size %" PRId64
                          ", pads (%" PRId64 ", %" PRId64 ")",
                          op, d, n, l, r);
            return NULL;
        }
    }
    ct_tensor *out = NULL;
    if (mode == CT_PAD_CONSTANT || !padded) {
        overlap v = overlap_of(x->ndim, x->shape, pc.left, pc.right);
        out = ct_full(shape, x->ndim, value, x->dtype, x->device);
        if (out && !v.empty && copy_region(out, v.out0, x, v.in0, v.len) != CT_OK) {
            ct_tensor_free(out);
            return NULL;
        }
    } else {
        ct_tensor *xc = (ct_tensor *)x;
        if (!ct__is_contiguous(x)) {
            ct_no_grad_begin();
            xc = ct_contiguous((ct_tensor *)x);
            ct_no_grad_end();
        }
        out = xc ? ct__new(x->dtype, x->device, x->ndim, shape) : NULL;
        bool reflect = mode == CT_PAD_REFLECT;
        size_t elem_size = ct_dtype_size(x->dtype);
        if (out && x->device.type == CT_DEVICE_CUDA) {
            if (CT_ON_CUDA(ct_cuda_pad(reflect, elem_size, x->ndim, x->shape, ct__data(xc), shape, ct__data(out),
                                       pc.left, ct__stream_for(x))) != CT_OK) {
                ct_tensor_free(out);
                out = NULL;
            }
        } else if (out) {
            ct_cpu_pad(reflect, elem_size, x->ndim, x->shape, ct__data(xc), shape, ct__data(out), pc.left);
        }
        if (xc != x)
            ct_tensor_free(xc);
    }
    if (!out || !ct_dtype_is_float(x->dtype))
        return out;
    ct_node *node = ct__record(op, pad_backward, out, 1, (const ct_tensor *const[]){x});
    if (node) {
        node->iargs[0] = padded ? mode : CT_PAD_CONSTANT;
        node->ctx = malloc(sizeof pc);
        if (!node->ctx) {
            ct__set_error(CT_ERR_MEMORY, "%s: out of host memory", op);
            ct_tensor_free(out);
            return NULL;
        }
        memcpy(node->ctx, &pc, sizeof pc);
    }
    return out;
}
