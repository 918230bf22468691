/* Joining and splitting: ct_cat and ct_stack copy into a new tensor (one strided copy per
 * input, on the CPU or as one copy kernel per input on CUDA); ct_split and ct_chunk return
 * views made by ct_slice, so their gradients come from ct_slice's, on any device. */
#include "runtime/internal.h"
#include "kernels/cpu/copy.h"

#include <inttypes.h>
#include <limits.h>
#include <string.h>

/* ---- cat ------------------------------------------------------------------------------ */

/* The gradient of each input is its slice of g along the cat dim. */
static ct_status cat_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    int dim = (int)node->iargs[0];
    int64_t start = 0;
    for (int i = 0; i < node->n_inputs; i++) {
        int64_t len = node->in_shape[i][dim];
        if (node->needs_grad[i] && !(gin[i] = ct_slice(gout[0], dim, start, start + len, 1)))
            return ct_last_error();
        start += len;
    }
    return CT_OK;
}

/* Record the autograd node of `region`, the part of the output made of inputs[0..n). A
 * node has at most CT_NODE_MAX_INPUTS inputs, so a longer list is split into groups, each
 * recorded on an intermediate view of its own part of the output: a tree of nodes that
 * only slice the gradient, whatever n is. */
static bool record_cat(const char *op, ct_tensor *region, ct_tensor *const *inputs, int n, int dim) {
    if (!ct__any_requires_grad(n, (const ct_tensor *const *)inputs))
        return true;
    if (n <= CT_NODE_MAX_INPUTS) {
        ct_node *node = ct__record(op, cat_backward, region, n, (const ct_tensor *const *)inputs);
        if (node)
            node->iargs[0] = dim;
        return node != NULL;
    }
    int per_group = (n + CT_NODE_MAX_INPUTS - 1) / CT_NODE_MAX_INPUTS, ngroups = 0;
    ct_tensor *groups[CT_NODE_MAX_INPUTS] = {0};
    int64_t start = 0;
    bool ok = true;
    for (int first = 0; first < n && ok; first += per_group) {
        int count = n - first < per_group ? n - first : per_group;
        int64_t shape[CT_MAX_DIMS];
        memcpy(shape, region->shape, sizeof shape);
        shape[dim] = 0;
        for (int i = first; i < first + count; i++)
            shape[dim] += inputs[i]->shape[dim];
        groups[ngroups] =
            ct__view_of(region, region->ndim, shape, region->strides, region->offset + start * region->strides[dim]);
        ok = groups[ngroups] && record_cat(op, groups[ngroups], inputs + first, count, dim);
        start += shape[dim];
        ngroups++;
    }
    ok = ok && record_cat(op, region, groups, ngroups, dim);
    for (int g = 0; g < ngroups; g++)
        ct_tensor_free(groups[g]);
    return ok;
}

/* tensors[0..n) present, alive, on one device with one dtype. */
static bool check_list(const char *op, ct_tensor *const *tensors, int n) {
    if (!tensors) {
        ct__null_arg(op, "tensors");
        return false;
    }
    if (n < 1) {
        ct__set_error(CT_ERR_VALUE, "%s: needs at least one tensor, got n = %d", op, n);
        return false;
    }
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "tensors[%d]", i);
        if (!ct__check(op, name, tensors[i]))
            return false;
    }
    const ct_tensor *first = tensors[0];
    for (int i = 1; i < n; i++) {
        const ct_tensor *t = tensors[i];
        if (!ct_device_equal(t->device, first->device)) {
            ct__set_error(CT_ERR_DEVICE, "%s: tensors[%d] is on %s, tensors[0] on %s", op, i,
                          ct_device_name(t->device), ct_device_name(first->device));
            return false;
        }
        if (t->dtype != first->dtype) {
            ct__set_error(CT_ERR_DTYPE, "%s: tensors[%d] is %s, tensors[0] is %s (cast with ct_cast)", op, i,
                          ct_dtype_name(t->dtype), ct_dtype_name(first->dtype));
            return false;
        }
    }
    return true;
}

/* Copy t into the part of `out` that starts at dst (same dims, out's strides). */
static ct_status copy_part(ct_tensor *out, char *dst, const ct_tensor *t) {
    if (out->device.type == CT_DEVICE_CUDA)
        return CT_ON_CUDA(ct_cuda_copy_cast(t->ndim, t->shape, dst, out->dtype, out->strides, ct__data(t), t->dtype,
                                            t->strides, ct__stream_for(out)));
    ct_cpu_copy_cast(t->ndim, t->shape, dst, out->dtype, out->strides, ct__data(t), t->dtype, t->strides);
    return CT_OK;
}

/* Concatenate a checked list along a wrapped dim (shapes checked here). */
static ct_tensor *cat_impl(const char *op, ct_tensor *const *tensors, int n, int dim) {
    const ct_tensor *first = tensors[0];
    int64_t shape[CT_MAX_DIMS];
    memcpy(shape, first->shape, sizeof shape);
    shape[dim] = 0;
    for (int i = 0; i < n; i++) {
        const ct_tensor *t = tensors[i];
        bool same = t->ndim == first->ndim;
        for (int d = 0; same && d < t->ndim; d++)
            same = d == dim || t->shape[d] == first->shape[d];
        if (!same) {
            ct__set_error(CT_ERR_SHAPE, "%s: tensors[%d] has shape %s, tensors[0] has shape %s: sizes must match "
                                        "except in dim %d",
                          op, i, ct_shape_str(t), ct_shape_str(first), dim);
            return NULL;
        }
        shape[dim] += t->shape[dim];
    }
    ct_tensor *out = ct__new(first->dtype, first->device, first->ndim, shape);
    if (!out)
        return NULL;
    char *dst = ct__data(out);
    size_t es = ct_dtype_size(out->dtype);
    for (int i = 0; i < n; i++) {
        const ct_tensor *t = tensors[i];
        if (copy_part(out, dst, t) != CT_OK) {
            ct_tensor_free(out);
            return NULL;
        }
        dst += (size_t)(t->shape[dim] * out->strides[dim]) * es;
    }
    if (!record_cat(op, out, tensors, n, dim)) {
        ct_tensor_free(out);
        return NULL;
    }
    return out;
}

