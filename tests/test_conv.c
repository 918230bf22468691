/* ct_conv2d / ct_conv_transpose2d: forward and gradients against a naive direct convolution
 * in f64 over many geometries (stride, padding, dilation, groups, depthwise, 1x1, odd and
 * non-square sizes, both CPU schedules), gradient checks, the adjoint identity between the
 * two ops, half precision, every bad input, and the split of a batch into chunks that cuDNN
 * can take (the arithmetic only: test_cuda_big runs it). */
#include "tests/common.h"
#include "kernels/cpu/conv.h"

#include <limits.h>
#include <string.h>

typedef struct conv_case {
    int64_t N, C, H, W, O, kH, kW;
    ct_conv2d_opts o;
    bool bias;
} conv_case;

#define OPTS(sh, sw, ph, pw, dh, dw, g) ((ct_conv2d_opts){{sh, sw}, {ph, pw}, {dh, dw}, g})

static int64_t out_size(int64_t in, int64_t k, int s, int p, int d) {
    return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

/* The forward index space of a convolution, visited once per (output, tap) pair with a
 * valid input position: the reference forward and gradients are all this loop. */
typedef struct conv_refs {
    double *y, *gx, *gw, *gb; /* outputs (any may be NULL) */
    const double *gy;         /* the output gradient, for gx / gw / gb */
} conv_refs;

static void ref_conv(const conv_case *k, const double *x, const double *w, const double *b, conv_refs *r) {
    const ct_conv2d_opts *o = &k->o;
    int64_t oH = out_size(k->H, k->kH, o->stride[0], o->padding[0], o->dilation[0]);
    int64_t oW = out_size(k->W, k->kW, o->stride[1], o->padding[1], o->dilation[1]);
    int64_t Cg = k->C / o->groups, Og = k->O / o->groups;
    for (int64_t n = 0; n < k->N; n++)
        for (int64_t oc = 0; oc < k->O; oc++)
            for (int64_t oh = 0; oh < oH; oh++)
                for (int64_t ow = 0; ow < oW; ow++) {
                    int64_t yi = ((n * k->O + oc) * oH + oh) * oW + ow;
                    double s = b ? b[oc] : 0;
                    for (int64_t cg = 0; cg < Cg; cg++)
                        for (int64_t kh = 0; kh < k->kH; kh++)
                            for (int64_t kw = 0; kw < k->kW; kw++) {
                                int64_t ih = oh * o->stride[0] - o->padding[0] + kh * o->dilation[0];
                                int64_t iw = ow * o->stride[1] - o->padding[1] + kw * o->dilation[1];
                                if (ih < 0 || ih >= k->H || iw < 0 || iw >= k->W)
                                    continue;
                                int64_t c = oc / Og * Cg + cg;
                                int64_t xi = ((n * k->C + c) * k->H + ih) * k->W + iw;
                                int64_t wi = ((oc * Cg + cg) * k->kH + kh) * k->kW + kw;
                                s += x[xi] * w[wi];
                                if (r->gx)
                                    r->gx[xi] += r->gy[yi] * w[wi];
                                if (r->gw)
                                    r->gw[wi] += r->gy[yi] * x[xi];
                            }
                    if (r->y)
                        r->y[yi] = s;
                    if (r->gb)
                        r->gb[oc] += r->gy[yi];
                }
}

static int64_t numel4(int64_t a, int64_t b, int64_t c, int64_t d) {
    return a * b * c * d;
}

typedef struct conv_inputs {
    ct_tensor *x, *w, *b;
} conv_inputs;

/* Random inputs of the case; x non-contiguous (a transposed (N, C, W, H) tensor) when asked. */
static conv_inputs make_inputs(const conv_case *k, ct_dtype dt, bool strided_x) {
    conv_inputs in;
    if (strided_x) {
        in.x = ct_transpose(t_rand((int64_t[]){k->N, k->C, k->W, k->H}, 4, dt, -1, 1), 2, 3);
        cr_assert(!ct_tensor_is_contiguous(in.x) || k->H == 1 || k->W == 1);
    } else {
        in.x = t_rand((int64_t[]){k->N, k->C, k->H, k->W}, 4, dt, -1, 1);
    }
    in.w = t_rand((int64_t[]){k->O, k->C / k->o.groups, k->kH, k->kW}, 4, dt, -1, 1);
    in.b = k->bias ? t_rand((int64_t[]){k->O}, 1, dt, -1, 1) : NULL;
    return in;
}

static int64_t y_numel(const conv_case *k) {
    return numel4(k->N, k->O, out_size(k->H, k->kH, k->o.stride[0], k->o.padding[0], k->o.dilation[0]),
                  out_size(k->W, k->kW, k->o.stride[1], k->o.padding[1], k->o.dilation[1]));
}

/* Largest |ref| (at least 1), to scale half-precision tolerances. */
static double scale_of(const double *ref, int64_t n) {
    double m = 1;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(ref[i]));
    return m;
}

