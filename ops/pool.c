/* Pooling: ct_max_pool2d, ct_avg_pool2d and ct_global_avg_pool2d, with their gradients.
 *
 * Output sizes follow PyTorch's pooling_output_shape (aten/src/ATen/native/Pool.h). Max
 * pooling records the I32 position of each maximum, and its backward sends the gradient
 * there; average pooling needs nothing but the geometry. The CPU kernels take contiguous
 * F32/F64 planes: other inputs are copied, half types widened to F32 and the results
 * rounded back (exact for max pooling). The CUDA kernels take F32, F16 and BF16 as they are. */
#include "runtime/internal.h"
#include "kernels/cpu/pool.h"

#include <limits.h>
#include <string.h>


/* ---- geometry --------------------------------------------------------------------------- */

/* PyTorch's pooling_output_shape: floor division, and with ceil_mode the last window must
 * start inside the input or its left padding. */
static int64_t output_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dilation, bool ceil_mode) {
    int64_t num = in + 2 * pad - dilation * (k - 1) - 1 + (ceil_mode ? stride - 1 : 0);
    int64_t out = (num >= 0 ? num / stride : -((-num + stride - 1) / stride)) + 1;
    if (ceil_mode && out > 0 && (out - 1) * stride >= in + pad)
        out--;
    return out;
}

static bool check_pair(const char *op, const char *name, const int *v, int min) {
    if (v[0] >= min && v[1] >= min)
        return true;
    ct__set_error(CT_ERR_VALUE, "%s: %s must be >= %d: got (%d, %d)", op, name, min, v[0], v[1]);
    return false;
}

static bool check_input(const char *op, const ct_tensor *x) {
    if (!ct__check(op, "x", x))
        return false;
    if (!ct_dtype_is_float(x->dtype)) {
        ct__set_error(CT_ERR_DTYPE, "%s: dtype %s is not supported (floating dtypes only; cast with ct_cast)", op,
                      ct_dtype_name(x->dtype));
        return false;
    }
    if (x->device.type == CT_DEVICE_CUDA && x->dtype == CT_F64) {
        ct__set_error(CT_ERR_DTYPE, "%s: f64 is not supported on CUDA (f32, f16, bf16)", op);
        return false;
    }
    if (x->ndim != 4) {
        ct__set_error(CT_ERR_SHAPE, "%s: x must be 4-D (N, C, H, W): x is %s", op, ct_shape_str(x));
        return false;
    }
    if (x->shape[2] * x->shape[3] > INT_MAX) {
        ct__set_error(CT_ERR_UNSUPPORTED, "%s: x is %s: planes above %d elements are not supported", op,
                      ct_shape_str(x), INT_MAX);
        return false;
    }
    return true;
}

/* Validate the options against x and fill the geometry. */
static bool pool_geom(const char *op, const ct_tensor *x, const ct_pool2d_opts *opts, bool is_max, ct_pool2d_geom *g) {
    if (!check_input(op, x))
        return false;
    ct_pool2d_opts o = opts ? *opts : CT_POOL2D_OPTS_DEFAULT;
    if (!check_pair(op, "kernel", o.kernel, 1) || !check_pair(op, "stride", o.stride, 0) ||
        !check_pair(op, "padding", o.padding, 0) || !check_pair(op, "dilation", o.dilation, 1))
        return false;
    if (!is_max && (o.dilation[0] != 1 || o.dilation[1] != 1)) {
        ct__set_error(CT_ERR_VALUE, "%s: dilation must be (1, 1) for average pooling: got (%d, %d)", op, o.dilation[0],
                      o.dilation[1]);
        return false;
    }
    if (2 * o.padding[0] > o.kernel[0] || 2 * o.padding[1] > o.kernel[1]) {
        ct__set_error(CT_ERR_VALUE,
                      "%s: padding must be at most half the kernel: got padding (%d, %d), kernel (%d, %d)", op,
                      o.padding[0], o.padding[1], o.kernel[0], o.kernel[1]);
        return false;
    }
    for (int i = 0; i < 2; i++)
        if (o.stride[i] == 0)
            o.stride[i] = o.kernel[i];
    *g = (ct_pool2d_geom){x->shape[0],
                          x->shape[1],
                          x->shape[2],
                          x->shape[3],
                          0,
                          0,
                          o.kernel[0],
                          o.kernel[1],
                          o.stride[0],
                          o.stride[1],
                          o.padding[0],
                          o.padding[1],
                          o.dilation[0],
                          o.dilation[1],
                          o.count_include_pad};
    g->oH = output_size(g->H, g->kH, g->pad_h, g->stride_h, g->dilation_h, o.ceil_mode);
    g->oW = output_size(g->W, g->kW, g->pad_w, g->stride_w, g->dilation_w, o.ceil_mode);
    if (g->oH < 1 || g->oW < 1) {
        ct__set_error(CT_ERR_SHAPE,
                      "%s: kernel larger than the padded input: x is %s, kernel (%d, %d), padding (%d, %d), "
                      "dilation (%d, %d)",
                      op, ct_shape_str(x), o.kernel[0], o.kernel[1], o.padding[0], o.padding[1], o.dilation[0],
                      o.dilation[1]);
        return false;
    }
    return true;
}

