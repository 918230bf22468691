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

/* matmul.cu: c = a @ b for every batch index on cuBLASLt (F32, F16, BF16; f32 accumulation;
 * TF32 for F32 only when allow_tf32). Operands as in kernels/cpu/gemm.h, with layouts for
 * which ct_cpu_gemm_is_direct holds (pack others first); c contiguous. */
struct ct_gemm_operand;
ct_status ct_cuda_gemm(ct_dtype dtype, int batch_ndim, const int64_t *batch_shape, int64_t M, int64_t N, int64_t K,
                       const struct ct_gemm_operand *a, const struct ct_gemm_operand *b, void *c, bool allow_tf32,
                       ct_stream *stream);

/* index.cu: the kernels of kernels/cpu/index.h with the same shapes, strides and rules (I32
 * indices, trusted: validate them first; F32, F16, BF16, I32, U8 — F64 is CPU only).
 * find_bad: the first index (row-major) outside [0, limit) into *found / *bad_value, using
 * `scratch` (8 bytes of device memory); it synchronizes the stream to read the answer.
 * scatter_add: atomic unless `deterministic` (then one thread per destination slice, in
 * the CPU's order). one_hot: out (shape..., num_classes) contiguous, written entirely. */
ct_status ct_cuda_index_find_bad(int ndim, const int64_t *shape, const int32_t *index, const int64_t *strides,
                                 int64_t limit, void *scratch, bool *found, int32_t *bad_value, ct_stream *stream);
ct_status ct_cuda_gather(size_t elem_size, int ndim, const int64_t *shape, int dim, void *out,
                         const int64_t *out_strides, const void *src, const int64_t *src_strides,
                         const int32_t *index, const int64_t *index_strides, ct_stream *stream);
ct_status ct_cuda_scatter_add(ct_dtype dtype, int ndim, const int64_t *shape, int dim, void *dst,
                              const int64_t *dst_strides, const void *src, const int64_t *src_strides,
                              const int32_t *index, const int64_t *index_strides, bool deterministic,
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
 * only deterministic algorithms when `deterministic`) and gives the workspace it needs;
 * the caller provides that much device memory to ct_cuda_conv2d, reusable by work queued
 * on `stream` after the call. */
struct ct_conv2d_geom;
struct ct_pool2d_geom;
typedef enum ct_cuda_conv_pass {
    CT_CUDA_CONV_FORWARD,        /* out y (N, O, oH, oW) from a = x, b = w */
    CT_CUDA_CONV_BACKWARD_DATA,  /* out gx (N, C, H, W) from a = gy, b = w */
    CT_CUDA_CONV_BACKWARD_FILTER /* out gw (O, C / groups, kH, kW) from a = x, b = gy */
} ct_cuda_conv_pass;
ct_status ct_cuda_conv2d_workspace(ct_cuda_conv_pass pass, ct_dtype dtype, const struct ct_conv2d_geom *g,
                                   bool deterministic, ct_stream *stream, size_t *bytes);
ct_status ct_cuda_conv2d(ct_cuda_conv_pass pass, ct_dtype dtype, const struct ct_conv2d_geom *g, bool deterministic,
                         const void *a, const void *b, void *out, void *workspace, size_t workspace_bytes,
                         ct_stream *stream);
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

#ifdef __cplusplus
}
#endif
#endif
