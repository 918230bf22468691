/* Embedding lookup: rows of a (V, D) weight picked by I32 indices.
 *
 * The indices are flattened to one list of n positions; the output is (n, D) viewed as
 * (*indices, D). The gradient is a scatter-add of the (n, D) output gradient into zeros,
 * accumulated in F32 for F16/BF16 weights (F64 for F64) and rounded once; the padding row
 * gets none. On the CPU the scatter-add is deterministic (kernels/cpu/index.c); on CUDA it
 * uses atomics (kernels/cuda/embedding.cu) unless ct_set_deterministic(true) asks for the
 * ordered scatter-add of kernels/cuda/index.cu. Bad indices are CT_ERR_DIM: at once on the
 * CPU; on CUDA the kernels skip them (the output row is zeros), never reading or writing
 * through them, and the next synchronizing call reports them (kernels/cuda/device_error.cuh):
 * checking first would mean waiting for the GPU. */
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

/* dw (V, D) of `work` dtype, zeroed, += g (n, D) at the rows in index (n), skipping the row
 * padding_idx. g and index contiguous, g of dw's dtype. */
static ct_status scatter_rows(ct_tensor *dw, const ct_tensor *g, const ct_tensor *index, int64_t n, int64_t D,
                              int padding_idx) {
    const int64_t shape[2] = {n, D}, g_strides[2] = {D, 1}, i_strides[2] = {1, 0};
    if (n == 0 || D == 0)
        return CT_OK;
    int64_t row_bytes = D * (int64_t)ct_dtype_size(dw->dtype);
    if (dw->device.type == CT_DEVICE_CUDA) {
        ct_stream *stream = ct__stream_for(dw);
        if (!ct_deterministic())
            return CT_ON_CUDA(
                ct_cuda_embedding_backward(n, D, dw->shape[0], ct__data(index), ct__data(g), padding_idx, ct__data(dw), stream));
        ct_status st = CT_ON_CUDA(ct_cuda_scatter_add("ct_embedding", dw->dtype, 2, shape, 0, ct__data(dw),
                                                      dw->strides, ct__data(g), g_strides, ct__data(index), i_strides,
                                                      dw->shape[0], true, stream));
        if (st != CT_OK || padding_idx < 0)
            return st;
        return CT_ON_CUDA(ct_cuda_fill(1, &D, (char *)ct__data(dw) + padding_idx * row_bytes, dw->dtype,
                                       (const int64_t[]){1}, 0.0, stream));
    }
    ct_cpu_scatter_add(dw->dtype, 2, shape, 0, ct__data(dw), dw->strides, ct__data(g), g_strides, ct__data(index),
                       i_strides);
    if (padding_idx >= 0)
        ct_cpu_fill(1, &D, (char *)ct__data(dw) + padding_idx * row_bytes, dw->dtype, (const int64_t[]){1}, 0.0);
    return CT_OK;
}

/* Saved: 0 the contiguous indices. iargs[0] = padding_idx. */
static ct_status embedding_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *index = ct__node_saved(node, 0);
    if (!index)
        return ct_last_error();
    const int64_t *wshape = node->in_shape[0];
    int64_t n = ct__numel(index->ndim, index->shape), D = wshape[1];
    ct_dtype dtype = node->in_dtype[0], work = dtype == CT_F64 ? CT_F64 : CT_F32;
    ct_tensor *g = ct_contiguous(ct_cast(gout[0], work));
    ct_tensor *dw = g ? ct_zeros(wshape, 2, work, node->device) : NULL;
    if (!dw)
        return ct_last_error();
    ct_status st = scatter_rows(dw, g, index, n, D, (int)node->iargs[0]);
    if (st != CT_OK)
        return st;
    gin[0] = ct_cast(dw, dtype);
    return gin[0] ? CT_OK : ct_last_error();
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
    int32_t bad = 0;
    if (indices->device.type == CT_DEVICE_CPU &&
        ct_cpu_index_find_bad(indices->ndim, indices->shape, ct__data(indices), indices->strides, V, &bad)) {
        ct__set_error(CT_ERR_DIM, "%s: index %" PRId32 " out of range for a weight of %" PRId64 " rows", op, bad, V);
        return NULL;
    }
    int64_t shape[CT_MAX_DIMS], n = ct__numel(indices->ndim, indices->shape);
    memcpy(shape, indices->shape, sizeof(int64_t) * (size_t)indices->ndim);
    shape[indices->ndim] = D;
    ct_tensor *index = contiguous_data(indices);
    ct_tensor *out = index ? ct__new(weight->dtype, weight->device, indices->ndim + 1, shape) : NULL;
    if (out && n > 0 && D > 0) {
        ct_status st = CT_OK;
        if (out->device.type == CT_DEVICE_CUDA)
            st = CT_ON_CUDA(ct_cuda_embedding_forward(ct_dtype_size(weight->dtype), n, D, V, ct__data(weight),
                                                      weight->strides[0], weight->strides[1], ct__data(index),
                                                      ct__data(out), ct__stream_for(out)));
        else
            ct_cpu_gather(ct_dtype_size(weight->dtype), 2, (int64_t[]){n, D}, 0, ct__data(out), (int64_t[]){D, 1},
                          ct__data(weight), weight->strides, ct__data(index), (int64_t[]){1, 0});
        if (st != CT_OK) {
            ct_tensor_free(out);
            out = NULL;
        }
    }
    ct_node *node = ct__record(op, embedding_backward, out, 1, (const ct_tensor *const[]){weight});
    if (node) {
        node->iargs[0] = padding_idx;
        ct__node_save(node, index);
    }
    if (index && index != indices)
        ct_tensor_free(index);
    return out;
}
