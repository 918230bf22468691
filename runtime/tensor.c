/* Tensors: allocation of handles, geometry, creation, inspection. */
#include "runtime/internal.h"
#include "kernels/cpu/copy.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

/* ---- handle pool with quarantine ------------------------------------------------- */

#define QUARANTINE 4096
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static ct_tensor *quarantine[QUARANTINE];
static int64_t q_head, q_count;
static atomic_llong live_tensors;

static ct_tensor *handle_alloc(void) {
    ct_tensor *t = NULL;
    pthread_mutex_lock(&pool_lock);
    if (q_count == QUARANTINE) {
        t = quarantine[q_head];
        q_head = (q_head + 1) % QUARANTINE;
        q_count--;
    }
    pthread_mutex_unlock(&pool_lock);
    if (!t)
        t = malloc(sizeof *t);
    if (!t) {
        ct__set_error(CT_ERR_MEMORY, "out of host memory (tensor handle)");
        return NULL;
    }
    memset(t, 0, sizeof *t);
    t->magic = CT_TENSOR_MAGIC;
    atomic_init(&t->refcount, 1);
    atomic_fetch_add(&live_tensors, 1);
    return t;
}

static void handle_free(ct_tensor *t) {
    t->magic = CT_TENSOR_DEAD;
    atomic_fetch_sub(&live_tensors, 1);
    ct_tensor *oldest = NULL;
    pthread_mutex_lock(&pool_lock);
    if (q_count == QUARANTINE) { /* full: the oldest handle leaves quarantine for good */
        oldest = quarantine[q_head];
        q_head = (q_head + 1) % QUARANTINE;
        q_count--;
    }
    quarantine[(q_head + q_count) % QUARANTINE] = t;
    q_count++;
    pthread_mutex_unlock(&pool_lock);
    free(oldest);
}

int64_t ct_live_tensors(void) { return atomic_load(&live_tensors); }

void ct__tensor_release(ct_tensor *t) {
    if (atomic_fetch_sub(&t->refcount, 1) != 1)
        return;
    ct__storage_release(t->storage);
    if (t->grad) {
        t->grad->scope = NULL;
        ct__tensor_release(t->grad);
    }
    if (t->grad_fn)
        ct__node_release(t->grad_fn);
    free(t->name);
    handle_free(t);
}

ct_tensor *ct__tensor_ref(ct_tensor *t) {
    atomic_fetch_add(&t->refcount, 1);
    return t;
}

ct_tensor *ct_tensor_retain(ct_tensor *t) {
    if (!ct__check("ct_tensor_retain", "t", t))
        return NULL;
    atomic_fetch_add(&t->refcount, 1);
    return t;
}

/* ---- geometry ------------------------------------------------------------------- */

void ct__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        strides[d] = s;
        s *= shape[d] > 0 ? shape[d] : 1;
    }
}

int64_t ct__numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

bool ct__is_contiguous(const ct_tensor *t) {
    int64_t s = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->strides[d] != s)
            return t->shape[d] == 0 || ct__numel(t->ndim, t->shape) == 0;
        s *= t->shape[d];
    }
    return true;
}

const char *ct__shape_fmt(int ndim, const int64_t *shape) {
    static _Thread_local char bufs[8][160];
    static _Thread_local int next;
    char *b = bufs[next++ & 7];
    /* snprintf returns the untruncated length: clamp so `used` never passes the buffer. */
    size_t used = 0, cap = 160;
    b[0] = '[';
    used = 1;
    for (int d = 0; d < ndim && used < cap - 24; d++) {
        int n = snprintf(b + used, cap - used, d ? ", %" PRId64 : "%" PRId64, shape[d]);
        used += n > 0 ? (size_t)n : 0;
        if (used > cap - 24)
            used = cap - 24;
    }
    snprintf(b + used, cap - used, "]");
    return b;
}

const char *ct_shape_str(const ct_tensor *t) {
    if (!t || t->magic != CT_TENSOR_MAGIC)
        return "(null)";
    return ct__shape_fmt(t->ndim, t->shape);
}

