// ctensor — batched GEMM on cuBLASLt.
//
// Row-major C (M, N) = A (M, K) @ B (K, N) is computed as the column-major product
// C^T (N, M) = B^T (N, K) @ A^T (K, M): a row-major operand is its own transpose in column-
// major order, and a transposed (column-major) operand becomes a CUBLAS_OP_T, so neither
// needs a copy. Batch dims that coalesce to one stride become cuBLASLt's strided batch;
// others are looped over. Each stream has its own cuBLASLt handle and 32 MiB workspace,
// and the algorithm chosen by the heuristic is cached per problem.
//
// Alignment: the heuristic assumes 256-byte aligned matrices unless told otherwise, and an
// operand that is a view at an odd offset (a slice of a weight, a batch of a strided stack)
// is not. So each call states the alignment its pointers and batch strides really have,
// as PyTorch does, and that alignment is part of the cached problem.
#include "kernels/cpu/gemm.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

#include <cublasLt.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define WORKSPACE_BYTES (32u << 20)
#define ALGO_CACHE 128

static bool lt_ok(cublasStatus_t st, const char *call, const char *file, int line) {
    if (st == CUBLAS_STATUS_SUCCESS)
        return true;
    ct__set_error(CT_ERR_CUDA, "%s failed at %s:%d: cuBLAS status %d", call, file, line, (int)st);
    return false;
}
#define CT_CUBLAS_CHECK(call) lt_ok((call), #call, __FILE__, __LINE__)

typedef struct blas_state {
    cublasLtHandle_t handle;
    void *workspace;
} blas_state;

static pthread_mutex_t blas_lock = PTHREAD_MUTEX_INITIALIZER;

// The stream's handle and workspace, made on first use (on the stream's device, whichever
// device is current).
static blas_state *blas_for(ct_stream *stream) {
    pthread_mutex_lock(&blas_lock);
    blas_state *b = (blas_state *)stream->blas;
    if (!b) {
        int old = 0;
        b = (blas_state *)calloc(1, sizeof *b);
        if (!b) {
            ct__set_error(CT_ERR_MEMORY, "cuBLASLt state: out of host memory");
        } else if (!CT_CUDA_CHECK(cudaGetDevice(&old)) || !CT_CUDA_CHECK(cudaSetDevice(stream->device))) {
            free(b);
            b = NULL;
        } else {
            ct_capture_relaxed relaxed; // a CUDA graph's stream gets its state during the capture
            bool ok = CT_CUBLAS_CHECK(cublasLtCreate(&b->handle));
            if (ok && !CT_CUDA_CHECK(cudaMalloc(&b->workspace, WORKSPACE_BYTES))) {
                cublasLtDestroy(b->handle);
                ok = false;
            }
            ok = CT_CUDA_CHECK(cudaSetDevice(old)) && ok;
            if (ok) {
                stream->blas = b;
            } else {
                free(b);
                b = NULL;
            }
        }
    }
    pthread_mutex_unlock(&blas_lock);
    return b;
}

extern "C" ct_status ct__blas_prepare(ct_stream *stream) { return blas_for(stream) ? CT_OK : ct_last_error(); }

extern "C" void ct__blas_release(ct_stream *stream) {
    pthread_mutex_lock(&blas_lock);
    blas_state *b = (blas_state *)stream->blas;
    stream->blas = NULL;
    pthread_mutex_unlock(&blas_lock);
    if (!b)
        return;
    ct_device_guard guard(stream->device);
    CT_CUBLAS_CHECK(cublasLtDestroy(b->handle));
    CT_CUDA_CHECK(cudaFree(b->workspace)); // waits for the work that may still use it
    free(b);
}

// One column-major operand as cuBLASLt sees it.
typedef struct lt_operand {
    cublasOperation_t op;
    int64_t rows, cols, ld; // of the stored matrix (before op)
} lt_operand;

// Describe a row-major (rows, cols) matrix with strides (rs, cs) for the column-major
// product, where we need its transpose: (cols, rows). False if the layout is not direct.
static bool describe(int64_t rows, int64_t cols, int64_t rs, int64_t cs, lt_operand *o) {
    if (cs == 1 || cols == 1) { // row-major: stored column-major as (cols, rows), no op
        o->op = CUBLAS_OP_N;
        o->rows = cols;
        o->cols = rows;
        o->ld = rows == 1 ? cols : (rs > cols ? rs : cols);
        return rows == 1 || rs >= cols;
    }
    if (rs == 1 || rows == 1) { // column-major: stored as (rows, cols), transposed by the op
        o->op = CUBLAS_OP_T;
        o->rows = rows;
        o->cols = cols;
        o->ld = cols == 1 ? rows : (cs > rows ? cs : rows);
        return cols == 1 || cs >= rows;
    }
    return false;
}

