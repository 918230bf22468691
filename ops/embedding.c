/* Embedding lookup: rows of a (V, D) weight picked by I32 indices.
 *
 * The indices are flattened to one list of n positions; the output is (n, D) viewed as
 * (*indices, D). The gradient is a scatter-add of the (n, D) output gradient into zeros,
 * which is deterministic on the CPU (kernels/cpu/index.c), then the padding row is cleared. */
#include "runtime/internal.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/index.h"

#include <inttypes.h>
#include <string.h>

/* A contiguous version of t made outside the graph (t itself when already contiguous). */
static ct_tensor *contiguous_data(const ct_tensor *t) {
    if (ct__is_contiguous(t))
        return (ct_tensor *)t;
    ct_no_grad_begin();
    ct_tensor *c = ct_contiguous((ct_tensor *)t);
    ct_no_grad_end();
    return c;
}

/* Saved: 0 the contiguous indices. iargs[0] = padding_idx. */
static ct_status embedding_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *index = ct__node_saved(node, 0);
    if (!index)
        return ct_last_error();
    if (!ct__require_cpu(node->name, index))
        return ct_last_error();
    const int64_t *wshape = node->in_shape[0];
    int64_t n = ct__numel(index->ndim, index->shape), D = wshape[1];
    ct_tensor *g = contiguous_data(gout[0]);
    ct_tensor *dw = g ? ct_zeros(wshape, 2, node->in_dtype[0], node->device) : NULL;
    if (!dw)
        return ct_last_error();
    if (n > 0 && D > 0)
        ct_cpu_scatter_add(dw->dtype, 2, (int64_t[]){n, D}, 0, ct__data(dw), dw->strides, ct__data(g),
                           (int64_t[]){D, 1}, ct__data(index), (int64_t[]){1, 0});
    int64_t pad = node->iargs[0];
    if (pad >= 0)
        ct_cpu_fill(1, &D, (char *)ct__data(dw) + pad * D * (int64_t)ct_dtype_size(dw->dtype), dw->dtype,
                    (int64_t[]){1}, 0.0);
    gin[0] = dw;
    return CT_OK;
}

ct_tensor *ct_embedding(const ct_tensor *weight, const ct_tensor *indices, int padding_idx) {
    const char *op = "ct_embedding";
    if (!ct__check(op, "weight", weight) || !ct__check(op, "indices", indices))
        return NULL;
    if (weight->ndim != 2) {
        ct__set_error(CT_ERR_SHAPE, "%s: weight must be (V, D), got shape %s", op, ct_shape_str(weight));
        return NULL;
    }
    if (indices->dtype != CT_I32) {
        ct__set_error(CT_ERR_DTYPE, "%s: indices must be i32, got %s", op, ct_dtype_name(indices->dtype));
        return NULL;
    }
    if (!ct_device_equal(weight->device, indices->device)) {
        ct__set_error(CT_ERR_DEVICE, "%s: indices are on %s, weight on %s", op, ct_device_name(indices->device),
                      ct_device_name(weight->device));
        return NULL;
    }
    if (indices->ndim >= CT_MAX_DIMS) {
        ct__set_error(CT_ERR_SHAPE, "%s: indices of shape %s leave no room for the embedding dim (at most %d dims)", op,
                      ct_shape_str(indices), CT_MAX_DIMS);
        return NULL;
    }
    int64_t V = weight->shape[0], D = weight->shape[1];
    if (padding_idx < -1 || padding_idx >= V) {
        ct__set_error(CT_ERR_VALUE, "%s: padding_idx must be in [0, %" PRId64 ") or -1 for none, got %d", op, V,
                      padding_idx);
        return NULL;
    }
    if (!ct__require_cpu(op, weight))
        return NULL;
    int32_t bad;
    if (ct_cpu_index_find_bad(indices->ndim, indices->shape, ct__data(indices), indices->strides, V, &bad)) {
        ct__set_error(CT_ERR_DIM, "%s: index %" PRId32 " out of range for a weight of %" PRId64 " rows", op, bad, V);
        return NULL;
    }
    int64_t shape[CT_MAX_DIMS], n = ct__numel(indices->ndim, indices->shape);
    memcpy(shape, indices->shape, sizeof(int64_t) * (size_t)indices->ndim);
    shape[indices->ndim] = D;
    ct_tensor *index = contiguous_data(indices);
    ct_tensor *out = index ? ct__new(weight->dtype, weight->device, indices->ndim + 1, shape) : NULL;
    if (out && n > 0 && D > 0)
        ct_cpu_gather(ct_dtype_size(weight->dtype), 2, (int64_t[]){n, D}, 0, ct__data(out), (int64_t[]){D, 1},
                      ct__data(weight), weight->strides, ct__data(index), (int64_t[]){1, 0});
    ct_node *node = ct__record(op, embedding_backward, out, 1, (const ct_tensor *const[]){weight});
    if (node) {
        node->iargs[0] = padding_idx;
        ct__node_save(node, index);
    }
    if (index != indices)
        ct_tensor_free(index);
    return out;
}
