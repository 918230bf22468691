/* Copies and dtype conversion: fill_, copy_, clone, contiguous, cast, to_device. */
#include "runtime/internal.h"
#include "kernels/cpu/copy.h"

#include <string.h>

ct_status ct_fill_(ct_tensor *a, double value) {
    if (!ct__check("ct_fill_", "a", a))
        return ct_last_error();
    if (!ct__check_inplace("ct_fill_", a) || !ct__check_writable("ct_fill_", a))
        return ct_last_error();
    if (a->device.type == CT_DEVICE_CUDA) {
        ct_status st = CT_ON_CUDA(
            ct_cuda_fill(a->ndim, a->shape, ct__data(a), a->dtype, a->strides, value, ct__stream_for(a)));
        if (st != CT_OK)
            return st;
    } else {
        ct_cpu_fill(a->ndim, a->shape, ct__data(a), a->dtype, a->strides, value);
    }
    ct__bump_version(a);
    return CT_OK;
}

/* Whether src broadcasts to dst's shape (CT_ERR_SHAPE recorded when not). */
static bool broadcasts_to(const char *op, const ct_tensor *dst, const ct_tensor *src) {
    int nd;
    int64_t shape[CT_MAX_DIMS];
    if (!ct__broadcast_shape(op, dst->ndim, dst->shape, src->ndim, src->shape, &nd, shape))
        return false;
    if (nd != dst->ndim || memcmp(shape, dst->shape, sizeof(int64_t) * (size_t)nd) != 0) {
        ct__set_error(CT_ERR_SHAPE, "%s: source of shape %s does not broadcast to destination %s", op,
                      ct_shape_str(src), ct_shape_str(dst));
        return false;
    }
    return true;
}

/* The bytes of contiguous `src` into `dst_data` on dst's device: from pinned storage to a
 * GPU, directly and asynchronously (the block is kept until the copy has run). */
static ct_status move_bytes(const ct_tensor *dst, void *dst_data, const ct_tensor *src, size_t nbytes) {
    if (src->storage->pinned && dst->device.type == CT_DEVICE_CUDA)
        return ct__memcpy_from_pinned(dst->device, dst_data, src->storage->data, ct__data(src), nbytes);
    return ct__memcpy(dst->device, dst_data, src->device, ct__data(src), nbytes);
}

/* Copy src (broadcast to dst's shape, converted to dst's dtype) into dst. No autograd. */
static ct_status copy_into(const char *op, ct_tensor *dst, const ct_tensor *src) {
    int64_t strides[CT_MAX_DIMS];
    if (!broadcasts_to(op, dst, src))
        return ct_last_error();
    ct__broadcast_strides(src, dst->ndim, dst->shape, strides);
    if (ct_device_equal(dst->device, src->device)) {
        if (dst->device.type == CT_DEVICE_CPU) {
            ct_cpu_copy_cast(dst->ndim, dst->shape, ct__data(dst), dst->dtype, dst->strides, ct__data(src),
                             src->dtype, strides);
            return CT_OK;
        }
        return CT_ON_CUDA(ct_cuda_copy_cast(dst->ndim, dst->shape, ct__data(dst), dst->dtype, dst->strides,
                                            ct__data(src), src->dtype, strides, ct__stream_for(dst)));
    }
    /* Across devices: same dtype, same shape and both contiguous is one byte copy. */
    int64_t n = ct__numel(dst->ndim, dst->shape);
    if (src->dtype == dst->dtype && ct__is_contiguous(dst) && ct__is_contiguous(src) &&
        ct__numel(src->ndim, src->shape) == n)
        return move_bytes(dst, ct__data(dst), src, (size_t)n * ct_dtype_size(dst->dtype));
    /* Otherwise: broadcast and convert on the source's device into a contiguous buffer, move
     * the bytes, then (if dst is strided) scatter on the destination's device. From the CPU
     * to a GPU the buffer is pinned, so the GPU reads it directly. */
    ct_status st = CT_OK;
    bool upload = src->device.type == CT_DEVICE_CPU && dst->device.type == CT_DEVICE_CUDA;
    ct_tensor *staged = upload ? ct__new_pinned(dst->dtype, dst->ndim, dst->shape)
                               : ct__new(dst->dtype, src->device, dst->ndim, dst->shape);
    ct_tensor *landing = NULL;
    if (!staged)
        return ct_last_error();
    st = copy_into(op, staged, src);
    if (st == CT_OK && ct__is_contiguous(dst)) {
        st = move_bytes(dst, ct__data(dst), staged, (size_t)n * ct_dtype_size(dst->dtype));
    } else if (st == CT_OK) {
        landing = ct__new(dst->dtype, dst->device, dst->ndim, dst->shape);
        st = landing ? move_bytes(landing, ct__data(landing), staged, (size_t)n * ct_dtype_size(dst->dtype))
                     : ct_last_error();
        if (st == CT_OK)
            st = copy_into(op, dst, landing);
    }
    ct_tensor_free(landing);
    ct_tensor_free(staged);
    return st;
}

