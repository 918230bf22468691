/* ctensor — tensor ops.
 *
 * Every op returns a new tensor (registered in the innermost scope) or NULL with an error
 * recorded (see error.h); a NULL input makes an op return NULL without replacing the first
 * error. Inputs of binary ops must share dtype and device; shapes broadcast with NumPy's
 * rules. Ops are differentiable in their floating inputs unless said otherwise.
 * In-place forms (trailing underscore) modify their first argument, bump its version and
 * return a status. They are not recorded by autograd, so while grad mode is on they refuse
 * (CT_ERR_AUTOGRAD) a destination that requires grad or is part of a graph, and a source
 * that requires grad (its gradient would be lost: use the out-of-place op, or update inside
 * ct_no_grad_begin/end as optimizers do). They refuse (CT_ERR_VALUE) a destination whose
 * elements share memory (an expanded tensor: stride 0 on a dim of size > 1) and a source
 * that shares memory with the destination without being laid out exactly like it
 * (a += transpose(a), a[1:] += a[:-1]); a += a, and disjoint views of one tensor, are fine.
 *
 * Integer dtypes (I32, U8): arithmetic, the scalar ops and the unary math compute in double
 * and convert the result on store: truncated toward zero (I32 7 / 2 is 3, -7 / 2 is -3),
 * saturated to the dtype's range (an I32 sum past INT32_MAX is INT32_MAX, 1 / 0 too; U8
 * 3 - 5 is 0, 200 + 100 is 255), and NaN stored as 0 (I32 0 / 0 is 0). ct_cast from a
 * floating dtype to an integer one follows the same rules. Comparisons of integers are
 * exact. The activations need a floating tensor (CT_ERR_DTYPE), except ct_relu; integer
 * tensors never require grad.
 */
#ifndef CTENSOR_OPS_H
#define CTENSOR_OPS_H

#include "types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- elementwise binary (broadcasting) ---------------------------------------------- */
ct_tensor *ct_add(const ct_tensor *a, const ct_tensor *b);
ct_tensor *ct_sub(const ct_tensor *a, const ct_tensor *b);
ct_tensor *ct_mul(const ct_tensor *a, const ct_tensor *b);
ct_tensor *ct_div(const ct_tensor *a, const ct_tensor *b);
ct_tensor *ct_pow(const ct_tensor *a, const ct_tensor *b);
ct_tensor *ct_maximum(const ct_tensor *a, const ct_tensor *b);
ct_tensor *ct_minimum(const ct_tensor *a, const ct_tensor *b);
/* a + alpha * b */
ct_tensor *ct_add_scaled(const ct_tensor *a, const ct_tensor *b, double alpha);
/* With a scalar on the right: a + s, a * s, a ** s. */
ct_tensor *ct_add_scalar(const ct_tensor *a, double s);
ct_tensor *ct_mul_scalar(const ct_tensor *a, double s);
ct_tensor *ct_pow_scalar(const ct_tensor *a, double exponent);

/* Comparisons: U8 results (0/1), not differentiable. */
ct_tensor *ct_eq(const ct_tensor *a, const ct_tensor *b);
ct_tensor *ct_ne(const ct_tensor *a, const ct_tensor *b);
ct_tensor *ct_lt(const ct_tensor *a, const ct_tensor *b);
ct_tensor *ct_le(const ct_tensor *a, const ct_tensor *b);
ct_tensor *ct_gt(const ct_tensor *a, const ct_tensor *b);
ct_tensor *ct_ge(const ct_tensor *a, const ct_tensor *b);

/* cond ? a : b, with cond U8 (nonzero = true); all three broadcast. */
ct_tensor *ct_where(const ct_tensor *cond, const ct_tensor *a, const ct_tensor *b);
/* t with `value` where mask (U8, broadcast to t) is nonzero. */
ct_tensor *ct_masked_fill(const ct_tensor *t, const ct_tensor *mask, double value);

