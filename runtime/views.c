/* Views: new geometry over the same storage, each differentiable. */
#include "runtime/internal.h"

#include <inttypes.h>
#include <string.h>

/* ---- backward functions ------------------------------------------------------------ */

static ct_status reshape_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    gin[0] = ct_reshape(gout[0], node->in_shape[0], node->in_ndim[0]);
    return gin[0] ? CT_OK : ct_last_error();
}

static ct_status permute_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    int inverse[CT_MAX_DIMS];
    for (int d = 0; d < node->in_ndim[0]; d++)
        inverse[node->iargs[d]] = d;
    gin[0] = ct_permute(gout[0], inverse, node->in_ndim[0]);
    return gin[0] ? CT_OK : ct_last_error();
}

/* slice and select: scatter the gradient into zeros of the input's shape. */
static ct_status slice_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *z = ct_zeros(node->in_shape[0], node->in_ndim[0], node->in_dtype[0], node->device);
    if (!z)
        return ct_last_error();
    int dim = (int)node->iargs[0];
    ct_tensor *part = node->iargs[4] ? ct_select(z, dim, node->iargs[1])
                                     : ct_slice(z, dim, node->iargs[1], node->iargs[2], node->iargs[3]);
    ct_status st = part ? ct_copy_(part, gout[0]) : ct_last_error();
    gin[0] = z;
    return st;
}

static ct_status expand_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    gin[0] = ct__sum_to_shape(gout[0], node->in_ndim[0], node->in_shape[0]);
    return gin[0] ? CT_OK : ct_last_error();
}

static ct_tensor *finish_view(const char *op, ct_backward_fn backward, ct_tensor *t, int ndim, const int64_t *shape,
                              const int64_t *strides, int64_t offset, ct_node **node_out) {
    ct_tensor *out = ct__view_of(t, ndim, shape, strides, offset);
    ct_node *node = ct__record(op, backward, out, 1, (const ct_tensor *const[]){t});
    if (node_out)
        *node_out = node;
    return out;
}

/* ---- reshape / view ------------------------------------------------------------------ */

/* Strides that let (nndim, nshape) view memory laid out as (ondim, oshape, ostrides);
 * false when impossible (the algorithm of PyTorch's computeStride). */
