/* ctensor's CUDA emulator (tests/emu/README.md): the part of cuBLASLt that kernels/cuda/
 * matmul.cu calls, on the host. Descriptors hold what they are given and are checked as
 * cuBLASLt checks them (shapes that do not chain, leading dimensions below the rows, an
 * unknown attribute or type: CUBLAS_STATUS_INVALID_VALUE or NOT_SUPPORTED). The heuristic
 * returns one algorithm, which carries the alignments the preference promised; cublasLtMatmul
 * then checks the pointers against them and the matrices' extents against the device
 * allocations (a broken promise or a matrix past its allocation is fatal, as a GPU would fault
 * or read garbage), and computes D = alpha op(A) op(B) + beta C in double (OpenBLAS's dgemm),
 * rounded once to the output type (TF32: the inputs rounded to 10 mantissa bits first), on the stream (or into
 * its capture). */
#include "tests/emu/cuda_emu.h"

#include <cblas.h>
#include <cublasLt.h>
#include <stdio.h>
#include <stdlib.h>

#define EMU_API extern "C" __attribute__((visibility("default")))

namespace {

struct matmul_desc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int32_t transa, transb;
};
struct layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
    int32_t batch;
    int64_t stride;
};
struct preference {
    uint64_t workspace;
    uint32_t align[4];
};

bool known_type(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF; }
::ct_emu::element element_of(cudaDataType_t t) {
    return t == CUDA_R_32F ? ::ct_emu::ELEM_F32 : t == CUDA_R_16F ? ::ct_emu::ELEM_F16 : ::ct_emu::ELEM_BF16;
}
size_t type_size(cudaDataType_t t) { return ::ct_emu::element_size(element_of(t)); }
double load(const void *p, cudaDataType_t t, int64_t i) { return ::ct_emu::load_element(p, element_of(t), i); }
void store(void *p, cudaDataType_t t, int64_t i, double v) { ::ct_emu::store_element(p, element_of(t), i, v); }
/* float rounded to TF32's 10 mantissa bits, to nearest even. */
double tf32(double v) {
    float f = (float)v;
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7f800000u) != 0x7f800000u)
        b = (b + 0xfffu + ((b >> 13) & 1u)) & ~0x1fffu;
    memcpy(&f, &b, 4);
    return f;
}

/* Bytes from a matrix's first element to one past its last, over the batch. */
size_t extent(const layout *l) {
    if (l->rows == 0 || l->cols == 0 || l->batch == 0)
        return 0;
    int64_t last = (int64_t)(l->batch - 1) * l->stride + (int64_t)(l->cols - 1) * l->ld + (int64_t)l->rows;
    return (size_t)last * type_size(l->type);
}

uint32_t alignment(const void *p, const layout *l) {
    uint64_t bits = (uint64_t)(uintptr_t)p | (l->batch > 1 ? (uint64_t)(l->stride * (int64_t)type_size(l->type)) : 0);
    uint32_t a = 256;
    while (a > 1 && (bits & (a - 1)))
        a >>= 1;
    return a;
}

/* op(X)'s rows and columns. */
void op_dims(const layout *l, int32_t op, uint64_t *r, uint64_t *c) {
    *r = op == CUBLAS_OP_N ? l->rows : l->cols;
    *c = op == CUBLAS_OP_N ? l->cols : l->rows;
}

cublasStatus_t check_problem(const matmul_desc *d, const layout *a, const layout *b, const layout *c,
                             const layout *dd) {
    if (!d || !a || !b || !c || !dd)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (d->compute != CUBLAS_COMPUTE_32F && d->compute != CUBLAS_COMPUTE_32F_FAST_TF32)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->scale != CUDA_R_32F || a->type != b->type || c->type != dd->type || a->type != c->type)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->compute == CUBLAS_COMPUTE_32F_FAST_TF32 && a->type != CUDA_R_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    uint64_t m, k, k2, n;
    op_dims(a, d->transa, &m, &k);
    op_dims(b, d->transb, &k2, &n);
    if (k != k2 || c->rows != m || c->cols != n || dd->rows != m || dd->cols != n)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (a->batch != c->batch || b->batch != c->batch || dd->batch != c->batch)
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

} // namespace

/* ---- the handle and the descriptors ------------------------------------------------------- */

