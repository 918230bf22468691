/* ct_max_pool2d / ct_avg_pool2d / ct_global_avg_pool2d: output sizes and values checked
 * against PyTorch 1.13 (sizes and a few outputs recorded from it) and against naive f64
 * references of its window rules over many geometries; gradients by reference and by
 * gradient checks (max pooling on distinct values, so no tie can flip under the step);
 * half precision, strided inputs and every bad input. */
#include "tests/common.h"

#include <string.h>

#define POPTS(kh, kw, sh, sw, ph, pw, dh, dw, ceil, cip)                                                               \
    ((ct_pool2d_opts){{kh, kw}, {sh, sw}, {ph, pw}, {dh, dw}, ceil, cip})

typedef struct pool_case {
    int64_t N, C, H, W;
    ct_pool2d_opts o;
} pool_case;

static int64_t out_size(int64_t in, int k, int s, int p, int d, bool ceil_mode) {
    if (s == 0)
        s = k;
    double span = (double)(in + 2 * p - d * (k - 1) - 1) / s;
    int64_t out = (int64_t)(ceil_mode ? ceil(span) : floor(span)) + 1;
    if (ceil_mode && (out - 1) * s >= in + p)
        out--;
    return out;
}

static void out_shape(const pool_case *k, int64_t *shape) {
    shape[0] = k->N;
    shape[1] = k->C;
    shape[2] = out_size(k->H, k->o.kernel[0], k->o.stride[0], k->o.padding[0], k->o.dilation[0], k->o.ceil_mode);
    shape[3] = out_size(k->W, k->o.kernel[1], k->o.stride[1], k->o.padding[1], k->o.dilation[1], k->o.ceil_mode);
}

/* Max pooling by the definition: the first largest element of each window in row-major
 * order (a NaN wins), with its position; an all-padding window gives -inf at its first
 * in-range... never happens for valid options. */
static void ref_max(const pool_case *k, const double *x, double *y, int64_t *idx) {
    int64_t s[4];
    out_shape(k, s);
    const ct_pool2d_opts *o = &k->o;
    int sh = o->stride[0] ? o->stride[0] : o->kernel[0], sw = o->stride[1] ? o->stride[1] : o->kernel[1];
    for (int64_t p = 0; p < k->N * k->C; p++)
        for (int64_t oh = 0; oh < s[2]; oh++)
            for (int64_t ow = 0; ow < s[3]; ow++) {
                double best = -INFINITY;
                int64_t at = -1;
                for (int kh = 0; kh < o->kernel[0]; kh++)
                    for (int kw = 0; kw < o->kernel[1]; kw++) {
                        int64_t ih = oh * sh - o->padding[0] + kh * o->dilation[0];
                        int64_t iw = ow * sw - o->padding[1] + kw * o->dilation[1];
                        if (ih < 0 || ih >= k->H || iw < 0 || iw >= k->W)
                            continue;
                        double v = x[p * k->H * k->W + ih * k->W + iw];
                        if (at < 0 || v > best || isnan(v)) {
                            best = v;
                            at = ih * k->W + iw;
                        }
                    }
                cr_assert(at >= 0, "reference: a window with no input element");
                y[(p * s[2] + oh) * s[3] + ow] = best;
                idx[(p * s[2] + oh) * s[3] + ow] = at;
            }
}

/* Average pooling with PyTorch's divisor: the window clipped to the padded input when
 * count_include_pad, else the number of input elements in it. Also gx from gy. */
