/* 2-D convolution on the CPU: im2col + GEMM (AVX-512 tiles or OpenBLAS), col2im for the
 * input gradient.
 *
 * For one image and one group, with K = C/groups * kH * kW and L = oH * oW:
 *   forward   y (O/g, L)  = w (O/g, K) @ col (K, L)          col = im2col(x)
 *   weight    gw (O/g, K) += gy (O/g, L) @ col^T (L, K)
 *   input     dcol (K, L) = w^T (K, O/g) @ gy (O/g, L)       gx = col2im(dcol)
 *
 * Schedule: one OpenMP region per call, over independent work items, each computed by one
 * thread with single-threaded GEMMs (serial_gemm):
 *   forward  (image, band of output rows): im2col of the band, GEMM into y in place;
 *   weight   (image, band): im2col, GEMM into the thread's partial gw, summed at the end;
 *   input    (image, block of input channels): the dcol rows of those channels, col2im
 *            into their planes, which no other item touches.
 * Bands and blocks keep a thread's col matrix within BAND_BYTES (in L2); a 1x1
 * convolution with stride 1 and no padding reads the input as its col matrix.
 *
 * Why every BLAS call is kept under OpenBLAS's threading threshold (M*N*K <= 65536 * 4,
 * interface/gemm.c; products are split along K, then N, then M to stay under it): a
 * threaded OpenBLAS call from inside an OpenMP region contends for its thread pool, and a
 * threaded call between OpenMP regions contends with the OpenMP workers, which keep
 * spinning for milliseconds after each region. Measured with OpenBLAS 0.3.21 (Haswell
 * kernels) on 2 cores, 128 images of the CNN's conv2 forward GEMM (64x196x288): 4.5 ms as
 * 2 x 64 single-threaded calls, 8.9 ms when each call may thread, and 18 ms for the whole
 * conv2 forward as one threaded GEMM over the batch between OpenMP im2col and copy passes
 * (62% of the samples in libgomp's spin loop). Split calls lose about 15%: 5.2 ms.
 * Scratch buffers are kept between calls (see scratch_get): a training step asks for the
 * same sizes every time, and a fresh multi-megabyte buffer costs a page fault per 4 KiB.
 */
#include "kernels/cpu/conv.h"
#include "kernels/cpu/cpu_features.h"

#include <cblas.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SERIAL_MNK    262144            /* OpenBLAS runs products up to this on one thread */
#define BAND_BYTES    ((size_t)1 << 20) /* a work item's col matrix */
#define MIN_TILE      32                /* the smallest K and N of a split product */
#define PAR_MIN_ELEMS (1 << 14)         /* loops smaller than this stay on one thread */

/* ---- scratch cache ------------------------------------------------------------------ */

#define SCRATCH_SLOTS 4
static pthread_mutex_t scratch_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    void *ptr;
    size_t bytes;
} scratch_pool[SCRATCH_SLOTS];

/* A 64-byte aligned buffer of at least `bytes`: the smallest cached one that fits, or a
 * new one. NULL when out of memory. */
static void *scratch_get(size_t bytes, size_t *got) {
    bytes = (bytes + 63) & ~(size_t)63;
    if (bytes == 0)
        bytes = 64;
    pthread_mutex_lock(&scratch_lock);
    int best = -1;
    for (int i = 0; i < SCRATCH_SLOTS; i++)
        if (scratch_pool[i].ptr && scratch_pool[i].bytes >= bytes &&
            (best < 0 || scratch_pool[i].bytes < scratch_pool[best].bytes))
            best = i;
    void *p = NULL;
    if (best >= 0) {
        p = scratch_pool[best].ptr;
        *got = scratch_pool[best].bytes;
        scratch_pool[best].ptr = NULL;
    }
    pthread_mutex_unlock(&scratch_lock);
    if (!p) {
        p = aligned_alloc(64, bytes);
        *got = bytes;
    }
    return p;
}

/* Return a buffer to the cache; when the cache is full, the smallest buffer goes. */
static void scratch_put(void *p, size_t bytes) {
    if (!p)
        return;
    pthread_mutex_lock(&scratch_lock);
    int slot = -1;
    for (int i = 0; i < SCRATCH_SLOTS && slot < 0; i++)
        if (!scratch_pool[i].ptr)
            slot = i;
    if (slot < 0) {
        slot = 0;
        for (int i = 1; i < SCRATCH_SLOTS; i++)
            if (scratch_pool[i].bytes < scratch_pool[slot].bytes)
                slot = i;
        if (scratch_pool[slot].bytes >= bytes) {
            pthread_mutex_unlock(&scratch_lock);
            free(p);
            return;
        }
        free(scratch_pool[slot].ptr);
    }
    scratch_pool[slot].ptr = p;
    scratch_pool[slot].bytes = bytes;
    pthread_mutex_unlock(&scratch_lock);
}

typedef struct scratch {
    void *ptr;
    size_t bytes;
} scratch;