// Named apart from conv.cu's algo_key and algo_entry: .cu files are C++, where two
// different structs of one name in two files break the one-definition rule.
typedef struct lt_algo_key {
    int device, dtype, tf32, opa, opb;
    uint32_t align_a, align_b, align_c;
    int64_t m, n, k, lda, ldb, ldc, batch, sa, sb, sc;
} lt_algo_key;
typedef struct lt_algo_entry {
    bool used;
    lt_algo_key key;
    cublasLtMatmulAlgo_t algo;
} lt_algo_entry;
static lt_algo_entry algo_cache[ALGO_CACHE];

static unsigned key_hash(const lt_algo_key *k) {
    const unsigned char *p = (const unsigned char *)k;
    unsigned h = 2166136261u;
    for (size_t i = 0; i < sizeof *k; i++)
        h = (h ^ p[i]) * 16777619u;
    return h % ALGO_CACHE;
}

// The largest power of two up to 256 dividing the address of every matrix of a batch.
static uint32_t alignment_of(const void *p, int64_t batch_stride_bytes, int64_t batch) {
    uint64_t bits = (uint64_t)(uintptr_t)p | (batch > 1 ? (uint64_t)batch_stride_bytes : 0);
    uint32_t align = 256;
    while (align > 1 && (bits & (align - 1)) != 0)
        align >>= 1;
    return align;
}

static cudaDataType_t data_type(ct_dtype dtype) {
    return dtype == CT_F16 ? CUDA_R_16F : (dtype == CT_BF16 ? CUDA_R_16BF : CUDA_R_32F);
}

// One (possibly strided-batched) cuBLASLt call.
static ct_status lt_matmul(blas_state *bs, ct_stream *stream, ct_dtype dtype, bool tf32, const lt_operand *oa,
                           const void *pa, int64_t sa, const lt_operand *ob, const void *pb, int64_t sb, void *pc,
                           int64_t m, int64_t n, int64_t k, int64_t sc, int64_t batch) {
    cudaDataType_t dt = data_type(dtype);
    int64_t es = (int64_t)ct_dtype_size(dtype);
    uint32_t align_a = alignment_of(pa, sa * es, batch), align_b = alignment_of(pb, sb * es, batch),
             align_c = alignment_of(pc, sc * es, batch);
    cublasComputeType_t compute = (dtype == CT_F32 && tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    ct_status st = CT_ERR_CUDA;
    float alpha = 1.0f, beta = 0.0f;
    int32_t count = (int32_t)batch;
    size_t ws = WORKSPACE_BYTES;
    lt_algo_key key;
    memset(&key, 0, sizeof key);
    key = (lt_algo_key){stream->device, (int)dtype, tf32, (int)oa->op, (int)ob->op, align_a, align_b, align_c,
                        m, n, k, oa->ld, ob->ld, m, batch, sa, sb, sc};
    unsigned slot = key_hash(&key);
    cublasLtMatmulAlgo_t algo;
    bool have_algo = false;

    if (!CT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F)) ||
        !CT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &oa->op, sizeof oa->op)) ||
        !CT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &ob->op, sizeof ob->op)) ||
        !CT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, dt, oa->rows, oa->cols, oa->ld)) ||
        !CT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, dt, ob->rows, ob->cols, ob->ld)) ||
        !CT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, dt, m, n, m)))
        goto done;
    if (batch > 1) {
        const struct { cublasLtMatrixLayout_t l; int64_t stride; } items[3] = {{la, sa}, {lb, sb}, {lc, sc}};
        for (int i = 0; i < 3; i++)
            if (!CT_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(items[i].l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                                  &count, sizeof count)) ||
                !CT_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
                    items[i].l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &items[i].stride, sizeof(int64_t))))
                goto done;
    }
    pthread_mutex_lock(&blas_lock);
    if (algo_cache[slot].used && memcmp(&algo_cache[slot].key, &key, sizeof key) == 0) {
        algo = algo_cache[slot].algo;
        have_algo = true;
    }
    pthread_mutex_unlock(&blas_lock);
    if (!have_algo) {
        cublasLtMatmulHeuristicResult_t result;
        int found = 0;
        if (!CT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref)) ||
            !CT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                                  sizeof ws)) ||
            !CT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                                  &align_a, sizeof align_a)) ||
            !CT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                                  &align_b, sizeof align_b)) ||
            !CT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                                  &align_c, sizeof align_c)) ||
            !CT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                                  &align_c, sizeof align_c)) ||
            !CT_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(bs->handle, desc, la, lb, lc, lc, pref, 1, &result, &found)))
            goto done;
        if (found == 0) {
            ct__set_error(CT_ERR_CUDA, "cuBLASLt found no algorithm for a %s GEMM (%lld x %lld x %lld, batch %lld)",
                          ct_dtype_name(dtype), (long long)m, (long long)n, (long long)k, (long long)batch);
            goto done;
        }
        algo = result.algo;
        pthread_mutex_lock(&blas_lock);
        algo_cache[slot].used = true;
        algo_cache[slot].key = key;
        algo_cache[slot].algo = algo;
        pthread_mutex_unlock(&blas_lock);
    }
    if (CT_CUBLAS_CHECK(cublasLtMatmul(bs->handle, desc, &alpha, pa, la, pb, lb, &beta, pc, lc, pc, lc, &algo,
                                       bs->workspace, WORKSPACE_BYTES, stream->handle)))
        st = CT_OK;
