/* ctensor — C prototypes of the CUDA kernel launchers, called by ops/ and runtime/.
 *
 * Conventions for every launcher: raw device pointers, shapes and strides in elements (the
 * shape written next to each pointer), the stream to enqueue on, no synchronization, and a
 * ct_status return: a failed launch or library call is a CT_ERR_CUDA error naming the call.
 * The declarations are visible in every build; calls are compiled only with CT_HAVE_CUDA
 * (see CT_ON_CUDA in runtime/internal.h). One .cu file per op family implements them. */
#ifndef CT_KERNELS_CUDA_LAUNCH_H
#define CT_KERNELS_CUDA_LAUNCH_H

#include "ctensor/stream.h"
#include "ctensor/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* copy.cu: dst = (dst_dtype) src over an N-d index space (same rules as the CPU:
 * RNE for F16/BF16, float -> int truncates and saturates, NaN -> 0). */
ct_status ct_cuda_copy_cast(int ndim, const int64_t *shape, void *dst, ct_dtype dst_dtype, const int64_t *dst_strides,
                            const void *src, ct_dtype src_dtype, const int64_t *src_strides, ct_stream *stream);
/* copy.cu: dst[i] = value over a strided N-d space. */
ct_status ct_cuda_fill(int ndim, const int64_t *shape, void *dst, ct_dtype dtype, const int64_t *strides, double value,
                       ct_stream *stream);

/* random.cu: the Philox distributions of random.h, bit-identical to the CPU for the same
 * (seed, offset). kind: 0 uniform(p0, p1), 1 normal(mean p0, std p1), 2 bernoulli(p0). */
ct_status ct_cuda_random(int kind, void *out, ct_dtype dtype, int64_t n, uint64_t seed, uint64_t offset, double p0,
                         double p1, ct_stream *stream);
/* random.cu: ct_randperm's permutation of 0..n-1 (n < 2^31), the CPU's bit for bit: Philox
 * words seed/offset 0..n-1 sorted stably with their indices. `workspace` is device memory of
 * ct_cuda_randperm_workspace(n) bytes, free for reuse by work queued after the call. */
ct_status ct_cuda_randperm_workspace(int64_t n, size_t *bytes);
ct_status ct_cuda_randperm(int32_t *out, int64_t n, uint64_t seed, uint64_t offset, void *workspace,
                           size_t workspace_bytes, ct_stream *stream);

/* matmul.cu: c = a @ b for every batch index on cuBLASLt (F32, F16, BF16; f32 accumulation;
 * TF32 for F32 only when allow_tf32). Operands as in kernels/cpu/gemm.h, with layouts for
 * which ct_cpu_gemm_is_direct holds (pack others first); c contiguous. */
struct ct_gemm_operand;
ct_status ct_cuda_gemm(ct_dtype dtype, int batch_ndim, const int64_t *batch_shape, int64_t M, int64_t N, int64_t K,
                       const struct ct_gemm_operand *a, const struct ct_gemm_operand *b, void *c, bool allow_tf32,
                       ct_stream *stream);

/* index.cu: the kernels of kernels/cpu/index.h with the same shapes, strides and rules (I32
 * indices; F32, F16, BF16, I32, U8 — F64 is CPU only), except that indices are checked on
 * the GPU: one outside [0, limit) (the size of `dim` in the indexed tensor; num_classes for
 * one_hot) is never used to touch memory (gather writes 0 there, scatter_add and one_hot skip
 * it) and is reported, as `op`'s error, at the next synchronization (device_error.cuh). `op`
 * is a string literal. scatter_add: atomic unless `deterministic` (then one thread per
 * destination slice, in the CPU's order). one_hot: out (shape..., num_classes) contiguous,
 * written entirely. */
ct_status ct_cuda_gather(const char *op, size_t elem_size, int ndim, const int64_t *shape, int dim, void *out,
                         const int64_t *out_strides, const void *src, const int64_t *src_strides,
                         const int32_t *index, const int64_t *index_strides, int64_t limit, ct_stream *stream);
