/* add/sub/mul/div with broadcasting, their gradients, and the in-place forms: strided and
 * converted destinations, and the refusal of destinations that alias themselves (expanded)
 * or partially overlap their source. */
#include "tests/common.h"

static void naive_binary(const ct_tensor *a, const ct_tensor *b, const ct_tensor *out, char op, double *ref) {
    double *av = t_values(a), *bv = t_values(b);
    int64_t coords[CT_MAX_DIMS];
    int nd = ct_tensor_ndim(out);
    for (int64_t i = 0; i < ct_tensor_numel(out); i++) {
        t_unravel(i, nd, ct_tensor_shape(out), coords);
        double x = av[t_ravel_broadcast(coords, nd, ct_tensor_ndim(a), ct_tensor_shape(a))];
        double y = bv[t_ravel_broadcast(coords, nd, ct_tensor_ndim(b), ct_tensor_shape(b))];
        ref[i] = op == '+' ? x + y : op == '-' ? x - y : op == '*' ? x * y : x / y;
    }
    free(av);
    free(bv);
}

static void check_binary(const int64_t *as, int an, const int64_t *bs, int bn, ct_dtype dt, double tol) {
    const char ops[] = "+-*/";
    for (int k = 0; k < 4; k++) {
        T_NO_LEAK({
            ct_tensor *a = t_rand(as, an, dt, -2, 2);
            ct_tensor *b = t_rand(bs, bn, dt, 0.5, 2);
            ct_tensor *out = ops[k] == '+' ? ct_add(a, b) : ops[k] == '-' ? ct_sub(a, b)
                           : ops[k] == '*' ? ct_mul(a, b) : ct_div(a, b);
            cr_assert_not_null(out, "%s", ct_last_error_message());
            double *ref = malloc(sizeof(double) * (size_t)(ct_tensor_numel(out) + 1));
            naive_binary(a, b, out, ops[k], ref);
            t_assert_close(out, ref, tol, tol);
            free(ref);
        });
    }
}

Test(elementwise, broadcasting_shapes) {
    ct_manual_seed(1);
    check_binary((int64_t[]){3, 4}, 2, (int64_t[]){3, 4}, 2, CT_F32, 1e-6);
    check_binary((int64_t[]){3, 1, 5}, 3, (int64_t[]){4, 1}, 2, CT_F64, 1e-12);
    check_binary((int64_t[]){2, 3, 4}, 3, (int64_t[]){}, 0, CT_F32, 1e-6);
    check_binary((int64_t[]){1}, 1, (int64_t[]){5, 1, 3}, 3, CT_F64, 1e-12);
    check_binary((int64_t[]){0, 3}, 2, (int64_t[]){3}, 1, CT_F32, 1e-6);
    check_binary((int64_t[]){100000}, 1, (int64_t[]){100000}, 1, CT_F32, 1e-6);
    check_binary((int64_t[]){7, 9}, 2, (int64_t[]){9}, 1, CT_F16, 1e-2);
    check_binary((int64_t[]){7, 9}, 2, (int64_t[]){7, 1}, 2, CT_BF16, 2e-2);
}

Test(elementwise, non_contiguous_inputs) {
    ct_manual_seed(2);
    T_NO_LEAK({
        ct_tensor *base = t_rand((int64_t[]){6, 8}, 2, CT_F64, -1, 1);
        ct_tensor *a = ct_transpose(base, 0, 1);                 /* (8, 6), strided */
        ct_tensor *b = ct_slice(t_rand((int64_t[]){8, 12}, 2, CT_F64, -1, 1), 1, 1, 12, 2); /* (8, 6) */
        ct_tensor *out = ct_mul(a, b);
        double *ref = malloc(sizeof(double) * 48);
        naive_binary(a, b, out, '*', ref);
        t_assert_close(out, ref, 1e-12, 0);
        free(ref);
    });
}

