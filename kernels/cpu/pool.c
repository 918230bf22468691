/* 2-D max and average pooling on the CPU, parallel over the N * C planes.
 *
 * The window rules are PyTorch's (aten/src/ATen/native/cpu/MaxPoolKernel.cpp and
 * AvgPoolKernel.cpp), so outputs, indices and divisors agree with it in every corner:
 * padding, ceil_mode windows that hang over the edge, NaN, count_include_pad.
 * Max pooling with a 2x2 window, stride 2 and no padding (the CNN case) has its own loop:
 * the generic one spends most of its time on window bounds. */
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/pool.h"

#include <math.h>
#include <string.h>

#define PAR_MIN_ELEMS (1 << 14)

static inline double load(const void *p, bool f64, int64_t i) {
    return f64 ? ((const double *)p)[i] : (double)((const float *)p)[i];
}
static inline void store(void *p, bool f64, int64_t i, double v) {
    if (f64)
        ((double *)p)[i] = v;
    else
        ((float *)p)[i] = (float)v;
}

/* ---- max ------------------------------------------------------------------------------ */

/* 2x2 windows, stride 2, no padding: every window lies inside the input. */
static void max_2x2_plane_f32(const ct_pool2d_geom *g, const float *x, float *y, int32_t *indices) {
    for (int64_t oh = 0; oh < g->oH; oh++) {
        const float *r0 = x + 2 * oh * g->W, *r1 = r0 + g->W;
        float *yr = y + oh * g->oW;
        int32_t *ir = indices ? indices + oh * g->oW : NULL;
        int32_t base = (int32_t)(2 * oh * g->W);
        for (int64_t ow = 0; ow < g->oW; ow++) {
            float best = r0[2 * ow];
            int32_t at = 0;
            float v = r0[2 * ow + 1];
            if (v > best || isnan(v)) {
                best = v;
                at = 1;
            }
            v = r1[2 * ow];
            if (v > best || isnan(v)) {
                best = v;
                at = (int32_t)g->W;
            }
            v = r1[2 * ow + 1];
            if (v > best || isnan(v)) {
                best = v;
                at = (int32_t)g->W + 1;
            }
            yr[ow] = best;
            if (ir)
                ir[ow] = base + (int32_t)(2 * ow) + at;
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_POOL 1

__attribute__((target("avx512f"))) static inline __mmask16 lanes(int64_t n) {
    return n >= 16 ? (__mmask16)0xffff : (n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1));
}

/* max_2x2_plane_f32, 16 outputs at a time: the even and odd columns of each input row pair
 * are split with two permutes and the four candidates merged with masks, in the scalar
 * loop's order. The scalar loop mispredicts about every other comparison on real data:
 * on the CNN's second pool (128 x 64 planes of 14 x 14) it took 2.4 ms, this one 0.5 ms. */
__attribute__((target("avx512f"))) static void max_2x2_plane_avx512(const ct_pool2d_geom *g, const float *x, float *y,
                                                                    int32_t *indices) {
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i right = _mm512_set1_epi32(1), below = _mm512_set1_epi32((int32_t)g->W);
    const __m512i below_right = _mm512_set1_epi32((int32_t)g->W + 1);
    for (int64_t oh = 0; oh < g->oH; oh++) {
        const float *r0 = x + 2 * oh * g->W, *r1 = r0 + g->W;
        for (int64_t ow0 = 0; ow0 < g->oW; ow0 += 16) {
            int64_t n = g->oW - ow0 < 16 ? g->oW - ow0 : 16;
            __mmask16 lo = lanes(2 * n), hi = lanes(2 * n - 16), out = lanes(n);
            const float *p0 = r0 + 2 * ow0, *p1 = r1 + 2 * ow0;
            __m512 lo0 = _mm512_maskz_loadu_ps(lo, p0), hi0 = _mm512_maskz_loadu_ps(hi, p0 + 16);
            __m512 lo1 = _mm512_maskz_loadu_ps(lo, p1), hi1 = _mm512_maskz_loadu_ps(hi, p1 + 16);
            __m512 best = _mm512_permutex2var_ps(lo0, even, hi0);
            __m512i at = _mm512_setzero_si512();
            __m512 cand[3] = {_mm512_permutex2var_ps(lo0, odd, hi0), _mm512_permutex2var_ps(lo1, even, hi1),
                              _mm512_permutex2var_ps(lo1, odd, hi1)};
            __m512i offset[3] = {right, below, below_right};
            for (int c = 0; c < 3; c++) {
                __mmask16 take =
                    _mm512_cmp_ps_mask(cand[c], best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(cand[c], cand[c], _CMP_UNORD_Q);
                best = _mm512_mask_blend_ps(take, best, cand[c]);
                at = _mm512_mask_blend_epi32(take, at, offset[c]);
            }
            _mm512_mask_storeu_ps(y + oh * g->oW + ow0, out, best);
            if (indices) {
                __m512i first = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(2 * oh * g->W + 2 * ow0)), even);
                _mm512_mask_storeu_epi32(indices + oh * g->oW + ow0, out, _mm512_add_epi32(first, at));
            }
        }
    }
}
#else
#define max_2x2_plane_avx512 max_2x2_plane_f32
#endif

static void max_plane(const ct_pool2d_geom *g, bool f64, const void *x, void *y, int32_t *indices) {
    for (int64_t oh = 0; oh < g->oH; oh++)
        for (int64_t ow = 0; ow < g->oW; ow++) {
            int64_t ih0 = oh * g->stride_h - g->pad_h, iw0 = ow * g->stride_w - g->pad_w;
            int64_t ih1 = ih0 + (g->kH - 1) * g->dilation_h + 1, iw1 = iw0 + (g->kW - 1) * g->dilation_w + 1;
            ih1 = ih1 < g->H ? ih1 : g->H;
            iw1 = iw1 < g->W ? iw1 : g->W;
            while (ih0 < 0)
                ih0 += g->dilation_h;
            while (iw0 < 0)
                iw0 += g->dilation_w;
            int64_t best_at = ih0 * g->W + iw0;
            double best = -INFINITY;
            for (int64_t ih = ih0; ih < ih1; ih += g->dilation_h)
                for (int64_t iw = iw0; iw < iw1; iw += g->dilation_w) {
                    double v = load(x, f64, ih * g->W + iw);
                    if (v > best || isnan(v)) {
                        best = v;
                        best_at = ih * g->W + iw;
                    }
                }
            store(y, f64, oh * g->oW + ow, best);
            if (indices)
                indices[oh * g->oW + ow] = (int32_t)best_at;
        }
}

void ct_cpu_max_pool2d_forward(ct_dtype dtype, const ct_pool2d_geom *g, const void *x, void *y, int32_t *indices) {
    bool f64 = dtype == CT_F64;
    size_t es = f64 ? sizeof(double) : sizeof(float);
    int64_t planes = g->N * g->C, in_plane = g->H * g->W, out_plane = g->oH * g->oW;
    bool fast = !f64 && g->kH == 2 && g->kW == 2 && g->stride_h == 2 && g->stride_w == 2 && g->pad_h == 0 &&
                g->pad_w == 0 && g->dilation_h == 1 && g->dilation_w == 1 && 2 * g->oH <= g->H && 2 * g->oW <= g->W;
    bool avx512 = fast && ct_cpu_has_avx512();
#pragma omp parallel for schedule(static) if (planes * in_plane >= PAR_MIN_ELEMS)
    for (int64_t p = 0; p < planes; p++) {
        const char *xp = (const char *)x + (size_t)(p * in_plane) * es;
        char *yp = (char *)y + (size_t)(p * out_plane) * es;
        int32_t *ip = indices ? indices + p * out_plane : NULL;
        if (fast && avx512)
            max_2x2_plane_avx512(g, (const float *)xp, (float *)yp, ip);
        else if (fast)
            max_2x2_plane_f32(g, (const float *)xp, (float *)yp, ip);
        else
            max_plane(g, f64, xp, yp, ip);
    }
}

void ct_cpu_max_pool2d_backward(ct_dtype dtype, const ct_pool2d_geom *g, const void *gy, const int32_t *indices,
                                void *gx) {
    bool f64 = dtype == CT_F64;
    size_t es = f64 ? sizeof(double) : sizeof(float);
    int64_t planes = g->N * g->C, in_plane = g->H * g->W, out_plane = g->oH * g->oW;
#pragma omp parallel for schedule(static) if (planes * in_plane >= PAR_MIN_ELEMS)
    for (int64_t p = 0; p < planes; p++) {
        char *gxp = (char *)gx + (size_t)(p * in_plane) * es;
        const char *gyp = (const char *)gy + (size_t)(p * out_plane) * es;
        const int32_t *ip = indices + p * out_plane;
        memset(gxp, 0, (size_t)in_plane * es);
        if (f64) {
            for (int64_t o = 0; o < out_plane; o++)
                ((double *)gxp)[ip[o]] += ((const double *)gyp)[o];
        } else {
            for (int64_t o = 0; o < out_plane; o++)
                ((float *)gxp)[ip[o]] += ((const float *)gyp)[o];
        }
    }
}

/* ---- average ------------------------------------------------------------------------ */

/* The input rows [*h0, *h1) and columns [*w0, *w1) of window (oh, ow), and its divisor. */
static double avg_window(const ct_pool2d_geom *g, int64_t oh, int64_t ow, int64_t *h0, int64_t *h1, int64_t *w0,
                         int64_t *w1) {
    int64_t ih0 = oh * g->stride_h - g->pad_h, iw0 = ow * g->stride_w - g->pad_w;
    int64_t ih1 = ih0 + g->kH, iw1 = iw0 + g->kW;
    if (ih1 > g->H + g->pad_h)
        ih1 = g->H + g->pad_h;
    if (iw1 > g->W + g->pad_w)
        iw1 = g->W + g->pad_w;
    int64_t padded_size = (ih1 - ih0) * (iw1 - iw0);
    *h0 = ih0 > 0 ? ih0 : 0;
    *w0 = iw0 > 0 ? iw0 : 0;
    *h1 = ih1 < g->H ? ih1 : g->H;
    *w1 = iw1 < g->W ? iw1 : g->W;
    if (*h0 >= *h1 || *w0 >= *w1)
        return 0;
    return (double)(g->count_include_pad ? padded_size : (*h1 - *h0) * (*w1 - *w0));
}

void ct_cpu_avg_pool2d_forward(ct_dtype dtype, const ct_pool2d_geom *g, const void *x, void *y) {
    bool f64 = dtype == CT_F64;
    size_t es = f64 ? sizeof(double) : sizeof(float);
    int64_t planes = g->N * g->C, in_plane = g->H * g->W, out_plane = g->oH * g->oW;
#pragma omp parallel for schedule(static) if (planes * in_plane >= PAR_MIN_ELEMS)
    for (int64_t p = 0; p < planes; p++) {
        const char *xp = (const char *)x + (size_t)(p * in_plane) * es;
        char *yp = (char *)y + (size_t)(p * out_plane) * es;
        for (int64_t oh = 0; oh < g->oH; oh++)
            for (int64_t ow = 0; ow < g->oW; ow++) {
                int64_t h0, h1, w0, w1;
                double divisor = avg_window(g, oh, ow, &h0, &h1, &w0, &w1), sum = 0;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++)
                        sum += load(xp, f64, ih * g->W + iw);
                store(yp, f64, oh * g->oW + ow, divisor > 0 ? sum / divisor : 0);
            }
    }
}

void ct_cpu_avg_pool2d_backward(ct_dtype dtype, const ct_pool2d_geom *g, const void *gy, void *gx) {
    bool f64 = dtype == CT_F64;
    size_t es = f64 ? sizeof(double) : sizeof(float);
    int64_t planes = g->N * g->C, in_plane = g->H * g->W, out_plane = g->oH * g->oW;
#pragma omp parallel for schedule(static) if (planes * in_plane >= PAR_MIN_ELEMS)
    for (int64_t p = 0; p < planes; p++) {
        char *gxp = (char *)gx + (size_t)(p * in_plane) * es;
        const char *gyp = (const char *)gy + (size_t)(p * out_plane) * es;
        memset(gxp, 0, (size_t)in_plane * es);
        for (int64_t oh = 0; oh < g->oH; oh++)
            for (int64_t ow = 0; ow < g->oW; ow++) {
                int64_t h0, h1, w0, w1;
                double divisor = avg_window(g, oh, ow, &h0, &h1, &w0, &w1);
                if (divisor == 0)
                    continue;
                double share = load(gyp, f64, oh * g->oW + ow) / divisor;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++)
                        store(gxp, f64, ih * g->W + iw, load(gxp, f64, ih * g->W + iw) + share);
            }
    }
}