static inline ct_stream *stream_of(const ct_tensor *t) {
    return t->device.type == CT_DEVICE_CUDA ? ct__stream_for(t) : NULL;
}

static ct_node *record(const char *op, ct_backward_fn backward, ct_tensor *y, const ct_tensor *x,
                       const ct_pool2d_geom *g) {
    ct_node *node = ct__record(op, backward, y, 1, (const ct_tensor *const[]){x});
    if (!node)
        return NULL;
    ct_pool2d_geom *copy = malloc(sizeof *copy);
    if (!copy) {
        ct__set_error(CT_ERR_MEMORY, "%s: out of host memory recording the autograd graph", op);
        return NULL;
    }
    *copy = *g;
    node->ctx = copy;
    return node;
}

/* ---- max ------------------------------------------------------------------------------- */

static ct_status max_pool_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    const ct_pool2d_geom *g = node->ctx;
    ct_tensor *indices = ct__node_saved(node, 0);
    if (!indices)
        return ct_last_error();
    ct_tensor *gy = gout[0];
    ct_dtype cd = ct__compute_dtype(gy);
    ct_tensor *gyk = ct__operand(gy, cd), *gx = gyk ? ct__new(cd, gy->device, 4, node->in_shape[0]) : NULL;
    ct_status st = gx ? CT_OK : ct_last_error();
    if (st == CT_OK) {
        if (gy->device.type == CT_DEVICE_CUDA)
            st = CT_ON_CUDA(
                ct_cuda_max_pool2d_backward(cd, g, ct__data(gyk), ct__data(indices), ct__data(gx), stream_of(gy)));
        else
            ct_cpu_max_pool2d_backward(cd, g, ct__data(gyk), ct__data(indices), ct__data(gx));
    }
    ct__drop_operand(gyk, gy);
    if (st != CT_OK) {
        ct_tensor_free(gx);
        return st;
    }
    gin[0] = ct__finish_dtype(gx, node->in_dtype[0]);
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_max_pool2d(const ct_tensor *x, const ct_pool2d_opts *opts, ct_tensor **indices) {
    const char *op = "ct_max_pool2d";
    if (indices)
        *indices = NULL;
    ct_pool2d_geom g;
    if (!pool_geom(op, x, opts, true, &g))
        return NULL;
    ct_dtype cd = ct__compute_dtype(x);
    const int64_t out_shape[4] = {g.N, g.C, g.oH, g.oW};
    /* The positions are needed by backward or by the caller; inference skips them. */
    bool want_idx = indices || ct__any_requires_grad(1, (const ct_tensor *const[]){x});
    ct_tensor *xk = ct__operand(x, cd), *y = xk ? ct__new(cd, x->device, 4, out_shape) : NULL;
    ct_tensor *idx = y && want_idx ? ct__new(CT_I32, x->device, 4, out_shape) : NULL;
    ct_status st = y && (idx || !want_idx) ? CT_OK : ct_last_error();
    if (st == CT_OK) {
        int32_t *idx_data = idx ? ct__data(idx) : NULL;
        if (x->device.type == CT_DEVICE_CUDA)
            st = CT_ON_CUDA(ct_cuda_max_pool2d_forward(cd, &g, ct__data(xk), ct__data(y), idx_data, stream_of(y)));
        else
            ct_cpu_max_pool2d_forward(cd, &g, ct__data(xk), ct__data(y), idx_data);
    }
    if (xk)
        ct__drop_operand(xk, x);
    if (st == CT_OK)
        y = ct__finish_dtype(y, x->dtype);
    ct_node *node = st == CT_OK && y ? record(op, max_pool_backward, y, x, &g) : NULL;
    if (node)
        ct__node_save(node, idx);
    if (st != CT_OK || !y || (!node && ct_tensor_requires_grad(y))) {
        ct_tensor_free(y);
        ct_tensor_free(idx);
        return NULL;
    }
    if (indices)
        *indices = idx;
    else
        ct_tensor_free(idx);
    return y;
}