static void ref_avg(const pool_case *k, const double *x, double *y, const double *gy, double *gx) {
    int64_t s[4];
    out_shape(k, s);
    const ct_pool2d_opts *o = &k->o;
    int sh = o->stride[0] ? o->stride[0] : o->kernel[0], sw = o->stride[1] ? o->stride[1] : o->kernel[1];
    for (int64_t p = 0; p < k->N * k->C; p++)
        for (int64_t oh = 0; oh < s[2]; oh++)
            for (int64_t ow = 0; ow < s[3]; ow++) {
                int64_t count = 0, padded = 0;
                double sum = 0;
                for (int kh = 0; kh < o->kernel[0]; kh++)
                    for (int kw = 0; kw < o->kernel[1]; kw++) {
                        int64_t ih = oh * sh - o->padding[0] + kh, iw = ow * sw - o->padding[1] + kw;
                        if (ih >= k->H + o->padding[0] || iw >= k->W + o->padding[1])
                            continue;
                        padded++;
                        if (ih < 0 || ih >= k->H || iw < 0 || iw >= k->W)
                            continue;
                        count++;
                        sum += x[p * k->H * k->W + ih * k->W + iw];
                    }
                double divisor = o->count_include_pad ? (double)padded : (double)count;
                int64_t yi = (p * s[2] + oh) * s[3] + ow;
                y[yi] = sum / divisor;
                for (int kh = 0; kh < o->kernel[0] && gx; kh++)
                    for (int kw = 0; kw < o->kernel[1]; kw++) {
                        int64_t ih = oh * sh - o->padding[0] + kh, iw = ow * sw - o->padding[1] + kw;
                        if (ih >= 0 && ih < k->H && iw >= 0 && iw < k->W)
                            gx[p * k->H * k->W + ih * k->W + iw] += gy[yi] / divisor;
                    }
            }
}

/* Distinct values: a random permutation of 0..n-1, scaled, as `dt` (exact in every dtype
 * for n up to 256; larger n are exact in f32 and f64). */
static ct_tensor *distinct(const int64_t *shape, ct_dtype dt, bool strided) {
    int64_t n = shape[0] * shape[1] * shape[2] * shape[3];
    ct_tensor *perm = ct_cast(ct_randperm(n, CT_CPU), dt);
    ct_tensor *shifted = ct_add_scalar(perm, -(double)n / 2);
    if (!strided)
        return ct_reshape(shifted, shape, 4);
    ct_tensor *t = ct_reshape(shifted, (int64_t[]){shape[0], shape[1], shape[3], shape[2]}, 4);
    return ct_transpose(t, 2, 3);
}

static const pool_case max_cases[] = {
    {2, 3, 8, 8, POPTS(2, 2, 0, 0, 0, 0, 1, 1, false, true)},   /* the CNN's 2x2 */
    {2, 2, 7, 9, POPTS(2, 2, 0, 0, 0, 0, 1, 1, false, true)},   /* odd sizes drop the last row */
    {2, 2, 7, 9, POPTS(2, 2, 0, 0, 0, 0, 1, 1, true, true)},    /* ... ceil_mode keeps it */
    {1, 2, 9, 9, POPTS(3, 3, 2, 2, 1, 1, 1, 1, false, true)},   /* overlapping, padded */
    {2, 1, 8, 7, POPTS(3, 2, 2, 3, 1, 1, 1, 1, true, true)},    /* non-square, ceil */
    {1, 2, 10, 10, POPTS(3, 3, 1, 2, 1, 0, 2, 3, false, true)}, /* dilation */
    {2, 2, 6, 6, POPTS(2, 2, 4, 4, 1, 1, 1, 1, true, true)},    /* ceil window dropped by the rule */
    {1, 1, 5, 5, POPTS(5, 5, 1, 1, 2, 2, 1, 1, false, true)},   /* window larger than the input */
    {3, 2, 4, 6, POPTS(1, 1, 1, 2, 0, 0, 1, 1, false, true)},   /* 1x1 subsampling */
    {1, 2, 5, 71, POPTS(2, 2, 0, 0, 0, 0, 1, 1, false, true)},  /* 2x2 rows longer than a vector */
};