/* src is a itself (same storage, dtype and geometry once broadcast): nothing to move. */
static bool is_self_copy(const ct_tensor *a, const ct_tensor *src) {
    if (a->storage != src->storage || a->dtype != src->dtype || a->offset != src->offset)
        return false;
    int64_t strides[CT_MAX_DIMS];
    ct__broadcast_strides(src, a->ndim, a->shape, strides);
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] > 1 && a->strides[d] != strides[d])
            return false;
    return true;
}

ct_status ct_copy_(ct_tensor *a, const ct_tensor *src) {
    const char *op = "ct_copy_";
    if (!ct__check(op, "a", a) || !ct__check(op, "src", src))
        return ct_last_error();
    if (!ct__check_inplace(op, a) || !ct__check_inplace_source(op, src, "ct_clone or ct_cast"))
        return ct_last_error();
    if (!broadcasts_to(op, a, src) || !ct__check_writable(op, a) || !ct__check_no_partial_overlap(op, a, src))
        return ct_last_error();
    /* A copy onto itself would hand memcpy overlapping buffers. */
    ct_status st = is_self_copy(a, src) ? CT_OK : copy_into(op, a, src);
    if (st == CT_OK)
        ct__bump_version(a);
    return st;
}

ct_status ct__copy(ct_tensor *dst, const ct_tensor *src) {
    ct_status st = copy_into("ct_copy_", dst, src);
    if (st == CT_OK)
        ct__bump_version(dst);
    return st;
}

/* ---- differentiable copies ------------------------------------------------------------ */

/* The gradient of a copy: the output's, in the input's dtype and on the input's device
 * (ct_to_device's gradient goes back across devices). */
static ct_status identity_backward(ct_node *node, ct_tensor **gout, ct_tensor **gin) {
    ct_tensor *g = ct_cast(gout[0], node->in_dtype[0]);
    if (g && !ct_device_equal(g->device, node->in_device[0]))
        g = ct_to_device(g, node->in_device[0]);
    gin[0] = g;
    return gin[0] ? CT_OK : ct_last_error();
}

/* A new handle on the same data (in the current scope), connected to the graph. */
static ct_tensor *same_data(const char *op, const ct_tensor *t) {
    ct_tensor *out = ct__view_of(t, t->ndim, t->shape, t->strides, t->offset);
    ct__record(op, identity_backward, out, 1, (const ct_tensor *const[]){t});
    return out;
}

static ct_tensor *copy_op(const char *op, const ct_tensor *a, ct_dtype dtype, ct_device device) {
    ct_tensor *out = ct__new(dtype, device, a->ndim, a->shape);
    if (!out)
        return NULL;
    if (copy_into(op, out, a) != CT_OK) {
        ct_tensor_free(out);
        return NULL;
    }
    if (ct_dtype_is_float(dtype))
        ct__record(op, identity_backward, out, 1, (const ct_tensor *const[]){a});
    return out;
}

ct_tensor *ct_clone(const ct_tensor *t) {
    if (!ct__check("ct_clone", "t", t))
        return NULL;
    return copy_op("ct_clone", t, t->dtype, t->device);
}

ct_tensor *ct_contiguous(ct_tensor *t) {
    if (!ct__check("ct_contiguous", "t", t))
        return NULL;
    if (ct__is_contiguous(t))
        return same_data("ct_contiguous", t);
    return copy_op("ct_contiguous", t, t->dtype, t->device);
}

