/* Batched GEMM on OpenBLAS.
 *
 * An operand whose matrices are row-major (unit column stride) or column-major (unit row
 * stride) goes to BLAS as it lies, with its leading dimension and CblasTrans for the
 * column-major case; a broadcast batch is a batch stride of 0 and costs nothing. Only
 * other layouts (both strides non-unit, overlapping rows, stride-0 rows) are packed, one
 * matrix at a time. F16 / BF16 have no BLAS routine: each matrix is widened to f32,
 * multiplied by sgemm (f32 accumulation) and the product rounded back.
 *
 * Threads: a large product runs on OpenBLAS's own threads (OPENBLAS_NUM_THREADS). OpenBLAS
 * runs products with M*N*K <= 65536 * 4 on one thread (GEMM_MULTITHREAD_THRESHOLD in
 * interface/gemm.c), so a batch of such small products is spread over OpenMP threads
 * instead, each thread making its own single-threaded BLAS calls on disjoint outputs, once
 * the whole batch is worth a fork (as much work as one product OpenBLAS would thread).
 * Measured with OpenBLAS 0.3.21 on 2 cores shared with other jobs, best of 31: 512 batches
 * of 32x32x32 take 0.37 ms serial and 0.21 ms over 2 threads in f32 (1.23 / 0.79 ms in
 * bf16, whose conversions also split). While the second core is busy elsewhere any
 * OpenMP region, this one included, waits for a scheduler tick (4-8 ms); that is the
 * cost of OpenMP on an oversubscribed machine, not of this loop. */
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/half.h"

#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define CT_GEMM_SMALL_MNK (65536.0 * 4.0)
#define CT_GEMM_CONVERT_PAR (1 << 16)

/* BLAS view of one matrix: data, whether it is stored transposed, leading dimension. */
static bool blas_layout(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride, bool *trans,
                        int64_t *ld) {
    int64_t min_rows = rows > 1 ? rows : 1, min_cols = cols > 1 ? cols : 1;
    if ((cols == 1 || col_stride == 1) && (rows == 1 || row_stride >= min_cols)) {
        *trans = false;
        *ld = rows == 1 ? min_cols : row_stride;
    } else if ((rows == 1 || row_stride == 1) && (cols == 1 || col_stride >= min_rows)) {
        *trans = true;
        *ld = cols == 1 ? min_rows : col_stride;
    } else {
        return false;
    }
    return *ld <= INT_MAX;
}

bool ct_cpu_gemm_is_direct(int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
    bool trans;
    int64_t ld;
    return blas_layout(rows, cols, row_stride, col_stride, &trans, &ld);
}

/* Copy a strided (rows, cols) matrix into a contiguous row-major buffer. */
static void pack(size_t es, int64_t rows, int64_t cols, const char *src, int64_t rs, int64_t cs, char *dst) {
    for (int64_t r = 0; r < rows; r++) {
        const char *row = src + (size_t)(r * rs) * es;
        char *out = dst + (size_t)(r * cols) * es;
        if (cs == 1) {
            memcpy(out, row, (size_t)cols * es);
        } else if (es == 4) {
            for (int64_t j = 0; j < cols; j++)
                ((uint32_t *)out)[j] = ((const uint32_t *)row)[j * cs];
        } else {
            for (int64_t j = 0; j < cols; j++)
                ((uint64_t *)out)[j] = ((const uint64_t *)row)[j * cs];
        }
    }
}

/* Widen a strided F16/BF16 (rows, cols) matrix into a contiguous f32 buffer. */
static void widen(ct_dtype dtype, int64_t rows, int64_t cols, const uint16_t *src, int64_t rs, int64_t cs,
                  float *dst) {
#pragma omp parallel for schedule(static) if (rows * cols >= CT_GEMM_CONVERT_PAR)
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *row = src + r * rs;
        float *out = dst + r * cols;
        if (dtype == CT_F16)
            for (int64_t j = 0; j < cols; j++)
                out[j] = ct_f16_to_f32(row[j * cs]);
        else
            for (int64_t j = 0; j < cols; j++)
                out[j] = ct_bf16_to_f32(row[j * cs]);
    }
}

static void narrow(ct_dtype dtype, int64_t n, const float *src, uint16_t *dst) {
#pragma omp parallel for schedule(static) if (n >= CT_GEMM_CONVERT_PAR)
    for (int64_t i = 0; i < n; i++)
        dst[i] = dtype == CT_F16 ? ct_f32_to_f16(src[i]) : ct_f32_to_bf16(src[i]);
}

typedef struct gemm_job {
    ct_dtype dtype;
    int batch_ndim;
    const int64_t *batch_shape;
    int64_t M, N, K;
    const ct_gemm_operand *a, *b;
    char *c;
    bool a_direct, b_direct; /* F32/F64: the operand goes to BLAS without packing */
} gemm_job;

/* Scratch of one thread: packed or widened operands, and the f32 product for F16/BF16.
 * a_src / b_src name the matrix a holds, so a broadcast batch is packed only once. */
typedef struct gemm_scratch {
    char *a, *b;
    float *c;
    const char *a_src, *b_src;
} gemm_scratch;

static void *scratch_alloc(size_t nbytes) {
    size_t rounded = (nbytes + 63) & ~(size_t)63;
    return aligned_alloc(64, rounded ? rounded : 64);
}