static ct_tensor *f_add(ct_tensor **x, void *ctx) { return ct_add(x[0], x[1]); }
static ct_tensor *f_sub(ct_tensor **x, void *ctx) { return ct_sub(x[0], x[1]); }
static ct_tensor *f_mul(ct_tensor **x, void *ctx) { return ct_mul(x[0], x[1]); }
static ct_tensor *f_div(ct_tensor **x, void *ctx) { return ct_div(x[0], x[1]); }
static ct_tensor *f_scaled(ct_tensor **x, void *ctx) { return ct_add_scaled(x[0], x[1], -2.5); }

Test(elementwise, gradients_with_broadcasting) {
    ct_manual_seed(3);
    t_grad_fn fns[] = {f_add, f_sub, f_mul, f_div, f_scaled};
    for (int k = 0; k < 5; k++) {
        T_NO_LEAK({
            ct_tensor *x[2] = {ct_requires_grad(t_rand((int64_t[]){3, 1, 4}, 3, CT_F64, -1, 1), true),
                               ct_requires_grad(t_rand((int64_t[]){2, 1}, 2, CT_F64, 0.5, 1.5), true)};
            t_gradcheck(fns[k], x, 2, NULL, 1e-6, 1e-7, 1e-6);
        });
    }
}

Test(elementwise, shape_mismatch_is_an_error) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *a = ct_zeros((int64_t[]){2, 3}, 2, CT_F32, CT_CPU);
        ct_tensor *b = ct_zeros((int64_t[]){4}, 1, CT_F32, CT_CPU);
        cr_assert_null(ct_add(a, b));
        t_assert_error(CT_ERR_SHAPE, "ct_add", "[2, 3]", "[4]", NULL);
    });
}

Test(elementwise, dtype_mismatch_and_null) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *a = ct_zeros((int64_t[]){2}, 1, CT_F32, CT_CPU);
        ct_tensor *b = ct_zeros((int64_t[]){2}, 1, CT_F64, CT_CPU);
        cr_assert_null(ct_mul(a, b));
        t_assert_error(CT_ERR_DTYPE, "ct_mul", "f32", "f64", NULL);
        cr_assert_null(ct_sub(a, NULL));
        t_assert_error(CT_ERR_NULL, "ct_sub", "argument b is NULL", NULL);
        /* The first error survives a chain of ops. */
        cr_assert_null(ct_exp(ct_add(ct_mul(a, b), a)));
        t_assert_error(CT_ERR_DTYPE, "ct_mul", NULL);
    });
}

Test(elementwise, inplace_forms) {
    T_NO_LEAK({
        ct_tensor *a = ct_from_host((double[]){1, 2, 3, 4, 5, 6}, (int64_t[]){2, 3}, 2, CT_F64, CT_CPU);
        ct_tensor *b = ct_from_host((double[]){10, 20, 30}, (int64_t[]){3}, 1, CT_F64, CT_CPU);
        cr_assert_eq(ct_add_(a, b), CT_OK);
        t_assert_close(a, (double[]){11, 22, 33, 14, 25, 36}, 0, 0);
        cr_assert_eq(ct_mul_scalar_(a, 2), CT_OK);
        t_assert_close(a, (double[]){22, 44, 66, 28, 50, 72}, 0, 0);
        cr_assert_eq(ct_add_scaled_(a, b, -1), CT_OK);
        t_assert_close(a, (double[]){12, 24, 36, 18, 30, 42}, 0, 0);
        cr_assert_eq(ct_mul_(a, b), CT_OK);
        t_assert_close(a, (double[]){120, 480, 1080, 180, 600, 1260}, 0, 0);
        cr_assert_eq(ct_add_(b, a), CT_ERR_SHAPE);
        ct_clear_error();
    });
}

/* In place into a strided destination, also through the conversion chunks (the kernel writes
 * the rows it reads: out == a). Elements outside the view keep their values. */
