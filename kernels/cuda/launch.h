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

#ifdef __cplusplus
}
#endif
#endif
