/* Reductions over sets of dims (sum, mean, var, std, logsumexp), over one dim (max, min,
 * argmax, argmin) and over everything (max_all, min_all).
 *
 * Backward functions reshape the output gradient to the input's rank (reduced dims kept
 * as size 1) and let broadcasting spread it; the reduced-dim mask lives in iargs[0..8). */
#include "runtime/internal.h"
#include "kernels/cpu/reduce.h"

#include <inttypes.h>
#include <math.h>
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

/* ---- shared plumbing ------------------------------------------------------------------ */

/* A parsed reduction: which dims go, the output shape, and how many elements each output
 * reduces. */
typedef struct reduction {
    bool mask[CT_MAX_DIMS];
    int ndim;
    int64_t shape[CT_MAX_DIMS];
    int64_t count;
} reduction;

/* Check the input (not NULL, floating or also I32 when `ints`) and parse dims. */
static bool prepare(const char *op, const ct_tensor *a, bool ints, const int *dims, int ndims, bool keepdim,
                    reduction *r) {
    if (!ct__check(op, "a", a))
        return false;
    if (!ct_dtype_is_float(a->dtype) && !(ints && a->dtype == CT_I32)) {
        ct__set_error(CT_ERR_DTYPE, "%s: not defined for %s tensors (cast to a floating dtype first)", op,
                      ct_dtype_name(a->dtype));
        return false;
    }
    if (!ct__reduce_dims(op, a, dims, ndims, keepdim, r->mask, &r->ndim, r->shape))
        return false;
    r->count = 1;
    for (int d = 0; d < a->ndim; d++)
        if (r->mask[d])
            r->count *= a->shape[d];
    return true;
}

static void save_mask(ct_node *node, const reduction *r) {
    for (int d = 0; d < CT_MAX_DIMS; d++)
        node->iargs[d] = r->mask[d];
}

/* t (an output or its gradient) reshaped to the input's rank, reduced dims of size 1, so
 * that it broadcasts against the input. */
static ct_tensor *unreduce(ct_node *node, ct_tensor *t) {
    int ndim = node->in_ndim[0];
    int64_t shape[CT_MAX_DIMS];
    for (int d = 0; d < ndim; d++)
        shape[d] = node->iargs[d] ? 1 : node->in_shape[0][d];
    return t ? ct_reshape(t, shape, ndim) : NULL;
}

/* ---- dispatch ------------------------------------------------------------------------ */

/* A CUDA reduction's workspace of `bytes` for partial results (device memory from the
 * caching allocator; NULL when none is needed). It may be freed as soon as the launch is
 * queued: the allocator hands it out again only to work queued after it on that stream. */
static bool new_workspace(ct_device device, size_t bytes, ct_tensor **ws) {
    int64_t n = (int64_t)bytes;
    *ws = bytes ? ct__new(CT_U8, device, 1, &n) : NULL;
    return bytes == 0 || *ws;
}

static void *ws_data(const ct_tensor *ws) { return ws ? ct__data(ws) : NULL; }

/* ct_cpu_reduce or its CUDA launcher, from `a` into the contiguous `out`. */
static bool run_reduce(ct_reduce_op kop, const ct_tensor *a, const bool *mask, ct_tensor *out, double scale) {
    if (a->device.type != CT_DEVICE_CUDA) {
        ct_cpu_reduce(kop, a->dtype, a->ndim, a->shape, ct__data(a), a->strides, mask, ct__data(out), scale);
        return true;
    }
    size_t bytes = 0;
    ct_tensor *ws = NULL;
    if (CT_ON_CUDA(ct_cuda_reduce_workspace(a->dtype, a->ndim, a->shape, ct__data(a), a->strides, mask, &bytes)) !=
            CT_OK ||
        !new_workspace(a->device, bytes, &ws))
        return false;
    ct_status st = CT_ON_CUDA(ct_cuda_reduce(kop, a->dtype, a->ndim, a->shape, ct__data(a), a->strides, mask,
                                             ct__data(out), scale, ws_data(ws), ct__stream_for(a)));
    ct_tensor_free(ws);
    return st == CT_OK;
}

