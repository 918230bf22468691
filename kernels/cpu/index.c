/* Gather, scatter-add and one-hot over strided operands with I32 indices.
 *
 * Both gather and scatter-add walk the index space as (along `dim`) x (the other, "free"
 * coordinates, flattened). Threads split the free coordinates; each thread runs the
 * positions along `dim` in order, outermost. Two positions that reach the same destination
 * differ only along `dim`, so scatter-add never races and always adds in the same order:
 * the result does not depend on the number of threads. */
#include "kernels/cpu/index.h"
#include "kernels/cpu/half.h"
#include "kernels/cpu/strided.h"

#include <omp.h>
#include <string.h>

#define CT_INDEX_PAR_THRESHOLD (1 << 15)

enum { DIRECT = 0, INDEXED = 1, INDEX = 2 };

/* The operand addressed by p (out of gather, src of scatter), the operand addressed by q
 * (src of gather, dst of scatter; its stride along `dim` multiplies the index value), and
 * the index itself. */
typedef struct index_walk {
    int nfree;
    int64_t free_shape[CT_KMAX_DIMS];
    int64_t free_strides[3][CT_KMAX_DIMS];
    int64_t free_numel;
    int64_t n_along;
    int64_t along_strides[3];
} index_walk;

static void walk_init(index_walk *w, int ndim, const int64_t *shape, int dim, const int64_t *direct,
                      const int64_t *indexed, const int64_t *index) {
    const int64_t *strides[3] = {direct, indexed, index};
    w->nfree = 0;
    w->free_numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (d == dim)
            continue;
        w->free_shape[w->nfree] = shape[d];
        for (int k = 0; k < 3; k++)
            w->free_strides[k][w->nfree] = strides[k][d];
        w->free_numel *= shape[d];
        w->nfree++;
    }
    w->n_along = shape[dim];
    for (int k = 0; k < 3; k++)
        w->along_strides[k] = strides[k][dim];
}

/* Coordinates and offsets of flattened free position `c`, at position j along dim (the
 * indexed operand's offset leaves the dim out: it comes from the index value). */
static inline void walk_start(const index_walk *w, int64_t c, int64_t j, int64_t *coord, int64_t *off) {
    off[DIRECT] = j * w->along_strides[DIRECT];
    off[INDEXED] = 0;
    off[INDEX] = j * w->along_strides[INDEX];
    for (int d = w->nfree - 1; d >= 0; d--) {
        coord[d] = c % w->free_shape[d];
        c /= w->free_shape[d];
        for (int k = 0; k < 3; k++)
            off[k] += coord[d] * w->free_strides[k][d];
    }
}

static inline void walk_next(const index_walk *w, int64_t *coord, int64_t *off) {
    for (int d = w->nfree - 1; d >= 0; d--) {
        for (int k = 0; k < 3; k++)
            off[k] += w->free_strides[k][d];
        if (++coord[d] < w->free_shape[d])
            return;
        for (int k = 0; k < 3; k++)
            off[k] -= w->free_strides[k][d] * w->free_shape[d];
        coord[d] = 0;
    }
}

/* Run BODY for every position of free range [c0, c1), with `od` the direct operand's
 * offset and `oi` the indexed operand's. */
#define INDEX_WALK(w, index, c0, c1, BODY)                                                                     \
    for (int64_t j_ = 0; j_ < (w)->n_along; j_++) {                                                            \
        int64_t coord_[CT_KMAX_DIMS], off_[3];                                                                 \
        walk_start((w), (c0), j_, coord_, off_);                                                               \
        for (int64_t c_ = (c0); c_ < (c1); c_++) {                                                             \
            int64_t od = off_[DIRECT];                                                                         \
            int64_t oi = off_[INDEXED] + (int64_t)(index)[off_[INDEX]] * (w)->along_strides[INDEXED];          \
            BODY;                                                                                              \
            walk_next((w), coord_, off_);                                                                      \
        }                                                                                                      \
    }

/* This thread's share [*c0, *c1) of the free coordinates. */
static void thread_range(int64_t n, int64_t *c0, int64_t *c1) {
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t chunk = (n + nt - 1) / nt;
    *c0 = chunk * t < n ? chunk * t : n;
    *c1 = *c0 + chunk < n ? *c0 + chunk : n;
}

static bool parallel_worthwhile(const index_walk *w) {
    return w->free_numel > 1 && w->free_numel * w->n_along >= CT_INDEX_PAR_THRESHOLD;
}

