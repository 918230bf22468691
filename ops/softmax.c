/* Softmax and log-softmax along one dim. */
#include "runtime/internal.h"
#include "kernels/cpu/softmax.h"

/* A 0-dim tensor is one row of one element. */
static const int64_t scalar_shape[1] = {1}, scalar_strides[1] = {0};

/* The kernel needs the output y (saved) and g; iargs[0] = dim, iargs[1] = log-softmax. */
static ct_status softmax_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *y = ct__node_saved(node, 0), *g = gout[0];
    if (!y)
        return ct_last_error();
    CT_ASSERT(g->dtype == y->dtype && g->ndim == y->ndim, CT_ERR_INTERNAL);
    if (!ct__same_device_dtype(node->name, y, g))
        return ct_last_error();
    ct_tensor *grad = ct__new(y->dtype, y->device, y->ndim, y->shape);
    if (!grad)
        return ct_last_error();
    bool scalar = y->ndim == 0, take_log = node->iargs[1];
    int ndim = scalar ? 1 : y->ndim, dim = (int)node->iargs[0];
    const int64_t *shape = scalar ? scalar_shape : y->shape;
    const int64_t *y_strides = scalar ? scalar_strides : y->strides, *g_strides = scalar ? scalar_strides : g->strides;
    if (y->device.type == CT_DEVICE_CUDA) {
        ct_status st = CT_ON_CUDA(ct_cuda_softmax_backward(y->dtype, take_log, ndim, shape, ct__data(y), y_strides,
                                                           ct__data(g), g_strides, dim, ct__data(grad),
                                                           ct__stream_for(y)));
        if (st != CT_OK) {
            ct_tensor_free(grad);
            return st;
        }
    } else {
        ct_cpu_softmax_backward(y->dtype, take_log, ndim, shape, ct__data(y), y_strides, ct__data(g), g_strides, dim,
                                ct__data(grad));
    }
    gin[0] = grad;
    return CT_OK;
}

static ct_tensor *softmax_like(const char *op, const ct_tensor *a, int dim, bool take_log) {
    if (!ct__check(op, "a", a))
        return NULL;
    if (!ct_dtype_is_float(a->dtype)) {
        ct__set_error(CT_ERR_DTYPE, "%s: not defined for %s tensors (cast to a floating dtype first)", op,
                      ct_dtype_name(a->dtype));
        return NULL;
    }
    int d = ct__wrap_dim(op, dim, a->ndim);
    if (d < 0)
        return NULL;
    ct_tensor *out = ct__new(a->dtype, a->device, a->ndim, a->shape);
    if (!out)
        return NULL;
    bool scalar = a->ndim == 0;
    int ndim = scalar ? 1 : a->ndim;
    const int64_t *shape = scalar ? scalar_shape : a->shape, *strides = scalar ? scalar_strides : a->strides;
    if (a->device.type == CT_DEVICE_CUDA) {
        if (CT_ON_CUDA(ct_cuda_softmax(a->dtype, take_log, ndim, shape, ct__data(a), strides, d, ct__data(out),
                                       ct__stream_for(a))) != CT_OK) {
            ct_tensor_free(out);
            return NULL;
        }
    } else {
        ct_cpu_softmax(a->dtype, take_log, ndim, shape, ct__data(a), strides, d, ct__data(out));
    }
    ct_node *node = ct__record(op, softmax_backward, out, 1, (const ct_tensor *const[]){a});
    if (node) {
        node->iargs[0] = d;
        node->iargs[1] = take_log;
        ct__node_save(node, out);
    }
    return out;
}

ct_tensor *ct_softmax(const ct_tensor *a, int dim) { return softmax_like("ct_softmax", a, dim, false); }

ct_tensor *ct_log_softmax(const ct_tensor *a, int dim) { return softmax_like("ct_log_softmax", a, dim, true); }
