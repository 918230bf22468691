/* ctensor — CPU elementwise kernels over broadcast, strided operands. */
#ifndef CT_KERNELS_CPU_ELEMENTWISE_H
#define CT_KERNELS_CPU_ELEMENTWISE_H

#include "ctensor/types.h"

/* out = f(a, b). Floating dtypes compute in float (F32, F16, BF16) or double (F64); I32 and
 * U8 compute in double and store saturated. `p0`, `p1` hold op parameters (alpha for
 * ADD_SCALED, negative slope, ...). The *_BW ops take (grad, saved) and return the input
 * gradient of the matching unary op in one pass; `saved` is the op's input x unless the
 * comment says it is the output y. Their parameters are those of the forward op. */
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
    /* fused backward of unary ops: (grad, saved) */
    CT_BIN_ABS_BW,        /* grad * sign(x) */
    CT_BIN_CLAMP_BW,      /* grad where p0 <= x <= p1, else 0 */
    CT_BIN_RELU_BW,       /* saved y: grad where y > 0 */
    CT_BIN_LEAKY_RELU_BW, /* p0 = negative slope */
    CT_BIN_ELU_BW,        /* p0 = alpha */
    CT_BIN_GELU_ERF_BW,
    CT_BIN_GELU_TANH_BW,
    CT_BIN_SILU_BW,
    CT_BIN_SIGMOID_BW,    /* saved y: grad * y * (1 - y) */
    CT_BIN_TANH_BW,       /* saved y: grad * (1 - y^2) */
    CT_BIN_SOFTPLUS_BW,   /* p0 = beta, p1 = threshold */
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
    CT_UN_CLAMP,      /* min(max(a, p0), p1); NaN stays NaN; p1 wins when p0 > p1 */
    /* activations (PyTorch's definitions) */
    CT_UN_RELU,
    CT_UN_LEAKY_RELU, /* p0 = negative slope */
    CT_UN_ELU,        /* p0 = alpha */
    CT_UN_GELU_ERF,   /* x * Phi(x) */
    CT_UN_GELU_TANH,  /* the tanh approximation */
    CT_UN_SILU,
    CT_UN_SIGMOID,
    CT_UN_TANH,
    CT_UN_SOFTPLUS,   /* p0 = beta, p1 = threshold */
    CT_UN_NUM_OPS
} ct_unary_op;

/* Iteration space (ndim, shape) and element strides of each operand (0 on broadcast dims). */
void ct_cpu_binary(ct_binary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                   const int64_t *out_strides, const void *a, const int64_t *a_strides, const void *b,
                   const int64_t *b_strides, double p0);
/* ct_cpu_binary for ops with two parameters (CLAMP_BW, SOFTPLUS_BW). */
void ct_cpu_binary_ex(ct_binary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                      const int64_t *out_strides, const void *a, const int64_t *a_strides, const void *b,
                      const int64_t *b_strides, double p0, double p1);
void ct_cpu_unary(ct_unary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                  const int64_t *out_strides, const void *a, const int64_t *a_strides, double p0, double p1);

#endif
