/* Indexing: index_select, gather, scatter_add (differentiable) and one_hot.
 *
 * Every index is checked before anything is allocated or written, and an out-of-range one
 * (negative included: there is no wrap-around) is CT_ERR_DIM naming the value, the dim and
 * its size. The gradients of the reading ops are scatter-adds into zeros, which are
 * deterministic on the CPU (kernels/cpu/index.c). */
#include "runtime/internal.h"
#include "kernels/cpu/copy.h"
#include "kernels/cpu/index.h"

#include <inttypes.h>
#include <string.h>

/* ---- checks ----------------------------------------------------------------------------- */

static bool check_index(const char *op, const ct_tensor *a, const ct_tensor *index, const char *name) {
    if (!ct__check(op, name, index))
        return false;
    if (index->dtype != CT_I32) {
        ct__set_error(CT_ERR_DTYPE, "%s: %s must be i32, got %s", op, name, ct_dtype_name(index->dtype));
        return false;
    }
    if (a && !ct_device_equal(a->device, index->device)) {
        ct__set_error(CT_ERR_DEVICE, "%s: %s is on %s, the input on %s", op, name, ct_device_name(index->device),
                      ct_device_name(a->device));
        return false;
    }
    return ct__require_cpu(op, index);
}

/* Every element of `index` in [0, size), the size of dim `dim` (named in the message). */
static bool check_range(const char *op, const ct_tensor *index, int dim, int64_t size) {
    int32_t bad;
    if (!ct_cpu_index_find_bad(index->ndim, index->shape, ct__data(index), index->strides, size, &bad))
        return true;
    ct__set_error(CT_ERR_DIM, "%s: index %" PRId32 " out of range for dim %d of size %" PRId64, op, bad, dim,
                  size);
    return false;
}

/* ---- index_select ------------------------------------------------------------------------ */

/* A 0-D or 1-D index seen as an index over (ndim, shape): its stride on `dim`, 0 elsewhere. */
static void select_strides(const ct_tensor *index, int ndim, int dim, int64_t *strides) {
    for (int d = 0; d < ndim; d++)
        strides[d] = 0;
    strides[dim] = index->ndim == 1 ? index->strides[0] : 0;
}

static ct_status index_select_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *index = ct__node_saved(node, 0), *g = gout[0];
    if (!index)
        return ct_last_error();
    int dim = (int)node->iargs[0];
    ct_tensor *z = ct_zeros(node->in_shape[0], node->in_ndim[0], node->in_dtype[0], node->device);
    if (!z)
        return ct_last_error();
    int64_t istrides[CT_MAX_DIMS];
    select_strides(index, g->ndim, dim, istrides);
    ct_cpu_scatter_add(g->dtype, g->ndim, g->shape, dim, ct__data(z), z->strides, ct__data(g), g->strides,
                       ct__data(index), istrides);
    gin[0] = z;
    return CT_OK;
}

ct_tensor *ct_index_select(const ct_tensor *a, int dim, const ct_tensor *index) {
    const char *op = "ct_index_select";
    if (!ct__check(op, "a", a) || !check_index(op, a, index, "index") || !ct__require_cpu(op, a))
        return NULL;
    if (a->ndim == 0) {
        ct__set_error(CT_ERR_DIM, "%s: a is 0-dimensional", op);
        return NULL;
    }
    if (index->ndim > 1) {
        ct__set_error(CT_ERR_SHAPE, "%s: index must be 0-D or 1-D, got shape %s", op, ct_shape_str(index));
        return NULL;
    }
    int d = ct__wrap_dim(op, dim, a->ndim);
    if (d < 0)
        return NULL;
    int64_t shape[CT_MAX_DIMS], istrides[CT_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[d] = index->ndim == 1 ? index->shape[0] : 1;
    select_strides(index, a->ndim, d, istrides);
    if (!check_range(op, index, d, a->shape[d]))
        return NULL;
    ct_tensor *out = ct__new(a->dtype, a->device, a->ndim, shape);
    if (!out)
        return NULL;
    ct_cpu_gather(ct_dtype_size(a->dtype), a->ndim, shape, d, ct__data(out), out->strides, ct__data(a), a->strides,
                  ct__data(index), istrides);
    ct_node *node = ct__record(op, index_select_backward, out, 2, (const ct_tensor *const[]){a, index});
    if (node) {
        node->iargs[0] = d;
        ct__node_save(node, index);
    }
    return out;
}

/* ---- gather / scatter_add ------------------------------------------------------------------ */

/* index fits `t` on every dim but `dim` (and on all dims when dim < 0). */
static bool fits(const char *op, const ct_tensor *index, const ct_tensor *t, const char *tname, int dim) {
    if (index->ndim != t->ndim) {
        ct__set_error(CT_ERR_SHAPE, "%s: index has %d dims (shape %s) but %s has %d (shape %s)", op, index->ndim,
                      ct_shape_str(index), tname, t->ndim, ct_shape_str(t));
        return false;
    }
    for (int k = 0; k < t->ndim; k++)
        if (k != dim && index->shape[k] > t->shape[k]) {
            ct__set_error(CT_ERR_SHAPE, "%s: index of shape %s is larger than %s of shape %s in dim %d", op,
                          ct_shape_str(index), tname, ct_shape_str(t), k);
            return false;
        }
    return true;
}

static ct_status gather_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *index = ct__node_saved(node, 0), *g = gout[0];
    if (!index)
        return ct_last_error();
    ct_tensor *z = ct_zeros(node->in_shape[0], node->in_ndim[0], node->in_dtype[0], node->device);
    if (!z)
        return ct_last_error();
    ct_cpu_scatter_add(g->dtype, index->ndim, index->shape, (int)node->iargs[0], ct__data(z), z->strides,
                       ct__data(g), g->strides, ct__data(index), index->strides);
    gin[0] = z;
    return CT_OK;
}