static bool scratch_acquire(scratch *s, size_t bytes) {
    s->ptr = scratch_get(bytes, &s->bytes);
    return s->ptr != NULL;
}
static void scratch_release(scratch *s) {
    scratch_put(s->ptr, s->bytes);
    s->ptr = NULL;
}

/* ---- geometry ---------------------------------------------------------------------- */

typedef struct conv_plan {
    const ct_conv2d_geom *g;
    ct_dtype dtype;
    size_t es;         /* element size */
    int64_t Cg, Og;    /* channels per group */
    int64_t K, Kall;   /* col rows per group, and for all channels */
    int64_t L, HW;     /* output and input plane sizes */
    int64_t taps;      /* kH * kW */
    int64_t band_rows; /* output rows per forward / weight item */
    int64_t bands;     /* bands per image */
    int64_t block;     /* input channels per data-gradient item (within a group) */
    int64_t blocks;    /* blocks per group */
    bool direct_1x1;   /* the input is its own col matrix */
} conv_plan;

static conv_plan plan_of(ct_dtype dtype, const ct_conv2d_geom *g) {
    conv_plan p;
    p.g = g;
    p.dtype = dtype;
    p.es = dtype == CT_F64 ? sizeof(double) : sizeof(float);
    p.Cg = g->C / g->groups;
    p.Og = g->O / g->groups;
    p.taps = g->kH * g->kW;
    p.K = p.Cg * p.taps;
    p.Kall = g->C * p.taps;
    p.L = g->oH * g->oW;
    p.HW = g->H * g->W;
    p.direct_1x1 = g->kH == 1 && g->kW == 1 && g->stride_h == 1 && g->stride_w == 1 && g->pad_h == 0 && g->pad_w == 0 &&
                   g->oH == g->H && g->oW == g->W;
    size_t row_bytes = (size_t)(p.Kall * g->oW) * p.es;
    p.band_rows = p.direct_1x1 || row_bytes == 0 ? g->oH : (int64_t)(BAND_BYTES / row_bytes);
    p.band_rows = p.band_rows < 1 ? 1 : (p.band_rows > g->oH ? g->oH : p.band_rows);
    p.bands = p.band_rows ? (g->oH + p.band_rows - 1) / p.band_rows : 0;
    size_t channel_bytes = (size_t)(p.taps * p.L) * p.es;
    p.block = channel_bytes ? (int64_t)(BAND_BYTES / channel_bytes) : p.Cg;
    p.block = p.block < 1 ? 1 : (p.block > p.Cg ? p.Cg : p.block);
    p.blocks = p.block ? (p.Cg + p.block - 1) / p.block : 0;
    return p;
}

/* Output positions o in [0, out) whose input position o * stride + offset lies in
 * [0, size): [*lo, *hi). */
static void valid_range(int64_t size, int64_t out, int64_t stride, int64_t offset, int64_t *lo, int64_t *hi) {
    int64_t l = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    int64_t h = size - offset <= 0 ? 0 : (size - offset + stride - 1) / stride;
    *hi = h < out ? h : out;
    *lo = l < *hi ? l : *hi;
}

/* ---- GEMM on the calling thread --------------------------------------------------------- */

/* One row-major BLAS call: c = op(a) @ op(b) + beta * c. */
static void blas(const conv_plan *p, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const char *a, int64_t lda,
                 const char *b, int64_t ldb, double beta, char *c, int64_t ldc) {
    enum CBLAS_TRANSPOSE oa = ta ? CblasTrans : CblasNoTrans, ob = tb ? CblasTrans : CblasNoTrans;
    if (p->dtype == CT_F64)
        cblas_dgemm(CblasRowMajor, oa, ob, (int)M, (int)N, (int)K, 1.0, (const double *)a, (int)lda, (const double *)b,
                    (int)ldb, beta, (double *)c, (int)ldc);
    else
        cblas_sgemm(CblasRowMajor, oa, ob, (int)M, (int)N, (int)K, 1.0f, (const float *)a, (int)lda, (const float *)b,
                    (int)ldb, (float)beta, (float *)c, (int)ldc);
}

/* ---- AVX-512 GEMM ---------------------------------------------------------------------
 * OpenBLAS 0.3.21 does not know this Zen 5 machine and runs its Haswell (AVX2) kernels:
 * about 93 GFLOP/s per core on the CNN's products. Where the CPU has AVX-512, F32 products
 * with A of at most APACK_FLOATS and N >= 32 use this kernel instead: tiles of 8 x 48
 * outputs held in 24 zmm registers, A packed in panels of 8 rows (once per op call when
 * it is the weight: the pack remembers what it holds), B read in place (packed in blocks
 * of GEMM_KC x GEMM_NC, by 16 x 16 register transposes, only when transposed), columns
 * past N masked. Measured on the CNN's conv2 at batch 128 (one thread, CPU time): forward
 * 10.1 -> 6.1 ms, forward + backward 33 -> 20 ms; OpenBLAS forced to its AVX-512 kernels
 * (OPENBLAS_CORETYPE=SkylakeX) does 5.9 / 20 ms. Narrow products (conv1's weight gradient,
 * N = 9) stay with OpenBLAS: masked tiles would waste 80% of the work. */