static void check_max(const pool_case *k, ct_dtype dt, bool strided) {
    T_NO_LEAK({
        int64_t in_shape[4] = {k->N, k->C, k->H, k->W}, shape[4];
        out_shape(k, shape);
        ct_tensor *x = ct_requires_grad(distinct(in_shape, dt, strided), true);
        ct_tensor *indices = NULL;
        ct_tensor *y = ct_max_pool2d(x, &k->o, &indices);
        cr_assert_not_null(y, "%s", ct_last_error_message());
        t_assert_shape(y, shape, 4);
        t_assert_shape(indices, shape, 4);
        cr_assert_eq(ct_tensor_dtype(indices), CT_I32);
        cr_assert_eq(ct_tensor_dtype(y), dt);
        int64_t n_in = ct_tensor_numel(x), n_out = ct_tensor_numel(y);
        double *xv = t_values(x), *ref = malloc((size_t)(n_out + 1) * 8), *ref_idx_d = malloc((size_t)(n_out + 1) * 8);
        int64_t *ref_idx = malloc((size_t)(n_out + 1) * 8);
        ref_max(k, xv, ref, ref_idx);
        for (int64_t i = 0; i < n_out; i++)
            ref_idx_d[i] = (double)ref_idx[i];
        t_assert_close(y, ref, 0, 0);
        t_assert_close(indices, ref_idx_d, 0, 0);
        /* Without gradient or indices, the positions are not computed; the values are the same. */
        t_assert_close(ct_max_pool2d(ct_detach(x), &k->o, NULL), ref, 0, 0);

        /* The gradient lands on each maximum, summed where windows share it. */
        ct_tensor *gy = t_rand(shape, 4, dt, -1, 1);
        cr_assert_eq(ct_backward(ct_sum(ct_mul(y, gy), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        double *gyv = t_values(gy), *gx = calloc((size_t)n_in + 1, 8);
        int64_t plane_in = k->H * k->W, plane_out = shape[2] * shape[3];
        for (int64_t i = 0; i < n_out; i++)
            gx[i / plane_out * plane_in + ref_idx[i]] += gyv[i];
        t_assert_close(ct_grad(x), gx, dt == CT_F64 || dt == CT_F32 ? 1e-6 : 2e-2, 1e-2);
        free(xv);
        free(ref);
        free(ref_idx);
        free(ref_idx_d);
        free(gyv);
        free(gx);
    });
}

Test(max_pool, output_sizes_match_pytorch) {
    /* (H, W, kernel, stride, padding, ceil_mode) -> sizes printed by PyTorch 1.13. */
    const struct {
        int64_t H, W;
        ct_pool2d_opts o;
        int64_t oH, oW;
    } rows[] = {
        {6, 6, POPTS(2, 2, 4, 4, 1, 1, 1, 1, true, true), 2, 2},
        {5, 5, POPTS(2, 2, 2, 2, 0, 0, 1, 1, true, true), 3, 3},
        {5, 5, POPTS(2, 2, 2, 2, 0, 0, 1, 1, false, true), 2, 2},
        {6, 6, POPTS(3, 3, 2, 2, 1, 1, 1, 1, true, true), 4, 4},
        {7, 4, POPTS(3, 2, 2, 3, 1, 1, 1, 1, true, true), 4, 2},
        {8, 8, POPTS(3, 3, 3, 3, 1, 0, 1, 1, true, true), 3, 3},
        {4, 4, POPTS(2, 2, 3, 3, 1, 1, 1, 1, true, true), 2, 2},
        {28, 28, CT_POOL2D_OPTS_DEFAULT, 14, 14},
        {5, 5, POPTS(2, 2, 0, 0, 0, 0, 1, 1, false, true), 2, 2}, /* stride 0 = kernel */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        T_NO_LEAK({
            ct_tensor *x = ct_zeros((int64_t[]){1, 1, rows[i].H, rows[i].W}, 4, CT_F32, CT_CPU);
            t_assert_shape(ct_max_pool2d(x, &rows[i].o, NULL), (int64_t[]){1, 1, rows[i].oH, rows[i].oW}, 4);
            t_assert_shape(ct_avg_pool2d(x, &rows[i].o), (int64_t[]){1, 1, rows[i].oH, rows[i].oW}, 4);
        });
    }
    T_NO_LEAK(t_assert_shape(ct_max_pool2d(ct_zeros((int64_t[]){2, 3, 28, 28}, 4, CT_F32, CT_CPU), NULL, NULL),
                             (int64_t[]){2, 3, 14, 14}, 4));
}

Test(max_pool, matches_reference) {
    ct_manual_seed(1);
    for (size_t i = 0; i < sizeof max_cases / sizeof max_cases[0]; i++) {
        check_max(&max_cases[i], CT_F32, false);
        check_max(&max_cases[i], CT_F64, false);
    }
    /* Larger planes: the parallel loop. */
    pool_case big = {4, 32, 28, 28, CT_POOL2D_OPTS_DEFAULT};
    check_max(&big, CT_F32, false);
}

Test(max_pool, strided_and_half_inputs) {
    ct_manual_seed(2);
    check_max(&max_cases[0], CT_F32, true);
    check_max(&max_cases[4], CT_F64, true);
    /* Values up to 96 are exact in f16 and bf16; max pooling is then exact too. */
    pool_case small = {1, 2, 8, 6, POPTS(2, 2, 0, 0, 0, 0, 1, 1, false, true)};
    pool_case padded = {1, 2, 6, 8, POPTS(3, 3, 2, 2, 1, 1, 1, 1, true, true)};
    ct_dtype dts[] = {CT_F16, CT_BF16};
    for (int d = 0; d < 2; d++) {
        check_max(&small, dts[d], false);
        check_max(&padded, dts[d], true);
    }
}

Test(max_pool, nan_is_the_maximum) {
    T_NO_LEAK({
        ct_tensor *x = ct_from_host((float[]){1, NAN, 3, 4, 5, 6, 7, 8}, (int64_t[]){1, 1, 2, 4}, 4, CT_F32, CT_CPU);
        ct_tensor *idx;
        ct_tensor *y = ct_max_pool2d(x, NULL, &idx);
        t_assert_close(y, (double[]){NAN, 8}, 0, 0);
        t_assert_close(idx, (double[]){1, 7}, 0, 0);
    });
}

static ct_tensor *f_max(ct_tensor **in, void *ctx) {
    return ct_max_pool2d(in[0], ctx, NULL);
}
static ct_tensor *f_avg(ct_tensor **in, void *ctx) {
    return ct_avg_pool2d(in[0], ctx);
}
static ct_tensor *f_global(ct_tensor **in, void *ctx) {
    return ct_global_avg_pool2d(in[0]);
}

Test(max_pool, gradcheck) {
    ct_manual_seed(3);
    for (size_t i = 0; i < sizeof max_cases / sizeof max_cases[0]; i++) {
        const pool_case *k = &max_cases[i];
        T_NO_LEAK({
            /* Distinct values 0.1 apart: a step of 1e-6 never changes which one is largest. */
            ct_tensor *x =
                ct_contiguous(ct_mul_scalar(distinct((int64_t[]){k->N, k->C, k->H, k->W}, CT_F64, false), 0.1));
            ct_tensor *in[1] = {ct_requires_grad(x, true)};
            t_gradcheck(f_max, in, 1, (void *)&k->o, 1e-6, 1e-8, 1e-6);
        });
    }
}

/* ---- average -------------------------------------------------------------------------------- */

static const pool_case avg_cases[] = {
    {2, 3, 8, 8, POPTS(2, 2, 0, 0, 0, 0, 1, 1, false, true)},
    {1, 2, 9, 9, POPTS(3, 3, 2, 2, 1, 1, 1, 1, false, true)},
    {1, 2, 9, 9, POPTS(3, 3, 2, 2, 1, 1, 1, 1, false, false)},
    {2, 1, 5, 5, POPTS(3, 3, 2, 2, 1, 1, 1, 1, true, true)}, /* windows past the padding */
    {2, 1, 5, 5, POPTS(3, 3, 2, 2, 1, 1, 1, 1, true, false)},
    {1, 2, 8, 7, POPTS(3, 2, 2, 3, 1, 1, 1, 1, true, true)}, /* non-square */
    {2, 2, 6, 6, POPTS(2, 2, 4, 4, 1, 1, 1, 1, true, false)},
    {1, 1, 4, 4, POPTS(2, 2, 3, 3, 1, 1, 1, 1, true, true)},
    {2, 2, 5, 6, POPTS(4, 2, 1, 1, 2, 1, 1, 1, false, false)}, /* overlapping stride 1 */
};

static void check_avg(const pool_case *k, ct_dtype dt, bool strided, double tol) {
    T_NO_LEAK({
        int64_t shape[4];
        out_shape(k, shape);
        ct_tensor *base = t_rand((int64_t[]){k->N, k->C, strided ? k->W : k->H, strided ? k->H : k->W}, 4, dt, -1, 1);
        ct_requires_grad(base, true);
        ct_tensor *x = strided ? ct_transpose(base, 2, 3) : base;
        ct_tensor *y = ct_avg_pool2d(x, &k->o);
        cr_assert_not_null(y, "%s", ct_last_error_message());
        t_assert_shape(y, shape, 4);
        ct_tensor *gy = t_rand(shape, 4, dt, -1, 1);
        cr_assert_eq(ct_backward(ct_sum(ct_mul(y, gy), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        int64_t n_in = ct_tensor_numel(x), n_out = ct_tensor_numel(y);
        double *xv = t_values(x), *gyv = t_values(gy), *ref = malloc((size_t)(n_out + 1) * 8),
               *gx = calloc((size_t)n_in + 1, 8);
        ref_avg(k, xv, ref, gyv, gx);
        t_assert_close(y, ref, tol, tol);
        ct_tensor *grad = strided ? ct_transpose(ct_grad(base), 2, 3) : ct_grad(base);
        t_assert_close(grad, gx, tol, tol);
        free(xv);
        free(gyv);
        free(ref);
        free(gx);
    });
}

Test(avg_pool, matches_reference) {
    ct_manual_seed(4);
    for (size_t i = 0; i < sizeof avg_cases / sizeof avg_cases[0]; i++) {
        check_avg(&avg_cases[i], CT_F64, false, 1e-12);
        check_avg(&avg_cases[i], CT_F32, false, 1e-6);
    }
    check_avg(&avg_cases[3], CT_F32, true, 1e-6);
    check_avg(&avg_cases[5], CT_BF16, false, 1e-2);
    check_avg(&avg_cases[4], CT_F16, true, 1e-2);
    pool_case big = {4, 32, 28, 28, CT_POOL2D_OPTS_DEFAULT};
    check_avg(&big, CT_F32, false, 1e-6);
}

Test(avg_pool, values_match_pytorch) {
    /* F.avg_pool2d(arange(25).reshape(1, 1, 5, 5), 3, 2, 1, ceil_mode=True, count_include_pad=...) */
    T_NO_LEAK({
        ct_tensor *x = ct_reshape(ct_arange(0, 25, 1, CT_F32, CT_CPU), (int64_t[]){1, 1, 5, 5}, 4);
        ct_pool2d_opts o = POPTS(3, 3, 2, 2, 1, 1, 1, 1, true, true);
        t_assert_close(
            ct_avg_pool2d(x, &o),
            (double[]){1.3333333730697632, 3.0, 2.6666667461395264, 7.0, 12.0, 9.0, 8.0, 13.0, 9.333333015441895}, 1e-6,
            1e-6);
        o.count_include_pad = false;
        t_assert_close(ct_avg_pool2d(x, &o), (double[]){3.0, 4.5, 6.0, 10.5, 12.0, 13.5, 18.0, 19.5, 21.0}, 1e-6, 1e-6);
        ct_tensor *x4 = ct_reshape(ct_arange(0, 16, 1, CT_F32, CT_CPU), (int64_t[]){1, 1, 4, 4}, 4);
        ct_pool2d_opts o4 = POPTS(2, 2, 3, 3, 1, 1, 1, 1, true, true);
        t_assert_close(ct_avg_pool2d(x4, &o4), (double[]){0.0, 1.25, 5.0, 12.5}, 1e-6, 1e-6);
    });
}

Test(avg_pool, gradcheck) {
    ct_manual_seed(5);
    for (size_t i = 0; i < sizeof avg_cases / sizeof avg_cases[0]; i++) {
        const pool_case *k = &avg_cases[i];
        T_NO_LEAK({
            ct_tensor *in[1] = {ct_requires_grad(t_rand((int64_t[]){k->N, k->C, k->H, k->W}, 4, CT_F64, -1, 1), true)};
            t_gradcheck(f_avg, in, 1, (void *)&k->o, 1e-6, 1e-8, 1e-6);
        });
    }
}

Test(global_avg_pool, mean_of_each_plane) {
    ct_manual_seed(6);
    ct_dtype dts[] = {CT_F64, CT_F32, CT_BF16};
    double tols[] = {1e-12, 1e-6, 1e-2};
    for (int d = 0; d < 3; d++) {
        T_NO_LEAK({
            ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){3, 4, 5, 7}, 4, dts[d], -1, 1), true);
            ct_tensor *y = ct_global_avg_pool2d(x);
            t_assert_shape(y, (int64_t[]){3, 4, 1, 1}, 4);
            double *xv = t_values(x), ref[12] = {0}, gx[420];
            for (int64_t i = 0; i < 420; i++)
                ref[i / 35] += xv[i] / 35;
            t_assert_close(y, ref, tols[d], tols[d]);
            ct_tensor *gy = t_rand((int64_t[]){3, 4, 1, 1}, 4, dts[d], -1, 1);
            cr_assert_eq(ct_backward(ct_sum(ct_mul(y, gy), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
            double *gyv = t_values(gy);
            for (int64_t i = 0; i < 420; i++)
                gx[i] = gyv[i / 35] / 35;
            t_assert_close(ct_grad(x), gx, tols[d], tols[d]);
            free(xv);
            free(gyv);
        });
    }
    T_NO_LEAK({
        ct_tensor *in[1] = {ct_requires_grad(t_rand((int64_t[]){2, 3, 4, 3}, 4, CT_F64, -1, 1), true)};
        t_gradcheck(f_global, in, 1, NULL, 1e-6, 1e-8, 1e-6);
    });
}

/* ---- errors ------------------------------------------------------------------------------- */

Test(pool, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *x = ct_zeros((int64_t[]){2, 3, 8, 8}, 4, CT_F32, CT_CPU);
        ct_pool2d_opts o = CT_POOL2D_OPTS_DEFAULT;
        ct_tensor *idx = (ct_tensor *)x;

        cr_assert_null(ct_max_pool2d(NULL, NULL, &idx));
        cr_assert_null(idx, "indices must be cleared on error");
        t_assert_error(CT_ERR_NULL, "ct_max_pool2d", "argument x is NULL", NULL);
        cr_assert_null(ct_avg_pool2d(NULL, NULL));
        t_assert_error(CT_ERR_NULL, "ct_avg_pool2d", "argument x is NULL", NULL);
        cr_assert_null(ct_global_avg_pool2d(NULL));
        t_assert_error(CT_ERR_NULL, "ct_global_avg_pool2d", "argument x is NULL", NULL);

        cr_assert_null(ct_max_pool2d(ct_zeros((int64_t[]){3, 8, 8}, 3, CT_F32, CT_CPU), NULL, NULL));
        t_assert_error(CT_ERR_SHAPE, "ct_max_pool2d: x must be 4-D (N, C, H, W): x is [3, 8, 8]", NULL);
        cr_assert_null(ct_global_avg_pool2d(ct_zeros((int64_t[]){2, 3, 8, 8, 1}, 5, CT_F32, CT_CPU)));
        t_assert_error(CT_ERR_SHAPE, "ct_global_avg_pool2d: x must be 4-D", "[2, 3, 8, 8, 1]", NULL);
        cr_assert_null(ct_global_avg_pool2d(ct_zeros((int64_t[]){2, 3, 0, 8}, 4, CT_F32, CT_CPU)));
        t_assert_error(CT_ERR_SHAPE, "ct_global_avg_pool2d: x has empty planes", NULL);
        cr_assert_null(ct_max_pool2d(ct_zeros((int64_t[]){2, 3, 8, 8}, 4, CT_I32, CT_CPU), NULL, NULL));
        t_assert_error(CT_ERR_DTYPE, "ct_max_pool2d: dtype i32 is not supported", NULL);

        o.kernel[1] = 0;
        cr_assert_null(ct_max_pool2d(x, &o, NULL));
        t_assert_error(CT_ERR_VALUE, "ct_max_pool2d: kernel must be >= 1: got (2, 0)", NULL);
        o = CT_POOL2D_OPTS_DEFAULT;
        o.stride[0] = -1;
        cr_assert_null(ct_avg_pool2d(x, &o));
        t_assert_error(CT_ERR_VALUE, "ct_avg_pool2d: stride must be >= 0: got (-1, 0)", NULL);
        o = CT_POOL2D_OPTS_DEFAULT;
        o.padding[0] = 2;
        cr_assert_null(ct_max_pool2d(x, &o, NULL));
        t_assert_error(CT_ERR_VALUE, "padding must be at most half the kernel: got padding (2, 0), kernel (2, 2)",
                       NULL);
        o.padding[0] = -1;
        cr_assert_null(ct_max_pool2d(x, &o, NULL));
        t_assert_error(CT_ERR_VALUE, "padding must be >= 0", NULL);
        o = CT_POOL2D_OPTS_DEFAULT;
        o.dilation[0] = 0;
        cr_assert_null(ct_max_pool2d(x, &o, NULL));
        t_assert_error(CT_ERR_VALUE, "dilation must be >= 1: got (0, 1)", NULL);
        o.dilation[0] = 2;
        cr_assert_null(ct_avg_pool2d(x, &o));
        t_assert_error(CT_ERR_VALUE, "ct_avg_pool2d: dilation must be (1, 1) for average pooling", NULL);

        o = CT_POOL2D_OPTS_DEFAULT;
        o.kernel[0] = o.kernel[1] = 9;
        cr_assert_null(ct_max_pool2d(x, &o, NULL));
        t_assert_error(CT_ERR_SHAPE, "ct_max_pool2d: kernel larger than the padded input: x is [2, 3, 8, 8]", NULL);
        o.padding[0] = o.padding[1] = 1; /* 10 padded rows hold a 9-wide window */
        t_assert_shape(ct_max_pool2d(x, &o, NULL), (int64_t[]){2, 3, 1, 1}, 4);
        o = CT_POOL2D_OPTS_DEFAULT;
        o.kernel[0] = 3;
        o.dilation[0] = 4; /* a 9-row window */
        cr_assert_null(ct_max_pool2d(x, &o, NULL));
        t_assert_error(CT_ERR_SHAPE, "kernel larger than the padded input", "dilation (4, 1)", NULL);

        /* The first error survives. */
        cr_assert_null(ct_avg_pool2d(ct_max_pool2d(ct_zeros((int64_t[]){8, 8}, 2, CT_F32, CT_CPU), NULL, NULL), NULL));
        t_assert_error(CT_ERR_SHAPE, "ct_max_pool2d: x must be 4-D", NULL);
    });
}
