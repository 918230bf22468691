/* ctensor — CPU indexing kernels: gather, scatter-add, one-hot, index validation.
 *
 * Index tensors are I32 and strided; a stride of 0 repeats an index (index_select passes
 * its 1-D index with stride 0 on every other dim). The kernels trust the indices: callers
 * validate them first with ct_cpu_index_find_bad, so nothing is written on bad input. */
#ifndef CT_KERNELS_CPU_INDEX_H
#define CT_KERNELS_CPU_INDEX_H

#include "ctensor/types.h"

/* Scan an index tensor in row-major order for the first value outside [0, limit). Returns
 * true and stores it in *bad_value when there is one. */
bool ct_cpu_index_find_bad(int ndim, const int64_t *shape, const int32_t *index, const int64_t *strides,
                           int64_t limit, int32_t *bad_value);

/* For every position p of the index space (ndim >= 1, shape), with q = p except that its
 * coordinate `dim` is index[p]:
 *   gather:       out[p] = src[q]     (any dtype: moves elem_size bytes)
 *   scatter_add:  dst[q] += src[p]    (F32/F64/F16/BF16; I32 and U8 wrap around)
 * Strides in elements. Scatter-add is deterministic: threads own disjoint sets of the
 * coordinates other than `dim`, so two positions that reach the same element of dst are
 * always added by one thread, in increasing order along `dim`. */
void ct_cpu_gather(size_t elem_size, int ndim, const int64_t *shape, int dim, void *out, const int64_t *out_strides,
                   const void *src, const int64_t *src_strides, const int32_t *index, const int64_t *index_strides);
void ct_cpu_scatter_add(ct_dtype dtype, int ndim, const int64_t *shape, int dim, void *dst,
                        const int64_t *dst_strides, const void *src, const int64_t *src_strides, const int32_t *index,
                        const int64_t *index_strides);

/* out (labels' shape..., num_classes), contiguous, of `dtype`: 1 at each label, 0 elsewhere. */
void ct_cpu_one_hot(ct_dtype dtype, int ndim, const int64_t *shape, const int32_t *labels, const int64_t *strides,
                    int64_t num_classes, void *out);

#endif
