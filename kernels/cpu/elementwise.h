/* ctensor — CPU elementwise kernels over broadcast, strided operands. */
#ifndef CT_KERNELS_CPU_ELEMENTWISE_H
#define CT_KERNELS_CPU_ELEMENTWISE_H

#include "ctensor/types.h"

/* out = f(a, b). Floating dtypes compute in float (F32, F16, BF16) or double (F64); I32 and
 * U8 compute in double and store saturated. `p` holds op parameters (alpha for ADD_SCALED,
 * negative slope, ...). The *_BW ops take (grad, saved) and return the input gradient. */
typedef enum ct_binary_op {
    CT_BIN_ADD,
    CT_BIN_SUB,
    CT_BIN_MUL,
    CT_BIN_DIV,
    CT_BIN_POW,
    CT_BIN_MAX,
    CT_BIN_MIN,
    CT_BIN_ADD_SCALED, /* a + p0 * b */
    /* comparisons: the output dtype is U8 */
    CT_BIN_EQ,
    CT_BIN_NE,
    CT_BIN_LT,
    CT_BIN_LE,
    CT_BIN_GT,
    CT_BIN_GE,
    CT_BIN_NUM_OPS
} ct_binary_op;

typedef enum ct_unary_op {
    CT_UN_NEG,
    CT_UN_EXP,
    CT_UN_LOG,
    CT_UN_SQRT,
    CT_UN_RSQRT,
    CT_UN_ABS,
    CT_UN_ADD_SCALAR, /* a + p0 */
    CT_UN_MUL_SCALAR, /* a * p0 */
    CT_UN_POW_SCALAR, /* a ** p0 */
    CT_UN_NUM_OPS
} ct_unary_op;

/* Iteration space (ndim, shape) and element strides of each operand (0 on broadcast dims). */
void ct_cpu_binary(ct_binary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                   const int64_t *out_strides, const void *a, const int64_t *a_strides, const void *b,
                   const int64_t *b_strides, double p0);
void ct_cpu_unary(ct_unary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                  const int64_t *out_strides, const void *a, const int64_t *a_strides, double p0, double p1);

#endif