/* A thread's packing space. `a` .. `lda` describe the A that apack holds (a == NULL: none);
 * the drivers clear it at the start of each call, since the weight may change between
 * calls at the same address. */
typedef struct gemm_pack {
    const void *a;
    bool ta;
    int64_t M, K, lda;
    float *apack, *bpack;
} gemm_pack;

#define APACK_FLOATS (256 * 1024)
#define GEMM_KC      256
#define GEMM_NC      768
#define PACK_BYTES   ((size_t)(APACK_FLOATS + GEMM_KC * GEMM_NC) * sizeof(float))

static void pack_init(gemm_pack *pk, void *space) {
    memset(pk, 0, sizeof *pk);
    pk->apack = space;
    pk->bpack = pk->apack + APACK_FLOATS;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_GEMM 1
#define GEMM_MR          8
#define GEMM_NR          48

static bool avx512_fits(int64_t M, int64_t N, int64_t K) {
    return N >= 32 && (M + GEMM_MR - 1) / GEMM_MR * GEMM_MR * K <= APACK_FLOATS;
}

__attribute__((target("avx512f"))) static inline __mmask16 lanes(int64_t n) {
    return n >= 16 ? (__mmask16)0xffff : (n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1));
}

/* c[0..m)[0..n) (+)= a (kc x 8, packed) @ b (kc rows of n, `ldb` apart); m <= 8, n <= 48. */
__attribute__((target("avx512f"))) static void gemm_tile(int64_t kc, const float *a, const float *b, int64_t ldb,
                                                         float *c, int64_t ldc, int64_t m, int64_t n, bool add) {
    __mmask16 k0 = lanes(n), k1 = lanes(n - 16), k2 = lanes(n - 32);
    __m512 acc[GEMM_MR][3];
    for (int i = 0; i < GEMM_MR; i++)
        acc[i][0] = acc[i][1] = acc[i][2] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        const float *row = b + k * ldb;
        __m512 b0 = _mm512_maskz_loadu_ps(k0, row), b1 = _mm512_maskz_loadu_ps(k1, row + 16),
               b2 = _mm512_maskz_loadu_ps(k2, row + 32);
        for (int i = 0; i < GEMM_MR; i++) {
            __m512 ai = _mm512_set1_ps(a[k * GEMM_MR + i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(ai, b2, acc[i][2]);
        }
    }
    for (int i = 0; i < GEMM_MR && i < m; i++) {
        float *row = c + i * ldc;
        if (add) {
            acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_maskz_loadu_ps(k0, row));
            acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_maskz_loadu_ps(k1, row + 16));
            acc[i][2] = _mm512_add_ps(acc[i][2], _mm512_maskz_loadu_ps(k2, row + 32));
        }
        _mm512_mask_storeu_ps(row, k0, acc[i][0]);
        _mm512_mask_storeu_ps(row + 16, k1, acc[i][1]);
        _mm512_mask_storeu_ps(row + 32, k2, acc[i][2]);
    }
}

/* r[i][j] <- r[j][i] for a 16 x 16 block of floats. */
__attribute__((target("avx512f"))) static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0x88);
            t[8 * i + j + 4] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    }
}

/* dst[k][j] = src[j][k] for j < rows, k < cols (both at most 16); rows `ld` apart. */
__attribute__((target("avx512f"))) static void transpose_block(const float *src, int64_t lds, int64_t rows,
                                                               int64_t cols, float *dst, int64_t ldd) {
    __m512 r[16];
    __mmask16 col_mask = lanes(cols), row_mask = lanes(rows);
    for (int j = 0; j < 16; j++)
        r[j] = j < rows ? _mm512_maskz_loadu_ps(col_mask, src + j * lds) : _mm512_setzero_ps();
    transpose16(r);
    for (int k = 0; k < 16 && k < cols; k++)
        _mm512_mask_storeu_ps(dst + k * ldd, row_mask, r[k]);
}

/* Pack op(a) (M x K) into panels of 8 rows: panel p holds rows 8p..8p+7 as K groups of 8
 * (rows past M are zeros). Skipped when the pack already holds this A. */
static void pack_a(gemm_pack *pk, bool ta, int64_t M, int64_t K, const float *a, int64_t lda) {
    if (pk->a == a && pk->ta == ta && pk->M == M && pk->K == K && pk->lda == lda)
        return;
    for (int64_t p0 = 0; p0 < M; p0 += GEMM_MR) {
        float *dst = pk->apack + p0 * K;
        int64_t rows = M - p0 < GEMM_MR ? M - p0 : GEMM_MR;
        if (rows < GEMM_MR)
            memset(dst, 0, (size_t)(K * GEMM_MR) * sizeof(float));
        if (ta) { /* op(a)(m, k) = a[k][m]: each k gives 8 neighbours */
            for (int64_t k = 0; k < K; k++)
                memcpy(dst + k * GEMM_MR, a + k * lda + p0, (size_t)rows * sizeof(float));
        } else {
            for (int64_t i = 0; i < rows; i++) {
                const float *src = a + (p0 + i) * lda;
                for (int64_t k = 0; k < K; k++)
                    dst[k * GEMM_MR + i] = src[k];
            }
        }
    }
    pk->a = a;
    pk->ta = ta;
    pk->M = M;
    pk->K = K;
    pk->lda = lda;
}

