/* ctensor — CPU elementwise kernels with three operands: select (where) and the fused
 * backward of binary ops whose gradient needs the incoming gradient and both inputs. */
#ifndef CT_KERNELS_CPU_TERNARY_H
#define CT_KERNELS_CPU_TERNARY_H

#include "ctensor/types.h"

/* out = cond ? a : b over an N-d iteration space; cond is U8 (nonzero = true), a, b and
 * out have `dtype` (any dtype: elements are moved, not converted). Strides in elements,
 * 0 on broadcast dims. */
void ct_cpu_where(ct_dtype dtype, int ndim, const int64_t *shape, void *out, const int64_t *out_strides,
                  const uint8_t *cond, const int64_t *cond_strides, const void *a, const int64_t *a_strides,
                  const void *b, const int64_t *b_strides);

/* out = f(g, a, b) for a floating `dtype` (F16 and BF16 compute in float). */
typedef enum ct_ternary_op {
    /* Gradient of maximum(a, b) for a: g where a > b, g / 2 where a == b, 0 where a < b and
     * g when either is NaN (PyTorch's rule). With a and b swapped it is the gradient of
     * maximum for b, and of minimum for a. */
    CT_TER_MAX_BW,
    CT_TER_POW_BASE_BW, /* d a^b / da: g * b * a^(b-1), 0 where b == 0 */
    CT_TER_POW_EXP_BW,  /* d a^b / db: g * a^b * log(a), 0 where a == 0 and b >= 0 */
    CT_TER_NUM_OPS
} ct_ternary_op;

void ct_cpu_ternary(ct_ternary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                    const int64_t *out_strides, const void *g, const int64_t *g_strides, const void *a,
                    const int64_t *a_strides, const void *b, const int64_t *b_strides);

#endif
