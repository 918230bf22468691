/* ctensor — tensors: creation, inspection, views, ownership.
 *
 * Ownership. Tensors are reference-counted. A new tensor is registered in the innermost open
 * scope, which owns that first reference: ct_scope_end() releases everything the scope holds.
 * With no scope open, the caller owns the new tensor and releases it with ct_tensor_free().
 * ct_tensor_free() may also be called on a tensor a scope holds: it is then taken out of the
 * scope and released at once. ct_keep() moves a tensor to the enclosing scope (or, in the
 * outermost scope, hands it to the caller). Module parameters live outside scopes.
 *
 * A freed tensor is marked dead and its handle is not reused for a while, so passing it to
 * an op is caught ("... was freed") rather than reading freed memory, in most cases.
 */
#ifndef CTENSOR_TENSOR_H
#define CTENSOR_TENSOR_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- devices ---------------------------------------------------------------------- */

/* The device named by CT_DEVICE (cpu, cuda, cuda:N); the first GPU when unset and one is
 * usable; otherwise the CPU (with one notice on stderr when CUDA was asked for). */
ct_device ct_device_default(void);
/* Number of usable CUDA devices (0 without GPU, driver or CUDA build). */
int ct_cuda_device_count(void);
bool ct_cuda_is_available(void);
/* Parse "cpu", "cuda", "cuda:1". Returns CT_ERR_VALUE on anything else. */
ct_status ct_device_parse(const char *text, ct_device *out);
/* "cpu" or "cuda:0" (a static buffer per thread). */
const char *ct_device_name(ct_device device);
bool ct_device_equal(ct_device a, ct_device b);

/* ---- creation ----------------------------------------------------------------------- */

/* Uninitialized storage. `shape` has `ndim` entries (0 ≤ ndim ≤ 8, sizes ≥ 0). */
ct_tensor *ct_empty(const int64_t *shape, int ndim, ct_dtype dtype, ct_device device);
ct_tensor *ct_zeros(const int64_t *shape, int ndim, ct_dtype dtype, ct_device device);
ct_tensor *ct_ones(const int64_t *shape, int ndim, ct_dtype dtype, ct_device device);
ct_tensor *ct_full(const int64_t *shape, int ndim, double value, ct_dtype dtype, ct_device device);
/* A 0-dimensional tensor holding `value`. */
ct_tensor *ct_scalar(double value, ct_dtype dtype, ct_device device);
/* start, start+step, ... < end (> end for a negative step), 1-D. */
ct_tensor *ct_arange(double start, double end, double step, ct_dtype dtype, ct_device device);
/* Same shape, dtype and device as `like`. */
ct_tensor *ct_empty_like(const ct_tensor *like);
ct_tensor *ct_zeros_like(const ct_tensor *like);
ct_tensor *ct_ones_like(const ct_tensor *like);
/* Copy a contiguous host buffer of elements of `dtype` into a new tensor on `device`. */
ct_tensor *ct_from_host(const void *data, const int64_t *shape, int ndim, ct_dtype dtype, ct_device device);
/* Copy the tensor's elements, in row-major order, into `out` (capacity `nbytes`).
 * Works on any strides; synchronizes with the device. */
ct_status ct_to_host(const ct_tensor *t, void *out, size_t nbytes);
/* The single element of a one-element tensor, as a double (synchronizes). NaN on error. */
double ct_item(const ct_tensor *t);
/* A contiguous copy with its own storage (differentiable). */
ct_tensor *ct_clone(const ct_tensor *t);
/* The tensor on another device: a copy, or a new handle sharing `t`'s data when it is
 * already there. */
ct_tensor *ct_to_device(const ct_tensor *t, ct_device device);

/* ---- inspection ------------------------------------------------------------------ */

