/* add/sub/mul/div with broadcasting, their gradients, and the in-place forms. */
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