static bool run_reduce_var(const ct_tensor *a, const bool *mask, ct_tensor *out, double correction, bool take_sqrt) {
    if (a->device.type != CT_DEVICE_CUDA) {
        ct_cpu_reduce_var(a->dtype, a->ndim, a->shape, ct__data(a), a->strides, mask, ct__data(out), correction,
                          take_sqrt);
        return true;
    }
    size_t bytes = 0;
    ct_tensor *ws = NULL;
    if (CT_ON_CUDA(ct_cuda_reduce_workspace(a->dtype, a->ndim, a->shape, ct__data(a), a->strides, mask, &bytes)) !=
            CT_OK ||
        !new_workspace(a->device, bytes, &ws))
        return false;
    ct_status st = CT_ON_CUDA(ct_cuda_reduce_var(a->dtype, a->ndim, a->shape, ct__data(a), a->strides, mask,
                                                 ct__data(out), correction, take_sqrt, ws_data(ws),
                                                 ct__stream_for(a)));
    ct_tensor_free(ws);
    return st == CT_OK;
}

/* ct_cpu_reduce_arg or its CUDA launcher over (ndim, shape, strides): `a`'s data, with a
 * 0-dim input seen as one element along a dim of size 1. */
static bool run_reduce_arg(ct_reduce_op kop, const ct_tensor *a, int ndim, const int64_t *shape,
                           const int64_t *strides, int dim, ct_tensor *values, ct_tensor *index) {
    void *vdata = values ? ct__data(values) : NULL;
    int32_t *idata = index ? (int32_t *)ct__data(index) : NULL;
    bool mask[CT_MAX_DIMS] = {false};
    mask[dim] = true;
    if (a->device.type != CT_DEVICE_CUDA) {
        ct_cpu_reduce_arg(kop, a->dtype, ndim, shape, ct__data(a), strides, dim, vdata, idata);
        return true;
    }
    size_t bytes = 0;
    ct_tensor *ws = NULL;
    if (CT_ON_CUDA(ct_cuda_reduce_workspace(a->dtype, ndim, shape, ct__data(a), strides, mask, &bytes)) != CT_OK ||
        !new_workspace(a->device, bytes, &ws))
        return false;
    ct_status st = CT_ON_CUDA(ct_cuda_reduce_arg(kop, a->dtype, ndim, shape, ct__data(a), strides, dim, vdata, idata,
                                                 ws_data(ws), ct__stream_for(a)));
    ct_tensor_free(ws);
    return st == CT_OK;
}

/* Half-precision gradients are formed in F32 and rounded once at the end. */
static ct_dtype work_dtype(ct_dtype dtype) { return (dtype == CT_F16 || dtype == CT_BF16) ? CT_F32 : dtype; }

static ct_status give(ct_node *node, ct_tensor **gin, ct_tensor *g) {
    gin[0] = g ? ct_cast(g, node->in_dtype[0]) : NULL;
    return gin[0] ? CT_OK : ct_last_error();
}

/* ---- sum, mean ---------------------------------------------------------------------- */

/* Gradient of a sum/mean: broadcast g (scaled by dargs[0]) back over the reduced dims. */
static ct_status sum_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *g = gout[0];
    if (node->dargs[0] != 1.0)
        g = ct_mul_scalar(g, node->dargs[0]);
    gin[0] = ct_expand(unreduce(node, g), node->in_shape[0], node->in_ndim[0]);
    return gin[0] ? CT_OK : ct_last_error();
}

/* The mean of an empty set is NaN, like PyTorch (0 * NaN from the kernel). Integer means
 * are refused rather than truncated. */
