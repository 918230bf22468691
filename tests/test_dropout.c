/* Dropout: the mask is random.h's bernoulli(1 - p) draw, its statistics, reproducibility,
 * the same mask in backward, the edge cases of p and mode, half precision, errors. */
#include "tests/common.h"

#include <string.h>

/* ct_dropout(ones) / scale as doubles: the keep mask (1 kept, 0 dropped). */
static double *mask_of(const ct_tensor *y, double p) {
    double *v = t_values(y);
    for (int64_t i = 0; i < ct_tensor_numel(y); i++)
        v[i] = v[i] * (1 - p);
    return v;
}

Test(dropout, statistics_and_scaling) {
    ct_manual_seed(1);
    T_NO_LEAK({
        int64_t n = 200000;
        const double ps[3] = {0.1, 0.5, 0.8};
        for (int k = 0; k < 3; k++) {
            double p = ps[k];
            ct_tensor *y = ct_dropout(ct_ones(&n, 1, CT_F32, CT_CPU), p, true);
            cr_assert_not_null(y, "%s", ct_last_error_message());
            double *v = t_values(y), kept = 0, sum = 0;
            float scale = (float)(1.0 / (1.0 - p));
            for (int64_t i = 0; i < n; i++) {
                cr_assert(v[i] == 0 || v[i] == scale, "element %lld is %g", (long long)i, v[i]);
                kept += v[i] != 0;
                sum += v[i];
            }
            /* 5 standard deviations of a binomial proportion */
            double sd = sqrt(p * (1 - p) / (double)n);
            cr_assert(fabs(kept / (double)n - (1 - p)) < 5 * sd, "kept %g, expected %g", kept / (double)n, 1 - p);
            cr_assert(fabs(sum / (double)n - 1) < 5 * sd / (1 - p), "mean %g", sum / (double)n);
            free(v);
        }
    });
}

/* The mask is the bernoulli(1 - p) draw at the same (seed, offset), and the offset advances
 * by the same ceil(n / 4) blocks. */
Test(dropout, same_numbers_as_bernoulli) {
    T_NO_LEAK({
        int64_t shape[2] = {37, 11}, n = 37 * 11;
        for (int k = 0; k < 3; k++) {
            double p = 0.25 * (k + 1);
            ct_manual_seed(42 + (uint64_t)k);
            ct_random_set_offset(5);
            ct_tensor *y = ct_dropout(ct_ones(shape, 2, CT_F32, CT_CPU), p, true);
            cr_assert_eq(ct_random_offset(), 5 + (uint64_t)(n + 3) / 4);
            ct_manual_seed(42 + (uint64_t)k);
            ct_random_set_offset(5);
            ct_tensor *b = ct_bernoulli(shape, 2, 1 - p, CT_F64, CT_CPU);
            double *mask = mask_of(y, p), *ref = t_values(b);
            for (int64_t i = 0; i < n; i++)
                cr_assert_float_eq(mask[i], ref[i], 1e-6, "element %lld", (long long)i);
            free(mask);
            free(ref);
        }
    });
}

Test(dropout, reproducible_with_the_seed) {
    T_NO_LEAK({
        ct_tensor *x = t_rand((int64_t[]){64, 33}, 2, CT_F32, -1, 1);
        ct_manual_seed(7);
        double *a = t_values(ct_dropout(x, 0.4, true));
        double *b = t_values(ct_dropout(x, 0.4, true)); /* the offset moved on: another mask */
        ct_manual_seed(7);
        double *c = t_values(ct_dropout(x, 0.4, true));
        cr_assert(memcmp(a, c, sizeof(double) * 64 * 33) == 0);
        cr_assert(memcmp(a, b, sizeof(double) * 64 * 33) != 0);
        free(a);
        free(b);
        free(c);
    });
}

/* Backward applies the forward's mask even after other random numbers were drawn, and on a
 * strided input the mask follows the logical (row-major) order. */