/* Forward and all three gradients of the case in `dt`, against the f64 reference computed
 * from the same (rounded) values. The loss is sum(y * r) with r random. */
static void check_case(const conv_case *k, ct_dtype dt, double tol, bool strided_x) {
    T_NO_LEAK({
        conv_inputs in = make_inputs(k, dt, strided_x);
        ct_requires_grad(in.x, true);
        ct_requires_grad(in.w, true);
        if (in.b)
            ct_requires_grad(in.b, true);
        ct_tensor *y = ct_conv2d(in.x, in.w, in.b, &k->o);
        cr_assert_not_null(y, "%s", ct_last_error_message());
        int64_t oH = out_size(k->H, k->kH, k->o.stride[0], k->o.padding[0], k->o.dilation[0]);
        int64_t oW = out_size(k->W, k->kW, k->o.stride[1], k->o.padding[1], k->o.dilation[1]);
        t_assert_shape(y, (int64_t[]){k->N, k->O, oH, oW}, 4);
        cr_assert_eq(ct_tensor_dtype(y), dt);
        cr_assert_str_eq(ct_grad_fn_name(y), "ct_conv2d");

        ct_tensor *r = t_rand(ct_tensor_shape(y), 4, dt, -1, 1);
        cr_assert_eq(ct_backward(ct_sum(ct_mul(y, r), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());

        double *x = t_values(in.x), *w = t_values(in.w), *b = in.b ? t_values(in.b) : NULL, *gy = t_values(r);
        int64_t nx = ct_tensor_numel(in.x), nw = ct_tensor_numel(in.w), ny = y_numel(k);
        conv_refs ref = {calloc((size_t)ny + 1, 8), calloc((size_t)nx + 1, 8), calloc((size_t)nw + 1, 8),
                         calloc((size_t)k->O + 1, 8), gy};
        ref_conv(k, x, w, b, &ref);
        t_assert_close(y, ref.y, tol * scale_of(ref.y, ny), tol);
        t_assert_close(ct_grad(in.x), ref.gx, tol * scale_of(ref.gx, nx), tol);
        t_assert_close(ct_grad(in.w), ref.gw, tol * scale_of(ref.gw, nw), tol);
        if (in.b)
            t_assert_close(ct_grad(in.b), ref.gb, tol * scale_of(ref.gb, k->O), tol);
        free(x);
        free(w);
        free(b);
        free(gy);
        free(ref.y);
        free(ref.gx);
        free(ref.gw);
        free(ref.gb);
    });
}

/* Geometries covering the options one at a time and together. */
static const conv_case cases[] = {
    {2, 3, 8, 8, 4, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 1), true},  /* the usual 3x3 "same" */
    {2, 3, 7, 10, 5, 3, 5, OPTS(2, 1, 0, 2, 1, 1, 1), true}, /* stride, non-square */
    {1, 2, 9, 9, 3, 3, 3, OPTS(2, 2, 1, 1, 1, 1, 1), false}, /* batch 1, odd sizes, no bias */
    {2, 2, 9, 8, 3, 3, 3, OPTS(1, 1, 2, 2, 2, 2, 1), true},  /* dilation (atrous) */
    {2, 3, 11, 9, 2, 3, 2, OPTS(3, 2, 1, 0, 2, 3, 1), true}, /* everything at once */
    {2, 4, 6, 6, 6, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 2), true},  /* groups */
    {2, 3, 7, 7, 6, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 3), true},  /* depthwise, multiplier 2 */
    {3, 4, 5, 5, 4, 5, 5, OPTS(1, 1, 2, 2, 1, 1, 4), false}, /* depthwise 5x5 */
    {2, 6, 5, 7, 4, 1, 1, OPTS(1, 1, 0, 0, 1, 1, 1), true},  /* 1x1: the input is its own col */
    {2, 4, 5, 7, 4, 1, 1, OPTS(1, 1, 0, 0, 1, 1, 2), true},  /* 1x1 grouped */
    {2, 3, 6, 7, 4, 1, 1, OPTS(2, 2, 0, 0, 1, 1, 1), true},  /* 1x1 strided */
    {2, 2, 4, 4, 3, 3, 3, OPTS(1, 1, 3, 3, 1, 1, 1), true},  /* padding wider than the kernel */
    {1, 1, 1, 1, 2, 1, 1, OPTS(1, 1, 0, 0, 1, 1, 1), true},  /* one pixel */
    {2, 1, 5, 3, 2, 5, 3, OPTS(1, 1, 0, 0, 1, 1, 1), true},  /* kernel as large as the input */
    {3, 5, 6, 6, 4, 2, 2, OPTS(4, 4, 1, 1, 1, 1, 1), true},  /* stride larger than the kernel */
    {2, 2, 6, 7, 3, 5, 3, OPTS(1, 1, 1, 1, 1, 1, 1), true},  /* oW == W, oH < H: flat im2col */
    {2, 3, 9, 2, 4, 3, 5, OPTS(1, 1, 0, 2, 1, 1, 1), true},  /* ... with taps wholly in the padding */
};
/* Large enough for the batched schedule (one image's GEMM above OpenBLAS's threshold), with
 * several chunks and with groups. */
