/* ctensor — helpers for CPU kernels walking N-d strided operands. */
#ifndef CT_KERNELS_CPU_STRIDED_H
#define CT_KERNELS_CPU_STRIDED_H

#include <stdint.h>

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

#endif
