/* ct_matmul / ct_bmm: NumPy semantics, strided (transposed, broadcast, sliced) operands,
 * half precision, gradients and errors, against a naive triple loop in f64. */
#include "tests/common.h"

#include <string.h>

/* NumPy matmul of a and b (any dtype and strides), in f64. Writes the result shape. */
static double *naive_matmul(const ct_tensor *a, const ct_tensor *b, int *out_ndim, int64_t *out_shape) {
    double *av = t_values(a), *bv = t_values(b);
    int an = ct_tensor_ndim(a), bn = ct_tensor_ndim(b);
    const int64_t *as = ct_tensor_shape(a), *bs = ct_tensor_shape(b);
    int64_t M = an == 1 ? 1 : as[an - 2], K = as[an - 1], N = bn == 1 ? 1 : bs[bn - 1];
    int a_bn = an > 2 ? an - 2 : 0, b_bn = bn > 2 ? bn - 2 : 0;
    int batch_n = a_bn > b_bn ? a_bn : b_bn;
    int64_t batch[CT_MAX_DIMS], nbatch = 1;
    for (int d = 0; d < batch_n; d++) {
        int da = d - (batch_n - a_bn), db = d - (batch_n - b_bn);
        int64_t sa = da >= 0 ? as[da] : 1, sb = db >= 0 ? bs[db] : 1;
        batch[d] = sa == 1 ? sb : sa;
        nbatch *= batch[d];
    }
    *out_ndim = 0;
    for (int d = 0; d < batch_n; d++)
        out_shape[(*out_ndim)++] = batch[d];
    if (an > 1)
        out_shape[(*out_ndim)++] = M;
    if (bn > 1)
        out_shape[(*out_ndim)++] = N;
    double *ref = calloc((size_t)(nbatch * M * N + 1), sizeof(double));
    int64_t coords[CT_MAX_DIMS];
    for (int64_t bi = 0; bi < nbatch; bi++) {
        t_unravel(bi, batch_n, batch, coords);
        int64_t ab = t_ravel_broadcast(coords, batch_n, a_bn, as), bb = t_ravel_broadcast(coords, batch_n, b_bn, bs);
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += av[(ab * M + m) * K + k] * bv[(bb * K + k) * N + n];
                ref[(bi * M + m) * N + n] = s;
            }
    }
    free(av);
    free(bv);
    return ref;
}

/* out (already computed) against the reference for a and b. */
static void check_product(const ct_tensor *a, const ct_tensor *b, const ct_tensor *out, double tol) {
    cr_assert_not_null(out, "%s", ct_last_error_message());
    int nd;
    int64_t shape[CT_MAX_DIMS];
    double *ref = naive_matmul(a, b, &nd, shape);
    t_assert_shape(out, shape, nd);
    cr_assert(ct_tensor_is_contiguous(out));
    cr_assert_eq(ct_tensor_dtype(out), ct_tensor_dtype(a));
    t_assert_close(out, ref, tol, tol);
    free(ref);
}

static void check_shapes(const int64_t *as, int an, const int64_t *bs, int bn, ct_dtype dt, double tol) {
    T_NO_LEAK({
        ct_tensor *a = t_rand(as, an, dt, -1, 1), *b = t_rand(bs, bn, dt, -1, 1);
        check_product(a, b, ct_matmul(a, b), tol);
    });
}