/* ---- elementwise unary ------------------------------------------------------------- */
ct_tensor *ct_neg(const ct_tensor *a);
ct_tensor *ct_exp(const ct_tensor *a);
ct_tensor *ct_log(const ct_tensor *a);
ct_tensor *ct_sqrt(const ct_tensor *a);
ct_tensor *ct_rsqrt(const ct_tensor *a);
ct_tensor *ct_abs(const ct_tensor *a);
/* Clamp into [lo, hi]; pass -INFINITY / INFINITY for a one-sided clamp. */
ct_tensor *ct_clamp(const ct_tensor *a, double lo, double hi);

/* ---- activations ------------------------------------------------------------------- */
ct_tensor *ct_relu(const ct_tensor *a);
ct_tensor *ct_leaky_relu(const ct_tensor *a, double negative_slope);
ct_tensor *ct_elu(const ct_tensor *a, double alpha);
typedef enum ct_gelu_approx { CT_GELU_ERF = 0, CT_GELU_TANH = 1 } ct_gelu_approx;
ct_tensor *ct_gelu(const ct_tensor *a, ct_gelu_approx approximate);
ct_tensor *ct_silu(const ct_tensor *a);
ct_tensor *ct_sigmoid(const ct_tensor *a);
ct_tensor *ct_tanh(const ct_tensor *a);
/* log(1 + exp(beta x)) / beta, linear above `threshold` (PyTorch: beta 1, threshold 20). */
ct_tensor *ct_softplus(const ct_tensor *a, double beta, double threshold);

/* ---- reductions ----------------------------------------------------------------------
 * `dims` lists the dimensions to reduce (negative allowed, no repeats); ndims = 0 with
 * dims = NULL reduces over all of them. `keepdim` keeps reduced dims with size 1. */
ct_tensor *ct_sum(const ct_tensor *a, const int *dims, int ndims, bool keepdim);
ct_tensor *ct_mean(const ct_tensor *a, const int *dims, int ndims, bool keepdim);
/* Variance / standard deviation with `correction` (1 = unbiased, as PyTorch's default). */
ct_tensor *ct_var(const ct_tensor *a, const int *dims, int ndims, int correction, bool keepdim);
ct_tensor *ct_std(const ct_tensor *a, const int *dims, int ndims, int correction, bool keepdim);
ct_tensor *ct_logsumexp(const ct_tensor *a, const int *dims, int ndims, bool keepdim);
/* Max/min over one dim: the values, and (when `indices` is not NULL) the I32 positions of
 * the first maximum. The gradient goes to that position. */
ct_tensor *ct_max(const ct_tensor *a, int dim, bool keepdim, ct_tensor **indices);
ct_tensor *ct_min(const ct_tensor *a, int dim, bool keepdim, ct_tensor **indices);
/* Max/min over every element (0-dim). */
ct_tensor *ct_max_all(const ct_tensor *a);
ct_tensor *ct_min_all(const ct_tensor *a);
ct_tensor *ct_argmax(const ct_tensor *a, int dim, bool keepdim); /* I32 */
ct_tensor *ct_argmin(const ct_tensor *a, int dim, bool keepdim); /* I32 */

/* ---- linear algebra ------------------------------------------------------------------
 * matmul follows NumPy: 1-D operands are promoted and the added dim removed; batch dims
 * broadcast. Transposed (non-contiguous) inputs are folded into the GEMM call. */
ct_tensor *ct_matmul(const ct_tensor *a, const ct_tensor *b);
/* Batched (B, M, K) x (B, K, N), no broadcasting. */
ct_tensor *ct_bmm(const ct_tensor *a, const ct_tensor *b);
/* Whether F32 products on CUDA may use TF32 tensor cores (10-bit mantissa inputs, f32
 * accumulation: about 1e-3 relative error, several times faster), like PyTorch's
 * torch.backends.cuda.matmul.allow_tf32. Off by default; process-wide; F16/BF16 products
 * and the CPU are not affected. */
void ct_matmul_set_allow_tf32(bool allow);
bool ct_matmul_allow_tf32(void);