static bool check_geometry(const char *op, int ndim, const int64_t *shape, ct_dtype dtype) {
    if (ndim < 0 || ndim > CT_MAX_DIMS) {
        ct__set_error(CT_ERR_SHAPE, "%s: ndim is %d, must be in [0, %d]", op, ndim, CT_MAX_DIMS);
        return false;
    }
    if (ndim > 0 && !shape) {
        ct__null_arg(op, "shape");
        return false;
    }
    /* The strides skip zero sizes (ct__contiguous_strides), so the product of the other sizes
     * must fit as well: [0, 2^32, 2^32] has no elements but strides that overflow. */
    int64_t numel = 1, extent = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) {
            ct__set_error(CT_ERR_SHAPE, "%s: negative size in shape %s", op, ct__shape_fmt(ndim, shape));
            return false;
        }
        if (__builtin_mul_overflow(numel, shape[d], &numel)) {
            ct__set_error(CT_ERR_SHAPE, "%s: shape %s has more elements than fit in 64 bits", op,
                          ct__shape_fmt(ndim, shape));
            return false;
        }
        if (__builtin_mul_overflow(extent, shape[d] > 0 ? shape[d] : 1, &extent)) {
            ct__set_error(CT_ERR_SHAPE, "%s: shape %s has strides that do not fit in 64 bits", op,
                          ct__shape_fmt(ndim, shape));
            return false;
        }
    }
    if (ct_dtype_size(dtype) == 0) {
        ct__set_error(CT_ERR_DTYPE, "%s: invalid dtype %d", op, (int)dtype);
        return false;
    }
    return true;
}

static bool check_device(const char *op, ct_device device, ct_dtype dtype) {
    if (device.type == CT_DEVICE_CPU)
        return true;
    if (device.type != CT_DEVICE_CUDA) {
        ct__set_error(CT_ERR_DEVICE, "%s: invalid device type %d", op, (int)device.type);
        return false;
    }
    if (dtype == CT_F64) {
        ct__set_error(CT_ERR_DTYPE, "%s: f64 tensors are CPU only (asked for %s)", op, ct_device_name(device));
        return false;
    }
    int count = ct_cuda_device_count();
    if (device.index < 0 || device.index >= count) {
        ct__set_error(CT_ERR_DEVICE, "%s: %s is not available (%d CUDA device%s usable)", op,
                      ct_device_name(device), count, count == 1 ? "" : "s");
        return false;
    }
    return true;
}

static ct_tensor *new_tensor(ct_dtype dtype, ct_device device, bool pinned, int ndim, const int64_t *shape) {
    int64_t numel = ct__numel(ndim, shape);
    size_t es = ct_dtype_size(dtype);
    if (numel > 0 && (uint64_t)numel > SIZE_MAX / es) {
        ct__set_error(CT_ERR_MEMORY, "tensor of shape %s is too large", ct__shape_fmt(ndim, shape));
        return NULL;
    }
    ct_storage *s = pinned ? ct__storage_new_pinned((size_t)numel * es) : ct__storage_new((size_t)numel * es, device);
    if (!s)
        return NULL;
    ct_tensor *t = handle_alloc();
    if (!t) {
        ct__storage_release(s);
        return NULL;
    }
    t->dtype = dtype;
    t->device = device;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        t->shape[d] = shape[d];
    ct__contiguous_strides(ndim, shape, t->strides);
    t->storage = s;
    ct__scope_register(t);
    return t;
}

ct_tensor *ct__new(ct_dtype dtype, ct_device device, int ndim, const int64_t *shape) {
    return new_tensor(dtype, device, false, ndim, shape);
}

ct_tensor *ct__new_pinned(ct_dtype dtype, int ndim, const int64_t *shape) {
    return new_tensor(dtype, CT_CPU, true, ndim, shape);
}

ct_tensor *ct__view_of(const ct_tensor *base, int ndim, const int64_t *shape, const int64_t *strides,
                       int64_t offset) {
    ct_tensor *t = handle_alloc();
    if (!t)
        return NULL;
    t->dtype = base->dtype;
    t->device = base->device;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        t->strides[d] = strides[d];
    }
    t->offset = offset;
    t->storage = base->storage;
    atomic_fetch_add(&base->storage->refcount, 1);
    ct__scope_register(t);
    return t;
}