ct_tensor *ct_cast(const ct_tensor *a, ct_dtype dtype) {
    if (!ct__check("ct_cast", "a", a))
        return NULL;
    if (ct_dtype_size(dtype) == 0) {
        ct__set_error(CT_ERR_DTYPE, "ct_cast: invalid dtype %d", (int)dtype);
        return NULL;
    }
    if (dtype == a->dtype)
        return same_data("ct_cast", a);
    if (dtype == CT_F64 && a->device.type != CT_DEVICE_CPU) {
        ct__set_error(CT_ERR_DTYPE, "ct_cast: f64 tensors are CPU only (input is on %s)", ct_device_name(a->device));
        return NULL;
    }
    return copy_op("ct_cast", a, dtype, a->device);
}

ct_tensor *ct_to_device(const ct_tensor *t, ct_device device) {
    if (!ct__check("ct_to_device", "t", t))
        return NULL;
    if (ct_device_equal(t->device, device))
        return same_data("ct_to_device", t);
    if (device.type == CT_DEVICE_CUDA && (device.index < 0 || device.index >= ct_cuda_device_count())) {
        ct__set_error(CT_ERR_DEVICE, "ct_to_device: %s is not available (%d CUDA devices usable)",
                      ct_device_name(device), ct_cuda_device_count());
        return NULL;
    }
    if (t->dtype == CT_F64 && device.type != CT_DEVICE_CPU) {
        ct__set_error(CT_ERR_DTYPE, "ct_to_device: f64 tensors are CPU only");
        return NULL;
    }
    ct_tensor *src = ct__is_contiguous(t) ? (ct_tensor *)t : ct_contiguous((ct_tensor *)t);
    ct_tensor *out = src ? copy_op("ct_to_device", src, t->dtype, device) : NULL;
    if (src != t)
        ct_tensor_free(src);
    return out;
}

ct_tensor *ct_pin_memory(const ct_tensor *t) {
    if (!ct__check("ct_pin_memory", "t", t))
        return NULL;
    if (t->device.type != CT_DEVICE_CPU) {
        ct__set_error(CT_ERR_DEVICE, "ct_pin_memory: the tensor is on %s; only CPU tensors can be pinned",
                      ct_device_name(t->device));
        return NULL;
    }
    ct_tensor *out = ct__new_pinned(t->dtype, t->ndim, t->shape);
    if (!out)
        return NULL;
    if (copy_into("ct_pin_memory", out, t) != CT_OK) {
        ct_tensor_free(out);
        return NULL;
    }
    if (ct_dtype_is_float(t->dtype))
        ct__record("ct_pin_memory", identity_backward, out, 1, (const ct_tensor *const[]){t});
    return out;
}

/* ---- operands for kernels that compute half types in f32 (see internal.h) ----------- */

ct_dtype ct__compute_dtype(const ct_tensor *t) {
    bool half = t->dtype == CT_F16 || t->dtype == CT_BF16;
    return t->device.type == CT_DEVICE_CPU && half ? CT_F32 : t->dtype;
}

ct_tensor *ct__operand(const ct_tensor *t, ct_dtype dtype) {
    if (t->dtype == dtype && ct__is_contiguous(t))
        return (ct_tensor *)t;
    ct_tensor *c = ct__new(dtype, t->device, t->ndim, t->shape);
    if (c && ct__copy(c, t) != CT_OK) {
        ct_tensor_free(c);
        return NULL;
    }
    return c;
}

void ct__drop_operand(ct_tensor *operand_copy, const ct_tensor *original) {
    if (operand_copy != original)
        ct_tensor_free(operand_copy);
}

ct_tensor *ct__finish_dtype(ct_tensor *t, ct_dtype dtype) {
    if (!t || t->dtype == dtype)
        return t;
    ct_tensor *out = ct__new(dtype, t->device, t->ndim, t->shape);
    if (out && ct_copy_(out, t) != CT_OK) {
        ct_tensor_free(out);
        out = NULL;
    }
    ct_tensor_free(t);
    return out;
}