ct_tensor *ct_gather(const ct_tensor *a, int dim, const ct_tensor *index) {
    const char *op = "ct_gather";
    if (!ct__check(op, "a", a) || !check_index(op, a, index, "index") || !ct__require_cpu(op, a))
        return NULL;
    if (a->ndim == 0) {
        ct__set_error(CT_ERR_DIM, "%s: a is 0-dimensional", op);
        return NULL;
    }
    int d = ct__wrap_dim(op, dim, a->ndim);
    if (d < 0 || !fits(op, index, a, "a", d))
        return NULL;
    if (!check_range(op, index, d, a->shape[d]))
        return NULL;
    ct_tensor *out = ct__new(a->dtype, a->device, index->ndim, index->shape);
    if (!out)
        return NULL;
    ct_cpu_gather(ct_dtype_size(a->dtype), index->ndim, index->shape, d, ct__data(out), out->strides, ct__data(a),
                  a->strides, ct__data(index), index->strides);
    ct_node *node = ct__record(op, gather_backward, out, 2, (const ct_tensor *const[]){a, index});
    if (node) {
        node->iargs[0] = d;
        ct__node_save(node, index);
    }
    return out;
}

/* d out / d a = identity; d out / d src = g gathered at index (0 where src was not used). */
static ct_status scatter_add_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *g = gout[0];
    if (node->needs_grad[0]) {
        gin[0] = ct__view_of(g, g->ndim, g->shape, g->strides, g->offset);
        if (!gin[0])
            return ct_last_error();
    }
    if (!node->needs_grad[2])
        return CT_OK;
    ct_tensor *index = ct__node_saved(node, 0);
    if (!index)
        return ct_last_error();
    const int64_t *src_shape = node->in_shape[2];
    bool covered = memcmp(src_shape, index->shape, sizeof(int64_t) * (size_t)index->ndim) == 0;
    ct_tensor *gs = covered ? ct_empty(src_shape, index->ndim, g->dtype, g->device)
                            : ct_zeros(src_shape, index->ndim, g->dtype, g->device);
    if (!gs)
        return ct_last_error();
    ct_cpu_gather(ct_dtype_size(g->dtype), index->ndim, index->shape, (int)node->iargs[0], ct__data(gs), gs->strides,
                  ct__data(g), g->strides, ct__data(index), index->strides);
    gin[2] = gs;
    return CT_OK;
}

ct_tensor *ct_scatter_add(const ct_tensor *a, int dim, const ct_tensor *index, const ct_tensor *src) {
    const char *op = "ct_scatter_add";
    if (!ct__check(op, "a", a) || !check_index(op, a, index, "index") || !ct__check(op, "src", src))
        return NULL;
    if (!ct__same_device_dtype(op, a, src) || !ct__require_cpu(op, a))
        return NULL;
    if (a->ndim == 0) {
        ct__set_error(CT_ERR_DIM, "%s: a is 0-dimensional", op);
        return NULL;
    }
    int d = ct__wrap_dim(op, dim, a->ndim);
    if (d < 0 || !fits(op, index, a, "a", d) || !fits(op, index, src, "src", -1))
        return NULL;
    if (!check_range(op, index, d, a->shape[d]))
        return NULL;
    ct_tensor *out = ct__new(a->dtype, a->device, a->ndim, a->shape);
    if (!out)
        return NULL;
    ct_cpu_copy_cast(a->ndim, a->shape, ct__data(out), out->dtype, out->strides, ct__data(a), a->dtype, a->strides);
    ct_cpu_scatter_add(a->dtype, index->ndim, index->shape, d, ct__data(out), out->strides, ct__data(src),
                       src->strides, ct__data(index), index->strides);
    ct_node *node = ct__record(op, scatter_add_backward, out, 3, (const ct_tensor *const[]){a, index, src});
    if (node) {
        node->iargs[0] = d;
        ct__node_save(node, index);
    }
    return out;
}

/* ---- one_hot --------------------------------------------------------------------------- */

ct_tensor *ct_one_hot(const ct_tensor *labels, int num_classes, ct_dtype dtype) {
    const char *op = "ct_one_hot";
    if (!check_index(op, NULL, labels, "labels"))
        return NULL;
    if (ct_dtype_size(dtype) == 0) {
        ct__set_error(CT_ERR_DTYPE, "%s: invalid dtype %d", op, (int)dtype);
        return NULL;
    }
    if (num_classes < 1) {
        ct__set_error(CT_ERR_VALUE, "%s: num_classes must be at least 1, got %d", op, num_classes);
        return NULL;
    }
    if (labels->ndim >= CT_MAX_DIMS) {
        ct__set_error(CT_ERR_SHAPE, "%s: labels of shape %s already have %d dims", op, ct_shape_str(labels),
                      CT_MAX_DIMS);
        return NULL;
    }
    if (!check_range(op, labels, labels->ndim, num_classes))
        return NULL;
    int64_t shape[CT_MAX_DIMS];
    memcpy(shape, labels->shape, sizeof(int64_t) * (size_t)labels->ndim);
    shape[labels->ndim] = num_classes;
    ct_tensor *out = ct__new(dtype, labels->device, labels->ndim + 1, shape);
    if (out)
        ct_cpu_one_hot(dtype, labels->ndim, labels->shape, ct__data(labels), labels->strides, num_classes,
                       ct__data(out));
    return out;
}