/* ---- checks shared by ops --------------------------------------------------------- */

bool ct__check(const char *op, const char *name, const ct_tensor *t) {
    if (!t) {
        ct__null_arg(op, name);
        return false;
    }
    if (t->magic != CT_TENSOR_MAGIC) {
        ct__set_error(CT_ERR_STATE, "%s: argument %s was freed (used after ct_tensor_free or ct_scope_end)", op,
                      name);
        return false;
    }
    return true;
}

int ct__wrap_dim(const char *op, int dim, int ndim) {
    int lo = ndim > 0 ? -ndim : -1, hi = ndim > 0 ? ndim - 1 : 0;
    if (dim < lo || dim > hi) {
        ct__set_error(CT_ERR_DIM, "%s: dim %d out of range for a %d-dimensional tensor (expected [%d, %d])", op, dim,
                      ndim, lo, hi);
        return -1;
    }
    return dim < 0 ? dim + (ndim > 0 ? ndim : 1) : dim;
}

bool ct__same_device_dtype(const char *op, const ct_tensor *a, const ct_tensor *b) {
    if (!ct_device_equal(a->device, b->device)) {
        ct__set_error(CT_ERR_DEVICE, "%s: tensors are on different devices: %s and %s", op,
                      ct_device_name(a->device), ct_device_name(b->device));
        return false;
    }
    if (a->dtype != b->dtype) {
        ct__set_error(CT_ERR_DTYPE, "%s: dtypes differ: %s and %s (cast one with ct_cast)", op,
                      ct_dtype_name(a->dtype), ct_dtype_name(b->dtype));
        return false;
    }
    return true;
}

bool ct__broadcast_shape(const char *op, int andim, const int64_t *ashape, int bndim, const int64_t *bshape,
                         int *out_ndim, int64_t *out_shape) {
    int nd = andim > bndim ? andim : bndim;
    for (int i = 0; i < nd; i++) {
        int ai = andim - nd + i, bi = bndim - nd + i;
        int64_t as = ai >= 0 ? ashape[ai] : 1, bs = bi >= 0 ? bshape[bi] : 1;
        if (as != bs && as != 1 && bs != 1) {
            ct__set_error(CT_ERR_SHAPE, "%s: shapes %s and %s cannot be broadcast (dim %d: %" PRId64 " vs %" PRId64 ")",
                          op, ct__shape_fmt(andim, ashape), ct__shape_fmt(bndim, bshape), i, as, bs);
            return false;
        }
        out_shape[i] = as == 1 ? bs : as;
    }
    *out_ndim = nd;
    return true;
}

void ct__broadcast_strides(const ct_tensor *t, int ndim, const int64_t *shape, int64_t *strides) {
    for (int i = 0; i < ndim; i++) {
        int ti = t->ndim - ndim + i;
        strides[i] = (ti >= 0 && t->shape[ti] == shape[i] && shape[i] != 1) ? t->strides[ti] : 0;
    }
}

bool ct__check_inplace(const char *op, const ct_tensor *t) {
    if (ct_grad_enabled() && t->requires_grad && !t->grad_fn) {
        ct__set_error(CT_ERR_AUTOGRAD,
                      "%s: a leaf tensor that requires grad cannot be modified in place (wrap the update in "
                      "ct_no_grad_begin/ct_no_grad_end)",
                      op);
        return false;
    }
    if (ct_grad_enabled() && t->grad_fn) {
        ct__set_error(CT_ERR_AUTOGRAD,
                      "%s: in-place modification of a tensor that is part of an autograd graph (made by %s) is "
                      "not supported; use the out-of-place op",
                      op, t->grad_fn->name);
        return false;
    }
    return true;
}

bool ct__check_inplace_source(const char *op, const ct_tensor *src, const char *instead) {
    if (!ct__any_requires_grad(1, &src))
        return true;
    ct__set_error(CT_ERR_AUTOGRAD,
                  "%s: the source requires grad but an in-place update is not recorded by autograd; use %s, or "
                  "wrap in ct_no_grad_begin/end",
                  op, instead);
    return false;
}