Test(matmul, numpy_shapes) {
    ct_manual_seed(1);
    ct_dtype dts[] = {CT_F64, CT_F32};
    double tols[] = {1e-12, 1e-5};
    for (int i = 0; i < 2; i++) {
        check_shapes((int64_t[]){3, 4}, 2, (int64_t[]){4, 5}, 2, dts[i], tols[i]);
        check_shapes((int64_t[]){4}, 1, (int64_t[]){4, 5}, 2, dts[i], tols[i]);
        check_shapes((int64_t[]){3, 4}, 2, (int64_t[]){4}, 1, dts[i], tols[i]);
        check_shapes((int64_t[]){4}, 1, (int64_t[]){4}, 1, dts[i], tols[i]);
        check_shapes((int64_t[]){2, 3, 4}, 3, (int64_t[]){4, 5}, 2, dts[i], tols[i]);
        check_shapes((int64_t[]){3, 4}, 2, (int64_t[]){2, 4, 5}, 3, dts[i], tols[i]);
        check_shapes((int64_t[]){2, 1, 3, 4}, 4, (int64_t[]){5, 4, 6}, 3, dts[i], tols[i]);
        check_shapes((int64_t[]){1, 3, 4}, 3, (int64_t[]){2, 4, 5}, 3, dts[i], tols[i]);
        check_shapes((int64_t[]){4}, 1, (int64_t[]){2, 4, 5}, 3, dts[i], tols[i]);
        check_shapes((int64_t[]){2, 3, 4}, 3, (int64_t[]){4}, 1, dts[i], tols[i]);
        check_shapes((int64_t[]){2, 1, 4}, 3, (int64_t[]){4, 3}, 2, dts[i], tols[i]);
        check_shapes((int64_t[]){67, 129}, 2, (int64_t[]){129, 65}, 2, dts[i], tols[i]);
    }
    /* Many small products: the batches are spread over threads. */
    check_shapes((int64_t[]){600, 8, 9}, 3, (int64_t[]){600, 9, 7}, 3, CT_F32, 1e-5);
    check_shapes((int64_t[]){8, 80, 8, 9}, 4, (int64_t[]){80, 9, 7}, 3, CT_F64, 1e-12);
    check_shapes((int64_t[]){600, 8, 9}, 3, (int64_t[]){1, 9, 7}, 3, CT_BF16, 1e-2);
}

Test(matmul, one_element_and_empty_dims) {
    ct_manual_seed(2);
    check_shapes((int64_t[]){1, 1}, 2, (int64_t[]){1, 1}, 2, CT_F32, 1e-6);
    check_shapes((int64_t[]){1, 5}, 2, (int64_t[]){5, 1}, 2, CT_F64, 1e-12);
    check_shapes((int64_t[]){6, 1}, 2, (int64_t[]){1, 7}, 2, CT_F64, 1e-12);
    check_shapes((int64_t[]){0, 4}, 2, (int64_t[]){4, 5}, 2, CT_F32, 0);
    check_shapes((int64_t[]){3, 4}, 2, (int64_t[]){4, 0}, 2, CT_F32, 0);
    check_shapes((int64_t[]){0, 3, 4}, 3, (int64_t[]){4, 2}, 2, CT_F64, 0);
    check_shapes((int64_t[]){2, 0, 4}, 3, (int64_t[]){2, 4, 3}, 3, CT_F64, 0);
    /* K = 0: a sum over nothing is zero, in every dtype. */
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16};
    for (int i = 0; i < 4; i++) {
        T_NO_LEAK({
            ct_tensor *a = ct_empty((int64_t[]){2, 3, 0}, 3, dts[i], CT_CPU);
            ct_tensor *b = ct_empty((int64_t[]){0, 4}, 2, dts[i], CT_CPU);
            ct_tensor *out = ct_matmul(a, b);
            t_assert_shape(out, (int64_t[]){2, 3, 4}, 3);
            double zeros[24] = {0};
            t_assert_close(out, zeros, 0, 0);
            ct_tensor *dot = ct_matmul(ct_empty((int64_t[]){0}, 1, dts[i], CT_CPU),
                                       ct_empty((int64_t[]){0}, 1, dts[i], CT_CPU));
            t_assert_shape(dot, NULL, 0);
            cr_assert_eq(ct_item(dot), 0.0);
        });
    }
}