Test(elementwise, inplace_strided_and_converted) {
    ct_manual_seed(4);
    ct_dtype dts[] = {CT_F64, CT_F32, CT_F16, CT_I32};
    for (int d = 0; d < 4; d++) {
        T_NO_LEAK({
            ct_tensor *base = ct_cast(t_rand((int64_t[]){3, 700}, 2, CT_F64, -50, 50), dts[d]);
            ct_tensor *b = ct_cast(t_rand((int64_t[]){3}, 1, CT_F64, -50, 50), dts[d]);
            double *want = t_values(base), *bv = t_values(b);
            for (int r = 0; r < 3; r++)
                for (int c = 1; c < 700; c += 2)
                    want[r * 700 + c] *= bv[r];                              /* exact in f64 for every dtype here */
            ct_tensor *a = ct_transpose(ct_slice(base, 1, 1, 700, 2), 0, 1); /* (350, 3): a[i][r] = base[r][1 + 2i] */
            cr_assert_eq(ct_mul_(a, b), CT_OK, "%s", ct_last_error_message());
            /* the product rounded once to the dtype */
            double *rounded = t_values(ct_cast(ct_from_host(want, (int64_t[]){3, 700}, 2, CT_F64, CT_CPU), dts[d]));
            t_assert_close(base, rounded, 0, 0);
            free(want);
            free(bv);
            free(rounded);
        });
    }
}

/* An in-place op on `dst` must fail with CT_ERR_VALUE and leave dst's storage as it was. */
static void assert_refused(ct_status st, ct_tensor *whole, const double *before, const char *fragment) {
    cr_assert_eq(st, CT_ERR_VALUE, "got %s: %s", ct_status_name(st), ct_last_error_message());
    t_assert_error(CT_ERR_VALUE, fragment, NULL);
    t_assert_close(whole, before, 0, 0);
}

Test(elementwise, inplace_into_an_expanded_tensor_is_refused) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *row = ct_from_host((double[]){1, 2, 3}, (int64_t[]){1, 3}, 2, CT_F64, CT_CPU);
        ct_tensor *e = ct_expand(row, (int64_t[]){4, 3}, 2); /* 4 rows over one: stride 0 */
        ct_tensor *ones = ct_ones((int64_t[]){4, 3}, 2, CT_F64, CT_CPU);
        const double before[] = {1, 2, 3};
        assert_refused(ct_add_(e, ones), row, before, "more than one element");
        assert_refused(ct_add_scaled_(e, ones, 2), row, before, "ct_add_scaled_");
        assert_refused(ct_mul_(e, ones), row, before, "ct_expand");
        assert_refused(ct_mul_scalar_(e, 3), row, before, "ct_mul_scalar_");
        assert_refused(ct_fill_(e, 7), row, before, "ct_fill_");
        assert_refused(ct_copy_(e, ones), row, before, "ct_copy_");
        /* a dim expanded to size 1 is not aliasing: writing it is fine */
        ct_tensor *one = ct_expand(ct_zeros((int64_t[]){1}, 1, CT_F64, CT_CPU), (int64_t[]){1}, 1);
        cr_assert_eq(ct_add_(one, ct_scalar(5, CT_F64, CT_CPU)), CT_OK);
        t_assert_close(one, (double[]){5}, 0, 0);
        /* large enough for threads, where the wrong sums also raced */
        ct_tensor *big = ct_expand(ct_zeros((int64_t[]){1}, 1, CT_F32, CT_CPU), (int64_t[]){100000}, 1);
        cr_assert_eq(ct_add_(big, ct_ones((int64_t[]){100000}, 1, CT_F32, CT_CPU)), CT_ERR_VALUE);
        ct_clear_error();
    });
}