/* c (M, N) = op(a) @ op(b) + beta * c (beta 0 or 1), with the operands of serial_gemm. */
__attribute__((target("avx512f"))) static void gemm_avx512(gemm_pack *pk, bool ta, bool tb, int64_t M, int64_t N,
                                                           int64_t K, const float *a, int64_t lda, const float *b,
                                                           int64_t ldb, double beta, float *c, int64_t ldc) {
    pack_a(pk, ta, M, K, a, lda);
    for (int64_t k0 = 0; k0 < K; k0 += GEMM_KC) {
        int64_t kc = K - k0 < GEMM_KC ? K - k0 : GEMM_KC;
        bool add = k0 > 0 || beta != 0.0;
        for (int64_t n0 = 0; n0 < N; n0 += GEMM_NC) {
            int64_t nc = N - n0 < GEMM_NC ? N - n0 : GEMM_NC, ldp = ldb;
            const float *bp = b + k0 * ldb + n0;
            if (tb) { /* op(b)(k, n) = b[n][k]: transpose the block into rows */
                for (int64_t j = 0; j < nc; j += 16)
                    for (int64_t k = 0; k < kc; k += 16)
                        transpose_block(b + (n0 + j) * ldb + k0 + k, ldb, nc - j < 16 ? nc - j : 16,
                                        kc - k < 16 ? kc - k : 16, pk->bpack + k * nc + j, nc);
                bp = pk->bpack;
                ldp = nc;
            }
            for (int64_t j = 0; j < nc; j += GEMM_NR)
                for (int64_t p0 = 0; p0 < M; p0 += GEMM_MR)
                    gemm_tile(kc, pk->apack + p0 * K + k0 * GEMM_MR, bp + j, ldp, c + p0 * ldc + n0 + j, ldc, M - p0,
                              nc - j, add);
        }
    }
}
#endif

/* c (M, N) = op(a) (M, K) @ op(b) (K, N) + beta * c, as BLAS calls of at most SERIAL_MNK
 * each, so that OpenBLAS never threads them (see the top of the file). op(a) is a, or the
 * transpose of the stored (K, M) matrix; op(b) alike. F32 goes to the AVX-512 kernel where
 * the CPU has it and the product fits it. */
static void serial_gemm(const conv_plan *p, gemm_pack *pack, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                        const void *a, int64_t lda, const void *b, int64_t ldb, double beta, void *c, int64_t ldc) {
#ifdef HAVE_AVX512_GEMM
    if (p->dtype == CT_F32 && avx512_fits(M, N, K) && ct_cpu_has_avx512()) {
        gemm_avx512(pack, ta, tb, M, N, K, a, lda, b, ldb, beta, c, ldc);
        return;
    }
#endif
    int64_t kc = K, nc = N, mc = M;
    if (M * N * K > SERIAL_MNK) {
        kc = SERIAL_MNK / (M * N);
        kc = kc < MIN_TILE ? (K < MIN_TILE ? K : MIN_TILE) : kc;
        nc = SERIAL_MNK / (M * kc);
        nc = nc < MIN_TILE ? (N < MIN_TILE ? N : MIN_TILE) : (nc > N ? N : nc);
        mc = SERIAL_MNK / (nc * kc);
        mc = mc < 1 ? 1 : (mc > M ? M : mc);
    }
    size_t es = p->es;
    for (int64_t k0 = 0; k0 < K; k0 += kc) {
        int64_t kk = K - k0 < kc ? K - k0 : kc;
        double bt = k0 == 0 ? beta : 1.0;
        for (int64_t m0 = 0; m0 < M; m0 += mc) {
            int64_t mm = M - m0 < mc ? M - m0 : mc;
            const char *ap = (const char *)a + (size_t)(ta ? k0 * lda + m0 : m0 * lda + k0) * es;
            for (int64_t n0 = 0; n0 < N; n0 += nc) {
                int64_t nn = N - n0 < nc ? N - n0 : nc;
                const char *bp = (const char *)b + (size_t)(tb ? n0 * ldb + k0 : k0 * ldb + n0) * es;
                blas(p, ta, tb, mm, nn, kk, ap, lda, bp, ldb, bt, (char *)c + (size_t)(m0 * ldc + n0) * es, ldc);
            }
        }
    }
}

/* ---- im2col / col2im ------------------------------------------------------------------
 * With stride 1 and oW == W (the "same" convolutions of most CNNs), an output row and its
 * input row are the same length, so over the valid output rows of one tap the col row is
 * the input plane shifted by a constant: one flat copy (or add), then the few elements
 * that wrapped into a neighbouring row are zeroed. For 3x3 convolutions on 14x14 planes
 * this made im2col three times faster than the per-row loops, whose rows are too short to
 * amortize their bounds. F32 only: F64 serves the gradient checks. */