static const conv_case big_cases[] = {
    {4, 16, 12, 12, 32, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 1), true},
    {3, 32, 16, 16, 32, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 2), true},
    {9, 64, 24, 24, 16, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 1), true},  /* 6 + 3 images per chunk */
    {2, 48, 20, 20, 64, 1, 1, OPTS(1, 1, 0, 0, 1, 1, 1), false}, /* 1x1 batched */
    {3, 16, 15, 13, 40, 3, 3, OPTS(2, 1, 2, 1, 2, 1, 1), true},
    {3, 5, 21, 19, 36, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 1), true}, /* no size a multiple of 8 or 16 */
};
#define NCASES(a) (sizeof(a) / sizeof((a)[0]))

Test(conv, matches_reference_f64) {
    ct_manual_seed(1);
    for (size_t i = 0; i < NCASES(cases); i++)
        check_case(&cases[i], CT_F64, 1e-12, false);
}

Test(conv, matches_reference_f32) {
    ct_manual_seed(2);
    for (size_t i = 0; i < NCASES(cases); i++)
        check_case(&cases[i], CT_F32, 1e-5, false);
}

Test(conv, batched_schedule_matches_reference) {
    ct_manual_seed(3);
    for (size_t i = 0; i < NCASES(big_cases); i++) {
        check_case(&big_cases[i], CT_F32, 1e-5, false);
        check_case(&big_cases[i], CT_F64, 1e-12, false);
    }
}

Test(conv, non_contiguous_input) {
    ct_manual_seed(4);
    check_case(&cases[0], CT_F32, 1e-5, true);
    check_case(&cases[4], CT_F64, 1e-12, true);
    check_case(&cases[8], CT_F32, 1e-5, true);
    check_case(&big_cases[0], CT_F32, 1e-5, true);
}

Test(conv, half_precision_against_f64) {
    ct_manual_seed(5);
    ct_dtype dts[] = {CT_F16, CT_BF16};
    for (int d = 0; d < 2; d++) {
        check_case(&cases[0], dts[d], 1e-2, false);
        check_case(&cases[4], dts[d], 1e-2, false);
        check_case(&cases[6], dts[d], 1e-2, true);
        check_case(&big_cases[1], dts[d], 1e-2, false);
    }
}

/* The CNN's two convolutions, at a small batch. */
Test(conv, fashion_mnist_shapes) {
    ct_manual_seed(6);
    conv_case conv1 = {8, 1, 28, 28, 32, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 1), true};
    conv_case conv2 = {8, 32, 14, 14, 64, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 1), true};
    check_case(&conv1, CT_F32, 1e-5, false);
    check_case(&conv2, CT_F32, 1e-5, false);
}

/* ---- gradient checks ----------------------------------------------------------------------- */

static ct_tensor *f_conv(ct_tensor **in, void *ctx) {
    const conv_case *k = ctx;
    return ct_conv2d(in[0], in[1], k->bias ? in[2] : NULL, &k->o);
}

static void gradcheck_case(const conv_case *k, bool grad_x, bool grad_w) {
    T_NO_LEAK({
        conv_inputs in = make_inputs(k, CT_F64, false);
        ct_tensor *x[3] = {ct_requires_grad(in.x, grad_x), ct_requires_grad(in.w, grad_w),
                           in.b ? ct_requires_grad(in.b, true) : NULL};
        t_gradcheck(f_conv, x, in.b ? 3 : 2, (void *)k, 1e-6, 1e-8, 1e-6);
    });
}

