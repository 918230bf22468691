/* ctensor — CPU matrix multiplication (batched GEMM) on OpenBLAS. */
#ifndef CT_KERNELS_CPU_GEMM_H
#define CT_KERNELS_CPU_GEMM_H

#include "ctensor/types.h"
#include "kernels/cpu/strided.h"

/* One operand of a batched GEMM: a stack of (rows, cols) matrices in strided memory. */
typedef struct ct_gemm_operand {
    const void *data;                     /* element (0, 0) of the first matrix */
    int64_t row_stride, col_stride;       /* in elements, inside one matrix */
    int64_t batch_strides[CT_KMAX_DIMS];  /* in elements, per batch dim; 0 where broadcast */
} ct_gemm_operand;

/* True when a (rows, cols) matrix with these strides can be handed to BLAS as it lies:
 * row-major with a leading dimension (col_stride 1), or column-major, i.e. transposed
 * (row_stride 1). Size-1 dims accept any stride. Other layouts are packed by ct_cpu_gemm. */
bool ct_cpu_gemm_is_direct(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride);

/* c = a @ b for every batch index:
 *   a:  (batch..., M, K), b: (batch..., K, N), c: (batch..., M, N) contiguous, written.
 * F32 and F64 call cblas_sgemm / cblas_dgemm with the transposes folded into the call
 * (no copy when ct_cpu_gemm_is_direct holds); F16 and BF16 convert to f32, multiply with
 * f32 accumulation and round the result back. K = 0 gives zeros. M, N, K must fit in an int.
 * Returns false only when scratch memory could not be allocated (c is then undefined). */
bool ct_cpu_gemm(ct_dtype dtype, int batch_ndim, const int64_t *batch_shape, int64_t M, int64_t N, int64_t K,
                 const ct_gemm_operand *a, const ct_gemm_operand *b, void *c);

#endif