Test(matmul, transposed_operands_are_read_in_place) {
    ct_manual_seed(3);
    ct_dtype dts[] = {CT_F64, CT_F32, CT_F16, CT_BF16};
    double tols[] = {1e-12, 1e-5, 1e-2, 1e-2};
    for (int i = 0; i < 4; i++) {
        T_NO_LEAK({
            ct_tensor *base_a = t_rand((int64_t[]){9, 6}, 2, dts[i], -1, 1); /* (K, M) */
            ct_tensor *base_b = t_rand((int64_t[]){5, 9}, 2, dts[i], -1, 1); /* (N, K) */
            ct_tensor *a = ct_transpose(base_a, 0, 1), *b = ct_transpose(base_b, 0, 1);
            cr_assert(ct_tensor_shares_storage(a, base_a) && ct_tensor_shares_storage(b, base_b));
            cr_assert(!ct_tensor_is_contiguous(a) && !ct_tensor_is_contiguous(b));
            cr_assert_eq(ct_tensor_strides(a)[0], 1);
            cr_assert_eq(ct_tensor_strides(a)[1], 6);
            check_product(a, b, ct_matmul(a, b), tols[i]);
            check_product(a, base_a, ct_matmul(a, base_a), tols[i]); /* A^T A */
            check_product(base_b, b, ct_matmul(base_b, b), tols[i]); /* B B^T */

            /* Batched and transposed: (B, K, M) -> (B, M, K). */
            ct_tensor *stack = t_rand((int64_t[]){3, 9, 6}, 3, dts[i], -1, 1);
            ct_tensor *at = ct_transpose(stack, 1, 2);
            cr_assert_eq(ct_tensor_strides(at)[1], 1);
            check_product(at, b, ct_matmul(at, b), tols[i]);
            ct_tensor *bt = ct_transpose(t_rand((int64_t[]){3, 5, 9}, 3, dts[i], -1, 1), 1, 2);
            check_product(at, bt, ct_bmm(at, bt), tols[i]);

            /* A broadcast batch (stride 0) through ct_expand. */
            ct_tensor *wide = ct_expand(base_b, (int64_t[]){4, 5, 9}, 3);
            cr_assert_eq(ct_tensor_strides(wide)[0], 0);
            check_product(wide, ct_transpose(wide, 1, 2), ct_matmul(wide, ct_transpose(wide, 1, 2)), tols[i]);

            /* Layouts BLAS cannot read (both strides non-unit, stride-0 rows) are packed. */
            ct_tensor *big = t_rand((int64_t[]){12, 20}, 2, dts[i], -1, 1);
            ct_tensor *strided = ct_slice(ct_slice(big, 0, 0, 12, 2), 1, 1, 19, 2); /* (6, 9) */
            cr_assert_eq(ct_tensor_strides(strided)[1], 2);
            check_product(strided, b, ct_matmul(strided, b), tols[i]);
            ct_tensor *rows = ct_expand(t_rand((int64_t[]){1, 9}, 2, dts[i], -1, 1), (int64_t[]){6, 9}, 2);
            check_product(rows, b, ct_matmul(rows, b), tols[i]);
            /* A strided vector on either side. */
            ct_tensor *vec = ct_slice(t_rand((int64_t[]){18}, 1, dts[i], -1, 1), 0, 0, 18, 2);
            check_product(vec, b, ct_matmul(vec, b), tols[i]);
            check_product(base_b, vec, ct_matmul(base_b, vec), tols[i]);
            check_product(vec, vec, ct_matmul(vec, vec), tols[i]);
        });
    }
}

Test(matmul, bmm_matches_reference) {
    ct_manual_seed(4);
    T_NO_LEAK({
        ct_tensor *a = t_rand((int64_t[]){5, 3, 7}, 3, CT_F32, -1, 1);
        ct_tensor *b = t_rand((int64_t[]){5, 7, 4}, 3, CT_F32, -1, 1);
        check_product(a, b, ct_bmm(a, b), 1e-5);
    });
}

Test(matmul, half_precision_against_f64) {
    ct_manual_seed(5);
    ct_dtype dts[] = {CT_F16, CT_BF16};
    for (int i = 0; i < 2; i++) {
        check_shapes((int64_t[]){17, 33}, 2, (int64_t[]){33, 12}, 2, dts[i], 1e-2);
        check_shapes((int64_t[]){3, 1, 5, 16}, 4, (int64_t[]){4, 16, 6}, 3, dts[i], 1e-2);
        check_shapes((int64_t[]){16}, 1, (int64_t[]){2, 16, 6}, 3, dts[i], 1e-2);
        check_shapes((int64_t[]){130, 150}, 2, (int64_t[]){150, 140}, 2, dts[i], 1e-2); /* threaded conversions */
    }
}

/* ---- gradients -------------------------------------------------------------------------- */