ct_status ct_cuda_scatter_add(const char *op, ct_dtype dtype, int ndim, const int64_t *shape, int dim, void *dst,
                              const int64_t *dst_strides, const void *src, const int64_t *src_strides,
                              const int32_t *index, const int64_t *index_strides, int64_t limit, bool deterministic,
                              ct_stream *stream);
ct_status ct_cuda_one_hot(ct_dtype dtype, int ndim, const int64_t *shape, const int32_t *labels,
                          const int64_t *strides, int64_t num_classes, void *out, ct_stream *stream);

/* elementwise.cu: the kernels of kernels/cpu/elementwise.h and kernels/cpu/ternary.h with
 * the same ops, parameters and results: F32, F16 and BF16 compute in float (F16/BF16
 * rounded once, to nearest even), I32 and U8 in double, stored truncated and saturated (the
 * fused backward ops and the activations other than relu are floating only; F64 is CPU
 * only). Comparisons write U8. ct_cuda_binary takes both parameters (ct_cpu_binary and
 * ct_cpu_binary_ex in one). Strides in elements, 0 on broadcast dims; `cond` is U8 and
 * `where` moves elements of any dtype unconverted. */
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/ternary.h"
ct_status ct_cuda_binary(ct_binary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                         const int64_t *out_strides, const void *a, const int64_t *a_strides, const void *b,
                         const int64_t *b_strides, double p0, double p1, ct_stream *stream);
ct_status ct_cuda_unary(ct_unary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                        const int64_t *out_strides, const void *a, const int64_t *a_strides, double p0, double p1,
                        ct_stream *stream);
ct_status ct_cuda_where(ct_dtype dtype, int ndim, const int64_t *shape, void *out, const int64_t *out_strides,
                        const uint8_t *cond, const int64_t *cond_strides, const void *a, const int64_t *a_strides,
                        const void *b, const int64_t *b_strides, ct_stream *stream);
ct_status ct_cuda_ternary(ct_ternary_op op, ct_dtype dtype, int ndim, const int64_t *shape, void *out,
                          const int64_t *out_strides, const void *g, const int64_t *g_strides, const void *a,
                          const int64_t *a_strides, const void *b, const int64_t *b_strides, ct_stream *stream);

/* optim.cu: optimizer updates and gradient clipping fused over many F32 tensors (a
 * "multi-tensor apply": the tensors' pointers and sizes travel in the kernel's argument
 * struct, CT_CUDA_OPTIM_TENSORS_PER_LAUNCH per launch, so a typical model's step is one
 * launch). The rules and the order of floating-point operations are those of the CPU loops
 * in nn/optim_cpu.c (PyTorch's single-tensor forms); ct_optim_hyper and ct_optim_slot
 * describe an update for both backends. */