static ct_tensor *sum_like(const char *op, const ct_tensor *a, const int *dims, int ndims, bool keepdim, bool mean) {
    reduction r;
    if (!prepare(op, a, !mean, dims, ndims, keepdim, &r))
        return NULL;
    ct_tensor *out = ct__new(a->dtype, a->device, r.ndim, r.shape);
    if (!out)
        return NULL;
    double scale = mean ? (r.count ? 1.0 / (double)r.count : (double)NAN) : 1.0;
    if (!run_reduce(CT_RED_SUM, a, r.mask, out, scale)) {
        ct_tensor_free(out);
        return NULL;
    }
    ct_node *node = ct__record(op, sum_backward, out, 1, (const ct_tensor *const[]){a});
    if (node) {
        save_mask(node, &r);
        node->dargs[0] = mean ? 1.0 / (double)(r.count ? r.count : 1) : 1.0;
    }
    return out;
}

ct_tensor *ct_sum(const ct_tensor *a, const int *dims, int ndims, bool keepdim) {
    return sum_like("ct_sum", a, dims, ndims, keepdim, false);
}

ct_tensor *ct_mean(const ct_tensor *a, const int *dims, int ndims, bool keepdim) {
    return sum_like("ct_mean", a, dims, ndims, keepdim, true);
}

/* ---- var, std ------------------------------------------------------------------------- */

/* g / s where s != 0 and 0 where s == 0: PyTorch's gradient of std at a constant slice,
 * where the derivative does not exist. */
static ct_tensor *div_where_nonzero(ct_tensor *g, ct_tensor *s) {
    if (!g || !s)
        return NULL;
    ct_tensor *is_zero = ct_cast(ct_eq(s, ct_scalar(0.0, s->dtype, s->device)), s->dtype);
    ct_tensor *keep = ct_add_scalar(ct_neg(is_zero), 1.0);
    return ct_mul(ct_div(g, ct_add(s, is_zero)), keep);
}

/* d var / dx = 2 (x - mean) / divisor; d std / dx = (x - mean) / (divisor * std).
 * dargs[0] = divisor = max(0, n - correction); iargs[8] = std. */
static ct_status var_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    bool is_std = node->iargs[8];
    ct_tensor *a = ct__node_saved(node, 0);
    ct_tensor *out = is_std ? ct__node_saved(node, 1) : NULL;
    if (!a || (is_std && !out))
        return ct_last_error();
    ct_dtype wt = work_dtype(a->dtype);
    int dims[CT_MAX_DIMS], nd = 0;
    for (int d = 0; d < node->in_ndim[0]; d++)
        if (node->iargs[d])
            dims[nd++] = d;
    ct_tensor *x = ct_cast(a, wt);
    ct_tensor *centered = ct_sub(x, ct_mean(x, dims, nd, true));
    ct_tensor *g = unreduce(node, ct_cast(gout[0], wt));
    if (is_std)
        g = div_where_nonzero(g, unreduce(node, ct_cast(out, wt)));
    double factor = (is_std ? 1.0 : 2.0) / node->dargs[0];
    return give(node, gin, ct_mul(centered, ct_mul_scalar(g, factor)));
}

static ct_tensor *var_like(const char *op, const ct_tensor *a, const int *dims, int ndims, int correction,
                           bool keepdim, bool take_sqrt) {
    reduction r;
    if (!prepare(op, a, false, dims, ndims, keepdim, &r))
        return NULL;
    ct_tensor *out = ct__new(a->dtype, a->device, r.ndim, r.shape);
    if (!out)
        return NULL;
    if (!run_reduce_var(a, r.mask, out, (double)correction, take_sqrt)) {
        ct_tensor_free(out);
        return NULL;
    }
    ct_node *node = ct__record(op, var_backward, out, 1, (const ct_tensor *const[]){a});
    if (node) {
        save_mask(node, &r);
        double divisor = (double)r.count - (double)correction;
        node->dargs[0] = divisor > 0 ? divisor : 0.0;
        node->iargs[8] = take_sqrt;
        ct__node_save(node, a);
        if (take_sqrt)
            ct__node_save(node, out);
    }
    return out;
}

ct_tensor *ct_var(const ct_tensor *a, const int *dims, int ndims, int correction, bool keepdim) {
    return var_like("ct_var", a, dims, ndims, correction, keepdim, false);
}

ct_tensor *ct_std(const ct_tensor *a, const int *dims, int ndims, int correction, bool keepdim) {
    return var_like("ct_std", a, dims, ndims, correction, keepdim, true);
}