Test(conv, gradcheck) {
    ct_manual_seed(7);
    const conv_case small[] = {
        {2, 2, 5, 5, 3, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 1), true},  {1, 2, 6, 5, 2, 3, 2, OPTS(2, 1, 1, 0, 1, 1, 1), true},
        {2, 2, 7, 7, 2, 3, 3, OPTS(1, 2, 2, 1, 2, 1, 1), false}, {2, 4, 4, 4, 4, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 2), true},
        {1, 3, 5, 4, 3, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 3), true}, /* depthwise */
        {2, 3, 3, 4, 2, 1, 1, OPTS(1, 1, 0, 0, 1, 1, 1), true}, /* 1x1 */
    };
    for (size_t i = 0; i < NCASES(small); i++)
        gradcheck_case(&small[i], true, true);
    gradcheck_case(&small[0], false, true); /* the first layer of a network: no input gradient */
    gradcheck_case(&small[1], true, false); /* frozen weights */
}

Test(conv, empty_batch) {
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(ct_zeros((int64_t[]){0, 2, 5, 5}, 4, CT_F32, CT_CPU), true);
        ct_tensor *w = ct_requires_grad(ct_ones((int64_t[]){3, 2, 3, 3}, 4, CT_F32, CT_CPU), true);
        ct_tensor *b = ct_requires_grad(ct_ones((int64_t[]){3}, 1, CT_F32, CT_CPU), true);
        ct_tensor *y = ct_conv2d(x, w, b, NULL);
        t_assert_shape(y, (int64_t[]){0, 3, 3, 3}, 4);
        cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        double zeros[54] = {0};
        t_assert_close(ct_grad(w), zeros, 0, 0);
        t_assert_close(ct_grad(b), zeros, 0, 0);
    });
}

/* ---- transposed convolution ------------------------------------------------------------ */

typedef struct convt_case {
    int64_t N, C, H, W, O, kH, kW; /* x (N, C, H, W), w (C, O / groups, kH, kW) */
    ct_conv_transpose2d_opts o;
    bool bias;
} convt_case;

#define TOPTS(sh, sw, ph, pw, oph, opw, dh, dw, g)                                                                     \
    ((ct_conv_transpose2d_opts){{sh, sw}, {ph, pw}, {oph, opw}, {dh, dw}, g})

static int64_t t_out_size(int64_t in, int64_t k, int s, int p, int op, int d) {
    return (in - 1) * s - 2 * p + d * (k - 1) + op + 1;
}

/* Direct transposed convolution: every input element scatters its taps. */
static double *ref_convt(const convt_case *k, const double *x, const double *w, const double *b) {
    const ct_conv_transpose2d_opts *o = &k->o;
    int64_t oH = t_out_size(k->H, k->kH, o->stride[0], o->padding[0], o->output_padding[0], o->dilation[0]);
    int64_t oW = t_out_size(k->W, k->kW, o->stride[1], o->padding[1], o->output_padding[1], o->dilation[1]);
    int64_t Cg = k->C / o->groups, Og = k->O / o->groups;
    double *y = calloc((size_t)numel4(k->N, k->O, oH, oW) + 1, 8);
    for (int64_t n = 0; n < k->N; n++)
        for (int64_t oc = 0; oc < k->O; oc++)
            for (int64_t i = 0; i < oH * oW; i++)
                y[(n * k->O + oc) * oH * oW + i] = b ? b[oc] : 0;
    for (int64_t n = 0; n < k->N; n++)
        for (int64_t c = 0; c < k->C; c++)
            for (int64_t ih = 0; ih < k->H; ih++)
                for (int64_t iw = 0; iw < k->W; iw++)
                    for (int64_t og = 0; og < Og; og++)
                        for (int64_t kh = 0; kh < k->kH; kh++)
                            for (int64_t kw = 0; kw < k->kW; kw++) {
                                int64_t oh = ih * o->stride[0] - o->padding[0] + kh * o->dilation[0];
                                int64_t ow = iw * o->stride[1] - o->padding[1] + kw * o->dilation[1];
                                if (oh < 0 || oh >= oH || ow < 0 || ow >= oW)
                                    continue;
                                int64_t oc = c / Cg * Og + og;
                                y[((n * k->O + oc) * oH + oh) * oW + ow] +=
                                    x[((n * k->C + c) * k->H + ih) * k->W + iw] *
                                    w[((c * Og + og) * k->kH + kh) * k->kW + kw];
                            }
    return y;
}

static const convt_case tcases[] = {
    {2, 3, 4, 4, 2, 3, 3, TOPTS(1, 1, 0, 0, 0, 0, 1, 1, 1), true},
    {2, 3, 4, 5, 4, 3, 3, TOPTS(2, 2, 1, 1, 1, 0, 1, 1, 1), true},  /* the usual 2x upsampling */
    {1, 4, 3, 3, 6, 2, 3, TOPTS(2, 3, 0, 1, 1, 2, 1, 1, 2), false}, /* groups, output_padding */
    {2, 2, 5, 4, 3, 3, 2, TOPTS(1, 2, 2, 0, 1, 0, 2, 1, 1), true},  /* dilation > stride allows output_padding */
    {2, 4, 3, 3, 4, 3, 3, TOPTS(2, 2, 1, 1, 0, 0, 1, 1, 4), true},  /* depthwise */
};

