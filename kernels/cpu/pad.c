/* CPU reflect/replicate padding over contiguous N-d buffers.
 *
 * Work is split over the leading dims that are not padded: they map one to one, so each
 * slice of the input belongs to one thread, in the forward and in the backward. Inside a
 * slice, rows (all dims but the last) are mapped coordinate by coordinate. */
#include "kernels/cpu/pad.h"

#include <string.h>

#define PAR_THRESHOLD 32768

/* The geometry shared by both directions: `lead` unpadded leading dims of `slices` total
 * elements; each slice has in_slice input and out_slice output elements. */
typedef struct pad_plan {
    int lead;
    int64_t slices, in_slice, out_slice;
} pad_plan;

static pad_plan plan_for(int ndim, const int64_t *in_shape, const int64_t *out_shape) {
    pad_plan p = {0, 1, 1, 1};
    while (p.lead < ndim && in_shape[p.lead] == out_shape[p.lead])
        p.slices *= in_shape[p.lead++];
    for (int d = p.lead; d < ndim; d++) {
        p.in_slice *= in_shape[d];
        p.out_slice *= out_shape[d];
    }
    return p;
}

/* Offset in the input slice of the output row `row` (coordinates of dims lead..ndim-2). */
static int64_t row_source(int64_t row, int lead, int ndim, const int64_t *in_shape, const int64_t *out_shape,
                          const int64_t *left, bool reflect) {
    int64_t off = 0, stride = in_shape[ndim - 1];
    for (int d = ndim - 2; d >= lead; d--) {
        int64_t o = row % out_shape[d];
        row /= out_shape[d];
        off += ct_pad_source(o, left[d], in_shape[d], reflect) * stride;
        stride *= in_shape[d];
    }
    return off;
}

void ct_cpu_pad(bool reflect, size_t elem_size, int ndim, const int64_t *in_shape, const void *in,
                const int64_t *out_shape, void *out, const int64_t *left) {
    pad_plan p = plan_for(ndim, in_shape, out_shape);
    int64_t n_last = in_shape[ndim - 1], o_last = out_shape[ndim - 1], rows = p.out_slice / (o_last ? o_last : 1);
    if (o_last == 0)
        return;
#pragma omp parallel for schedule(static) if (p.slices * p.out_slice >= PAR_THRESHOLD)
    for (int64_t s = 0; s < p.slices; s++) {
        const char *src_slice = (const char *)in + (size_t)(s * p.in_slice) * elem_size;
        char *dst = (char *)out + (size_t)(s * p.out_slice) * elem_size;
        for (int64_t r = 0; r < rows; r++, dst += (size_t)o_last * elem_size) {
            const char *src =
                src_slice + (size_t)row_source(r, p.lead, ndim, in_shape, out_shape, left, reflect) * elem_size;
            for (int64_t o = 0; o < o_last; o++)
                memcpy(dst + (size_t)o * elem_size,
                       src + (size_t)ct_pad_source(o, left[ndim - 1], n_last, reflect) * elem_size, elem_size);
        }
    }
}

void ct_cpu_pad_backward(bool reflect, ct_dtype dtype, int ndim, const int64_t *in_shape, void *grad_in,
                         const int64_t *out_shape, const void *grad_out, const int64_t *left) {
    pad_plan p = plan_for(ndim, in_shape, out_shape);
    int64_t n_last = in_shape[ndim - 1], o_last = out_shape[ndim - 1];
    if (o_last == 0 || p.out_slice == 0)
        return;
    int64_t rows = p.out_slice / o_last;
    bool f64 = dtype == CT_F64;
#pragma omp parallel for schedule(static) if (p.slices * p.out_slice >= PAR_THRESHOLD)
    for (int64_t s = 0; s < p.slices; s++) {
        for (int64_t r = 0; r < rows; r++) {
            int64_t src = s * p.in_slice + row_source(r, p.lead, ndim, in_shape, out_shape, left, reflect);
            int64_t dst = s * p.out_slice + r * o_last;
            for (int64_t o = 0; o < o_last; o++) {
                int64_t i = src + ct_pad_source(o, left[ndim - 1], n_last, reflect);
                if (f64)
                    ((double *)grad_in)[i] += ((const double *)grad_out)[dst + o];
                else
                    ((float *)grad_in)[i] += ((const float *)grad_out)[dst + o];
            }
        }
    }
}