done:
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (la)
        cublasLtMatrixLayoutDestroy(la);
    if (lb)
        cublasLtMatrixLayoutDestroy(lb);
    if (lc)
        cublasLtMatrixLayoutDestroy(lc);
    if (desc)
        cublasLtMatmulDescDestroy(desc);
    return st;
}

extern "C" ct_status ct_cuda_gemm(ct_dtype dtype, int batch_ndim, const int64_t *batch_shape, int64_t M, int64_t N,
                                  int64_t K, const ct_gemm_operand *a, const ct_gemm_operand *b, void *c,
                                  bool allow_tf32, ct_stream *stream) {
    if (dtype != CT_F32 && dtype != CT_F16 && dtype != CT_BF16)
        return ct__set_error(CT_ERR_DTYPE, "ct_matmul: %s is not supported on CUDA (f32, f16, bf16)",
                             ct_dtype_name(dtype));
    CT_LAUNCH_STREAM(s, stream);
    size_t es = ct_dtype_size(dtype);
    int64_t batch = 1;
    for (int d = 0; d < batch_ndim; d++)
        batch *= batch_shape[d];
    if (batch == 0 || M == 0 || N == 0)
        return CT_OK;
    if (K == 0)
        return CT_CUDA_CHECK(cudaMemsetAsync(c, 0, (size_t)(batch * M * N) * es, s))
                   ? CT_OK
                   : ct_last_error();
    // In the column-major product, the first operand is B (N, K) and the second A^T (K, M).
    lt_operand ob, oa;
    if (!describe(K, N, b->row_stride, b->col_stride, &ob) || !describe(M, K, a->row_stride, a->col_stride, &oa))
        return ct__set_error(CT_ERR_INTERNAL, "ct_cuda_gemm: an operand layout is not direct (pack it first)");
    blas_state *bs = blas_for(stream);
    if (!bs)
        return ct_last_error();
    // Coalesce the batch dims of (a, b, c); c is contiguous.
    int64_t shape[CT_KMAX_DIMS], sa[CT_KMAX_DIMS], sb[CT_KMAX_DIMS], sc[CT_KMAX_DIMS];
    int64_t cstride = M * N;
    for (int d = batch_ndim - 1; d >= 0; d--) {
        shape[d] = batch_shape[d];
        sa[d] = a->batch_strides[d];
        sb[d] = b->batch_strides[d];
        sc[d] = cstride;
        cstride *= batch_shape[d];
    }
    int64_t *strides[3] = {sa, sb, sc};
    int nd = ct_coalesce(batch_ndim, shape, 3, strides);
    int64_t inner = nd > 0 ? shape[nd - 1] : 1;
    int64_t isa = nd > 0 ? sa[nd - 1] : 0, isb = nd > 0 ? sb[nd - 1] : 0, isc = nd > 0 ? sc[nd - 1] : 0;
    int64_t outer = batch / inner;
    // cuBLASLt counts a batch in an int32: longer strided batches go in pieces.
    const int64_t max_count = INT32_MAX;
    for (int64_t o = 0; o < outer; o++) {
        int64_t offa = 0, offb = 0, offc = 0, lin = o;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t i = lin % shape[d];
            lin /= shape[d];
            offa += i * sa[d];
            offb += i * sb[d];
            offc += i * sc[d];
        }
        for (int64_t first = 0; first < inner; first += max_count) {
            int64_t count = inner - first < max_count ? inner - first : max_count;
            const char *pa = (const char *)a->data + (offa + first * isa) * (int64_t)es;
            const char *pb = (const char *)b->data + (offb + first * isb) * (int64_t)es;
            char *pc = (char *)c + (offc + first * isc) * (int64_t)es;
            ct_status st = lt_matmul(bs, stream, dtype, allow_tf32, &ob, pb, isb, &oa, pa, isa, pc, N, M, K, isc,
                                     count);
            if (st != CT_OK)
                return st;
        }
    }
    return CT_OK;
}