EMU_API cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle) {
    *handle = NULL;
    if (::ct_emu::capture_forbids_unsafe_call()) /* it allocates */
        return CUBLAS_STATUS_NOT_INITIALIZED;
    *handle = (cublasLtHandle_t)calloc(1, 16);
    return *handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}
EMU_API cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
    free(handle);
    return CUBLAS_STATUS_SUCCESS;
}

EMU_API cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute,
                                                cudaDataType_t scale) {
    *desc = (cublasLtMatmulDesc_t) new matmul_desc{compute, scale, CUBLAS_OP_N, CUBLAS_OP_N};
    return CUBLAS_STATUS_SUCCESS;
}
EMU_API cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
    delete (matmul_desc *)desc;
    return CUBLAS_STATUS_SUCCESS;
}
EMU_API cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                                      const void *buf, size_t bytes) {
    matmul_desc *d = (matmul_desc *)desc;
    if (!d || !buf)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (attr == CUBLASLT_MATMUL_DESC_TRANSA || attr == CUBLASLT_MATMUL_DESC_TRANSB) {
        int32_t op;
        if (bytes != sizeof op)
            return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&op, buf, sizeof op);
        if (op != CUBLAS_OP_N && op != CUBLAS_OP_T)
            return CUBLAS_STATUS_NOT_SUPPORTED;
        (attr == CUBLASLT_MATMUL_DESC_TRANSA ? d->transa : d->transb) = op;
        return CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_NOT_SUPPORTED;
}

EMU_API cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type, uint64_t rows,
                                                  uint64_t cols, int64_t ld) {
    *l = NULL;
    if (!known_type(type))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (ld < (int64_t)(rows ? rows : 1))
        return CUBLAS_STATUS_INVALID_VALUE; /* column-major: each column's rows within ld */
    *l = (cublasLtMatrixLayout_t) new layout{type, rows, cols, ld, 1, 0};
    return CUBLAS_STATUS_SUCCESS;
}
EMU_API cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    delete (layout *)l;
    return CUBLAS_STATUS_SUCCESS;
}
EMU_API cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t ml, cublasLtMatrixLayoutAttribute_t attr,
                                                        const void *buf, size_t bytes) {
    layout *l = (layout *)ml;
    if (!l || !buf)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (attr == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT) {
        if (bytes != sizeof(int32_t))
            return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&l->batch, buf, bytes);
        return l->batch >= 1 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
    }
    if (attr == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET) {
        if (bytes != sizeof(int64_t))
            return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&l->stride, buf, bytes);
        return CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_NOT_SUPPORTED;
}

EMU_API cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref) {
    *pref = (cublasLtMatmulPreference_t) new preference{0, {1, 1, 1, 1}};
    return CUBLAS_STATUS_SUCCESS;
}
EMU_API cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
    delete (preference *)pref;
    return CUBLAS_STATUS_SUCCESS;
}
EMU_API cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                            cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                            size_t bytes) {
    preference *p = (preference *)pref;
    if (!p || !buf)
        return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
        if (bytes != sizeof(uint64_t))
            return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&p->workspace, buf, bytes);
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: {
        uint32_t a;
        if (bytes != sizeof a)
            return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&a, buf, bytes);
        if (a == 0 || (a & (a - 1)))
            return CUBLAS_STATUS_INVALID_VALUE;
        p->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] = a;
        return CUBLAS_STATUS_SUCCESS;
    }
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

/* ---- the heuristic and the product -------------------------------------------------------- */

EMU_API cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                                      cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                                      cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                                      cublasLtMatmulPreference_t pref, int requested,
                                                      cublasLtMatmulHeuristicResult_t *results, int *count) {
    if (!handle || !pref || requested < 1 || !results || !count)
        return CUBLAS_STATUS_INVALID_VALUE;
    cublasStatus_t st = check_problem((const matmul_desc *)desc, (const layout *)a, (const layout *)b,
                                      (const layout *)c, (const layout *)d);
    if (st != CUBLAS_STATUS_SUCCESS)
        return st;
    memset(&results[0], 0, sizeof results[0]);
    const preference *p = (const preference *)pref;
    for (int i = 0; i < 4; i++)
        results[0].algo.data[i] = p->align[i]; /* what the algorithm may assume */
    results[0].algo.data[4] = 0x656d75; /* "emu": made here */
    results[0].workspaceSize = 0;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *count = 1;
    return CUBLAS_STATUS_SUCCESS;
}