bool ct__check_writable(const char *op, const ct_tensor *dst) {
    for (int d = 0; d < dst->ndim; d++)
        if (dst->shape[d] > 1 && dst->strides[d] == 0) {
            ct__set_error(CT_ERR_VALUE,
                          "%s: unsupported operation: more than one element of the written-to tensor (shape %s, "
                          "stride 0 in dim %d, as made by ct_expand) refers to a single memory location; write to "
                          "a ct_clone or ct_contiguous copy instead",
                          op, ct_shape_str(dst), d);
            return false;
        }
    return true;
}

/* Whether sum(coef[k] * x[k]) == target has a solution with lo[k] <= x[k] <= hi[k], for terms
 * k >= first sorted by decreasing |coef|. rem_lo/rem_hi[k]: the smallest and largest sums of
 * the terms from k on. *budget bounds the search; running out answers "yes" (the caller then
 * refuses, which is the safe side). */
static bool offsets_meet(int n_terms, int first, const int64_t *coef, const int64_t *lo, const int64_t *hi,
                         const int64_t *rem_lo, const int64_t *rem_hi, int64_t target, int64_t *budget) {
    if (--*budget < 0)
        return true;
    if (first == n_terms)
        return target == 0;
    if (target < rem_lo[first] || target > rem_hi[first])
        return false;
    /* x must leave target - coef * x within reach of the remaining terms. */
    int64_t c = coef[first], next_lo = rem_lo[first + 1], next_hi = rem_hi[first + 1];
    for (int64_t x = lo[first]; x <= hi[first]; x++) {
        int64_t rest = target - c * x;
        if (rest > next_hi) {
            /* coef > 0 here: skip ahead to the first x that brings rest within reach */
            int64_t skip = (rest - next_hi + c - 1) / c;
            x += skip - 1;
            continue;
        }
        if (rest < next_lo)
            break;
        if (offsets_meet(n_terms, first + 1, coef, lo, hi, rem_lo, rem_hi, rest, budget))
            return true;
    }
    return false;
}

bool ct__check_no_partial_overlap(const char *op, const ct_tensor *dst, const ct_tensor *src) {
    if (dst->storage != src->storage || ct__numel(dst->ndim, dst->shape) == 0 || ct__numel(src->ndim, src->shape) == 0)
        return true;
    int64_t src_strides[CT_MAX_DIMS];
    ct__broadcast_strides(src, dst->ndim, dst->shape, src_strides);
    CT_ASSERT(dst->dtype == src->dtype, false); /* views keep their base's dtype */
    bool same_geometry = dst->offset == src->offset;
    for (int d = 0; d < dst->ndim && same_geometry; d++)
        same_geometry = dst->shape[d] == 1 || dst->strides[d] == src_strides[d];
    if (same_geometry) /* a op= a: every element reads only itself */
        return true;
    /* Is some element of dst also an element of src? In elements (views keep the dtype, so both
     * are in the same units): dst.offset + sum(i * dst.strides) == src.offset + sum(j * src.strides)
     * for indices in range. Terms with the same |stride| merge into one term over the range of
     * differences, so that row-major views (strides that nest) leave a few candidates per term:
     * the common cases (halves of a row, even and odd elements, a and its transpose) are
     * settled in a handful of steps. */
    int64_t coef[2 * CT_MAX_DIMS], lo[2 * CT_MAX_DIMS], hi[2 * CT_MAX_DIMS];
    int n_terms = 0;
    const ct_tensor *side[2] = {dst, src};
    for (int s = 0; s < 2; s++)
        for (int d = 0; d < side[s]->ndim; d++) {
            int64_t stride = side[s]->strides[d], extent = side[s]->shape[d] - 1;
            if (extent == 0 || stride == 0)
                continue;
            /* src's index counts down: move it to the left-hand side with the opposite sign */
            int64_t sign = (stride > 0) == (s == 0) ? 1 : -1, magnitude = stride > 0 ? stride : -stride;
            int k = 0;
            while (k < n_terms && coef[k] != magnitude)
                k++;
            if (k == n_terms) {
                coef[k] = magnitude;
                lo[k] = hi[k] = 0;
                n_terms++;
            }
            if (sign > 0)
                hi[k] += extent;
            else
                lo[k] -= extent;
        }
    for (int a = 1; a < n_terms; a++) /* insertion sort by decreasing coefficient */
        for (int b = a; b > 0 && coef[b] > coef[b - 1]; b--) {
            int64_t t;
            t = coef[b], coef[b] = coef[b - 1], coef[b - 1] = t;
            t = lo[b], lo[b] = lo[b - 1], lo[b - 1] = t;
            t = hi[b], hi[b] = hi[b - 1], hi[b - 1] = t;
        }
    int64_t rem_lo[2 * CT_MAX_DIMS + 1] = {0}, rem_hi[2 * CT_MAX_DIMS + 1] = {0};
    for (int k = n_terms - 1; k >= 0; k--) {
        rem_lo[k] = rem_lo[k + 1] + coef[k] * lo[k];
        rem_hi[k] = rem_hi[k + 1] + coef[k] * hi[k];
    }
    int64_t budget = 100000;
    if (!offsets_meet(n_terms, 0, coef, lo, hi, rem_lo, rem_hi, src->offset - dst->offset, &budget))
        return true;
    ct__set_error(CT_ERR_VALUE,
                  "%s: unsupported operation: the source (shape %s) partially overlaps the destination (shape %s) "
                  "in memory, so some elements would be read after they were written; pass a ct_clone of the "
                  "source",
                  op, ct_shape_str(src), ct_shape_str(dst));
    return false;
}