static bool flat_rows(const conv_plan *p) {
    const ct_conv2d_geom *g = p->g;
    return p->es == sizeof(float) && g->stride_h == 1 && g->stride_w == 1 && g->oW == g->W;
}

/* The output rows [*a, *b) within [oh0, oh1) whose input row oh + ih_offset is inside. */
static void valid_rows(const ct_conv2d_geom *g, int64_t oh0, int64_t oh1, int64_t ih_offset, int64_t *a, int64_t *b) {
    *a = -ih_offset > oh0 ? -ih_offset : oh0;
    *b = g->H - ih_offset < oh1 ? g->H - ih_offset : oh1;
    if (*b < *a)
        *b = *a;
    if (*a > oh1)
        *a = *b = oh1;
}

static void im2col_plane_flat(const conv_plan *p, const float *plane, int64_t oh0, int64_t oh1, float *rows,
                              int64_t ld) {
    const ct_conv2d_geom *g = p->g;
    int64_t W = g->W, band = (oh1 - oh0) * W;
    for (int64_t kh = 0; kh < g->kH; kh++) {
        int64_t ih_offset = kh * g->dilation_h - g->pad_h, a, b;
        valid_rows(g, oh0, oh1, ih_offset, &a, &b);
        for (int64_t kw = 0; kw < g->kW; kw++) {
            int64_t iw0 = kw * g->dilation_w - g->pad_w, lo, hi;
            valid_range(W, W, 1, iw0, &lo, &hi);
            float *dst = rows + (kh * g->kW + kw) * ld;
            int64_t first = (a - oh0) * W, last = (b - oh0) * W;
            if (lo >= hi)
                first = last = band;
            for (int64_t i = 0; i < first; i++)
                dst[i] = 0;
            for (int64_t i = last; i < band; i++)
                dst[i] = 0;
            if (first == last)
                continue;
            float *d = dst + first;
            const float *s = plane + (a + ih_offset) * W; /* input row of output row a */
            int64_t n = last - first;
            for (int64_t i = lo; i < n - (W - hi); i++)
                d[i] = s[i + iw0];
            for (int64_t r = 0; r < n; r += W) {
                for (int64_t i = 0; i < lo; i++)
                    d[r + i] = 0;
                for (int64_t i = hi; i < W; i++)
                    d[r + i] = 0;
            }
        }
    }
}

/* The adjoint of im2col_plane_flat over whole planes. Clobbers the wrapped elements of rows. */
static void col2im_plane_flat(const conv_plan *p, float *rows, int64_t ld, float *plane) {
    const ct_conv2d_geom *g = p->g;
    int64_t W = g->W;
    for (int64_t kh = 0; kh < g->kH; kh++) {
        int64_t ih_offset = kh * g->dilation_h - g->pad_h, a, b;
        valid_rows(g, 0, g->oH, ih_offset, &a, &b);
        for (int64_t kw = 0; kw < g->kW; kw++) {
            int64_t iw0 = kw * g->dilation_w - g->pad_w, lo, hi;
            valid_range(W, W, 1, iw0, &lo, &hi);
            if (lo >= hi || a >= b)
                continue;
            float *src = rows + (kh * g->kW + kw) * ld + a * W;
            float *d = plane + (a + ih_offset) * W;
            int64_t n = (b - a) * W;
            for (int64_t r = 0; r < n; r += W) {
                for (int64_t i = 0; i < lo; i++)
                    src[r + i] = 0;
                for (int64_t i = hi; i < W; i++)
                    src[r + i] = 0;
            }
            for (int64_t i = lo; i < n - (W - hi); i++)
                d[i + iw0] += src[i];
        }
    }
}

/* The kH * kW col rows of one input plane (H, W) for output rows [oh0, oh1): row (kh, kw)
 * holds, for each of those output positions, the input element under that tap (zero in
 * the padding). Rows are `ld` apart. */