#define CT_CUDA_OPTIM_TENSORS_PER_LAUNCH 32
typedef enum ct_optim_rule { CT_RULE_SGD, CT_RULE_ADAM, CT_RULE_ADAMW, CT_RULE_RMSPROP, CT_RULE_ADAGRAD } ct_optim_rule;
typedef struct ct_optim_hyper {
    ct_optim_rule rule;
    double lr, weight_decay;
    double momentum, dampening; /* SGD; RMSprop's momentum */
    double beta1, beta2;        /* Adam, AdamW */
    double alpha;               /* RMSprop's smoothing constant */
    double eps;
    double lr_decay, initial_accumulator_value; /* Adagrad (used on the host) */
    bool nesterov, amsgrad, centered;
} ct_optim_hyper;
typedef struct ct_optim_slot {
    void *param;      /* (numel) updated in place */
    const void *grad; /* (numel) */
    /* SGD {momentum_buffer}; Adam(W) {exp_avg, exp_avg_sq, max_exp_avg_sq};
     * RMSprop {square_avg, momentum_buffer, grad_avg}; Adagrad {sum}; NULL where unused. */
    void *state[3];
    int64_t numel;
    /* Per tensor: Adam(W) {lr / (1 - beta1^t), sqrt(1 - beta2^t)}; Adagrad
     * {lr / (1 + (t - 1) lr_decay)}; SGD {1 when the momentum buffer starts as the gradient}. */
    double scalar[2];
} ct_optim_slot;
ct_status ct_cuda_optim_step(const ct_optim_hyper *hyper, int n, const ct_optim_slot *slots, ct_stream *stream);
/* optim.cu: partial sums for a global gradient norm over n F32 tensors: partials (device
 * memory, n * CT_CUDA_NORM_BLOCKS doubles) gets, at [i * CT_CUDA_NORM_BLOCKS + b], block b's
 * sum of |x|^norm_type over tensor i, or its largest |x| when norm_type is infinite (NaN
 * propagates). Sum (or max) them on the host in order: the result is deterministic. */
#define CT_CUDA_NORM_BLOCKS 64
ct_status ct_cuda_multi_norm(int n, const void *const *tensors, const int64_t *numel, double norm_type,
                             double *partials, ct_stream *stream);
/* optim.cu: x = clamp(x * scale, -clip, clip) in place over n F32 tensors (clip = INFINITY
 * scales only; scale = 1 clamps only). */
ct_status ct_cuda_multi_scale_clamp(int n, void *const *tensors, const int64_t *numel, double scale, double clip,
                                    ct_stream *stream);

/* conv.cu: 2-D convolution on cuDNN for F32, F16 and BF16 (f32 accumulation; F32 in plain
 * FMA math, without TF32), and pooling kernels with the CPU's window rules. Geometries as
 * in kernels/cpu/conv.h and kernels/cpu/pool.h; operands NCHW and contiguous. A
 * convolution pass takes two calls: ct_cuda_conv2d_workspace picks the algorithm (timed by
 * cudnnFind* once per pass, dtype, geometry, device and determinism, like cudnn.benchmark;
 * only deterministic algorithms when `deterministic`) and fills *plan with it and the
 * workspace it needs; the caller provides that much device memory and the same plan to
 * ct_cuda_conv2d, which runs that algorithm (the workspace is reusable by work queued on
 * `stream` after the call). The plan travels between the calls because a second choice
 * could differ from the first (another thread's timing, a full cache, a graph capture).
 * cuDNN takes at most INT_MAX elements per tensor: larger batches are the caller's to split
 * (ct_conv2d_split_batch in kernels/cpu/conv.h; ops/conv.c sums the chunks' weight
 * gradients in F32). */
struct ct_conv2d_geom;
struct ct_pool2d_geom;
typedef enum ct_cuda_conv_pass {
    CT_CUDA_CONV_FORWARD,        /* out y (N, O, oH, oW) from a = x, b = w */
    CT_CUDA_CONV_BACKWARD_DATA,  /* out gx (N, C, H, W) from a = gy, b = w */
    CT_CUDA_CONV_BACKWARD_FILTER /* out gw (O, C / groups, kH, kW) from a = x, b = gy */
} ct_cuda_conv_pass;
/* The cuDNN algorithm of the pass and its math type (a cudnnConvolution*Algo_t and a
 * cudnnMathType_t, as ints so that this header needs no cuDNN), and its workspace bytes. */
typedef struct ct_cuda_conv_plan {
    int algo, math;
    size_t workspace;
} ct_cuda_conv_plan;
ct_status ct_cuda_conv2d_workspace(ct_cuda_conv_pass pass, ct_dtype dtype, const struct ct_conv2d_geom *g,
                                   bool deterministic, ct_stream *stream, ct_cuda_conv_plan *plan);