static ct_tensor *f_matmul(ct_tensor **x, void *ctx) { return ct_matmul(x[0], x[1]); }
static ct_tensor *f_bmm(ct_tensor **x, void *ctx) { return ct_bmm(x[0], x[1]); }
/* x0 given as (K, M) and x1 as (N, K): both enter transposed. */
static ct_tensor *f_matmul_tt(ct_tensor **x, void *ctx) {
    return ct_matmul(ct_transpose(x[0], -1, -2), ct_transpose(x[1], -1, -2));
}

static void grad_case(t_grad_fn fn, const int64_t *as, int an, const int64_t *bs, int bn) {
    T_NO_LEAK({
        ct_tensor *x[2] = {ct_requires_grad(t_rand(as, an, CT_F64, -1, 1), true),
                           ct_requires_grad(t_rand(bs, bn, CT_F64, -1, 1), true)};
        t_gradcheck(fn, x, 2, NULL, 1e-6, 1e-8, 1e-6);
    });
}

Test(matmul, gradients) {
    ct_manual_seed(6);
    grad_case(f_matmul, (int64_t[]){3, 4}, 2, (int64_t[]){4, 2}, 2);
    grad_case(f_matmul, (int64_t[]){4}, 1, (int64_t[]){4, 3}, 2);
    grad_case(f_matmul, (int64_t[]){3, 4}, 2, (int64_t[]){4}, 1);
    grad_case(f_matmul, (int64_t[]){5}, 1, (int64_t[]){5}, 1);
    grad_case(f_matmul, (int64_t[]){2, 3, 4}, 3, (int64_t[]){4, 2}, 2);    /* b shared by the batch */
    grad_case(f_matmul, (int64_t[]){3, 4}, 2, (int64_t[]){2, 4, 2}, 3);    /* a shared by the batch */
    grad_case(f_matmul, (int64_t[]){2, 1, 2, 3}, 4, (int64_t[]){3, 3, 2}, 3); /* broadcast both ways */
    grad_case(f_matmul, (int64_t[]){2, 3, 4}, 3, (int64_t[]){4}, 1);
    grad_case(f_matmul, (int64_t[]){4}, 1, (int64_t[]){2, 4, 3}, 3);
    grad_case(f_bmm, (int64_t[]){2, 3, 4}, 3, (int64_t[]){2, 4, 2}, 3);
    grad_case(f_matmul_tt, (int64_t[]){4, 3}, 2, (int64_t[]){2, 4}, 2);
    grad_case(f_matmul_tt, (int64_t[]){2, 4, 3}, 3, (int64_t[]){2, 4}, 2);
    /* Empty dims: the gradients are empty or zero. */
    grad_case(f_matmul, (int64_t[]){2, 3, 0}, 3, (int64_t[]){0, 4}, 2);
    grad_case(f_matmul, (int64_t[]){2, 0, 3}, 3, (int64_t[]){3, 4}, 2);
    grad_case(f_matmul, (int64_t[]){0, 3}, 2, (int64_t[]){2, 3, 4}, 3);
}

Test(matmul, gradient_of_one_input_only) {
    ct_manual_seed(7);
    T_NO_LEAK({
        ct_tensor *x[2] = {t_rand((int64_t[]){3, 4}, 2, CT_F64, -1, 1),
                           ct_requires_grad(t_rand((int64_t[]){2, 4, 5}, 3, CT_F64, -1, 1), true)};
        t_gradcheck(f_matmul, x, 2, NULL, 1e-6, 1e-8, 1e-6);
        cr_assert_null(ct_grad(x[0]));
    });
}

