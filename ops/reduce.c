/* Reductions over sets of dims: sum and mean (the rest of the family lives beside them). */
#include "runtime/internal.h"
#include "kernels/cpu/reduce.h"

#include <string.h>

/* Parse `dims` into a mask over a's dims (all when ndims == 0) and compute the output
 * shape (keepdim or not). Returns false with an error recorded. */
bool ct__reduce_dims(const char *op, const ct_tensor *a, const int *dims, int ndims, bool keepdim, bool *mask,
                     int *out_ndim, int64_t *out_shape) {
    memset(mask, 0, sizeof(bool) * CT_MAX_DIMS);
    if (ndims < 0 || ndims > CT_MAX_DIMS || (ndims > 0 && !dims)) {
        ct__set_error(CT_ERR_VALUE, "%s: invalid list of %d dims", op, ndims);
        return false;
    }
    if (ndims == 0) {
        for (int d = 0; d < a->ndim; d++)
            mask[d] = true;
    }
    for (int i = 0; i < ndims; i++) {
        int d = ct__wrap_dim(op, dims[i], a->ndim);
        if (d < 0)
            return false;
        if (a->ndim == 0)
            continue;
        if (mask[d]) {
            ct__set_error(CT_ERR_DIM, "%s: dim %d appears twice in the list of dims", op, dims[i]);
            return false;
        }
        mask[d] = true;
    }
    int n = 0;
    for (int d = 0; d < a->ndim; d++) {
        if (!mask[d])
            out_shape[n++] = a->shape[d];
        else if (keepdim)
            out_shape[n++] = 1;
    }
    *out_ndim = n;
    return true;
}

/* Reduce with the kernel into a new tensor shaped by keepdim. */
static ct_tensor *reduce_forward(const char *op, ct_reduce_op kop, const ct_tensor *a, const int *dims, int ndims,
                                 bool keepdim, bool mean, int64_t *count_out) {
    if (!ct__check(op, "a", a) || !ct__require_cpu(op, a))
        return NULL;
    if (!ct_dtype_is_float(a->dtype) && a->dtype != CT_I32) {
        ct__set_error(CT_ERR_DTYPE, "%s: not defined for %s tensors", op, ct_dtype_name(a->dtype));
        return NULL;
    }
    bool mask[CT_MAX_DIMS];
    int ndim;
    int64_t shape[CT_MAX_DIMS];
    if (!ct__reduce_dims(op, a, dims, ndims, keepdim, mask, &ndim, shape))
        return NULL;
    int64_t count = 1;
    for (int d = 0; d < a->ndim; d++)
        if (mask[d])
            count *= a->shape[d];
    if (count_out)
        *count_out = count;
    ct_tensor *out = ct__new(a->dtype, a->device, ndim, shape);
    if (!out)
        return NULL;
    double scale = mean ? (count ? 1.0 / (double)count : (double)NAN) : 1.0;
    ct_cpu_reduce(kop, a->dtype, a->ndim, a->shape, ct__data(a), a->strides, mask, ct__data(out), scale);
    return out;
}

/* Gradient of a sum/mean: broadcast g (scaled) back over the reduced dims. */
static ct_status sum_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    int ndim = node->in_ndim[0];
    const int64_t *shape = node->in_shape[0];
    int64_t kshape[CT_MAX_DIMS];
    for (int d = 0; d < ndim; d++)
        kshape[d] = node->iargs[d] ? 1 : shape[d]; /* iargs[d]: dim d was reduced */
    ct_tensor *g = gout[0];
    if (node->dargs[0] != 1.0)
        g = ct_mul_scalar(g, node->dargs[0]);
    ct_tensor *k = ct_reshape(g, kshape, ndim);
    gin[0] = ct_expand(k, shape, ndim);
    return gin[0] ? CT_OK : ct_last_error();
}

static ct_tensor *sum_like(const char *op, const ct_tensor *a, const int *dims, int ndims, bool keepdim, bool mean) {
    int64_t count = 0;
    ct_tensor *out = reduce_forward(op, CT_RED_SUM, a, dims, ndims, keepdim, mean, &count);
    ct_node *node = ct__record(op, sum_backward, out, 1, (const ct_tensor *const[]){a});
    if (node) {
        bool mask[CT_MAX_DIMS];
        int nd;
        int64_t shape[CT_MAX_DIMS];
        ct__reduce_dims(op, a, dims, ndims, keepdim, mask, &nd, shape);
        for (int d = 0; d < a->ndim; d++)
            node->iargs[d] = mask[d];
        node->dargs[0] = mean ? 1.0 / (double)(count ? count : 1) : 1.0;
    }
    return out;
}

ct_tensor *ct_sum(const ct_tensor *a, const int *dims, int ndims, bool keepdim) {
    return sum_like("ct_sum", a, dims, ndims, keepdim, false);
}

ct_tensor *ct_mean(const ct_tensor *a, const int *dims, int ndims, bool keepdim) {
    return sum_like("ct_mean", a, dims, ndims, keepdim, true);
}