ct_status ct_cuda_conv2d(ct_cuda_conv_pass pass, ct_dtype dtype, const struct ct_conv2d_geom *g,
                         const ct_cuda_conv_plan *plan, const void *a, const void *b, void *out, void *workspace,
                         size_t workspace_bytes, ct_stream *stream);
/* conv.cu: out (C) = the sum of t (N, C, L) over N and L (one block per channel, fixed
 * order); y (N, C, L) += bias (C). */
ct_status ct_cuda_conv2d_channel_sum(ct_dtype dtype, int64_t N, int64_t C, int64_t L, const void *t, void *out,
                                     ct_stream *stream);
ct_status ct_cuda_conv2d_add_bias(ct_dtype dtype, int64_t N, int64_t C, int64_t L, void *y, const void *bias,
                                  ct_stream *stream);
/* conv.cu: the pooling kernels of kernels/cpu/pool.h, same arguments and results. The
 * backward kernels gather (one thread per input element), so they need no atomics and
 * repeat bit for bit. */
ct_status ct_cuda_max_pool2d_forward(ct_dtype dtype, const struct ct_pool2d_geom *g, const void *x, void *y,
                                     int32_t *indices, ct_stream *stream);
ct_status ct_cuda_max_pool2d_backward(ct_dtype dtype, const struct ct_pool2d_geom *g, const void *gy,
                                      const int32_t *indices, void *gx, ct_stream *stream);
ct_status ct_cuda_avg_pool2d_forward(ct_dtype dtype, const struct ct_pool2d_geom *g, const void *x, void *y,
                                     ct_stream *stream);
ct_status ct_cuda_avg_pool2d_backward(ct_dtype dtype, const struct ct_pool2d_geom *g, const void *gy, void *gx,
                                      ct_stream *stream);

/* norm.cu: batch norm on cuDNN (spatial mode) over x (N, C, S) contiguous (F32, F16, BF16);
 * weight, bias, running stats and the saved statistics are F32 (C) contiguous (weight and
 * bias required: pass ones and zeros). Training normalizes with the batch statistics, saves
 * mean and 1/sqrt(var + eps) and, when running_mean is not NULL, blends them into the running
 * stats with `momentum` (unbiased variance); evaluation normalizes with the running stats
 * and saves them (as mean and 1/sqrt(var + eps)) for the backward. */
ct_status ct_cuda_batch_norm_forward(ct_dtype dtype, int64_t N, int64_t C, int64_t S, const void *x,
                                     const float *weight, const float *bias, float *running_mean, float *running_var,
                                     bool training, double momentum, double eps, float *save_mean, float *save_invstd,
                                     void *y, ct_stream *stream);
/* norm.cu: its gradients: dx (N, C, S) of dtype, dweight and dbias F32 (C), all written.
 * Training: cuDNN's backward; evaluation: dx = g * weight * invstd. */
ct_status ct_cuda_batch_norm_backward(ct_dtype dtype, int64_t N, int64_t C, int64_t S, const void *x, const void *g,
                                      const float *weight, const float *save_mean, const float *save_invstd,
                                      bool training, double eps, void *dx, float *dweight, float *dbias,
                                      ct_stream *stream);
/* norm.cu: layer norm of x (R, D) contiguous over each row (F32, F16, BF16 data; F32
 * weight and bias (D) or NULL; F32 row statistics (R)), as kernels/cpu/norm.h. The
 * backward's dx (skipped when NULL) and parameter gradients (each skipped when NULL), the
 * latter through `workspace`: 2 * CT_CUDA_LN_CHUNKS * D floats of device memory. */
#define CT_CUDA_LN_CHUNKS 64
ct_status ct_cuda_layer_norm_forward(ct_dtype dtype, int64_t R, int64_t D, const void *x, const float *weight,
                                     const float *bias, double eps, float *mean, float *rstd, void *y,
                                     ct_stream *stream);