/* ---- creation -------------------------------------------------------------------- */

ct_tensor *ct_empty(const int64_t *shape, int ndim, ct_dtype dtype, ct_device device) {
    if (!check_geometry("ct_empty", ndim, shape, dtype) || !check_device("ct_empty", device, dtype))
        return NULL;
    return ct__new(dtype, device, ndim, shape);
}

static ct_tensor *filled(const char *op, const int64_t *shape, int ndim, double value, ct_dtype dtype,
                         ct_device device) {
    if (!check_geometry(op, ndim, shape, dtype) || !check_device(op, device, dtype))
        return NULL;
    ct_tensor *t = ct__new(dtype, device, ndim, shape);
    if (t && ct_fill_(t, value) != CT_OK) {
        ct_tensor_free(t);
        return NULL;
    }
    return t;
}

ct_tensor *ct_zeros(const int64_t *shape, int ndim, ct_dtype dtype, ct_device device) {
    return filled("ct_zeros", shape, ndim, 0.0, dtype, device);
}
ct_tensor *ct_ones(const int64_t *shape, int ndim, ct_dtype dtype, ct_device device) {
    return filled("ct_ones", shape, ndim, 1.0, dtype, device);
}
ct_tensor *ct_full(const int64_t *shape, int ndim, double value, ct_dtype dtype, ct_device device) {
    return filled("ct_full", shape, ndim, value, dtype, device);
}
ct_tensor *ct_scalar(double value, ct_dtype dtype, ct_device device) {
    return filled("ct_scalar", NULL, 0, value, dtype, device);
}

ct_tensor *ct_empty_like(const ct_tensor *like) {
    if (!ct__check("ct_empty_like", "like", like))
        return NULL;
    return ct__new(like->dtype, like->device, like->ndim, like->shape);
}
ct_tensor *ct_zeros_like(const ct_tensor *like) {
    if (!ct__check("ct_zeros_like", "like", like))
        return NULL;
    return ct_zeros(like->shape, like->ndim, like->dtype, like->device);
}
ct_tensor *ct_ones_like(const ct_tensor *like) {
    if (!ct__check("ct_ones_like", "like", like))
        return NULL;
    return ct_ones(like->shape, like->ndim, like->dtype, like->device);
}