/* ---- softmax ------------------------------------------------------------------------
 * exp(x - max) / sum(exp(x - max)) along `dim` (log_softmax: (x - max) - log(sum)), in
 * float (F64 in double). Non-finite inputs give what PyTorch gives, on every device and
 * whatever the layout: a -inf element gives 0 (log_softmax: -inf) when its row holds a
 * finite element; a row (the elements along `dim`) that holds a NaN or a +inf, or that is
 * all -inf, is NaN throughout. ct_logsumexp differs, like PyTorch's: +inf for a row
 * holding +inf and no NaN, -inf for an all -inf row. */
ct_tensor *ct_softmax(const ct_tensor *a, int dim);
ct_tensor *ct_log_softmax(const ct_tensor *a, int dim);

/* ---- dtype ------------------------------------------------------------------------- */
/* Convert (round to nearest even for F16/BF16; float to int truncates toward zero).
 * Differentiable between floating dtypes. A new handle sharing `a`'s data if same dtype. */
ct_tensor *ct_cast(const ct_tensor *a, ct_dtype dtype);

/* ---- joining and splitting ---------------------------------------------------------- */
ct_tensor *ct_cat(ct_tensor *const *tensors, int n, int dim);
ct_tensor *ct_stack(ct_tensor *const *tensors, int n, int dim);
/* Views of `a` split along `dim` into pieces of `split_size` (the last may be smaller);
 * writes up to `max_out` pointers to `out` and returns the number of pieces (-1 on error). */
int ct_split(ct_tensor *a, int64_t split_size, int dim, ct_tensor **out, int max_out);
/* `chunks` pieces of equal size ceil(n / chunks) (the last may be smaller; fewer when
 * the size does not allow), like torch.chunk. Returns the number written (-1 on error). */
int ct_chunk(ct_tensor *a, int chunks, int dim, ct_tensor **out, int max_out);

/* ---- indexing --------------------------------------------------------------------------
 * Index tensors are I32; out-of-range indices are an error (CT_ERR_DIM), never a read. */
ct_tensor *ct_index_select(const ct_tensor *a, int dim, const ct_tensor *index);
/* out[i][j][k] = a[i][index[i][j][k]][k] for dim = 1 (torch.gather). */
ct_tensor *ct_gather(const ct_tensor *a, int dim, const ct_tensor *index);
/* A copy of `a` with src added at index along dim (torch.scatter_add). */
ct_tensor *ct_scatter_add(const ct_tensor *a, int dim, const ct_tensor *index, const ct_tensor *src);
/* (..., num_classes) of `dtype` from I32 labels in [0, num_classes). */
ct_tensor *ct_one_hot(const ct_tensor *labels, int num_classes, ct_dtype dtype);
/* Deterministic mode (process-wide, off by default), like PyTorch's
 * torch.use_deterministic_algorithms. On CUDA, scatter_add (and the gradients of
 * index_select and gather, which are scatter-adds) otherwise adds with atomics, in an
 * order that varies from run to run; in deterministic mode each destination element is
 * summed by one thread in source order, the CPU's order (same results), which is slower
 * when few destination slices share the work. CPU kernels are always deterministic.
 * Note: on CUDA, indexing ops read their indices back to check them (one synchronization
 * per call) before they write anything. */
void ct_set_deterministic(bool on);
bool ct_deterministic(void);

/* ---- in place ------------------------------------------------------------------------ */
ct_status ct_add_(ct_tensor *a, const ct_tensor *b);        /* a += b (b broadcast to a) */
ct_status ct_add_scaled_(ct_tensor *a, const ct_tensor *b, double alpha);
ct_status ct_mul_(ct_tensor *a, const ct_tensor *b);
ct_status ct_mul_scalar_(ct_tensor *a, double s);
ct_status ct_fill_(ct_tensor *a, double value);
/* Copy src into a (broadcast, cast to a's dtype, any device). */
ct_status ct_copy_(ct_tensor *a, const ct_tensor *src);

#ifdef __cplusplus
}
#endif
#endif