static void im2col_plane(const conv_plan *p, const void *plane, int64_t oh0, int64_t oh1, void *rows, int64_t ld) {
    const ct_conv2d_geom *g = p->g;
    if (flat_rows(p)) {
        im2col_plane_flat(p, plane, oh0, oh1, rows, ld);
        return;
    }
    for (int64_t kh = 0; kh < g->kH; kh++)
        for (int64_t kw = 0; kw < g->kW; kw++) {
            int64_t iw0 = kw * g->dilation_w - g->pad_w, lo, hi;
            valid_range(g->W, g->oW, g->stride_w, iw0, &lo, &hi);
            int64_t row_index = kh * g->kW + kw;
            for (int64_t oh = oh0; oh < oh1; oh++) {
                int64_t ih = oh * g->stride_h - g->pad_h + kh * g->dilation_h;
                bool inside = ih >= 0 && ih < g->H;
                int64_t sw = g->stride_w, first = inside ? lo : g->oW, last = inside ? hi : g->oW;
                if (p->es == sizeof(float)) {
                    float *dst = (float *)rows + row_index * ld + (oh - oh0) * g->oW;
                    const float *src = inside ? (const float *)plane + ih * g->W : NULL;
                    for (int64_t ow = 0; ow < first; ow++)
                        dst[ow] = 0;
                    if (sw == 1)
                        for (int64_t ow = first; ow < last; ow++)
                            dst[ow] = src[ow + iw0];
                    else
                        for (int64_t ow = first; ow < last; ow++)
                            dst[ow] = src[ow * sw + iw0];
                    for (int64_t ow = last; ow < g->oW; ow++)
                        dst[ow] = 0;
                } else {
                    double *dst = (double *)rows + row_index * ld + (oh - oh0) * g->oW;
                    const double *src = inside ? (const double *)plane + ih * g->W : NULL;
                    for (int64_t ow = 0; ow < g->oW; ow++)
                        dst[ow] = ow >= first && ow < last ? src[ow * sw + iw0] : 0;
                }
            }
        }
}

/* The adjoint of im2col_plane over whole planes: adds each col row back onto the plane
 * (already zeroed). May clobber rows. */
static void col2im_plane(const conv_plan *p, void *rows, int64_t ld, void *plane) {
    const ct_conv2d_geom *g = p->g;
    if (flat_rows(p)) {
        col2im_plane_flat(p, rows, ld, plane);
        return;
    }
    for (int64_t kh = 0; kh < g->kH; kh++)
        for (int64_t kw = 0; kw < g->kW; kw++) {
            int64_t iw0 = kw * g->dilation_w - g->pad_w, lo, hi;
            valid_range(g->W, g->oW, g->stride_w, iw0, &lo, &hi);
            int64_t row_index = kh * g->kW + kw, sw = g->stride_w;
            for (int64_t oh = 0; oh < g->oH; oh++) {
                int64_t ih = oh * g->stride_h - g->pad_h + kh * g->dilation_h;
                if (ih < 0 || ih >= g->H)
                    continue;
                if (p->es == sizeof(float)) {
                    const float *src = (const float *)rows + row_index * ld + oh * g->oW;
                    float *dst = (float *)plane + ih * g->W;
                    if (sw == 1)
                        for (int64_t ow = lo; ow < hi; ow++)
                            dst[ow + iw0] += src[ow];
                    else
                        for (int64_t ow = lo; ow < hi; ow++)
                            dst[ow * sw + iw0] += src[ow];
                } else {
                    const double *src = (const double *)rows + row_index * ld + oh * g->oW;
                    double *dst = (double *)plane + ih * g->W;
                    for (int64_t ow = lo; ow < hi; ow++)
                        dst[ow * sw + iw0] += src[ow];
                }
            }
        }
}

/* ---- small helpers on rows of elements ------------------------------------------------- */

static void fill_value(const conv_plan *p, void *dst, int64_t n, double value) {
    if (p->es == sizeof(float))
        for (int64_t i = 0; i < n; i++)
            ((float *)dst)[i] = (float)value;
    else
        for (int64_t i = 0; i < n; i++)
            ((double *)dst)[i] = value;
}

static double bias_value(const conv_plan *p, const void *bias, int64_t o) {
    if (!bias)
        return 0.0;
    return p->es == sizeof(float) ? ((const float *)bias)[o] : ((const double *)bias)[o];
}

static inline char *at(const void *base, int64_t elems, size_t es) {
    return (char *)base + (size_t)elems * es;
}

/* ---- forward ------------------------------------------------------------------------- */

/* Output rows [oh0, oh1) of image n: y[n][:, rows] = w @ im2col(x[n], rows) + bias. */
static void forward_item(const conv_plan *p, const void *x, const void *w, const void *bias, void *y, int64_t n,
                         int64_t oh0, int64_t oh1, void *col, gemm_pack *pack) {
    const ct_conv2d_geom *g = p->g;
    size_t es = p->es;
    int64_t l0 = oh0 * g->oW, lb = (oh1 - oh0) * g->oW, ld = lb;
    const void *xn = at(x, n * g->C * p->HW, es), *cols = col;
    char *yn = at(y, n * g->O * p->L, es);
    if (p->direct_1x1) {
        cols = at(xn, l0, es);
        ld = p->L;
    } else {
        for (int64_t c = 0; c < g->C; c++)
            im2col_plane(p, at(xn, c * p->HW, es), oh0, oh1, at(col, c * p->taps * lb, es), lb);
    }
    for (int64_t o = 0; bias && o < g->O; o++)
        fill_value(p, at(yn, o * p->L + l0, es), lb, bias_value(p, bias, o));
    for (int64_t grp = 0; grp < g->groups; grp++)
        serial_gemm(p, pack, false, false, p->Og, lb, p->K, at(w, grp * p->Og * p->K, es), p->K,
                    at(cols, grp * p->K * ld, es), ld, bias ? 1.0 : 0.0, at(yn, grp * p->Og * p->L + l0, es), p->L);
}

