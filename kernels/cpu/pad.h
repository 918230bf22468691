/* ctensor — CPU reflect and replicate padding (constant padding is a fill and a copy). */
#ifndef CT_KERNELS_CPU_PAD_H
#define CT_KERNELS_CPU_PAD_H

#include "ctensor/types.h"
#include "kernels/cpu/strided.h"

/* The input coordinate that output coordinate o of a dim of n input elements reads, left
 * of them padded: o - left mirrored (reflect) or clamped (replicate) into [0, n). Shared by
 * the CPU and CUDA kernels. */
static CT_HOST_DEVICE int64_t ct_pad_source(int64_t o, int64_t left, int64_t n, bool reflect) {
    int64_t i = o - left;
    if (reflect) {
        if (i < 0)
            i = -i;
        if (i >= n)
            i = 2 * (n - 1) - i;
        return i;
    }
    return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

/* out (out_shape) from in (in_shape), both contiguous with `ndim` dims: output coordinate o
 * on dim d reads input coordinate i = o - left[d], mirrored (reflect: -i, 2 (n - 1) - i) or
 * clamped (replicate) into [0, n). The caller checks that one reflection suffices
 * (left, right < n), that padded dims are not empty, and that at least one dim is padded.
 * Moves elem_size bytes. */
void ct_cpu_pad(bool reflect, size_t elem_size, int ndim, const int64_t *in_shape, const void *in,
                const int64_t *out_shape, void *out, const int64_t *left);

/* The gradient: grad_in (in_shape, zeroed by the caller) += grad_out at the same map, F32
 * or F64. Deterministic: each input slice is accumulated by one thread in output order. */
void ct_cpu_pad_backward(bool reflect, ct_dtype dtype, int ndim, const int64_t *in_shape, void *grad_in,
                         const int64_t *out_shape, const void *grad_out, const int64_t *left);

#endif