void ct_cpu_gather(size_t elem_size, int ndim, const int64_t *shape, int dim, void *out, const int64_t *out_strides,
                   const void *src, const int64_t *src_strides, const int32_t *index, const int64_t *index_strides) {
    index_walk w;
    walk_init(&w, ndim, shape, dim, out_strides, src_strides, index_strides);
    if (w.free_numel * w.n_along == 0)
        return;
#pragma omp parallel if (parallel_worthwhile(&w))
    {
        int64_t c0, c1;
        thread_range(w.free_numel, &c0, &c1);
        switch (elem_size) {
        case 1: INDEX_WALK(&w, index, c0, c1, ((uint8_t *)out)[od] = ((const uint8_t *)src)[oi]); break;
        case 2: INDEX_WALK(&w, index, c0, c1, ((uint16_t *)out)[od] = ((const uint16_t *)src)[oi]); break;
        case 4: INDEX_WALK(&w, index, c0, c1, ((uint32_t *)out)[od] = ((const uint32_t *)src)[oi]); break;
        default: INDEX_WALK(&w, index, c0, c1, ((uint64_t *)out)[od] = ((const uint64_t *)src)[oi]); break;
        }
    }
}

void ct_cpu_scatter_add(ct_dtype dtype, int ndim, const int64_t *shape, int dim, void *dst,
                        const int64_t *dst_strides, const void *src, const int64_t *src_strides, const int32_t *index,
                        const int64_t *index_strides) {
    index_walk w;
    walk_init(&w, ndim, shape, dim, src_strides, dst_strides, index_strides);
    if (w.free_numel * w.n_along == 0)
        return;
#pragma omp parallel if (parallel_worthwhile(&w))
    {
        int64_t c0, c1;
        thread_range(w.free_numel, &c0, &c1);
        switch (dtype) {
        case CT_F32: INDEX_WALK(&w, index, c0, c1, ((float *)dst)[oi] += ((const float *)src)[od]); break;
        case CT_F64: INDEX_WALK(&w, index, c0, c1, ((double *)dst)[oi] += ((const double *)src)[od]); break;
        case CT_F16: {
            uint16_t *d = dst;
            const uint16_t *s = src;
            INDEX_WALK(&w, index, c0, c1, d[oi] = ct_f32_to_f16(ct_f16_to_f32(d[oi]) + ct_f16_to_f32(s[od])));
            break;
        }
        case CT_BF16: {
            uint16_t *d = dst;
            const uint16_t *s = src;
            INDEX_WALK(&w, index, c0, c1, d[oi] = ct_f32_to_bf16(ct_bf16_to_f32(d[oi]) + ct_bf16_to_f32(s[od])));
            break;
        }
        case CT_I32: /* wraps around, in unsigned arithmetic */
            INDEX_WALK(&w, index, c0, c1, ((uint32_t *)dst)[oi] += ((const uint32_t *)src)[od]);
            break;
        case CT_U8: INDEX_WALK(&w, index, c0, c1, ((uint8_t *)dst)[oi] += ((const uint8_t *)src)[od]); break;
        default: break;
        }
    }
}

bool ct_cpu_index_find_bad(int ndim, const int64_t *shape, const int32_t *index, const int64_t *strides,
                           int64_t limit, int32_t *bad_value) {
    int64_t numel = 1, coord[CT_KMAX_DIMS] = {0}, off = 0;
    for (int d = 0; d < ndim; d++)
        numel *= shape[d];
    for (int64_t i = 0; i < numel; i++) {
        int32_t v = index[off];
        if (v < 0 || v >= limit) {
            *bad_value = v;
            return true;
        }
        for (int d = ndim - 1; d >= 0; d--) {
            off += strides[d];
            if (++coord[d] < shape[d])
                break;
            off -= strides[d] * shape[d];
            coord[d] = 0;
        }
    }
    return false;
}

void ct_cpu_one_hot(ct_dtype dtype, int ndim, const int64_t *shape, const int32_t *labels, const int64_t *strides,
                    int64_t num_classes, void *out) {
    int64_t numel = 1, coord[CT_KMAX_DIMS] = {0}, off = 0;
    for (int d = 0; d < ndim; d++)
        numel *= shape[d];
    size_t es = ct_dtype_size(dtype);
    memset(out, 0, (size_t)(numel * num_classes) * es);
    union {
        float f32;
        double f64;
        uint16_t u16;
        int32_t i32;
        uint8_t u8;
        char bytes[8];
    } one;
    switch (dtype) {
    case CT_F32: one.f32 = 1.0f; break;
    case CT_F64: one.f64 = 1.0; break;
    case CT_F16: one.u16 = ct_f32_to_f16(1.0f); break;
    case CT_BF16: one.u16 = ct_f32_to_bf16(1.0f); break;
    case CT_I32: one.i32 = 1; break;
    default: one.u8 = 1; break;
    }
    for (int64_t i = 0; i < numel; i++) {
        memcpy((char *)out + (size_t)(i * num_classes + labels[off]) * es, one.bytes, es);
        for (int d = ndim - 1; d >= 0; d--) {
            off += strides[d];
            if (++coord[d] < shape[d])
                break;
            off -= strides[d] * shape[d];
            coord[d] = 0;
        }
    }
}