Test(dropout, backward_reuses_the_mask) {
    ct_manual_seed(8);
    for (int v = 0; v < 3; v++) {
        ct_dtype dt = v == 0 ? CT_F32 : v == 1 ? CT_F64 : CT_F16;
        T_NO_LEAK({
            ct_tensor *base = t_rand((int64_t[]){9, 70}, 2, dt, 0.5, 1.5);
            ct_tensor *x = ct_requires_grad(ct_contiguous(ct_transpose(base, 0, 1)), true); /* (70, 9) */
            ct_tensor *xt = ct_transpose(base, 0, 1); /* the same values, strided */
            uint64_t offset = ct_random_offset();
            ct_tensor *y = ct_dropout(x, 0.3, true);
            ct_random_set_offset(offset);
            ct_tensor *ys = ct_dropout(xt, 0.3, true);
            double *yv = t_values(y), *ysv = t_values(ys);
            cr_assert(memcmp(yv, ysv, sizeof(double) * 630) == 0, "strided input got another mask");
            ct_rand((int64_t[]){1000}, 1, CT_F32, CT_CPU);
            ct_tensor *w = t_rand((int64_t[]){70, 9}, 2, dt, -1, 1);
            cr_assert_eq(ct_backward(ct_sum(ct_mul(y, w), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
            double *g = t_values(ct_grad(x)), *xv = t_values(x), *wv = t_values(w);
            double tol = dt == CT_F16 ? 2e-3 : 1e-6;
            for (int i = 0; i < 630; i++) {
                bool kept = yv[i] != 0;
                cr_assert(kept || g[i] == 0, "dropped element %d has gradient %g", i, g[i]);
                if (kept)
                    cr_assert_float_eq(g[i], wv[i] / 0.7, tol * 2, "element %d", i);
                if (kept)
                    cr_assert_float_eq(yv[i], xv[i] / 0.7, tol * 2, "element %d", i);
            }
            free(yv);
            free(ysv);
            free(g);
            free(xv);
            free(wv);
        });
    }
}

/* F16/BF16/F64 drop the same elements as F32 for the same seed. */
Test(dropout, every_dtype_same_mask) {
    T_NO_LEAK({
        ct_dtype dts[4] = {CT_F32, CT_F64, CT_F16, CT_BF16};
        double *ref = NULL;
        for (int k = 0; k < 4; k++) {
            ct_manual_seed(9);
            ct_tensor *y = ct_dropout(ct_ones((int64_t[]){1001}, 1, dts[k], CT_CPU), 0.6, true);
            cr_assert_eq(ct_tensor_dtype(y), dts[k]);
            double *m = mask_of(y, 0.6);
            for (int i = 0; i < 1001; i++)
                m[i] = m[i] != 0;
            if (!ref)
                ref = m;
            else {
                cr_assert(memcmp(ref, m, sizeof(double) * 1001) == 0, "%s mask differs", ct_dtype_name(dts[k]));
                free(m);
            }
        }
        free(ref);
    });
}

Test(dropout, edge_cases) {
    ct_manual_seed(10);
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){4, 5}, 2, CT_F64, -1, 1), true);
        uint64_t offset = ct_random_offset();
        /* evaluation and p = 0: the same data, gradient passes, no numbers drawn */
        for (int k = 0; k < 2; k++) {
            ct_tensor *y = k ? ct_dropout(x, 0.0, true) : ct_dropout(x, 0.5, false);
            cr_assert(ct_tensor_shares_storage(x, y));
            cr_assert_eq(ct_random_offset(), offset);
            ct_zero_grad(x);
            cr_assert_eq(ct_backward(ct_sum(ct_mul_scalar(y, 3), NULL, 0, false)), CT_OK);
            double threes[20];
            for (int i = 0; i < 20; i++)
                threes[i] = 3;
            t_assert_close(ct_grad(x), threes, 0, 0);
        }
        /* p = 1: zeros, zero gradient, no numbers drawn */
        ct_tensor *y = ct_dropout(x, 1.0, true);
        double zeros[20] = {0};
        t_assert_close(y, zeros, 0, 0);
        cr_assert_eq(ct_random_offset(), offset);
        ct_zero_grad(x);
        cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_OK);
        t_assert_close(ct_grad(x), zeros, 0, 0);
        /* empty and 0-dim tensors */
        t_assert_shape(ct_dropout(ct_zeros((int64_t[]){0, 3}, 2, CT_F32, CT_CPU), 0.5, true), (int64_t[]){0, 3}, 2);
        ct_tensor *s = ct_dropout(ct_scalar(2.0, CT_F32, CT_CPU), 0.5, true);
        cr_assert(ct_item(s) == 0.0 || ct_item(s) == 4.0);
    });
}

Test(dropout, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *x = ct_zeros((int64_t[]){3}, 1, CT_F32, CT_CPU);
        cr_assert_null(ct_dropout(x, -0.1, true));
        t_assert_error(CT_ERR_VALUE, "ct_dropout", "p must be in [0, 1]", "-0.1", NULL);
        cr_assert_null(ct_dropout(x, 1.5, false));
        t_assert_error(CT_ERR_VALUE, "ct_dropout", "1.5", NULL);
        cr_assert_null(ct_dropout(x, NAN, true));
        t_assert_error(CT_ERR_VALUE, "ct_dropout", NULL);
        cr_assert_null(ct_dropout(ct_zeros((int64_t[]){3}, 1, CT_I32, CT_CPU), 0.5, true));
        t_assert_error(CT_ERR_DTYPE, "ct_dropout", "i32", NULL);
        cr_assert_null(ct_dropout(NULL, 0.5, true));
        t_assert_error(CT_ERR_NULL, "ct_dropout", "argument x is NULL", NULL);
    });
}