bool ct_cpu_conv2d_forward(ct_dtype dtype, const ct_conv2d_geom *g, const void *x, const void *w, const void *bias,
                           void *y) {
    conv_plan p = plan_of(dtype, g);
    if (g->N == 0 || g->O == 0 || p.L == 0)
        return true;
    if (p.K == 0) { /* no input channels: the bias alone */
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t o = 0; o < g->O; o++)
                fill_value(&p, at(y, (n * g->O + o) * p.L, p.es), p.L, bias_value(&p, bias, o));
        return true;
    }
    int64_t items = g->N * p.bands;
    int threads = omp_get_max_threads();
    threads = items < threads ? (int)items : threads;
    /* Per thread: a col buffer, then the GEMM's packing space. */
    size_t col_bytes = p.direct_1x1 ? 0 : ((size_t)(p.Kall * p.band_rows * g->oW) * p.es + 63) & ~(size_t)63;
    size_t per_thread = col_bytes + PACK_BYTES;
    scratch cols;
    if (!scratch_acquire(&cols, per_thread * (size_t)threads))
        return false;
#pragma omp parallel num_threads(threads)
    {
        char *col = (char *)cols.ptr + per_thread * (size_t)omp_get_thread_num();
        gemm_pack pack;
        pack_init(&pack, col + col_bytes);
#pragma omp for schedule(static)
        for (int64_t item = 0; item < items; item++) {
            int64_t n = item / p.bands, oh0 = item % p.bands * p.band_rows;
            int64_t oh1 = oh0 + p.band_rows < g->oH ? oh0 + p.band_rows : g->oH;
            forward_item(&p, x, w, bias, y, n, oh0, oh1, col, &pack);
        }
    }
    scratch_release(&cols);
    return true;
}

/* ---- backward ------------------------------------------------------------------------ */

/* Sum of n floats in 16 independent lanes: a plain running sum is one dependent add per
 * element (the compiler may not reorder float adds), four times slower. */
static float sum_f32(const float *x, int64_t n) {
    float lanes[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++)
            lanes[j] += x[i + j];
    float s = 0;
    for (; i < n; i++)
        s += x[i];
    for (int j = 0; j < 16; j++)
        s += lanes[j];
    return s;
}

void ct_cpu_conv2d_channel_sum(ct_dtype dtype, int64_t N, int64_t C, int64_t L, const void *t, void *out) {
    bool f64 = dtype == CT_F64;
#pragma omp parallel for schedule(static) if (N * C * L >= PAR_MIN_ELEMS)
    for (int64_t c = 0; c < C; c++) {
        double sum = 0; /* one plane in f32, the planes in f64 */
        for (int64_t n = 0; n < N; n++) {
            int64_t base = (n * C + c) * L;
            if (f64)
                for (int64_t l = 0; l < L; l++)
                    sum += ((const double *)t)[base + l];
            else
                sum += sum_f32((const float *)t + base, L);
        }
        if (f64)
            ((double *)out)[c] = sum;
        else
            ((float *)out)[c] = (float)sum;
    }
}

void ct_cpu_conv2d_add_bias(ct_dtype dtype, int64_t N, int64_t C, int64_t L, void *y, const void *bias) {
    bool f64 = dtype == CT_F64;
#pragma omp parallel for schedule(static) if (N * C * L >= PAR_MIN_ELEMS)
    for (int64_t t = 0; t < N * C; t++) {
        int64_t c = t % C;
        if (f64)
            for (int64_t l = 0; l < L; l++)
                ((double *)y)[t * L + l] += ((const double *)bias)[c];
        else
            for (int64_t l = 0; l < L; l++)
                ((float *)y)[t * L + l] += ((const float *)bias)[c];
    }
}

/* The weight gradient of output rows [oh0, oh1) of image n, added to gw_part (O, K). */
static void weight_item(const conv_plan *p, const void *x, const void *gy, int64_t n, int64_t oh0, int64_t oh1,
                        void *col, gemm_pack *pack, void *gw_part) {
    const ct_conv2d_geom *g = p->g;
    size_t es = p->es;
    int64_t l0 = oh0 * g->oW, lb = (oh1 - oh0) * g->oW, ld = lb;
    const void *xn = at(x, n * g->C * p->HW, es), *cols = col;
    const char *gyn = at(gy, n * g->O * p->L, es);
    if (p->direct_1x1) {
        cols = at(xn, l0, es);
        ld = p->L;
    } else {
        for (int64_t c = 0; c < g->C; c++)
            im2col_plane(p, at(xn, c * p->HW, es), oh0, oh1, at(col, c * p->taps * lb, es), lb);
    }
    for (int64_t grp = 0; grp < g->groups; grp++)
        serial_gemm(p, pack, false, true, p->Og, p->K, lb, gyn + (size_t)(grp * p->Og * p->L + l0) * es, p->L,
                    at(cols, grp * p->K * ld, es), ld, 1.0, at(gw_part, grp * p->Og * p->K, es), p->K);
}