EMU_API cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha,
                                      const void *A, cublasLtMatrixLayout_t adesc, const void *B,
                                      cublasLtMatrixLayout_t bdesc, const void *beta, const void *C,
                                      cublasLtMatrixLayout_t cdesc, void *D, cublasLtMatrixLayout_t ddesc,
                                      const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspace_bytes,
                                      cudaStream_t stream) {
    const matmul_desc *md = (const matmul_desc *)desc;
    const layout *la = (const layout *)adesc, *lb = (const layout *)bdesc, *lc = (const layout *)cdesc,
                 *ld = (const layout *)ddesc;
    if (!handle || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    cublasStatus_t st = check_problem(md, la, lb, lc, ld);
    if (st != CUBLAS_STATUS_SUCCESS)
        return st;
    if (!algo || algo->data[4] != 0x656d75)
        return CUBLAS_STATUS_INVALID_VALUE;
    const void *ptrs[4] = {A, B, C, D};
    const layout *lays[4] = {la, lb, lc, ld};
    const char *names = "ABCD";
    for (int i = 0; i < 4; i++) {
        size_t bytes = extent(lays[i]);
        if (bytes && !::ct_emu::device_accessible(ptrs[i], bytes))
            ::ct_emu::fatal("cublasLtMatmul: %c (%p, %zu bytes over the batch) is not device memory", names[i], ptrs[i], bytes);
        if (bytes && alignment(ptrs[i], lays[i]) < algo->data[i])
            ::ct_emu::fatal("cublasLtMatmul: %c at %p (batch stride %lld elements) is aligned to %u bytes, the algorithm was chosen for %u",
                  names[i], ptrs[i], (long long)lays[i]->stride, alignment(ptrs[i], lays[i]),
                  (unsigned)algo->data[i]);
    }
    const double al = *(const float *)alpha, be = *(const float *)beta;
    const matmul_desc m = *md;
    const layout a = *la, b = *lb, c = *lc, d = *ld;
    ::ct_emu::run_on_stream(stream, [=]() {
        uint64_t M, K, K2, N;
        op_dims(&a, m.transa, &M, &K);
        op_dims(&b, m.transb, &K2, &N);
        const bool round_tf32 = m.compute == CUBLAS_COMPUTE_32F_FAST_TF32;
        /* op(A) and op(B) widened to double, column-major, then OpenBLAS's dgemm: the exact
         * products summed in double (the emulator's answer is the reference's, not a GPU's). */
        std::vector<double> x(M * K), y(K * N), z(M * N);
        for (int32_t q = 0; q < c.batch; q++) {
            for (uint64_t l = 0; l < K; l++)
                for (uint64_t i = 0; i < M; i++) {
                    int64_t at = q * a.stride + (m.transa == CUBLAS_OP_N ? (int64_t)(i + l * a.ld)
                                                                         : (int64_t)(l + i * a.ld));
                    double v = load(A, a.type, at);
                    x[i + l * M] = round_tf32 ? tf32(v) : v;
                }
            for (uint64_t j = 0; j < N; j++)
                for (uint64_t l = 0; l < K; l++) {
                    int64_t at = q * b.stride + (m.transb == CUBLAS_OP_N ? (int64_t)(l + j * b.ld)
                                                                         : (int64_t)(j + l * b.ld));
                    double v = load(B, b.type, at);
                    y[l + j * K] = round_tf32 ? tf32(v) : v;
                }
            if (M && N && K)
                cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, (blasint)M, (blasint)N, (blasint)K, al,
                            x.data(), (blasint)M, y.data(), (blasint)K, 0.0, z.data(), (blasint)M);
            else
                std::fill(z.begin(), z.end(), 0.0);
            for (uint64_t j = 0; j < N; j++)
                for (uint64_t i = 0; i < M; i++) {
                    double v = z[i + j * M];
                    if (be != 0)
                        v += be * load(C, c.type, q * c.stride + (int64_t)(i + j * c.ld));
                    store(D, d.type, q * d.stride + (int64_t)(i + j * d.ld), v);
                }
        }
    });
    return CUBLAS_STATUS_SUCCESS;
}
