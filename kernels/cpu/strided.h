/* ctensor — helpers for kernels walking N-d strided operands (the CPU's, and the CUDA
 * kernels' host and device code, which include this header too). */
#ifndef CT_KERNELS_CPU_STRIDED_H
#define CT_KERNELS_CPU_STRIDED_H

#include <stdbool.h>
#include <stdint.h>

/* A function both the CPU and CUDA device code call. */
#ifdef __CUDACC__
#define CT_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define CT_HOST_DEVICE inline
#endif

#define CT_KMAX_DIMS 8
#define CT_KMAX_OPS 4

/* Merge adjacent dims that are contiguous with each other in every operand and drop
 * size-1 dims, in place. `strides[op]` points to each operand's strides (elements).
 * Returns the new ndim (0 when the iteration space has one element). */
static inline int ct_coalesce(int ndim, int64_t *shape, int nops, int64_t **strides) {
    int out = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1)
            continue;
        if (out > 0) {
            int prev = out - 1;
            int mergeable = 1;
            for (int op = 0; op < nops; op++)
                if (strides[op][prev] != strides[op][d] * shape[d])
                    mergeable = 0;
            if (mergeable) {
                shape[prev] *= shape[d];
                for (int op = 0; op < nops; op++)
                    strides[op][prev] = strides[op][d];
                continue;
            }
        }
        shape[out] = shape[d];
        for (int op = 0; op < nops; op++)
            strides[op][out] = strides[op][d];
        out++;
    }
    return out;
}

/* Offsets (in elements) of each operand at the flat row-major position `linear` of the
 * outer dims 0..ndim-2 (the innermost dim is walked by the caller). */
static inline void ct_outer_offsets(int ndim, const int64_t *shape, int nops, int64_t *const *strides,
                                    int64_t linear, int64_t *offsets) {
    for (int op = 0; op < nops; op++)
        offsets[op] = 0;
    for (int d = ndim - 2; d >= 0; d--) {
        int64_t i = linear % shape[d];
        linear /= shape[d];
        for (int op = 0; op < nops; op++)
            offsets[op] += i * strides[op][d];
    }
}

/* A subset of a strided operand's dims, coalesced: the kept or the reduced dims of a
 * reduction, the rows of a softmax. ndim 0 is one element at offset 0. */
typedef struct ct_dims {
    int ndim;
    int64_t numel;
    int64_t shape[CT_KMAX_DIMS], strides[CT_KMAX_DIMS];
} ct_dims;

/* The dims d < limit with take[d], in order, coalesced. */
static inline void ct_dims_select(ct_dims *g, int limit, const int64_t *shape, const int64_t *strides,
                                  const bool *take) {
    g->ndim = 0;
    g->numel = 1;
    for (int d = 0; d < limit; d++)
        if (take[d]) {
            g->shape[g->ndim] = shape[d];
            g->strides[g->ndim++] = strides[d];
            g->numel *= shape[d];
        }
    int64_t *s[1] = {g->strides};
    g->ndim = ct_coalesce(g->ndim, g->shape, 1, s);
}

/* A reduction's group: the dims with mask[d] == want; an empty group is one dim of one
 * element, so kernels always have a dim to walk. */
static inline void ct_dims_group(ct_dims *g, int ndim, const int64_t *shape, const int64_t *strides, const bool *mask,
                                 bool want) {
    bool take[CT_KMAX_DIMS];
    for (int d = 0; d < ndim; d++)
        take[d] = mask[d] == want;
    ct_dims_select(g, ndim, shape, strides, take);
    if (g->ndim == 0) {
        g->ndim = 1;
        g->shape[0] = 1;
        g->strides[0] = 0;
    }
}

/* A softmax's rows: every dim but `dim`, or only those before it (outer_only: the outer
 * index of the lanes path). */
static inline void ct_dims_rows(ct_dims *w, int ndim, const int64_t *shape, const int64_t *strides, int dim,
                                bool outer_only) {
    bool take[CT_KMAX_DIMS];
    for (int d = 0; d < ndim; d++)
        take[d] = d != dim;
    ct_dims_select(w, outer_only ? dim : ndim, shape, strides, take);
}

/* Element offset of the row-major linear index i over g's dims. */
static CT_HOST_DEVICE int64_t ct_dims_offset(const ct_dims *g, int64_t i) {
    if (g->ndim == 1)
        return i * g->strides[0];
    int64_t off = 0;
    for (int d = g->ndim - 1; d >= 0; d--) {
        off += (i % g->shape[d]) * g->strides[d];
        i /= g->shape[d];
    }
    return off;
}

#endif