/* The input gradient of channels [c0, c0 + count) of group grp in image n: their dcol rows
 * = w^T @ gy, then col2im into their planes. */
static void data_item(const conv_plan *p, const void *w, const void *gy, void *gx, int64_t n, int64_t grp, int64_t c0,
                      int64_t count, void *col, gemm_pack *pack) {
    const ct_conv2d_geom *g = p->g;
    size_t es = p->es;
    int64_t rows = count * p->taps, c_abs = grp * p->Cg + c0;
    const char *gyn = at(gy, (n * g->O + grp * p->Og) * p->L, es);
    char *planes = at(gx, (n * g->C + c_abs) * p->HW, es);
    const char *wg = at(w, grp * p->Og * p->K + c0 * p->taps, es);
    if (p->direct_1x1) { /* the planes are the dcol rows */
        serial_gemm(p, pack, true, false, rows, p->L, p->Og, wg, p->K, gyn, p->L, 0.0, planes, p->L);
        return;
    }
    serial_gemm(p, pack, true, false, rows, p->L, p->Og, wg, p->K, gyn, p->L, 0.0, col, p->L);
    memset(planes, 0, (size_t)(count * p->HW) * es);
    for (int64_t c = 0; c < count; c++)
        col2im_plane(p, at(col, c * p->taps * p->L, es), p->L, planes + (size_t)(c * p->HW) * es);
}

bool ct_cpu_conv2d_backward(ct_dtype dtype, const ct_conv2d_geom *g, const void *x, const void *w, const void *gy,
                            void *gx, void *gw) {
    conv_plan p = plan_of(dtype, g);
    size_t es = p.es, gw_elems = (size_t)(g->O * p.K);
    if (g->N == 0 || p.L == 0 || g->O == 0 || p.K == 0) {
        if (gx)
            memset(gx, 0, (size_t)(g->N * g->C * p.HW) * es);
        if (gw)
            memset(gw, 0, gw_elems * es);
        return true;
    }
    int64_t weight_items = gw ? g->N * p.bands : 0, data_items = gx ? g->N * g->groups * p.blocks : 0;
    int64_t items = weight_items > data_items ? weight_items : data_items;
    int threads = omp_get_max_threads();
    threads = items < threads ? (int)items : threads;
    /* Per thread: a col buffer for either kind of item, the GEMM's packing space, then a
     * partial weight gradient. */
    size_t band_bytes = p.direct_1x1 ? 0 : (size_t)(p.Kall * p.band_rows * g->oW) * es;
    size_t block_bytes = p.direct_1x1 ? 0 : (size_t)(p.block * p.taps * p.L) * es;
    size_t col_bytes = ((band_bytes > block_bytes ? band_bytes : block_bytes) + 63) & ~(size_t)63;
    size_t part_offset = col_bytes + PACK_BYTES;
    size_t per_thread = part_offset + (gw ? (gw_elems * es + 63) & ~(size_t)63 : 0);
    scratch buf;
    if (!scratch_acquire(&buf, per_thread * (size_t)threads))
        return false;
#pragma omp parallel num_threads(threads)
    {
        char *col = (char *)buf.ptr + per_thread * (size_t)omp_get_thread_num(), *gw_part = col + part_offset;
        gemm_pack pack;
        pack_init(&pack, col + col_bytes);
        if (gw) {
            memset(gw_part, 0, gw_elems * es);
#pragma omp for schedule(static)
            for (int64_t item = 0; item < weight_items; item++) {
                int64_t n = item / p.bands, oh0 = item % p.bands * p.band_rows;
                int64_t oh1 = oh0 + p.band_rows < g->oH ? oh0 + p.band_rows : g->oH;
                weight_item(&p, x, gy, n, oh0, oh1, col, &pack, gw_part);
            }
            /* gw = the sum of the partials (the loop above ends with a barrier). */
            int nt = omp_get_num_threads();
#pragma omp for schedule(static)
            for (size_t i = 0; i < gw_elems; i++) {
                double sum = 0;
                for (int t = 0; t < nt; t++) {
                    const char *part = (const char *)buf.ptr + per_thread * (size_t)t + part_offset;
                    sum += es == sizeof(float) ? ((const float *)part)[i] : ((const double *)part)[i];
                }
                if (es == sizeof(float))
                    ((float *)gw)[i] = (float)sum;
                else
                    ((double *)gw)[i] = sum;
            }
        }
        if (gx) {
#pragma omp for schedule(static)
            for (int64_t item = 0; item < data_items; item++) {
                int64_t n = item / (g->groups * p.blocks), rest = item % (g->groups * p.blocks);
                int64_t grp = rest / p.blocks, c0 = rest % p.blocks * p.block;
                int64_t count = c0 + p.block < p.Cg ? p.block : p.Cg - c0;
                data_item(&p, w, gy, gx, n, grp, c0, count, col, &pack);
            }
        }
    }
    scratch_release(&buf);
    return true;
}