Test(matmul, half_precision_backward) {
    ct_manual_seed(8);
    T_NO_LEAK({
        ct_tensor *a = ct_requires_grad(t_rand((int64_t[]){2, 3, 8}, 3, CT_BF16, -1, 1), true);
        ct_tensor *b = ct_requires_grad(t_rand((int64_t[]){8, 4}, 2, CT_BF16, -1, 1), true);
        ct_tensor *out = ct_matmul(a, b);
        cr_assert_str_eq(ct_grad_fn_name(out), "ct_matmul");
        cr_assert_eq(ct_backward(ct_sum(out, NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        /* d sum(A B) / dB[k][n] = sum over rows of A[.][k]. */
        double *av = t_values(a), ref[32];
        for (int k = 0; k < 8; k++) {
            double s = 0;
            for (int r = 0; r < 6; r++)
                s += av[r * 8 + k];
            for (int n = 0; n < 4; n++)
                ref[k * 4 + n] = s;
        }
        free(av);
        cr_assert_eq(ct_tensor_dtype(ct_grad(b)), CT_BF16);
        t_assert_close(ct_grad(b), ref, 3e-2, 1e-2);
    });
}

/* ---- errors ---------------------------------------------------------------------------- */

Test(matmul, inner_dimension_mismatch) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *a = ct_zeros((int64_t[]){2, 3}, 2, CT_F32, CT_CPU);
        ct_tensor *b = ct_zeros((int64_t[]){4, 5}, 2, CT_F32, CT_CPU);
        cr_assert_null(ct_matmul(a, b));
        cr_assert_str_eq(ct_last_error_message(), "ct_matmul: inner dimensions differ: a is [2, 3], b is [4, 5]");
        t_assert_error(CT_ERR_SHAPE, NULL);
        cr_assert_null(ct_matmul(ct_zeros((int64_t[]){3}, 1, CT_F32, CT_CPU), b));
        t_assert_error(CT_ERR_SHAPE, "inner dimensions differ", "a is [3]", NULL);
        cr_assert_null(ct_bmm(ct_zeros((int64_t[]){2, 2, 3}, 3, CT_F32, CT_CPU),
                              ct_zeros((int64_t[]){2, 4, 5}, 3, CT_F32, CT_CPU)));
        t_assert_error(CT_ERR_SHAPE, "ct_bmm: inner dimensions differ: a is [2, 2, 3], b is [2, 4, 5]", NULL);
    });
}

Test(matmul, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *s = ct_scalar(1, CT_F32, CT_CPU), *v = ct_zeros((int64_t[]){3}, 1, CT_F32, CT_CPU);
        cr_assert_null(ct_matmul(s, v));
        t_assert_error(CT_ERR_SHAPE, "ct_matmul", "at least 1 dimension", "a is []", NULL);
        cr_assert_null(ct_matmul(v, s));
        t_assert_error(CT_ERR_SHAPE, "b is []", NULL);

        cr_assert_null(ct_matmul(ct_zeros((int64_t[]){2, 3, 4}, 3, CT_F32, CT_CPU),
                                 ct_zeros((int64_t[]){3, 4, 5}, 3, CT_F32, CT_CPU)));
        t_assert_error(CT_ERR_SHAPE, "ct_matmul: batch dimensions cannot be broadcast", "[2, 3, 4]", "[3, 4, 5]",
                       NULL);

        cr_assert_null(ct_matmul(v, ct_zeros((int64_t[]){3, 2}, 2, CT_F64, CT_CPU)));
        t_assert_error(CT_ERR_DTYPE, "ct_matmul", "f32", "f64", NULL);
        ct_tensor *iv = ct_zeros((int64_t[]){3}, 1, CT_I32, CT_CPU);
        cr_assert_null(ct_matmul(iv, iv));
        t_assert_error(CT_ERR_DTYPE, "ct_matmul", "i32", NULL);

        cr_assert_null(ct_matmul(NULL, v));
        t_assert_error(CT_ERR_NULL, "ct_matmul", "argument a is NULL", NULL);
        /* The first error survives. */
        cr_assert_null(ct_matmul(ct_matmul(s, v), v));
        t_assert_error(CT_ERR_SHAPE, "at least 1 dimension", NULL);

        cr_assert_null(ct_bmm(ct_zeros((int64_t[]){3, 4}, 2, CT_F32, CT_CPU),
                              ct_zeros((int64_t[]){4, 5}, 2, CT_F32, CT_CPU)));
        t_assert_error(CT_ERR_SHAPE, "ct_bmm", "3-D", "a is [3, 4]", NULL);
        cr_assert_null(ct_bmm(ct_zeros((int64_t[]){2, 3, 4}, 3, CT_F32, CT_CPU),
                              ct_zeros((int64_t[]){1, 4, 5}, 3, CT_F32, CT_CPU)));
        t_assert_error(CT_ERR_SHAPE, "ct_bmm: batch sizes differ", "[2, 3, 4]", "[1, 4, 5]", NULL);
    });
}