static bool view_strides(int ondim, const int64_t *oshape, const int64_t *ostrides, int nndim,
                         const int64_t *nshape, int64_t *nstrides) {
    if (ondim == 0 || ct__numel(ondim, oshape) == 0) {
        ct__contiguous_strides(nndim, nshape, nstrides);
        return true;
    }
    int view_d = nndim - 1;
    int64_t chunk_base_stride = ostrides[ondim - 1];
    int64_t tensor_numel = 1, view_numel = 1;
    for (int tensor_d = ondim - 1; tensor_d >= 0; tensor_d--) {
        tensor_numel *= oshape[tensor_d];
        if (tensor_d == 0 ||
            (oshape[tensor_d - 1] != 1 && ostrides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || nshape[view_d] == 1)) {
                nstrides[view_d] = view_numel * chunk_base_stride;
                view_numel *= nshape[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel)
                return false;
            if (tensor_d > 0) {
                chunk_base_stride = ostrides[tensor_d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1;
}

/* Resolve one -1 and check the element count. */
static bool infer_shape(const char *op, const ct_tensor *t, const int64_t *shape, int ndim, int64_t *out) {
    if (ndim < 0 || ndim > CT_MAX_DIMS) {
        ct__set_error(CT_ERR_SHAPE, "%s: ndim is %d, must be in [0, %d]", op, ndim, CT_MAX_DIMS);
        return false;
    }
    if (ndim > 0 && !shape) {
        ct__null_arg(op, "shape");
        return false;
    }
    int infer = -1;
    /* extent: the product of the nonzero sizes, which the strides of an empty result reach
     * ([0, 2^32, 2^32] has no elements but strides that overflow). */
    int64_t known = 1, extent = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == -1 && infer < 0) {
            infer = d;
        } else if (shape[d] < 0) {
            ct__set_error(CT_ERR_SHAPE, "%s: invalid target shape %s", op, ct__shape_fmt(ndim, shape));
            return false;
        } else if (__builtin_mul_overflow(known, shape[d], &known) ||
                   __builtin_mul_overflow(extent, shape[d] > 0 ? shape[d] : 1, &extent)) {
            ct__set_error(CT_ERR_SHAPE, "%s: target shape %s has too many elements", op, ct__shape_fmt(ndim, shape));
            return false;
        }
        out[d] = shape[d];
    }
    int64_t numel = ct__numel(t->ndim, t->shape);
    if (infer >= 0) {
        if (known == 0 || numel % known != 0) {
            ct__set_error(CT_ERR_SHAPE, "%s: cannot reshape %s (%" PRId64 " elements) to %s", op, ct_shape_str(t),
                          numel, ct__shape_fmt(ndim, shape));
            return false;
        }
        out[infer] = numel / known;
    } else if (known != numel) {
        ct__set_error(CT_ERR_SHAPE, "%s: cannot reshape %s (%" PRId64 " elements) to %s (%" PRId64 " elements)", op,
                      ct_shape_str(t), numel, ct__shape_fmt(ndim, shape), known);
        return false;
    }
    return true;
}

static ct_tensor *reshape_impl(const char *op, ct_tensor *t, const int64_t *shape, int ndim, bool allow_copy) {
    if (!ct__check(op, "t", t))
        return NULL;
    int64_t nshape[CT_MAX_DIMS], nstrides[CT_MAX_DIMS];
    if (!infer_shape(op, t, shape, ndim, nshape))
        return NULL;
    if (view_strides(t->ndim, t->shape, t->strides, ndim, nshape, nstrides))
        return finish_view(op, reshape_backward, t, ndim, nshape, nstrides, t->offset, NULL);
    if (!allow_copy) {
        ct__set_error(CT_ERR_SHAPE,
                      "%s: a tensor of shape %s with strides %s cannot be viewed as %s; use ct_reshape (copies) "
                      "or ct_contiguous first",
                      op, ct_shape_str(t), ct__shape_fmt(t->ndim, t->strides), ct__shape_fmt(ndim, nshape));
        return NULL;
    }
    ct_tensor *c = ct_contiguous(t);
    ct_tensor *out = c ? reshape_impl(op, c, nshape, ndim, false) : NULL;
    ct_tensor_free(c);
    return out;
}

ct_tensor *ct_reshape(ct_tensor *t, const int64_t *shape, int ndim) {
    return reshape_impl("ct_reshape", t, shape, ndim, true);
}
ct_tensor *ct_view(ct_tensor *t, const int64_t *shape, int ndim) {
    return reshape_impl("ct_view", t, shape, ndim, false);
}

ct_tensor *ct_flatten(ct_tensor *t, int start_dim, int end_dim) {
    if (!ct__check("ct_flatten", "t", t))
        return NULL;
    if (t->ndim == 0)
        return reshape_impl("ct_flatten", t, (const int64_t[]){1}, 1, true);
    int s = ct__wrap_dim("ct_flatten", start_dim, t->ndim), e = ct__wrap_dim("ct_flatten", end_dim, t->ndim);
    if (s < 0 || e < 0)
        return NULL;
    if (s > e) {
        ct__set_error(CT_ERR_DIM, "ct_flatten: start_dim %d comes after end_dim %d", start_dim, end_dim);
        return NULL;
    }
    int64_t shape[CT_MAX_DIMS];
    int n = 0;
    for (int d = 0; d < s; d++)
        shape[n++] = t->shape[d];
    int64_t merged = 1;
    for (int d = s; d <= e; d++)
        merged *= t->shape[d];
    shape[n++] = merged;
    for (int d = e + 1; d < t->ndim; d++)
        shape[n++] = t->shape[d];
    return reshape_impl("ct_flatten", t, shape, n, true);
}

/* ---- permute / transpose ------------------------------------------------------------- */

ct_tensor *ct_permute(ct_tensor *t, const int *dims, int ndim) {
    if (!ct__check("ct_permute", "t", t))
        return NULL;
    if (ndim != t->ndim) {
        ct__set_error(CT_ERR_DIM, "ct_permute: %d dims given for a tensor of shape %s", ndim, ct_shape_str(t));
        return NULL;
    }
    if (ndim > 0 && !dims) {
        ct__null_arg("ct_permute", "dims");
        return NULL;
    }
    int64_t shape[CT_MAX_DIMS], strides[CT_MAX_DIMS];
    bool seen[CT_MAX_DIMS] = {0};
    int wrapped[CT_MAX_DIMS];
    for (int d = 0; d < ndim; d++) {
        int w = ct__wrap_dim("ct_permute", dims[d], ndim);
        if (w < 0)
            return NULL;
        if (seen[w]) {
            ct__set_error(CT_ERR_DIM, "ct_permute: dim %d appears twice", dims[d]);
            return NULL;
        }
        seen[w] = true;
        wrapped[d] = w;
        shape[d] = t->shape[w];
        strides[d] = t->strides[w];
    }
    ct_node *node;
    ct_tensor *out = finish_view("ct_permute", permute_backward, t, ndim, shape, strides, t->offset, &node);
    if (node)
        for (int d = 0; d < ndim; d++)
            node->iargs[d] = wrapped[d];
    return out;
}

ct_tensor *ct_transpose(ct_tensor *t, int dim0, int dim1) {
    if (!ct__check("ct_transpose", "t", t))
        return NULL;
    int a = ct__wrap_dim("ct_transpose", dim0, t->ndim), b = ct__wrap_dim("ct_transpose", dim1, t->ndim);
    if (a < 0 || b < 0)
        return NULL;
    int dims[CT_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++)
        dims[d] = d;
    if (t->ndim > 0) {
        dims[a] = b;
        dims[b] = a;
    }
    return ct_permute(t, dims, t->ndim);
}

/* ---- slice / select ------------------------------------------------------------------ */

ct_tensor *ct_slice(ct_tensor *t, int dim, int64_t start, int64_t end, int64_t step) {
    if (!ct__check("ct_slice", "t", t))
        return NULL;
    if (t->ndim == 0) {
        ct__set_error(CT_ERR_DIM, "ct_slice: cannot slice a 0-dimensional tensor");
        return NULL;
    }
    int d = ct__wrap_dim("ct_slice", dim, t->ndim);
    if (d < 0)
        return NULL;
    if (step < 1) {
        ct__set_error(CT_ERR_VALUE, "ct_slice: step must be at least 1, got %" PRId64, step);
        return NULL;
    }
    int64_t n = t->shape[d];
    if (start < 0)
        start += n;
    if (end < 0)
        end += n;
    start = start < 0 ? 0 : (start > n ? n : start);
    end = end < start ? start : (end > n ? n : end);
    int64_t shape[CT_MAX_DIMS], strides[CT_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    memcpy(strides, t->strides, sizeof strides);
    shape[d] = end > start ? (end - start - 1) / step + 1 : 0;
    strides[d] = t->strides[d] * step;
    ct_node *node;
    ct_tensor *out =
        finish_view("ct_slice", slice_backward, t, t->ndim, shape, strides, t->offset + start * t->strides[d], &node);
    if (node) {
        node->iargs[0] = d;
        node->iargs[1] = start;
        node->iargs[2] = end;
        node->iargs[3] = step;
        node->iargs[4] = 0;
    }
    return out;
}

ct_tensor *ct_select(ct_tensor *t, int dim, int64_t index) {
    if (!ct__check("ct_select", "t", t))
        return NULL;
    if (t->ndim == 0) {
        ct__set_error(CT_ERR_DIM, "ct_select: cannot select from a 0-dimensional tensor");
        return NULL;
    }
    int d = ct__wrap_dim("ct_select", dim, t->ndim);
    if (d < 0)
        return NULL;
    int64_t n = t->shape[d];
    if (index < -n || index >= n) {
        ct__set_error(CT_ERR_DIM, "ct_select: index %" PRId64 " out of range for dim %d of size %" PRId64, index, dim,
                      n);
        return NULL;
    }
    if (index < 0)
        index += n;
    int64_t shape[CT_MAX_DIMS], strides[CT_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++)
        if (i != d) {
            shape[k] = t->shape[i];
            strides[k++] = t->strides[i];
        }
    ct_node *node;
    ct_tensor *out = finish_view("ct_select", slice_backward, t, k, shape, strides, t->offset + index * t->strides[d],
                                 &node);
    if (node) {
        node->iargs[0] = d;
        node->iargs[1] = index;
        node->iargs[4] = 1;
    }
    return out;
}

/* ---- expand / squeeze / unsqueeze ------------------------------------------------------ */

ct_tensor *ct_expand(ct_tensor *t, const int64_t *shape, int ndim) {
    if (!ct__check("ct_expand", "t", t))
        return NULL;
    if (ndim < t->ndim || ndim > CT_MAX_DIMS) {
        ct__set_error(CT_ERR_SHAPE, "ct_expand: cannot expand %s to %d dims", ct_shape_str(t), ndim);
        return NULL;
    }
    if (ndim > 0 && !shape) {
        ct__null_arg("ct_expand", "shape");
        return NULL;
    }
    int64_t nshape[CT_MAX_DIMS], strides[CT_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int d = 0; d < ndim; d++) {
        int64_t have = d >= lead ? t->shape[d - lead] : 1;
        int64_t want = shape[d] == -1 && d >= lead ? have : shape[d];
        if (want < 0 || (have != want && have != 1)) {
            ct__set_error(CT_ERR_SHAPE, "ct_expand: cannot expand %s to %s (dim %d)", ct_shape_str(t),
                          ct__shape_fmt(ndim, shape), d);
            return NULL;
        }
        nshape[d] = want;
        strides[d] = (d >= lead && have == want) ? t->strides[d - lead] : 0;
    }
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++)
        if (__builtin_mul_overflow(numel, nshape[d], &numel)) {
            ct__set_error(CT_ERR_SHAPE, "ct_expand: shape %s has too many elements", ct__shape_fmt(ndim, nshape));
            return NULL;
        }
    return finish_view("ct_expand", expand_backward, t, ndim, nshape, strides, t->offset, NULL);
}

ct_tensor *ct_squeeze(ct_tensor *t, int dim) {
    if (!ct__check("ct_squeeze", "t", t))
        return NULL;
    int64_t shape[CT_MAX_DIMS], strides[CT_MAX_DIMS];
    int n = 0, only = -1;
    if (dim != CT_ALL_DIMS && (only = ct__wrap_dim("ct_squeeze", dim, t->ndim)) < 0)
        return NULL;
    for (int d = 0; d < t->ndim; d++) {
        bool drop = t->shape[d] == 1 && (only < 0 || d == only);
        if (!drop) {
            shape[n] = t->shape[d];
            strides[n++] = t->strides[d];
        }
    }
    return finish_view("ct_squeeze", reshape_backward, t, n, shape, strides, t->offset, NULL);
}

ct_tensor *ct_unsqueeze(ct_tensor *t, int dim) {
    if (!ct__check("ct_unsqueeze", "t", t))
        return NULL;
    if (t->ndim >= CT_MAX_DIMS) {
        ct__set_error(CT_ERR_SHAPE, "ct_unsqueeze: tensor already has %d dims", CT_MAX_DIMS);
        return NULL;
    }
    int d = ct__wrap_dim("ct_unsqueeze", dim, t->ndim + 1);
    if (d < 0)
        return NULL;
    int64_t shape[CT_MAX_DIMS], strides[CT_MAX_DIMS];
    for (int i = 0, k = 0; i <= t->ndim; i++) {
        if (i == d) {
            shape[i] = 1;
            strides[i] = k < t->ndim ? t->strides[k] * t->shape[k] : 1;
        } else {
            shape[i] = t->shape[k];
            strides[i] = t->strides[k++];
        }
    }
    return finish_view("ct_unsqueeze", reshape_backward, t, t->ndim + 1, shape, strides, t->offset, NULL);
}