/* ---- average -------------------------------------------------------------------------- */

static ct_tensor *avg_forward(const char *op, const ct_tensor *x, const ct_pool2d_geom *g) {
    ct_dtype cd = ct__compute_dtype(x);
    ct_tensor *xk = ct__operand(x, cd),
              *y = xk ? ct__new(cd, x->device, 4, (const int64_t[]){g->N, g->C, g->oH, g->oW}) : NULL;
    ct_status st = y ? CT_OK : ct_last_error();
    if (st == CT_OK) {
        if (x->device.type == CT_DEVICE_CUDA)
            st = CT_ON_CUDA(ct_cuda_avg_pool2d_forward(cd, g, ct__data(xk), ct__data(y), stream_of(y)));
        else
            ct_cpu_avg_pool2d_forward(cd, g, ct__data(xk), ct__data(y));
    }
    if (xk)
        ct__drop_operand(xk, x);
    if (st != CT_OK) {
        ct_tensor_free(y);
        return NULL;
    }
    return ct__finish_dtype(y, x->dtype);
}

static ct_status avg_pool_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    const ct_pool2d_geom *g = node->ctx;
    ct_tensor *gy = gout[0];
    ct_dtype cd = ct__compute_dtype(gy);
    ct_tensor *gyk = ct__operand(gy, cd), *gx = gyk ? ct__new(cd, gy->device, 4, node->in_shape[0]) : NULL;
    ct_status st = gx ? CT_OK : ct_last_error();
    if (st == CT_OK) {
        if (gy->device.type == CT_DEVICE_CUDA)
            st = CT_ON_CUDA(ct_cuda_avg_pool2d_backward(cd, g, ct__data(gyk), ct__data(gx), stream_of(gy)));
        else
            ct_cpu_avg_pool2d_backward(cd, g, ct__data(gyk), ct__data(gx));
    }
    ct__drop_operand(gyk, gy);
    if (st != CT_OK) {
        ct_tensor_free(gx);
        return st;
    }
    gin[0] = ct__finish_dtype(gx, node->in_dtype[0]);
    return gin[0] ? CT_OK : ct_last_error();
}

static ct_tensor *avg_op(const char *op, const ct_tensor *x, const ct_pool2d_geom *g) {
    ct_tensor *y = avg_forward(op, x, g);
    if (y && !record(op, avg_pool_backward, y, x, g) && ct_tensor_requires_grad(y)) {
        ct_tensor_free(y);
        return NULL;
    }
    return y;
}

ct_tensor *ct_avg_pool2d(const ct_tensor *x, const ct_pool2d_opts *opts) {
    ct_pool2d_geom g;
    if (!pool_geom("ct_avg_pool2d", x, opts, false, &g))
        return NULL;
    return avg_op("ct_avg_pool2d", x, &g);
}

ct_tensor *ct_global_avg_pool2d(const ct_tensor *x) {
    const char *op = "ct_global_avg_pool2d";
    if (!check_input(op, x))
        return NULL;
    if (x->shape[2] < 1 || x->shape[3] < 1) {
        ct__set_error(CT_ERR_SHAPE, "%s: x has empty planes: x is %s", op, ct_shape_str(x));
        return NULL;
    }
    /* One window covering each plane. */
    ct_pool2d_geom g = {x->shape[0], x->shape[1], x->shape[2], x->shape[3], 1, 1, x->shape[2], x->shape[3],
                        1,           1,           0,           0,           1, 1, true};
    return avg_op(op, x, &g);
}