/* ---- logsumexp ------------------------------------------------------------------------ */

/* d lse / dx = exp(x - lse): the softmax over the reduced dims. */
static ct_status logsumexp_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *a = ct__node_saved(node, 0), *out = ct__node_saved(node, 1);
    if (!a || !out)
        return ct_last_error();
    ct_dtype wt = work_dtype(a->dtype);
    ct_tensor *weights = ct_exp(ct_sub(ct_cast(a, wt), unreduce(node, ct_cast(out, wt))));
    return give(node, gin, ct_mul(weights, unreduce(node, ct_cast(gout[0], wt))));
}

ct_tensor *ct_logsumexp(const ct_tensor *a, const int *dims, int ndims, bool keepdim) {
    reduction r;
    if (!prepare("ct_logsumexp", a, false, dims, ndims, keepdim, &r))
        return NULL;
    ct_tensor *out = ct__new(a->dtype, a->device, r.ndim, r.shape);
    if (!out)
        return NULL;
    if (!run_reduce(CT_RED_LOGSUMEXP, a, r.mask, out, 1.0)) {
        ct_tensor_free(out);
        return NULL;
    }
    ct_node *node = ct__record("ct_logsumexp", logsumexp_backward, out, 1, (const ct_tensor *const[]){a});
    if (node) {
        save_mask(node, &r);
        ct__node_save(node, a);
        ct__node_save(node, out);
    }
    return out;
}

/* ---- max, min, argmax, argmin over one dim ------------------------------------------ */

/* The gradient goes to the position of the (first) extreme: g where the dim's index
 * equals the saved index, 0 elsewhere. iargs[8] = dim. */
static ct_status extreme_dim_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *index = ct__node_saved(node, 0);
    if (!index)
        return ct_last_error();
    int ndim = node->in_ndim[0], dim = (int)node->iargs[8];
    if (ndim == 0)
        return give(node, gin, gout[0]);
    int64_t n = node->in_shape[0][dim], positions_shape[CT_MAX_DIMS];
    for (int d = 0; d < ndim; d++)
        positions_shape[d] = d == dim ? n : 1;
    ct_tensor *positions = ct_reshape(ct_arange(0, (double)n, 1, CT_I32, node->device), positions_shape, ndim);
    ct_tensor *hit = ct_cast(ct_eq(positions, unreduce(node, index)), gout[0]->dtype);
    return give(node, gin, ct_mul(hit, unreduce(node, gout[0])));
}

/* Values (when want_values) and I32 indices of the first extreme along `dim`. Returns
 * the values, or the indices when !want_values. */
static ct_tensor *extreme_dim(const char *op, ct_reduce_op kop, const ct_tensor *a, int dim, bool keepdim,
                              ct_tensor **indices, bool want_values) {
    if (indices)
        *indices = NULL;
    reduction r;
    if (!prepare(op, a, true, &dim, 1, keepdim, &r))
        return NULL;
    int d = a->ndim > 0 ? ct__wrap_dim(op, dim, a->ndim) : 0;
    if (a->ndim > 0 && a->shape[d] == 0) {
        ct__set_error(CT_ERR_SHAPE, "%s: cannot reduce over dim %d of size 0 (input shape %s)", op, dim,
                      ct_shape_str(a));
        return NULL;
    }
    /* The positions are needed when asked for, and for the gradient. */
    bool need_index = indices || !want_values || ct__any_requires_grad(1, (const ct_tensor *const[]){a});
    /* The CUDA kernel tracks positions in 32 bits even for values only: a longer dim would
     * wrap them and give wrong values there. */
    if ((need_index || a->device.type == CT_DEVICE_CUDA) && a->ndim > 0 && a->shape[d] > INT32_MAX) {
        ct__set_error(CT_ERR_SHAPE, "%s: dim %d of %s has %" PRId64 " elements; indices are I32 (at most %d)", op, dim,
                      ct_shape_str(a), a->shape[d], INT32_MAX);
        return NULL;
    }
    ct_tensor *values = want_values ? ct__new(a->dtype, a->device, r.ndim, r.shape) : NULL;
    ct_tensor *index = need_index ? ct__new(CT_I32, a->device, r.ndim, r.shape) : NULL;
    if ((want_values && !values) || (need_index && !index)) {
        ct_tensor_free(values);
        ct_tensor_free(index);
        return NULL;
    }
    /* A 0-dim input is one element along a dim of size 1. */
    int64_t one = 1, zero = 0;
    bool scalar = a->ndim == 0;
    if (!run_reduce_arg(kop, a, scalar ? 1 : a->ndim, scalar ? &one : a->shape, scalar ? &zero : a->strides, d,
                        values, index)) {
        ct_tensor_free(values);
        ct_tensor_free(index);
        return NULL;
    }
    if (!want_values)
        return index;
    ct_node *node = ct__record(op, extreme_dim_backward, values, 1, (const ct_tensor *const[]){a});
    if (node) {
        save_mask(node, &r);
        node->iargs[8] = d;
        ct__node_save(node, index);
    }
    if (indices)
        *indices = index;
    else
        ct_tensor_free(index); /* the node keeps its own alias when it saved it */
    return values;
}