static ct_tensor *f_convt(ct_tensor **in, void *ctx) {
    const convt_case *k = ctx;
    return ct_conv_transpose2d(in[0], in[1], k->bias ? in[2] : NULL, &k->o);
}

Test(conv_transpose, matches_direct_reference) {
    ct_manual_seed(8);
    ct_dtype dts[] = {CT_F64, CT_F32, CT_BF16};
    double tols[] = {1e-12, 1e-5, 1e-2};
    for (int d = 0; d < 3; d++)
        for (size_t i = 0; i < NCASES(tcases); i++) {
            const convt_case *k = &tcases[i];
            T_NO_LEAK({
                ct_tensor *x = t_rand((int64_t[]){k->N, k->C, k->H, k->W}, 4, dts[d], -1, 1);
                ct_tensor *w = t_rand((int64_t[]){k->C, k->O / k->o.groups, k->kH, k->kW}, 4, dts[d], -1, 1);
                ct_tensor *b = k->bias ? t_rand((int64_t[]){k->O}, 1, dts[d], -1, 1) : NULL;
                ct_tensor *y = ct_conv_transpose2d(x, w, b, &k->o);
                cr_assert_not_null(y, "%s", ct_last_error_message());
                const ct_conv_transpose2d_opts *o = &k->o;
                t_assert_shape(
                    y,
                    (int64_t[]){
                        k->N, k->O,
                        t_out_size(k->H, k->kH, o->stride[0], o->padding[0], o->output_padding[0], o->dilation[0]),
                        t_out_size(k->W, k->kW, o->stride[1], o->padding[1], o->output_padding[1], o->dilation[1])},
                    4);
                double *xv = t_values(x), *wv = t_values(w), *bv = b ? t_values(b) : NULL;
                double *ref = ref_convt(k, xv, wv, bv);
                t_assert_close(y, ref, tols[d] * scale_of(ref, ct_tensor_numel(y)), tols[d]);
                free(xv);
                free(wv);
                free(bv);
                free(ref);
            });
        }
}

Test(conv_transpose, gradcheck) {
    ct_manual_seed(9);
    for (size_t i = 0; i < NCASES(tcases); i++) {
        T_NO_LEAK({
            const convt_case *k = &tcases[i];
            ct_tensor *in[3] = {
                ct_requires_grad(t_rand((int64_t[]){k->N, k->C, k->H, k->W}, 4, CT_F64, -1, 1), true),
                ct_requires_grad(t_rand((int64_t[]){k->C, k->O / k->o.groups, k->kH, k->kW}, 4, CT_F64, -1, 1), true),
                k->bias ? ct_requires_grad(t_rand((int64_t[]){k->O}, 1, CT_F64, -1, 1), true) : NULL};
            t_gradcheck(f_convt, in, k->bias ? 3 : 2, (void *)k, 1e-6, 1e-8, 1e-6);
        });
    }
}

static double dot(const ct_tensor *a, const ct_tensor *b) {
    double *av = t_values(a), *bv = t_values(b), s = 0;
    for (int64_t i = 0; i < ct_tensor_numel(a); i++)
        s += av[i] * bv[i];
    free(av);
    free(bv);
    return s;
}

/* <conv(x), y> = <x, conv_T(y)> with the same weight, output_padding chosen so that
 * conv_T(y) has x's size. */
Test(conv_transpose, is_the_adjoint_of_conv2d) {
    ct_manual_seed(10);
    const conv_case adj[] = {
        cases[0], cases[1], cases[2], cases[3], cases[4], cases[5], cases[6], cases[10], cases[14], big_cases[1],
    };
    for (size_t i = 0; i < NCASES(adj); i++) {
        const conv_case *k = &adj[i];
        T_NO_LEAK({
            conv_inputs in = make_inputs(k, CT_F64, false);
            ct_tensor *cx = ct_conv2d(in.x, in.w, NULL, &k->o);
            cr_assert_not_null(cx, "%s", ct_last_error_message());
            ct_tensor *y = t_rand(ct_tensor_shape(cx), 4, CT_F64, -1, 1);
            ct_conv_transpose2d_opts t = {{k->o.stride[0], k->o.stride[1]},
                                          {k->o.padding[0], k->o.padding[1]},
                                          {0, 0},
                                          {k->o.dilation[0], k->o.dilation[1]},
                                          k->o.groups};
            int64_t in_sizes[2] = {k->H, k->W}, ks[2] = {k->kH, k->kW};
            for (int d = 0; d < 2; d++)
                t.output_padding[d] = (int)(in_sizes[d] - t_out_size(ct_tensor_shape(cx)[2 + d], ks[d], t.stride[d],
                                                                     t.padding[d], 0, t.dilation[d]));
            ct_tensor *ty = ct_conv_transpose2d(y, in.w, NULL, &t);
            cr_assert_not_null(ty, "%s", ct_last_error_message());
            t_assert_shape(ty, ct_tensor_shape(in.x), 4);
            double lhs = dot(cx, y), rhs = dot(in.x, ty);
            cr_assert(fabs(lhs - rhs) <= 1e-10 * fmax(1, fabs(lhs)),
                      "case %zu: <conv(x), y> = %.15g, <x, conv_T(y)> = %.15g", i, lhs, rhs);
        });
    }
}