ct_tensor *ct_arange(double start, double end, double step, ct_dtype dtype, ct_device device) {
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step)) {
        ct__set_error(CT_ERR_VALUE, "ct_arange: invalid range start=%g end=%g step=%g", start, end, step);
        return NULL;
    }
    double count = ceil((end - start) / step);
    if (count > 9.0e15) { /* beyond exact doubles; also keeps the conversion defined */
        ct__set_error(CT_ERR_VALUE, "ct_arange: start=%g end=%g step=%g gives too many elements", start, end, step);
        return NULL;
    }
    int64_t n = count > 0 ? (int64_t)count : 0;
    if (!check_geometry("ct_arange", 1, &n, dtype) || !check_device("ct_arange", device, dtype))
        return NULL;
    ct_tensor *host = ct__new(dtype, CT_CPU, 1, &n);
    if (!host)
        return NULL;
    for (int64_t i = 0; i < n; i++)
        ct_cpu_store(host->storage->data, dtype, i, start + (double)i * step);
    if (device.type == CT_DEVICE_CPU)
        return host;
    ct_tensor *t = ct_to_device(host, device);
    ct_tensor_free(host);
    return t;
}

ct_tensor *ct_from_host(const void *data, const int64_t *shape, int ndim, ct_dtype dtype, ct_device device) {
    if (!check_geometry("ct_from_host", ndim, shape, dtype) || !check_device("ct_from_host", device, dtype))
        return NULL;
    int64_t n = ct__numel(ndim, shape);
    if (!data && n > 0) {
        ct__null_arg("ct_from_host", "data");
        return NULL;
    }
    ct_tensor *t = ct__new(dtype, device, ndim, shape);
    if (!t)
        return NULL;
    if (n > 0 && ct__memcpy(device, t->storage->data, CT_CPU, data, (size_t)n * ct_dtype_size(dtype)) != CT_OK) {
        ct_tensor_free(t);
        return NULL;
    }
    return t;
}

/* ---- inspection -------------------------------------------------------------------- */

int ct_tensor_ndim(const ct_tensor *t) { return ct__check("ct_tensor_ndim", "t", t) ? t->ndim : -1; }
int64_t ct_tensor_size(const ct_tensor *t, int dim) {
    if (!ct__check("ct_tensor_size", "t", t))
        return -1;
    if (t->ndim == 0 || dim < -t->ndim || dim >= t->ndim) {
        ct__set_error(CT_ERR_DIM, "ct_tensor_size: dim %d out of range for shape %s", dim, ct_shape_str(t));
        return -1;
    }
    return t->shape[dim < 0 ? dim + t->ndim : dim];
}
const int64_t *ct_tensor_shape(const ct_tensor *t) { return ct__check("ct_tensor_shape", "t", t) ? t->shape : NULL; }
const int64_t *ct_tensor_strides(const ct_tensor *t) {
    return ct__check("ct_tensor_strides", "t", t) ? t->strides : NULL;
}
int64_t ct_tensor_offset(const ct_tensor *t) { return ct__check("ct_tensor_offset", "t", t) ? t->offset : -1; }
int64_t ct_tensor_numel(const ct_tensor *t) {
    return ct__check("ct_tensor_numel", "t", t) ? ct__numel(t->ndim, t->shape) : -1;
}
ct_dtype ct_tensor_dtype(const ct_tensor *t) {
    return ct__check("ct_tensor_dtype", "t", t) ? t->dtype : CT_NUM_DTYPES;
}
ct_device ct_tensor_device(const ct_tensor *t) { return ct__check("ct_tensor_device", "t", t) ? t->device : CT_CPU; }
bool ct_tensor_is_contiguous(const ct_tensor *t) {
    return ct__check("ct_tensor_is_contiguous", "t", t) && ct__is_contiguous(t);
}
void *ct_tensor_data(const ct_tensor *t) { return ct__check("ct_tensor_data", "t", t) ? ct__data(t) : NULL; }
bool ct_tensor_shares_storage(const ct_tensor *a, const ct_tensor *b) {
    return ct__check("ct_tensor_shares_storage", "a", a) && ct__check("ct_tensor_shares_storage", "b", b) &&
           a->storage == b->storage;
}

ct_status ct_tensor_set_name(ct_tensor *t, const char *name) {
    if (!ct__check("ct_tensor_set_name", "t", t))
        return ct_last_error();
    char *copy = NULL;
    if (name && !(copy = strdup(name)))
        return ct__set_error(CT_ERR_MEMORY, "ct_tensor_set_name: out of host memory");
    free(t->name);
    t->name = copy;
    return CT_OK;
}
const char *ct_tensor_name(const ct_tensor *t) { return ct__check("ct_tensor_name", "t", t) ? t->name : NULL; }