ct_tensor *ct_cat(ct_tensor *const *tensors, int n, int dim) {
    if (!check_list("ct_cat", tensors, n))
        return NULL;
    if (tensors[0]->ndim == 0) {
        ct__set_error(CT_ERR_DIM, "ct_cat: cannot concatenate 0-dimensional tensors (use ct_stack)");
        return NULL;
    }
    int d = ct__wrap_dim("ct_cat", dim, tensors[0]->ndim);
    return d < 0 ? NULL : cat_impl("ct_cat", tensors, n, d);
}

ct_tensor *ct_stack(ct_tensor *const *tensors, int n, int dim) {
    if (!check_list("ct_stack", tensors, n))
        return NULL;
    const ct_tensor *first = tensors[0];
    for (int i = 1; i < n; i++)
        if (tensors[i]->ndim != first->ndim ||
            memcmp(tensors[i]->shape, first->shape, sizeof(int64_t) * (size_t)first->ndim) != 0) {
            ct__set_error(CT_ERR_SHAPE, "ct_stack: tensors[%d] has shape %s, tensors[0] has shape %s: all must be "
                                        "equal",
                          i, ct_shape_str(tensors[i]), ct_shape_str(first));
            return NULL;
        }
    if (first->ndim >= CT_MAX_DIMS) {
        ct__set_error(CT_ERR_SHAPE, "ct_stack: tensors of shape %s already have %d dims", ct_shape_str(first),
                      CT_MAX_DIMS);
        return NULL;
    }
    int d = ct__wrap_dim("ct_stack", dim, first->ndim + 1);
    if (d < 0)
        return NULL;
    ct_tensor **parts = calloc((size_t)n, sizeof *parts);
    if (!parts) {
        ct__set_error(CT_ERR_MEMORY, "ct_stack: out of host memory for %d tensors", n);
        return NULL;
    }
    ct_tensor *out = NULL;
    int made = 0;
    while (made < n && (parts[made] = ct_unsqueeze(tensors[made], d)) != NULL)
        made++;
    if (made == n)
        out = cat_impl("ct_stack", parts, n, d);
    for (int i = 0; i < made; i++)
        ct_tensor_free(parts[i]);
    free(parts);
    return out;
}

/* ---- split / chunk ----------------------------------------------------------------------- */

/* Views of `a` along dim: pieces of `split_size` (the last shorter), or, when dim is empty,
 * `empty_pieces` empty views. Writes up to max_out of them and returns their number. */
static int split_views(const char *op, ct_tensor *a, int64_t split_size, int64_t empty_pieces, int dim,
                       ct_tensor **out, int max_out) {
    int d = ct__wrap_dim(op, dim, a->ndim);
    if (d < 0)
        return -1;
    int64_t size = a->shape[d];
    int64_t pieces = size == 0 ? empty_pieces : (size + split_size - 1) / split_size;
    if (pieces > INT_MAX) {
        ct__set_error(CT_ERR_VALUE, "%s: splitting dim %d of size %" PRId64 " makes %" PRId64 " pieces, too many",
                      op, dim, size, pieces);
        return -1;
    }
    for (int k = 0; k < pieces && k < max_out; k++) {
        int64_t start = size == 0 ? 0 : k * split_size;
        int64_t end = start + split_size < size ? start + split_size : size;
        if (!(out[k] = ct_slice(a, d, start, end, 1))) {
            for (int j = 0; j < k; j++) {
                ct_tensor_free(out[j]);
                out[j] = NULL;
            }
            return -1;
        }
    }
    return (int)pieces;
}

static bool check_split(const char *op, ct_tensor *a, ct_tensor **out, int max_out) {
    if (!ct__check(op, "a", a))
        return false;
    if (a->ndim == 0) {
        ct__set_error(CT_ERR_DIM, "%s: cannot split a 0-dimensional tensor", op);
        return false;
    }
    if (max_out < 0) {
        ct__set_error(CT_ERR_VALUE, "%s: max_out must be at least 0, got %d", op, max_out);
        return false;
    }
    if (max_out > 0 && !out) {
        ct__null_arg(op, "out");
        return false;
    }
    return true;
}

int ct_split(ct_tensor *a, int64_t split_size, int dim, ct_tensor **out, int max_out) {
    if (!check_split("ct_split", a, out, max_out))
        return -1;
    if (split_size < 1) {
        ct__set_error(CT_ERR_VALUE, "ct_split: split_size must be at least 1, got %" PRId64, split_size);
        return -1;
    }
    return split_views("ct_split", a, split_size, 1, dim, out, max_out);
}

int ct_chunk(ct_tensor *a, int chunks, int dim, ct_tensor **out, int max_out) {
    if (!check_split("ct_chunk", a, out, max_out))
        return -1;
    if (chunks < 1) {
        ct__set_error(CT_ERR_VALUE, "ct_chunk: chunks must be at least 1, got %d", chunks);
        return -1;
    }
    int d = ct__wrap_dim("ct_chunk", dim, a->ndim);
    if (d < 0)
        return -1;
    int64_t split_size = (a->shape[d] + chunks - 1) / chunks;
    return split_views("ct_chunk", a, split_size, chunks, dim, out, max_out);
}