/* ---- the batch split of the CUDA passes ----------------------------------------------------- */

/* A geometry with images of C * H * W input and O * oH * oW output elements (a 1x1 kernel:
 * the split looks at the activations only). */
static ct_conv2d_geom split_geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t oH, int64_t oW) {
    return (ct_conv2d_geom){N, C, H, W, O, oH, oW, 1, 1, 1, 1, 0, 0, 1, 1, 1};
}

static void assert_split(ct_conv2d_geom g, int64_t max_elems, int64_t images, int64_t chunks, int64_t last) {
    ct_conv2d_batch_split s = {-1, -1, -1};
    cr_assert(ct_conv2d_split_batch(&g, max_elems, &s), "N %lld, image %lld x %lld x %lld: refused", (long long)g.N,
              (long long)g.C, (long long)g.H, (long long)g.W);
    cr_assert(s.images == images && s.chunks == chunks && s.last == last,
              "N %lld, images of %lld and %lld elements, at most %lld: got %lld per chunk, %lld chunks, last %lld; "
              "expected %lld, %lld, %lld",
              (long long)g.N, (long long)(g.C * g.H * g.W), (long long)(g.O * g.oH * g.oW), (long long)max_elems,
              (long long)s.images, (long long)s.chunks, (long long)s.last, (long long)images, (long long)chunks,
              (long long)last);
}

/* Chunk counts and sizes at the edges of cuDNN's INT_MAX elements per tensor (2^31 - 1 is
 * prime: exactly INT_MAX is one image of INT_MAX elements or INT_MAX images of one), and
 * over a sweep of small limits: chunks cover the batch, each fits, and none could be larger. */
Test(conv, batch_split_for_cudnn) {
    const int64_t M = INT_MAX;
    assert_split(split_geom(M, 1, 1, 1, 1, 1, 1), M, M, 1, M);                   /* exactly INT_MAX */
    assert_split(split_geom(M + 1, 1, 1, 1, 1, 1, 1), M, M, 2, 1);               /* one over */
    assert_split(split_geom(1, 1, 1, M, 1, 1, M), M, 1, 1, 1);                   /* one image of INT_MAX */
    assert_split(split_geom(2, 1, 1, M, 1, 1, 1), M, 1, 2, 1);                   /* two of them */
    assert_split(split_geom(3, 1, 1, 1, 1, 1, M), M, 1, 3, 1);                   /* the output decides */
    assert_split(split_geom(128, 64, 512, 512, 64, 512, 512), M, 127, 2, 1);     /* 2^31 elements */
    assert_split(split_geom(127, 64, 512, 512, 64, 512, 512), M, 127, 1, 127);   /* just under */
    assert_split(split_geom(1000, 64, 512, 512, 64, 256, 256), M, 127, 8, 111);  /* stride 2 */
    assert_split(split_geom(33287, 1, 254, 254, 1, 256, 256), M, 32767, 2, 520); /* test_cuda_big's conv */
    assert_split(split_geom(0, 64, 512, 512, 64, 512, 512), M, 0, 1, 0);         /* empty batch */
    assert_split(split_geom(5, 0, 8, 8, 0, 6, 6), M, 5, 1, 5);                   /* empty images */
    ct_conv2d_batch_split s;
    ct_conv2d_geom g = split_geom(1, 2, 32768, 32768, 1, 32768, 32768); /* 2^31 elements in one image */
    cr_assert_not(ct_conv2d_split_batch(&g, M, &s), "one image over INT_MAX must be refused");
    g = split_geom(1, 1, 1, M, 1, 1, M + 1);
    cr_assert_not(ct_conv2d_split_batch(&g, M, &s), "one output image over INT_MAX must be refused");

    for (int64_t max_elems = 1; max_elems <= 60; max_elems++)
        for (int64_t in = 1; in <= 12; in++)
            for (int64_t out = 1; out <= 12; out++)
                for (int64_t N = 0; N <= 40; N++) {
                    g = split_geom(N, in, 1, 1, 1, 1, out);
                    int64_t image = in > out ? in : out;
                    bool fits = ct_conv2d_split_batch(&g, max_elems, &s);
                    cr_assert_eq(fits, image <= max_elems, "max %lld, in %lld, out %lld", (long long)max_elems,
                                 (long long)in, (long long)out);
                    if (!fits)
                        continue;
                    cr_assert(s.chunks >= 1 && s.images * image <= max_elems && s.last <= s.images &&
                                  (s.chunks - 1) * s.images + s.last == N && (N == 0 || s.last >= 1) &&
                                  (s.images == N || (s.images + 1) * image > max_elems),
                              "max %lld, in %lld, out %lld, N %lld: %lld per chunk, %lld chunks, last %lld",
                              (long long)max_elems, (long long)in, (long long)out, (long long)N, (long long)s.images,
                              (long long)s.chunks, (long long)s.last);
                }
}