int ct_tensor_ndim(const ct_tensor *t);
/* Size of dimension `dim` (negative counts from the end); -1 if out of range. */
int64_t ct_tensor_size(const ct_tensor *t, int dim);
const int64_t *ct_tensor_shape(const ct_tensor *t);
const int64_t *ct_tensor_strides(const ct_tensor *t); /* in elements */
int64_t ct_tensor_offset(const ct_tensor *t);          /* in elements */
int64_t ct_tensor_numel(const ct_tensor *t);
ct_dtype ct_tensor_dtype(const ct_tensor *t);
ct_device ct_tensor_device(const ct_tensor *t);
bool ct_tensor_is_contiguous(const ct_tensor *t);
/* Pointer to the first element (device memory for CUDA tensors). */
void *ct_tensor_data(const ct_tensor *t);
/* True when a and b share storage. */
bool ct_tensor_shares_storage(const ct_tensor *a, const ct_tensor *b);
/* An optional name used in messages and checkpoints (copied; NULL clears). */
ct_status ct_tensor_set_name(ct_tensor *t, const char *name);
const char *ct_tensor_name(const ct_tensor *t);
/* "[2, 3]" into a per-thread rotating buffer (8 slots). */
const char *ct_shape_str(const ct_tensor *t);
/* Print shape, dtype, device and (up to `max_items` leading) values to stderr. */
void ct_tensor_print(const ct_tensor *t, const char *label, int max_items);

/* ---- ownership ------------------------------------------------------------------ */

/* Release the caller's reference (see the top of this file). NULL is ignored. */
void ct_tensor_free(ct_tensor *t);
/* Take an extra reference; returns `t`. It belongs to the caller, never to a scope, and is
 * released with ct_tensor_free(). As ct_tensor_free() on a tensor a scope still holds releases
 * the scope's reference (the tensor leaves the scope), free a retained reference to a scoped
 * tensor after that scope has ended; ct_keep() is the simpler way past a scope. The library's
 * own holders (optimizers, loaders) keep references of their own: the caller may free or
 * scope-end its tensors while they hold them. */
ct_tensor *ct_tensor_retain(ct_tensor *t);
/* Open a scope: tensors created until the matching end are registered in it. */
void ct_scope_begin(void);
/* Close the innermost scope, releasing its tensors. CT_ERR_STATE when none is open. */
ct_status ct_scope_end(void);
/* Move `t` from the scope holding it to the enclosing one (to the caller when none). */
ct_tensor *ct_keep(ct_tensor *t);
/* Number of open scopes on this thread. */
int ct_scope_depth(void);
/* Number of live tensors in this process (for leak tests). */
int64_t ct_live_tensors(void);

/* ---- views (share storage with the input; differentiable) ---------------------------- */

/* Reshape; one entry may be -1. A view when the strides allow, otherwise a copy. */
ct_tensor *ct_reshape(ct_tensor *t, const int64_t *shape, int ndim);
/* Like reshape, but an error when no view is possible. */
ct_tensor *ct_view(ct_tensor *t, const int64_t *shape, int ndim);
/* Collapse dims start..end (inclusive, negative allowed) into one. */
ct_tensor *ct_flatten(ct_tensor *t, int start_dim, int end_dim);
ct_tensor *ct_permute(ct_tensor *t, const int *dims, int ndim);
ct_tensor *ct_transpose(ct_tensor *t, int dim0, int dim1);
/* Elements start, start+step, ... < end along `dim` (Python slicing: negative start/end
 * count from the end and are clamped; step ≥ 1). */
ct_tensor *ct_slice(ct_tensor *t, int dim, int64_t start, int64_t end, int64_t step);
/* The sub-tensor at `index` along `dim`, with that dim removed. */
ct_tensor *ct_select(ct_tensor *t, int dim, int64_t index);
/* Broadcast to `shape` (NumPy rules; -1 keeps a size). No copy: stride 0 on new dims. */
ct_tensor *ct_expand(ct_tensor *t, const int64_t *shape, int ndim);
/* Remove `dim` when it has size 1 (dim = CT_ALL_DIMS removes every size-1 dim). */
ct_tensor *ct_squeeze(ct_tensor *t, int dim);
ct_tensor *ct_unsqueeze(ct_tensor *t, int dim);
/* A contiguous copy, or a new handle sharing `t`'s data when it is already contiguous. */
ct_tensor *ct_contiguous(ct_tensor *t);

#define CT_ALL_DIMS 0x7fff

#ifdef __cplusplus
}
#endif
#endif
