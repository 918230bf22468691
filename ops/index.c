/* Indexing: index_select, gather, scatter_add (differentiable) and one_hot.
 *
 * On the CPU every index is checked before anything is allocated or written, and an
 * out-of-range one (negative included: there is no wrap-around) is CT_ERR_DIM naming the
 * value, the dim and its size. On CUDA, checking first would mean reading the answer back,
 * i.e. waiting for the GPU; instead the kernels check every index they use, never touch
 * memory through a bad one, and record it: the same CT_ERR_DIM is reported by the next
 * synchronizing call (ct_to_host, ct_item, ct_*_synchronize; kernels/cuda/device_error.cuh),
 * and the op's result is not valid. The gradients of the reading ops are scatter-adds
 * into zeros: deterministic on the CPU (kernels/cpu/index.c), atomic on CUDA unless
 * ct_set_deterministic(true). */
#include "runtime/internal.h"
#include "kernels/cpu/index.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>

static atomic_bool deterministic = false;

void ct_set_deterministic(bool on) { atomic_store(&deterministic, on); }

bool ct_deterministic(void) { return atomic_load(&deterministic); }

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
    return true;
}

/* Every element of `index` in [0, size), the size of dim `dim` (named in the message). On
 * CUDA the kernels check and report later (see above). */
static bool check_range(const char *op, const ct_tensor *index, int dim, int64_t size) {
    int32_t bad = 0;
    if (index->device.type == CT_DEVICE_CUDA ||
        !ct_cpu_index_find_bad(index->ndim, index->shape, ct__data(index), index->strides, size, &bad))
        return true;
    ct__set_error(CT_ERR_DIM, "%s: index %" PRId32 " out of range for dim %d of size %" PRId64, op, bad, dim,
                  size);
    return false;
}

/* ---- kernels by device -------------------------------------------------------------------
 * Over the index space (ndim, shape), with q = p except that coordinate `dim` is the index:
 * gather_into: out[p] = src[q]; scatter_add_into: dst[q] += src[p]. Indices already checked
 * on the CPU; on CUDA the kernels check them and report bad ones as `op`'s. */

static ct_status gather_into(const char *op, int ndim, const int64_t *shape, int dim, ct_tensor *out, const ct_tensor *src,
                             const ct_tensor *index, const int64_t *index_strides) {
    size_t es = ct_dtype_size(src->dtype);
    if (out->device.type == CT_DEVICE_CUDA)
        return CT_ON_CUDA(ct_cuda_gather(op, es, ndim, shape, dim, ct__data(out), out->strides, ct__data(src),
                                         src->strides, ct__data(index), index_strides, src->shape[dim],
                                         ct__stream_for(out)));
    ct_cpu_gather(es, ndim, shape, dim, ct__data(out), out->strides, ct__data(src), src->strides, ct__data(index),
                  index_strides);
    return CT_OK;
}

static ct_status scatter_add_into(const char *op, int ndim, const int64_t *shape, int dim, ct_tensor *dst, const ct_tensor *src,
                                  const ct_tensor *index, const int64_t *index_strides) {
    if (dst->device.type == CT_DEVICE_CUDA)
        return CT_ON_CUDA(ct_cuda_scatter_add(op, dst->dtype, ndim, shape, dim, ct__data(dst), dst->strides,
                                              ct__data(src), src->strides, ct__data(index), index_strides,
                                              dst->shape[dim], ct_deterministic(), ct__stream_for(dst)));
    ct_cpu_scatter_add(dst->dtype, ndim, shape, dim, ct__data(dst), dst->strides, ct__data(src), src->strides,
                       ct__data(index), index_strides);
    return CT_OK;
}

/* `out` when its kernel succeeded; otherwise it is freed and NULL returned. */
static ct_tensor *finish(ct_tensor *out, ct_status st) {
    if (st == CT_OK)
        return out;
    ct_tensor_free(out);
    return NULL;
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
    gin[0] = finish(z, scatter_add_into(node->name, g->ndim, g->shape, dim, z, g, index, istrides));
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_index_select(const ct_tensor *a, int dim, const ct_tensor *index) {
    const char *op = "ct_index_select";
    if (!ct__check(op, "a", a) || !check_index(op, a, index, "index"))
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
    if (!out || !(out = finish(out, gather_into(op, a->ndim, shape, d, out, a, index, istrides))))
        return NULL;
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
    gin[0] = finish(z, scatter_add_into(node->name, index->ndim, index->shape, (int)node->iargs[0], z, g, index, index->strides));
    return gin[0] ? CT_OK : ct_last_error();
}

ct_tensor *ct_gather(const ct_tensor *a, int dim, const ct_tensor *index) {
    const char *op = "ct_gather";
    if (!ct__check(op, "a", a) || !check_index(op, a, index, "index"))
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
    if (!out || !(out = finish(out, gather_into(op, index->ndim, index->shape, d, out, a, index, index->strides))))
        return NULL;
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
    gin[2] = finish(gs, gather_into(node->name, index->ndim, index->shape, (int)node->iargs[0], gs, g, index, index->strides));
    return gin[2] ? CT_OK : ct_last_error();
}

ct_tensor *ct_scatter_add(const ct_tensor *a, int dim, const ct_tensor *index, const ct_tensor *src) {
    const char *op = "ct_scatter_add";
    if (!ct__check(op, "a", a) || !check_index(op, a, index, "index") || !ct__check(op, "src", src))
        return NULL;
    if (!ct__same_device_dtype(op, a, src))
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
    ct_status st = ct__copy(out, a);
    if (st == CT_OK)
        st = scatter_add_into(op, index->ndim, index->shape, d, out, src, index, index->strides);
    if (!(out = finish(out, st)))
        return NULL;
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
    if (dtype == CT_F64 && labels->device.type != CT_DEVICE_CPU) {
        ct__set_error(CT_ERR_DTYPE, "%s: f64 tensors are CPU only (labels are on %s)", op,
                      ct_device_name(labels->device));
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
    if (!out)
        return NULL;
    if (out->device.type == CT_DEVICE_CPU) {
        ct_cpu_one_hot(dtype, labels->ndim, labels->shape, ct__data(labels), labels->strides, num_classes,
                       ct__data(out));
        return out;
    }
    return finish(out, CT_ON_CUDA(ct_cuda_one_hot(dtype, labels->ndim, labels->shape, ct__data(labels),
                                                  labels->strides, num_classes, ct__data(out),
                                                  ct__stream_for(out))));
}