/* ---- host transfer --------------------------------------------------------------- */

ct_status ct_to_host(const ct_tensor *t, void *out, size_t nbytes) {
    if (!ct__check("ct_to_host", "t", t))
        return ct_last_error() ? ct_last_error() : CT_ERR_NULL;
    size_t need = (size_t)ct__numel(t->ndim, t->shape) * ct_dtype_size(t->dtype);
    if (need == 0)
        return CT_OK;
    if (!out)
        return ct__null_arg("ct_to_host", "out");
    if (nbytes < need)
        return ct__set_error(CT_ERR_VALUE, "ct_to_host: buffer of %zu bytes is too small for %s %s (%zu bytes)",
                             nbytes, ct_dtype_name(t->dtype), ct_shape_str(t), need);
    if (t->device.type == CT_DEVICE_CPU) {
        int64_t strides[CT_MAX_DIMS];
        ct__contiguous_strides(t->ndim, t->shape, strides);
        ct_cpu_copy_cast(t->ndim, t->shape, out, t->dtype, strides, ct__data(t), t->dtype, t->strides);
        return CT_OK;
    }
    ct_scope_begin();
    ct_no_grad_begin();
    ct_tensor *c = ct_contiguous((ct_tensor *)t);
    ct_status st = c ? ct__memcpy(CT_CPU, out, c->device, ct__data(c), need) : ct_last_error();
    ct_no_grad_end();
    ct_scope_end();
    return st;
}

double ct_item(const ct_tensor *t) {
    if (!ct__check("ct_item", "t", t))
        return NAN;
    if (ct__numel(t->ndim, t->shape) != 1) {
        ct__set_error(CT_ERR_SHAPE, "ct_item: tensor of shape %s has %lld elements, expected 1", ct_shape_str(t),
                      (long long)ct__numel(t->ndim, t->shape));
        return NAN;
    }
    char buf[8];
    if (t->device.type == CT_DEVICE_CPU)
        return ct_cpu_load(ct__data(t), t->dtype, 0);
    if (ct__memcpy(CT_CPU, buf, t->device, ct__data(t), ct_dtype_size(t->dtype)) != CT_OK)
        return NAN;
    return ct_cpu_load(buf, t->dtype, 0);
}

void ct_tensor_print(const ct_tensor *t, const char *label, int max_items) {
    if (!t || t->magic != CT_TENSOR_MAGIC) {
        fprintf(stderr, "%s: (invalid tensor)\n", label ? label : "tensor");
        return;
    }
    int64_t n = ct__numel(t->ndim, t->shape);
    fprintf(stderr, "%s: %s %s on %s%s", label ? label : (t->name ? t->name : "tensor"), ct_dtype_name(t->dtype),
            ct_shape_str(t), ct_device_name(t->device), n ? " [" : "\n");
    if (!n)
        return;
    int64_t shown = n < max_items ? n : max_items;
    double *vals = malloc((size_t)n * ct_dtype_size(t->dtype) + 8);
    if (vals && ct_to_host(t, vals, (size_t)n * ct_dtype_size(t->dtype)) == CT_OK)
        for (int64_t i = 0; i < shown; i++)
            fprintf(stderr, i ? ", %g" : "%g", ct_cpu_load(vals, t->dtype, i));
    fprintf(stderr, "%s]\n", shown < n ? ", ..." : "");
    free(vals);
}

ct_tensor *ct__alias(const ct_tensor *src) {
    ct_tensor *t = handle_alloc();
    if (!t)
        return NULL;
    t->dtype = src->dtype;
    t->device = src->device;
    t->ndim = src->ndim;
    memcpy(t->shape, src->shape, sizeof t->shape);
    memcpy(t->strides, src->strides, sizeof t->strides);
    t->offset = src->offset;
    t->storage = src->storage;
    atomic_fetch_add(&src->storage->refcount, 1);
    return t;
}

ct_stream *ct__stream_for(const ct_tensor *t) {
#ifdef CT_HAVE_CUDA
    if (t->device.type == CT_DEVICE_CUDA && ct__cuda_make_current(t->device.index) != CT_OK)
        return NULL;
#endif
    return ct_stream_current(t->device.index);
}