ct_tensor *ct_max(const ct_tensor *a, int dim, bool keepdim, ct_tensor **indices) {
    return extreme_dim("ct_max", CT_RED_MAX, a, dim, keepdim, indices, true);
}

ct_tensor *ct_min(const ct_tensor *a, int dim, bool keepdim, ct_tensor **indices) {
    return extreme_dim("ct_min", CT_RED_MIN, a, dim, keepdim, indices, true);
}

ct_tensor *ct_argmax(const ct_tensor *a, int dim, bool keepdim) {
    return extreme_dim("ct_argmax", CT_RED_MAX, a, dim, keepdim, NULL, false);
}

ct_tensor *ct_argmin(const ct_tensor *a, int dim, bool keepdim) {
    return extreme_dim("ct_argmin", CT_RED_MIN, a, dim, keepdim, NULL, false);
}

/* ---- max_all, min_all ------------------------------------------------------------------ */

/* Like PyTorch's max()/amax, the gradient is shared evenly between tied extremes:
 * g / count at every element equal to the result (every NaN when the result is NaN). */
static ct_status extreme_all_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *a = ct__node_saved(node, 0), *out = ct__node_saved(node, 1);
    if (!a || !out)
        return ct_last_error();
    ct_dtype wt = work_dtype(a->dtype);
    ct_tensor *both_nan = ct_mul(ct_cast(ct_ne(a, a), wt), ct_cast(ct_ne(out, out), wt));
    ct_tensor *hit = ct_add(ct_cast(ct_eq(a, out), wt), both_nan);
    ct_tensor *share = ct_div(ct_cast(gout[0], wt), ct_sum(hit, NULL, 0, false));
    return give(node, gin, ct_mul(hit, share));
}

static ct_tensor *extreme_all(const char *op, ct_reduce_op kop, const ct_tensor *a) {
    reduction r;
    if (!prepare(op, a, true, NULL, 0, false, &r))
        return NULL;
    if (r.count == 0) {
        ct__set_error(CT_ERR_SHAPE, "%s: the input of shape %s is empty, and has no %s", op, ct_shape_str(a),
                      kop == CT_RED_MAX ? "maximum" : "minimum");
        return NULL;
    }
    ct_tensor *out = ct__new(a->dtype, a->device, 0, r.shape);
    if (!out)
        return NULL;
    if (!run_reduce(kop, a, r.mask, out, 1.0)) {
        ct_tensor_free(out);
        return NULL;
    }
    ct_node *node = ct__record(op, extreme_all_backward, out, 1, (const ct_tensor *const[]){a});
    if (node) {
        ct__node_save(node, a);
        ct__node_save(node, out);
    }
    return out;
}

ct_tensor *ct_max_all(const ct_tensor *a) { return extreme_all("ct_max_all", CT_RED_MAX, a); }

ct_tensor *ct_min_all(const ct_tensor *a) { return extreme_all("ct_min_all", CT_RED_MIN, a); }