ct_status ct_cuda_layer_norm_backward(ct_dtype dtype, int64_t R, int64_t D, const void *x, const void *g,
                                      const float *mean, const float *rstd, const float *weight, void *dx,
                                      float *dweight, float *dbias, float *workspace, ct_stream *stream);

/* dropout.cu: ct_cpu_dropout (kernels/cpu/dropout.h) on the GPU for F32, F16 and BF16, bit
 * for bit: the same Philox words, comparisons and float products. */
ct_status ct_cuda_dropout(ct_dtype dtype, int64_t n, const void *x, void *y, uint64_t seed, uint64_t offset,
                          double keep_prob, double scale, ct_stream *stream);

/* embedding.cu: out (n, D) contiguous = rows index[i] of weight (V rows; strides in
 * elements, any element size). The backward adds g (n, D) F32 contiguous into the zeroed F32
 * dweight (V, D) with atomics, skipping rows equal to padding_idx (-1: none). Indices outside
 * [0, V) are checked like index.cu's: zeros in the forward, skipped in the backward, reported
 * as ct_embedding's at the next synchronization. */
ct_status ct_cuda_embedding_forward(size_t elem_size, int64_t n, int64_t D, int64_t V, const void *weight,
                                    int64_t row_stride, int64_t col_stride, const int32_t *index, void *out,
                                    ct_stream *stream);
ct_status ct_cuda_embedding_backward(int64_t n, int64_t D, int64_t V, const int32_t *index, const float *g,
                                     int padding_idx, float *dweight, ct_stream *stream);

/* pad.cu: ct_cpu_pad (kernels/cpu/pad.h) on the GPU, same arguments and checks by the
 * caller; moves elem_size (1, 2, 4 or 8) bytes per element. The backward writes every
 * element of grad_in (in_shape, contiguous, no zeroing needed) from grad_out (out_shape,
 * contiguous), both of dtype F32, F16 or BF16: each input element gathers the gradients of
 * the outputs that read it in row-major output order, adding in F32 and rounding once, so
 * the result is deterministic and is the CPU's (no atomics). */
ct_status ct_cuda_pad(bool reflect, size_t elem_size, int ndim, const int64_t *in_shape, const void *in,
                      const int64_t *out_shape, void *out, const int64_t *left, ct_stream *stream);
ct_status ct_cuda_pad_backward(bool reflect, ct_dtype dtype, int ndim, const int64_t *in_shape, void *grad_in,
                               const int64_t *out_shape, const void *grad_out, const int64_t *left, ct_stream *stream);

/* loss.cu: the losses of kernels/cpu/loss.h on the GPU (F32, F16, BF16 inputs; F32 class
 * weights; contiguous operands), per-sample and per-element results in F32.
 * A target outside [0, C) that is not ignore_index is treated like ignore_index (no memory
 * is read through it) and reported as ct_cross_entropy's / ct_nll_loss's error at the next
 * synchronization (device_error.cuh). The backward launchers take the output gradient g of the input's dtype with g_stride 0 (a
 * reduced loss) or 1, and divide it by *divisor (device memory; NULL for 1) or multiply it
 * by `scale`. */
#include "kernels/cpu/loss.h"
ct_status ct_cuda_cross_entropy_forward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const void *logits,
                                        const int32_t *targets, const float *weight, int ignore_index,
                                        double smoothing, float *lse, float *loss, float *tw, ct_stream *stream);
ct_status ct_cuda_cross_entropy_backward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const void *logits,
                                         const int32_t *targets, const float *weight, int ignore_index,
                                         double smoothing, const float *lse, const void *g, int64_t g_stride,
                                         const float *divisor, void *grad, ct_stream *stream);
ct_status ct_cuda_nll_forward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const void *input,
                              const int32_t *targets, const float *weight, int ignore_index, float *loss, float *tw,
                              ct_stream *stream);
ct_status ct_cuda_nll_backward(ct_dtype dtype, int64_t N, int64_t C, int64_t K, const int32_t *targets,
                               const float *weight, int ignore_index, const void *g, int64_t g_stride,
                               const float *divisor, void *grad, ct_stream *stream);