/* ---- errors ------------------------------------------------------------------------------- */

static ct_tensor *zeros4(int64_t a, int64_t b, int64_t c, int64_t d, ct_dtype dt) {
    return ct_zeros((int64_t[]){a, b, c, d}, 4, dt, CT_CPU);
}

Test(conv, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *x = zeros4(2, 3, 8, 8, CT_F32), *w = zeros4(4, 3, 3, 3, CT_F32);
        ct_tensor *b = ct_zeros((int64_t[]){4}, 1, CT_F32, CT_CPU);
        ct_conv2d_opts o = CT_CONV2D_OPTS_DEFAULT;

        cr_assert_null(ct_conv2d(NULL, w, b, NULL));
        t_assert_error(CT_ERR_NULL, "ct_conv2d", "argument x is NULL", NULL);
        cr_assert_null(ct_conv2d(x, NULL, b, NULL));
        t_assert_error(CT_ERR_NULL, "ct_conv2d", "argument w is NULL", NULL);

        cr_assert_null(ct_conv2d(ct_zeros((int64_t[]){3, 8, 8}, 3, CT_F32, CT_CPU), w, b, NULL));
        t_assert_error(CT_ERR_SHAPE, "ct_conv2d: x must be 4-D (N, C, H, W): x is [3, 8, 8]", NULL);
        cr_assert_null(ct_conv2d(x, ct_zeros((int64_t[]){4, 3, 3}, 3, CT_F32, CT_CPU), b, NULL));
        t_assert_error(CT_ERR_SHAPE, "ct_conv2d: w must be 4-D", "w is [4, 3, 3]", NULL);

        cr_assert_null(ct_conv2d(x, zeros4(4, 2, 3, 3, CT_F32), b, NULL));
        t_assert_error(CT_ERR_SHAPE, "ct_conv2d: channel mismatch", "x is [2, 3, 8, 8]", "w is [4, 2, 3, 3]", NULL);

        o.groups = 2;
        cr_assert_null(ct_conv2d(x, zeros4(4, 1, 3, 3, CT_F32), b, &o));
        t_assert_error(CT_ERR_SHAPE, "ct_conv2d: groups 2 does not divide the input channels: x is [2, 3, 8, 8]", NULL);
        cr_assert_null(ct_conv2d(zeros4(2, 4, 8, 8, CT_F32), zeros4(5, 2, 3, 3, CT_F32), NULL, &o));
        t_assert_error(CT_ERR_SHAPE, "groups 2 does not divide the output channels: w is [5, 2, 3, 3]", NULL);
        o.groups = 0;
        cr_assert_null(ct_conv2d(x, w, b, &o));
        t_assert_error(CT_ERR_VALUE, "ct_conv2d: groups must be >= 1: got 0", NULL);

        o = CT_CONV2D_OPTS_DEFAULT;
        o.stride[0] = 0;
        cr_assert_null(ct_conv2d(x, w, b, &o));
        t_assert_error(CT_ERR_VALUE, "ct_conv2d: stride must be >= 1: got (0, 1)", NULL);
        o = CT_CONV2D_OPTS_DEFAULT;
        o.stride[1] = -2;
        cr_assert_null(ct_conv2d(x, w, b, &o));
        t_assert_error(CT_ERR_VALUE, "stride must be >= 1: got (1, -2)", NULL);
        o = CT_CONV2D_OPTS_DEFAULT;
        o.padding[1] = -1;
        cr_assert_null(ct_conv2d(x, w, b, &o));
        t_assert_error(CT_ERR_VALUE, "padding must be >= 0: got (0, -1)", NULL);
        o = CT_CONV2D_OPTS_DEFAULT;
        o.dilation[0] = 0;
        cr_assert_null(ct_conv2d(x, w, b, &o));
        t_assert_error(CT_ERR_VALUE, "dilation must be >= 1: got (0, 1)", NULL);

        cr_assert_null(ct_conv2d(zeros4(1, 3, 2, 2, CT_F32), w, b, NULL));
        t_assert_error(CT_ERR_SHAPE, "ct_conv2d: kernel larger than the padded input", "x is [1, 3, 2, 2]",
                       "w is [4, 3, 3, 3]", NULL);
        o = CT_CONV2D_OPTS_DEFAULT;
        o.dilation[1] = 4; /* a 9-wide window over 8 columns */
        cr_assert_null(ct_conv2d(x, w, b, &o));
        t_assert_error(CT_ERR_SHAPE, "kernel larger than the padded input", "dilation (1, 4)", NULL);
        o.padding[1] = 1; /* 10 padded columns: fits */
        t_assert_shape(ct_conv2d(x, w, b, &o), (int64_t[]){2, 4, 6, 2}, 4);

        cr_assert_null(ct_conv2d(x, w, ct_zeros((int64_t[]){3}, 1, CT_F32, CT_CPU), NULL));
        t_assert_error(CT_ERR_SHAPE, "ct_conv2d: bias must be 1-D with one value per output channel (4): bias is [3]",
                       NULL);
        cr_assert_null(ct_conv2d(x, w, ct_zeros((int64_t[]){4}, 1, CT_F64, CT_CPU), NULL));
        t_assert_error(CT_ERR_DTYPE, "ct_conv2d", "f32", "f64", NULL);
        cr_assert_null(ct_conv2d(x, zeros4(4, 3, 3, 3, CT_F64), b, NULL));
        t_assert_error(CT_ERR_DTYPE, "ct_conv2d", "f32", "f64", NULL);
        cr_assert_null(ct_conv2d(zeros4(2, 3, 8, 8, CT_I32), zeros4(4, 3, 3, 3, CT_I32), NULL, NULL));
        t_assert_error(CT_ERR_DTYPE, "ct_conv2d: dtype i32 is not supported", NULL);

        /* The first error survives a chain of ops. */
        cr_assert_null(ct_conv2d(ct_conv2d(x, zeros4(4, 2, 3, 3, CT_F32), NULL, NULL), w, NULL, NULL));
        t_assert_error(CT_ERR_SHAPE, "channel mismatch", NULL);
    });
}