Test(elementwise, inplace_with_a_partially_overlapping_source_is_refused) {
    ct_clear_error();
    T_NO_LEAK({
        const double v[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
        ct_tensor *a = ct_from_host(v, (int64_t[]){3, 3}, 2, CT_F64, CT_CPU);
        /* a += a.T would read a[1][0] after writing it */
        assert_refused(ct_add_(a, ct_transpose(a, 0, 1)), a, v, "partially overlaps");
        assert_refused(ct_copy_(a, ct_transpose(a, 0, 1)), a, v, "ct_copy_");
        assert_refused(ct_mul_(a, ct_transpose(a, 0, 1)), a, v, "ct_mul_");
        assert_refused(ct_add_scaled_(a, ct_transpose(a, 0, 1), -1), a, v, "ct_add_scaled_");
        /* shifted by one element: a[1:] += a[:-1] */
        ct_tensor *flat = ct_reshape(a, (int64_t[]){9}, 1);
        assert_refused(ct_add_(ct_slice(flat, 0, 1, 9, 1), ct_slice(flat, 0, 0, 8, 1)), a, v, "ct_add_");
        /* a row of a broadcast over a: row 0 is written, then read for rows 1 and 2 */
        assert_refused(ct_add_(a, ct_select(a, 0, 0)), a, v, "partially overlaps");
        assert_refused(ct_add_(a, ct_slice(a, 0, 0, 1, 1)), a, v, "partially overlaps");
    });
}

Test(elementwise, inplace_on_itself_or_disjoint_views_is_allowed) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *a = ct_from_host((double[]){1, 2, 3, 4, 5, 6}, (int64_t[]){2, 3}, 2, CT_F64, CT_CPU);
        cr_assert_eq(ct_add_(a, a), CT_OK, "%s", ct_last_error_message()); /* full identity */
        t_assert_close(a, (double[]){2, 4, 6, 8, 10, 12}, 0, 0);
        cr_assert_eq(ct_mul_(a, ct_reshape(a, (int64_t[]){2, 3}, 2)), CT_OK); /* another handle, same geometry */
        t_assert_close(a, (double[]){4, 16, 36, 64, 100, 144}, 0, 0);
        ct_tensor *at = ct_transpose(a, 0, 1);
        cr_assert_eq(ct_add_scaled_(at, at, -0.5), CT_OK); /* identity through a view */
        t_assert_close(a, (double[]){2, 8, 18, 32, 50, 72}, 0, 0);
        cr_assert_eq(ct_copy_(a, a), CT_OK);
        t_assert_close(a, (double[]){2, 8, 18, 32, 50, 72}, 0, 0);
        /* halves of each row: x[:, :2] += x[:, 2:] */
        ct_tensor *x = ct_from_host((double[]){1, 2, 10, 20, 3, 4, 30, 40}, (int64_t[]){2, 4}, 2, CT_F64, CT_CPU);
        cr_assert_eq(ct_add_(ct_slice(x, 1, 0, 2, 1), ct_slice(x, 1, 2, 4, 1)), CT_OK, "%s", ct_last_error_message());
        t_assert_close(x, (double[]){11, 22, 10, 20, 33, 44, 30, 40}, 0, 0);
        /* even and odd elements: y[0::2] -= y[1::2] */
        ct_tensor *y = ct_from_host((double[]){5, 1, 7, 2, 9, 3}, (int64_t[]){6}, 1, CT_F64, CT_CPU);
        cr_assert_eq(ct_add_scaled_(ct_slice(y, 0, 0, 6, 2), ct_slice(y, 0, 1, 6, 2), -1), CT_OK, "%s",
                     ct_last_error_message());
        t_assert_close(y, (double[]){4, 1, 5, 2, 6, 3}, 0, 0);
        /* one row into another: z[0] = z[1] */
        ct_tensor *z = ct_from_host((double[]){1, 2, 3, 4}, (int64_t[]){2, 2}, 2, CT_F64, CT_CPU);
        cr_assert_eq(ct_copy_(ct_select(z, 0, 0), ct_select(z, 0, 1)), CT_OK, "%s", ct_last_error_message());
        t_assert_close(z, (double[]){3, 4, 3, 4}, 0, 0);
        /* the upper-left block from the lower-right one of a 4 x 4 (disjoint, both strided) */
        ct_tensor *w = ct_reshape(ct_arange(0, 16, 1, CT_F64, CT_CPU), (int64_t[]){4, 4}, 2);
        ct_tensor *ul = ct_slice(ct_slice(w, 0, 0, 2, 1), 1, 0, 2, 1);
        ct_tensor *lr = ct_slice(ct_slice(w, 0, 2, 4, 1), 1, 2, 4, 1);
        cr_assert_eq(ct_add_(ul, lr), CT_OK, "%s", ct_last_error_message());
        t_assert_close(w, (double[]){10, 12, 2, 3, 18, 20, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, 0, 0);
    });
}