static bool scratch_init(const gemm_job *job, gemm_scratch *s) {
    memset(s, 0, sizeof *s);
    bool half = job->dtype == CT_F16 || job->dtype == CT_BF16;
    size_t es = half ? sizeof(float) : ct_dtype_size(job->dtype);
    bool ok = true;
    if (half || !job->a_direct)
        ok = ok && (s->a = scratch_alloc((size_t)(job->M * job->K) * es)) != NULL;
    if (half || !job->b_direct)
        ok = ok && (s->b = scratch_alloc((size_t)(job->K * job->N) * es)) != NULL;
    if (half)
        ok = ok && (s->c = scratch_alloc((size_t)(job->M * job->N) * sizeof(float))) != NULL;
    return ok;
}

static void scratch_free(gemm_scratch *s) {
    free(s->a);
    free(s->b);
    free(s->c);
}

/* Operand matrix `batch` as BLAS sees it, packing it into `buf` when needed. */
static const void *operand_matrix(const gemm_job *job, const ct_gemm_operand *op, bool direct, int64_t rows,
                                  int64_t cols, const char *src, char *buf, const char **held, bool *trans,
                                  int *ld) {
    int64_t ld64;
    if (direct && blas_layout(rows, cols, op->row_stride, op->col_stride, trans, &ld64)) {
        *ld = (int)ld64;
        return src;
    }
    if (*held != src) {
        pack(ct_dtype_size(job->dtype), rows, cols, src, op->row_stride, op->col_stride, buf);
        *held = src;
    }
    *trans = false;
    *ld = (int)(cols > 1 ? cols : 1);
    return buf;
}

static void gemm_one(const gemm_job *job, gemm_scratch *s, const char *a_src, const char *b_src, char *c_dst) {
    int M = (int)job->M, N = (int)job->N, K = (int)job->K;
    int ldc = N > 1 ? N : 1;
    if (job->dtype == CT_F16 || job->dtype == CT_BF16) {
        if (s->a_src != a_src) {
            widen(job->dtype, M, K, (const uint16_t *)a_src, job->a->row_stride, job->a->col_stride, (float *)s->a);
            s->a_src = a_src;
        }
        if (s->b_src != b_src) {
            widen(job->dtype, K, N, (const uint16_t *)b_src, job->b->row_stride, job->b->col_stride, (float *)s->b);
            s->b_src = b_src;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, (const float *)s->a, K > 1 ? K : 1,
                    (const float *)s->b, ldc, 0.0f, s->c, ldc);
        narrow(job->dtype, job->M * job->N, s->c, (uint16_t *)c_dst);
        return;
    }
    bool ta, tb;
    int lda, ldb;
    const void *A = operand_matrix(job, job->a, job->a_direct, job->M, job->K, a_src, s->a, &s->a_src, &ta, &lda);
    const void *B = operand_matrix(job, job->b, job->b_direct, job->K, job->N, b_src, s->b, &s->b_src, &tb, &ldb);
    enum CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
    if (job->dtype == CT_F32)
        cblas_sgemm(CblasRowMajor, opa, opb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, (float *)c_dst, ldc);
    else
        cblas_dgemm(CblasRowMajor, opa, opb, M, N, K, 1.0, A, lda, B, ldb, 0.0, (double *)c_dst, ldc);
}

/* Batches [begin, end) with one scratch. */
static bool gemm_range(const gemm_job *job, int64_t begin, int64_t end) {
    gemm_scratch s;
    bool ok = scratch_init(job, &s);
    size_t es = ct_dtype_size(job->dtype);
    for (int64_t batch = begin; ok && batch < end; batch++) {
        int64_t a_off = 0, b_off = 0, rest = batch;
        for (int d = job->batch_ndim - 1; d >= 0; d--) {
            int64_t i = rest % job->batch_shape[d];
            rest /= job->batch_shape[d];
            a_off += i * job->a->batch_strides[d];
            b_off += i * job->b->batch_strides[d];
        }
        gemm_one(job, &s, (const char *)job->a->data + a_off * (int64_t)es,
                 (const char *)job->b->data + b_off * (int64_t)es, job->c + (size_t)(batch * job->M * job->N) * es);
    }
    scratch_free(&s);
    return ok;
}

bool ct_cpu_gemm(ct_dtype dtype, int batch_ndim, const int64_t *batch_shape, int64_t M, int64_t N, int64_t K,
                 const ct_gemm_operand *a, const ct_gemm_operand *b, void *c) {
    int64_t batches = 1;
    for (int d = 0; d < batch_ndim; d++)
        batches *= batch_shape[d];
    if (batches == 0 || M == 0 || N == 0)
        return true;
    if (K == 0) {
        memset(c, 0, (size_t)(batches * M * N) * ct_dtype_size(dtype));
        return true;
    }
    gemm_job job = {dtype, batch_ndim, batch_shape, M, N, K, a, b, c, false, false};
    job.a_direct = ct_cpu_gemm_is_direct(M, K, a->row_stride, a->col_stride);
    job.b_direct = ct_cpu_gemm_is_direct(K, N, b->row_stride, b->col_stride);
    double mnk = (double)M * (double)N * (double)K;
    bool small = mnk <= CT_GEMM_SMALL_MNK, worth_a_fork = mnk * (double)batches >= CT_GEMM_SMALL_MNK;
    if (batches < 2 || !small || !worth_a_fork || omp_get_max_threads() < 2)
        return gemm_range(&job, 0, batches);
    bool ok = true;
#pragma omp parallel reduction(&& : ok)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t chunk = (batches + nt - 1) / nt, begin = chunk * t;
        int64_t end = begin + chunk < batches ? begin + chunk : batches;
        if (begin < end)
            ok = gemm_range(&job, begin, end);
    }
    return ok;
}
