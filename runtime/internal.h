/* ctensor — internal runtime interface shared by runtime/, ops/ and nn/.
 * Kernels (kernels/) never include this: they see raw pointers, shapes and strides. */
#ifndef CT_RUNTIME_INTERNAL_H
#define CT_RUNTIME_INTERNAL_H

#include "ctensor/ctensor.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define CT_TENSOR_MAGIC 0x43544e53u /* "CTNS" */
#define CT_TENSOR_DEAD 0xdeadbeefu

/* Internal invariant: a failure is a bug in ctensor. Records CT_ERR_INTERNAL and returns
 * `ret` from the enclosing function. */
#define CT_ASSERT(cond, ret)                                                                  \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            ct__set_error(CT_ERR_INTERNAL, "internal error: %s failed at %s:%d", #cond,       \
                          __FILE__, __LINE__);                                                \
            return ret;                                                                       \
        }                                                                                     \
    } while (0)

/* ---- errors ----------------------------------------------------------------------- */
ct_status ct__set_error(ct_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* For a NULL input: records "<op>: argument <name> is NULL" unless an error is already
 * recorded (the first cause wins). Always returns CT_ERR_NULL. */
ct_status ct__null_arg(const char *op, const char *name);
/* Count the errors raised on this thread from now on (ct__set_error, ct__null_arg), and keep
 * the first one's message; ct__errors_since_mark gives the count and (if `first` is not NULL)
 * that message. Used by CUDA graph capture. */
void ct__error_mark(void);
uint64_t ct__errors_since_mark(const char **first);

/* ---- storage ----------------------------------------------------------------------- */
typedef struct ct_storage {
    atomic_int refcount;
    ct_device device;
    void *data;
    size_t nbytes;
    bool pinned; /* host memory from the pinned cache (ct_pin_memory) */
    atomic_uint_least64_t version; /* bumped by every in-place write; shared by views */
} ct_storage;

ct_storage *ct__storage_new(size_t nbytes, ct_device device);
/* CPU storage from the pinned host cache (ct_pinned_alloc). */
ct_storage *ct__storage_new_pinned(size_t nbytes);
void ct__storage_release(ct_storage *s);

/* 64-byte aligned host memory (never NULL for size 0). */
void *ct__host_alloc(size_t nbytes);
void ct__host_free(void *p);

/* Copy bytes between devices. Host to device is asynchronous on the destination's current
 * stream, and `src` may be reused as soon as this returns (pageable memory is staged through
 * a pinned block). Device to host synchronizes the source device's current stream, then
 * reports the errors the GPU recorded (ct__cuda_check_device_errors). Device to device
 * orders the copy after the source's current stream, on the destination's. */
ct_status ct__memcpy(ct_device dst_device, void *dst, ct_device src_device, const void *src, size_t nbytes);
/* Host to device from a block of the pinned cache (a pinned storage's data, or memory from
 * ct_pinned_alloc; `src` inside it): the copy reads the pinned memory directly and the block
 * is recorded on the stream, so that it is not reused before the copy has completed (the
 * caller may free the block at once). The caller must not write the source until then: its
 * data is read asynchronously. */
ct_status ct__memcpy_from_pinned(ct_device dst_device, void *dst, void *pinned_block, const void *src, size_t nbytes);

/* ---- tensors ----------------------------------------------------------------------- */
typedef struct ct_node ct_node;
struct ct_scope;

struct ct_tensor {
    uint32_t magic;
    atomic_int refcount;
    ct_dtype dtype;
    ct_device device;
    int ndim;
    int64_t shape[CT_MAX_DIMS];
    int64_t strides[CT_MAX_DIMS];
    int64_t offset;
    ct_storage *storage;
    bool requires_grad;
    ct_tensor *grad;  /* leaves: accumulated gradient (owned) */
    ct_node *grad_fn; /* non-leaves: the node that produced it (owned ref) */
    int output_nr;    /* which output of grad_fn */
    char *name;
    struct ct_scope *scope; /* the scope holding one reference, if any */
    int64_t scope_slot;
};

/* A new tensor over a fresh contiguous storage (registered in the current scope). */
ct_tensor *ct__new(ct_dtype dtype, ct_device device, int ndim, const int64_t *shape);
/* The same on the CPU, over pinned storage (ct__storage_new_pinned). */
ct_tensor *ct__new_pinned(ct_dtype dtype, int ndim, const int64_t *shape);
/* A new tensor over `base`'s storage with the given geometry (a view; no autograd). */
ct_tensor *ct__view_of(const ct_tensor *base, int ndim, const int64_t *shape, const int64_t *strides,
                       int64_t offset);
/* A new handle over t's storage and geometry that belongs to no scope and carries no
 * autograd information (used for saved tensors, detach and grads). */
ct_tensor *ct__alias(const ct_tensor *t);
void ct__tensor_release(ct_tensor *t);
/* A reference the library itself holds (a gradient slot's, an optimizer's, a loader's),
 * released with ct__tensor_release, never with ct_tensor_free: ct_tensor_free takes a tensor
 * out of its scope, which would orphan the scope's reference. */
ct_tensor *ct__tensor_ref(ct_tensor *t);
void ct__contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
int64_t ct__numel(int ndim, const int64_t *shape);
/* Data pointer of the first element (storage + offset). */
static inline void *ct__data(const ct_tensor *t) {
    return (char *)t->storage->data + t->offset * (int64_t)ct_dtype_size(t->dtype);
}
bool ct__is_contiguous(const ct_tensor *t);
/* Format a shape "[2, 3]" into a per-thread rotating buffer. */
const char *ct__shape_fmt(int ndim, const int64_t *shape);

/* Validate an input: NULL (propagates), freed (CT_ERR_STATE). `op` and `name` for messages. */
bool ct__check(const char *op, const char *name, const ct_tensor *t);
/* Normalize a dim in [-ndim, ndim) to [0, ndim); records CT_ERR_DIM and returns -1 when out. */
int ct__wrap_dim(const char *op, int dim, int ndim);
/* Same device and dtype for two inputs (recording the error). */
bool ct__same_device_dtype(const char *op, const ct_tensor *a, const ct_tensor *b);
/* Broadcast shapes of a and b into out (≤ 8 dims); records CT_ERR_SHAPE naming `op`. */
bool ct__broadcast_shape(const char *op, int andim, const int64_t *ashape, int bndim,
                         const int64_t *bshape, int *out_ndim, int64_t *out_shape);
/* Strides of `t` broadcast to (ndim, shape): 0 on broadcast dims (shape must be valid). */
void ct__broadcast_strides(const ct_tensor *t, int ndim, const int64_t *shape, int64_t *strides);
/* Bump the version counter after an in-place write. */
static inline void ct__bump_version(ct_tensor *t) { atomic_fetch_add(&t->storage->version, 1); }
static inline uint64_t ct__version(const ct_tensor *t) { return atomic_load(&t->storage->version); }
/* Refuse in-place ops on leaves requiring grad while grad mode is on. */
bool ct__check_inplace(const char *op, const ct_tensor *t);
/* In-place ops with a source: refuse (CT_ERR_AUTOGRAD) a source that requires grad while grad
 * mode is on, since the update would not be recorded; `instead` names the out-of-place op. */
bool ct__check_inplace_source(const char *op, const ct_tensor *src, const char *instead);
/* Refuse (CT_ERR_VALUE) a destination whose elements alias: a dim of size > 1 with stride 0
 * (from ct_expand, the only way the public views alias). */
bool ct__check_writable(const char *op, const ct_tensor *dst);
/* Refuse (CT_ERR_VALUE) a source (broadcast to dst's shape) that shares an element with dst
 * without having dst's exact geometry: the kernel would read elements it already wrote.
 * Full identity (a += a) and disjoint views of one storage are fine. */
bool ct__check_no_partial_overlap(const char *op, const ct_tensor *dst, const ct_tensor *src);
/* ct_copy_ for ops that copy an input into a private tensor of their own (a contiguous or
 * converted operand) and record the autograd node on the original input themselves: the
 * same conversion and broadcasting, without ct_copy_'s autograd refusals. */
ct_status ct__copy(ct_tensor *dst, const ct_tensor *src);
/* ops/conv.c: the elements per tensor of one chunk of a CUDA convolution's batch
 * (CT_CUDNN_CHUNK_ELEMS; 0 restores it). For tests: small chunks run the chunked passes on
 * small tensors. */
void ct__conv_set_chunk_elems(int64_t elems);

/* Operands for kernels that compute half types in f32 on the CPU (conv, pooling):
 * ct__compute_dtype gives the dtype a kernel works in for `t`; ct__operand gives `t` itself
 * when it is already contiguous and of `dtype`, else a converted contiguous copy, which
 * ct__drop_operand releases (and leaves `t` alone); ct__finish_dtype rounds a result to
 * `dtype`, releasing the input when it makes a new tensor. */
ct_dtype ct__compute_dtype(const ct_tensor *t);
ct_tensor *ct__operand(const ct_tensor *t, ct_dtype dtype);
void ct__drop_operand(ct_tensor *operand_copy, const ct_tensor *original);
ct_tensor *ct__finish_dtype(ct_tensor *t, ct_dtype dtype);

/* CUDA dispatch. CT_ON_CUDA(call) runs the launcher call in CUDA builds. In others, CUDA
 * tensors cannot exist, so the branch is never taken; the call is still type-checked (inside
 * sizeof, which does not evaluate it, so nothing needs to link) and an error is reported. */
#include "kernels/cuda/launch.h"
#ifdef CT_HAVE_CUDA
#define CT_ON_CUDA(call) (call)
#else
#define CT_ON_CUDA(call) ((void)sizeof(call), ct__set_error(CT_ERR_DEVICE, "this ctensor was built without CUDA"))
#endif
/* The calling thread's current stream on t's device, after making t's device the thread's
 * current CUDA device (ops launch there; see ct__cuda_make_current in kernels/cuda/stream.cu). */
ct_stream *ct__stream_for(const ct_tensor *t);
ct_status ct__cuda_make_current(int device);
/* Whether the calling thread is capturing a CUDA graph on cuda:`device` (ctensor/graph.h);
 * always false without CUDA. */
bool ct__cuda_capturing(int device);
/* Which CUDA graph this thread is capturing on `device`: a nonzero id, or 0 when none. */
uint64_t ct__cuda_capture_id(int device);


/* Scopes: register a new tensor (called by ct__new / ct__view_of). */
void ct__scope_register(ct_tensor *t);
/* Take `t` out of the scope holding it (if any): the caller now owns that reference. */
void ct__scope_detach(ct_tensor *t);

/* ---- autograd ---------------------------------------------------------------------- */
#define CT_NODE_MAX_INPUTS 8
#define CT_NODE_MAX_SAVED 8

/* Computes gradients of the node's inputs. grad_outputs[k] is the gradient of output k
 * (never NULL: missing ones are zeros). Writes a new tensor to grad_inputs[i] for each
 * input i with node->needs_grad[i] (leave NULL otherwise). Runs with grad mode off inside
 * a scope; results are kept by the engine. Returns CT_OK or an error status. */
typedef ct_status (*ct_backward_fn)(ct_node *node, ct_tensor **grad_outputs, ct_tensor **grad_inputs);

typedef struct ct_edge {
    ct_node *node;   /* input produced by an op: its node (ref) and output index */
    int output_nr;
    ct_tensor *leaf; /* input is a leaf requiring grad (ref) */
} ct_edge;

typedef struct ct_saved {
    ct_tensor *tensor; /* a reference */
    uint64_t version;
} ct_saved;

struct ct_node {
    atomic_int refcount;
    const char *name; /* the op: "ct_mul" */
    ct_backward_fn backward;
    int n_inputs;
    ct_edge edges[CT_NODE_MAX_INPUTS];
    bool needs_grad[CT_NODE_MAX_INPUTS];
    int n_outputs;
    int n_saved;
    ct_saved saved[CT_NODE_MAX_SAVED];
    /* Geometry of the inputs (for reductions of broadcast gradients). */
    int in_ndim[CT_NODE_MAX_INPUTS];
    int64_t in_shape[CT_NODE_MAX_INPUTS][CT_MAX_DIMS];
    ct_dtype in_dtype[CT_NODE_MAX_INPUTS];
    ct_device in_device[CT_NODE_MAX_INPUTS];
    ct_device device;
    /* Op parameters. */
    int64_t iargs[16];
    double dargs[4];
    void *ctx;                 /* optional op data, freed with ctx_free (or free) */
    void (*ctx_free)(void *ctx);
    uint64_t seq;              /* creation order: later nodes run first */
    /* engine bookkeeping */
    int pending;
    ct_tensor **grad_buf;      /* n_outputs accumulated output gradients during backward */
    bool visited;
    /* Geometry of each output, so that missing output gradients can be made as zeros. */
    struct ct_node_output {
        int ndim;
        ct_dtype dtype;
        int64_t shape[CT_MAX_DIMS];
    } outputs[];
};

/* True when grad mode is on and any of the `n` inputs (NULLs ignored) requires grad. */
bool ct__any_requires_grad(int n, const ct_tensor *const *inputs);
/* Record a node for an op producing `n_outputs` outputs from `n_inputs` inputs (edges set
 * from the inputs). Returns NULL (error recorded) on failure. */
ct_node *ct__node_new(const char *name, ct_backward_fn backward, int n_inputs, const ct_tensor *const *inputs,
                      int n_outputs);
/* Save a tensor for backward (takes a reference, remembers its version). */
void ct__node_save(ct_node *node, const ct_tensor *t);
/* A saved tensor, or NULL with CT_ERR_AUTOGRAD when it was modified in place since. */
ct_tensor *ct__node_saved(ct_node *node, int i);
/* Make `out` output `k` of `node` (sets grad_fn, requires_grad). */
void ct__node_set_output(ct_node *node, int k, ct_tensor *out);
/* Convenience for one-output ops: if grad is needed, make a node with the inputs, set
 * `out` as its output and return the node (to save tensors on); NULL when no grad. */
ct_node *ct__record(const char *name, ct_backward_fn backward, ct_tensor *out, int n_inputs,
                    const ct_tensor *const *inputs);
void ct__node_release(ct_node *node);

/* Sum `g` down to (ndim, shape) — the reverse of broadcasting. Returns a new tensor
 * (or a new reference to g when shapes already match). */
ct_tensor *ct__sum_to_shape(ct_tensor *g, int ndim, const int64_t *shape);

/* Reductions: parse `dims` (all when ndims == 0) into a mask over a's dims and the output
 * shape. False with an error recorded. */
bool ct__reduce_dims(const char *op, const ct_tensor *a, const int *dims, int ndims, bool keepdim, bool *mask,
                     int *out_ndim, int64_t *out_shape);

/* ---- random ------------------------------------------------------------------------ */
/* Reserve `words` 32-bit words of the global Philox stream; returns the starting offset
 * (in blocks) and the seed. Thread-safe. */
uint64_t ct__philox_reserve(uint64_t words, uint64_t *seed);
/* The generator's seed, next offset and generation (a count of ct_manual_seed and
 * ct_random_set_offset calls), read together. */
void ct__philox_state(uint64_t *seed, uint64_t *offset, uint64_t *generation);
/* Word i of the stream at (seed, offset). */
uint32_t ct__philox_word(uint64_t seed, uint64_t offset, uint64_t i);

/* ---- dtype helpers ------------------------------------------------------------------ */
#include "kernels/cpu/half.h"

#endif