/* out (dtype, when not NULL) and/or values (F32, when not NULL) per element. */
ct_status ct_cuda_pointwise_loss(ct_pointwise_loss kind, ct_dtype dtype, int64_t n, const void *x, const void *y,
                                 ct_dtype wdtype, const void *w, const void *pw, double param, void *out,
                                 float *values, ct_stream *stream);
ct_status ct_cuda_pointwise_loss_backward(ct_pointwise_loss kind, ct_dtype dtype, int64_t n, const void *x,
                                          const void *y, ct_dtype wdtype, const void *w, const void *pw, double param,
                                          const void *g, int64_t g_stride, double scale, void *dx, void *dy,
                                          ct_stream *stream);
/* loss.cu: *out (0-dim, out_dtype) = scale * sum(values) / (weights ? sum(weights) : 1), and
 * *weight_sum = sum(weights) when both are given; in two fixed stages, through `workspace`
 * (2 * CT_CUDA_LOSS_BLOCKS floats of device memory). */
#define CT_CUDA_LOSS_BLOCKS 256
ct_status ct_cuda_loss_sum(ct_dtype out_dtype, int64_t n, const float *values, const float *weights, double scale,
                           void *out, float *weight_sum, float *workspace, ct_stream *stream);

/* reduce.cu: the reductions of kernels/cpu/reduce.h on the GPU, with the same arguments
 * and results (out: contiguous over the kept dims, in order), for F32, F16 and BF16 (float
 * accumulation) and I32 (sum, max and min, accumulated exactly). Long reductions over few
 * outputs are split into partials that a second kernel merges in a fixed order, so results
 * repeat bit for bit; the partials live in `workspace`, device memory of the size that
 * ct_cuda_reduce_workspace gives for the same dtype, shape, input pointer, strides and mask
 * (NULL when that is 0). The workspace may be reused by work queued after the call. */
#include "kernels/cpu/reduce.h"
ct_status ct_cuda_reduce_workspace(ct_dtype dtype, int ndim, const int64_t *shape, const void *in,
                                   const int64_t *in_strides, const bool *reduce_mask, size_t *bytes);
ct_status ct_cuda_reduce(ct_reduce_op op, ct_dtype dtype, int ndim, const int64_t *shape, const void *in,
                         const int64_t *in_strides, const bool *reduce_mask, void *out, double scale, void *workspace,
                         ct_stream *stream);
ct_status ct_cuda_reduce_var(ct_dtype dtype, int ndim, const int64_t *shape, const void *in, const int64_t *in_strides,
                             const bool *reduce_mask, void *out, double correction, bool take_sqrt, void *workspace,
                             ct_stream *stream);
/* Its workspace is ct_cuda_reduce_workspace's for the mask with only `dim` set. */
ct_status ct_cuda_reduce_arg(ct_reduce_op op, ct_dtype dtype, int ndim, const int64_t *shape, const void *in,
                             const int64_t *in_strides, int dim, void *values, int32_t *indices, void *workspace,
                             ct_stream *stream);

/* softmax.cu: ct_cpu_softmax and ct_cpu_softmax_backward (kernels/cpu/softmax.h) on the GPU
 * for F32, F16 and BF16, computing in float; out / grad_in contiguous with the input's shape. */
ct_status ct_cuda_softmax(ct_dtype dtype, bool take_log, int ndim, const int64_t *shape, const void *in,
                          const int64_t *in_strides, int dim, void *out, ct_stream *stream);
ct_status ct_cuda_softmax_backward(ct_dtype dtype, bool take_log, int ndim, const int64_t *shape, const void *y,
                                   const int64_t *y_strides, const void *g, const int64_t *g_strides, int dim,
                                   void *grad_in, ct_stream *stream);

#ifdef __cplusplus
}
#endif
#endif