Test(conv_transpose, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *x = zeros4(2, 3, 4, 4, CT_F32), *w = zeros4(3, 2, 3, 3, CT_F32);
        ct_conv_transpose2d_opts o = CT_CONV_TRANSPOSE2D_OPTS_DEFAULT;
        t_assert_shape(ct_conv_transpose2d(x, w, NULL, NULL), (int64_t[]){2, 2, 6, 6}, 4);

        cr_assert_null(ct_conv_transpose2d(x, zeros4(2, 2, 3, 3, CT_F32), NULL, NULL));
        t_assert_error(CT_ERR_SHAPE, "ct_conv_transpose2d: channel mismatch", "x is [2, 3, 4, 4]", "w is [2, 2, 3, 3]",
                       NULL);
        o.output_padding[0] = 1;
        cr_assert_null(ct_conv_transpose2d(x, w, NULL, &o));
        t_assert_error(CT_ERR_VALUE, "ct_conv_transpose2d: output_padding must be smaller than stride or dilation",
                       NULL);
        o = CT_CONV_TRANSPOSE2D_OPTS_DEFAULT;
        o.padding[0] = o.padding[1] = 3;
        cr_assert_null(ct_conv_transpose2d(x, w, NULL, &o));
        t_assert_error(CT_ERR_SHAPE, "ct_conv_transpose2d: the output would be empty", NULL);
        cr_assert_null(ct_conv_transpose2d(x, w, ct_zeros((int64_t[]){3}, 1, CT_F32, CT_CPU), NULL));
        t_assert_error(CT_ERR_SHAPE, "bias must be 1-D with one value per output channel (2)", NULL);
        o = CT_CONV_TRANSPOSE2D_OPTS_DEFAULT;
        o.groups = 2;
        cr_assert_null(ct_conv_transpose2d(x, w, NULL, &o));
        t_assert_error(CT_ERR_SHAPE, "groups 2 does not divide the input channels", NULL);
        cr_assert_null(ct_conv_transpose2d(NULL, w, NULL, NULL));
        t_assert_error(CT_ERR_NULL, "ct_conv_transpose2d", "argument x is NULL", NULL);
    });
}
