/* pow, maximum, minimum, abs, clamp, where, masked_fill, the unary math and scalar ops and
 * the comparisons: forward against naive f64 references (broadcasting, views, empty and
 * size-1 dims, every dtype that applies), gradients in f64, tie and NaN rules, the integer
 * semantics documented in ops.h, and bad inputs. */
#include "tests/common.h"

#include <string.h>

/* ---- naive references ----------------------------------------------------------------- */

typedef double (*ref2_fn)(double x, double y);

static double ref_pow(double x, double y) { return pow(x, y); }
static double ref_max(double x, double y) { return isnan(x) || isnan(y) ? NAN : (x > y ? x : y); }
static double ref_min(double x, double y) { return isnan(x) || isnan(y) ? NAN : (x < y ? x : y); }

/* ref[i] = f(a, b) at each element of `out`'s (broadcast) shape. */
static double *naive_binary(const ct_tensor *a, const ct_tensor *b, const ct_tensor *out, ref2_fn f) {
    double *av = t_values(a), *bv = t_values(b);
    int64_t n = ct_tensor_numel(out), coords[CT_MAX_DIMS];
    int nd = ct_tensor_ndim(out);
    double *ref = malloc(sizeof(double) * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++) {
        t_unravel(i, nd, ct_tensor_shape(out), coords);
        ref[i] = f(av[t_ravel_broadcast(coords, nd, ct_tensor_ndim(a), ct_tensor_shape(a))],
                   bv[t_ravel_broadcast(coords, nd, ct_tensor_ndim(b), ct_tensor_shape(b))]);
    }
    free(av);
    free(bv);
    return ref;
}

/* cond ? a : b, all three broadcast to `out`. */
static double *naive_where(const ct_tensor *c, const ct_tensor *a, const ct_tensor *b, const ct_tensor *out) {
    double *cv = t_values(c), *av = t_values(a), *bv = t_values(b);
    int64_t n = ct_tensor_numel(out), coords[CT_MAX_DIMS];
    int nd = ct_tensor_ndim(out);
    double *ref = malloc(sizeof(double) * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++) {
        t_unravel(i, nd, ct_tensor_shape(out), coords);
        bool take_a = cv[t_ravel_broadcast(coords, nd, ct_tensor_ndim(c), ct_tensor_shape(c))] != 0;
        ref[i] = take_a ? av[t_ravel_broadcast(coords, nd, ct_tensor_ndim(a), ct_tensor_shape(a))]
                        : bv[t_ravel_broadcast(coords, nd, ct_tensor_ndim(b), ct_tensor_shape(b))];
    }
    free(cv);
    free(av);
    free(bv);
    return ref;
}

static void assert_binary(ct_tensor *out, const ct_tensor *a, const ct_tensor *b, ref2_fn f, double tol) {
    cr_assert_not_null(out, "%s", ct_last_error_message());
    double *ref = naive_binary(a, b, out, f);
    t_assert_close(out, ref, tol, tol);
    free(ref);
}

/* Bring every element of a contiguous F64 tensor at least `margin` away from `point`. */
static void keep_away(ct_tensor *t, double point, double margin) {
    double *x = ct_tensor_data(t);
    for (int64_t i = 0; i < ct_tensor_numel(t); i++)
        if (fabs(x[i] - point) < margin)
            x[i] = x[i] >= point ? point + margin : point - margin;
}

/* ---- pow / maximum / minimum ---------------------------------------------------------------- */

typedef ct_tensor *(*op2_fn)(const ct_tensor *, const ct_tensor *);
static const struct {
    const char *name;
    op2_fn op;
    ref2_fn ref;
} binary_ops[] = {{"pow", ct_pow, ref_pow}, {"maximum", ct_maximum, ref_max}, {"minimum", ct_minimum, ref_min}};
#define N_BINARY (int)(sizeof binary_ops / sizeof binary_ops[0])

static void check_binary_shapes(const int64_t *as, int an, const int64_t *bs, int bn, ct_dtype dt, double tol) {
    for (int k = 0; k < N_BINARY; k++) {
        T_NO_LEAK({
            ct_tensor *a = t_rand(as, an, dt, 0.25, 2.5); /* positive bases for pow */
            ct_tensor *b = t_rand(bs, bn, dt, -2, 2);
            assert_binary(binary_ops[k].op(a, b), a, b, binary_ops[k].ref, tol);
        });
    }
}

Test(elementwise, binary_broadcasting_shapes) {
    ct_manual_seed(11);
    check_binary_shapes((int64_t[]){3, 4}, 2, (int64_t[]){3, 4}, 2, CT_F32, 1e-5);
    check_binary_shapes((int64_t[]){3, 1, 5}, 3, (int64_t[]){4, 1}, 2, CT_F64, 1e-12);
    check_binary_shapes((int64_t[]){2, 3, 4}, 3, (int64_t[]){}, 0, CT_F32, 1e-5);
    check_binary_shapes((int64_t[]){}, 0, (int64_t[]){5, 1, 3}, 3, CT_F64, 1e-12);
    check_binary_shapes((int64_t[]){1, 1}, 2, (int64_t[]){1}, 1, CT_F32, 1e-5);
    check_binary_shapes((int64_t[]){0, 3}, 2, (int64_t[]){3}, 1, CT_F32, 1e-5);
    check_binary_shapes((int64_t[]){2, 0, 1}, 3, (int64_t[]){4}, 1, CT_F64, 1e-12);
    check_binary_shapes((int64_t[]){70000}, 1, (int64_t[]){70000}, 1, CT_F32, 1e-5); /* threaded path */
    check_binary_shapes((int64_t[]){7, 9}, 2, (int64_t[]){9}, 1, CT_F16, 1e-2);
    check_binary_shapes((int64_t[]){7, 9}, 2, (int64_t[]){7, 1}, 2, CT_BF16, 2e-2);
}

Test(elementwise, binary_non_contiguous) {
    ct_manual_seed(12);
    for (int k = 0; k < N_BINARY; k++) {
        T_NO_LEAK({
            ct_tensor *a = ct_transpose(t_rand((int64_t[]){6, 8}, 2, CT_F64, 0.5, 2), 0, 1); /* (8, 6) */
            ct_tensor *b = ct_slice(t_rand((int64_t[]){8, 12}, 2, CT_F64, -2, 2), 1, 1, 12, 2); /* (8, 6) */
            assert_binary(binary_ops[k].op(a, b), a, b, binary_ops[k].ref, 1e-12);
            ct_tensor *c = ct_expand(ct_slice(t_rand((int64_t[]){1, 12}, 2, CT_F32, -2, 2), 1, 0, 12, 2),
                                     (int64_t[]){8, 6}, 2);
            ct_tensor *d = ct_transpose(t_rand((int64_t[]){6, 8}, 2, CT_F32, 0.5, 2), 0, 1);
            assert_binary(binary_ops[k].op(d, c), d, c, binary_ops[k].ref, 1e-5);
        });
    }
}

Test(elementwise, pow_values_and_negative_bases) {
    T_NO_LEAK({
        ct_tensor *a = ct_from_host((double[]){-2, -2, 0, 0, 4, 9}, (int64_t[]){6}, 1, CT_F64, CT_CPU);
        ct_tensor *b = ct_from_host((double[]){3, 0.5, 0, -1, 0.5, -0.5}, (int64_t[]){6}, 1, CT_F64, CT_CPU);
        t_assert_close(ct_pow(a, b), (double[]){-8, NAN, 1, INFINITY, 2, 1.0 / 3}, 1e-15, 0);
    });
}

Test(elementwise, maximum_minimum_integers_and_nan) {
    T_NO_LEAK({
        ct_tensor *a = ct_from_host((int32_t[]){-5, 7, 3, -2147483647}, (int64_t[]){4}, 1, CT_I32, CT_CPU);
        ct_tensor *b = ct_from_host((int32_t[]){2}, (int64_t[]){1}, 1, CT_I32, CT_CPU);
        ct_tensor *mx = ct_maximum(a, b), *mn = ct_minimum(a, b);
        cr_assert_eq(ct_tensor_dtype(mx), CT_I32);
        t_assert_close(mx, (double[]){2, 7, 3, 2}, 0, 0);
        t_assert_close(mn, (double[]){-5, 2, 2, -2147483647}, 0, 0);
        ct_tensor *u = ct_from_host((uint8_t[]){0, 200, 255}, (int64_t[]){3}, 1, CT_U8, CT_CPU);
        ct_tensor *v = ct_from_host((uint8_t[]){100, 100, 100}, (int64_t[]){3}, 1, CT_U8, CT_CPU);
        t_assert_close(ct_maximum(u, v), (double[]){100, 200, 255}, 0, 0);
        t_assert_close(ct_minimum(u, v), (double[]){0, 100, 100}, 0, 0);
        /* NaN on either side propagates, in every floating dtype. */
        ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16};
        for (int k = 0; k < 4; k++) {
            ct_tensor *x = ct_cast(ct_from_host((double[]){NAN, 1, NAN, -INFINITY}, (int64_t[]){4}, 1, CT_F64, CT_CPU),
                                   dts[k]);
            ct_tensor *y = ct_cast(ct_from_host((double[]){1, NAN, NAN, 3}, (int64_t[]){4}, 1, CT_F64, CT_CPU), dts[k]);
            t_assert_close(ct_maximum(x, y), (double[]){NAN, NAN, NAN, 3}, 0, 0);
            t_assert_close(ct_minimum(x, y), (double[]){NAN, NAN, NAN, -INFINITY}, 0, 0);
        }
    });
}

static ct_tensor *g_pow(ct_tensor **x, void *ctx) { return ct_pow(x[0], x[1]); }
static ct_tensor *g_max(ct_tensor **x, void *ctx) { return ct_maximum(x[0], x[1]); }
static ct_tensor *g_min(ct_tensor **x, void *ctx) { return ct_minimum(x[0], x[1]); }
/* A strided view inside the graph: the kernels read transposed inputs and gradients. */
static ct_tensor *g_max_t(ct_tensor **x, void *ctx) { return ct_maximum(ct_transpose(x[0], 0, 1), x[1]); }

Test(elementwise, binary_gradients_with_broadcasting) {
    ct_manual_seed(13);
    t_grad_fn fns[] = {g_pow, g_max, g_min};
    for (int k = 0; k < 3; k++) {
        T_NO_LEAK({
            ct_tensor *x[2] = {ct_requires_grad(t_rand((int64_t[]){3, 1, 4}, 3, CT_F64, 0.3, 2), true),
                               ct_requires_grad(t_rand((int64_t[]){2, 1}, 2, CT_F64, -1.5, 1.5), true)};
            t_gradcheck(fns[k], x, 2, NULL, 1e-6, 1e-7, 1e-6);
        });
    }
    T_NO_LEAK({
        ct_tensor *x[2] = {ct_requires_grad(t_rand((int64_t[]){5, 3}, 2, CT_F64, -1, 1), true),
                           ct_requires_grad(t_rand((int64_t[]){5}, 1, CT_F64, -1, 1), true)};
        t_gradcheck(g_max_t, x, 2, NULL, 1e-6, 1e-7, 1e-6);
    });
    /* One input not requiring grad. */
    T_NO_LEAK({
        ct_tensor *x[2] = {ct_requires_grad(t_rand((int64_t[]){4}, 1, CT_F64, 0.3, 2), true),
                           t_rand((int64_t[]){4}, 1, CT_F64, -1, 1)};
        t_gradcheck(g_pow, x, 2, NULL, 1e-6, 1e-7, 1e-6);
    });
}

static void assert_values(const double *got, const double *want, int n, const char *what, ct_dtype dt) {
    for (int i = 0; i < n; i++)
        cr_assert(got[i] == want[i], "%s (%s) element %d: got %g, expected %g", what, ct_dtype_name(dt), i, got[i],
                  want[i]);
}

/* F32, F16 and BF16 gradients (fused kernel rows longer than one conversion chunk) against
 * F64 gradients from the same rounded inputs. */
Test(elementwise, binary_gradients_low_precision) {
    ct_manual_seed(20);
    ct_dtype dts[] = {CT_F32, CT_F16, CT_BF16};
    double tols[] = {1e-5, 2e-2, 4e-2};
    for (int k = 0; k < N_BINARY; k++) {
        for (int d = 0; d < 3; d++) {
            T_NO_LEAK({
                ct_tensor *a = ct_requires_grad(t_rand((int64_t[]){3, 700}, 2, dts[d], 0.5, 2), true);
                ct_tensor *b = ct_requires_grad(t_rand((int64_t[]){700}, 1, dts[d], -2, 2), true);
                ct_tensor *a64 = ct_requires_grad(ct_cast(ct_detach(a), CT_F64), true);
                ct_tensor *b64 = ct_requires_grad(ct_cast(ct_detach(b), CT_F64), true);
                cr_assert_eq(ct_backward(ct_sum(binary_ops[k].op(a, b), NULL, 0, false)), CT_OK, "%s",
                             ct_last_error_message());
                cr_assert_eq(ct_backward(ct_sum(binary_ops[k].op(a64, b64), NULL, 0, false)), CT_OK);
                double *want = t_values(ct_grad(a64));
                t_assert_close(ct_grad(a), want, tols[d], tols[d]);
                free(want);
                want = t_values(ct_grad(b64));
                t_assert_close(ct_grad(b), want, 3 * tols[d], tols[d]); /* summed over 3 rows */
                free(want);
            });
        }
    }
}

/* Gradient of sum(op(a, b)) for both inputs, as host arrays of n elements. */
static void sum_grads(op2_fn op, const double *av, const double *bv, int64_t n, ct_dtype dt, double *ga, double *gb) {
    ct_scope_begin();
    ct_tensor *a = ct_requires_grad(ct_cast(ct_from_host(av, &n, 1, CT_F64, CT_CPU), dt), true);
    ct_tensor *b = ct_requires_grad(ct_cast(ct_from_host(bv, &n, 1, CT_F64, CT_CPU), dt), true);
    cr_assert_eq(ct_backward(ct_sum(op(a, b), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
    double *v = t_values(ct_grad(a));
    memcpy(ga, v, sizeof(double) * (size_t)n);
    free(v);
    v = t_values(ct_grad(b));
    memcpy(gb, v, sizeof(double) * (size_t)n);
    free(v);
    ct_scope_end();
}

Test(elementwise, maximum_minimum_ties_split_the_gradient) {
    const double a[] = {1, 2, 3, NAN, 1}, b[] = {1, 5, 0, 1, NAN};
    ct_dtype dts[] = {CT_F64, CT_F32, CT_F16, CT_BF16};
    for (int k = 0; k < 4; k++) {
        double ga[5], gb[5];
        T_NO_LEAK(sum_grads(ct_maximum, a, b, 5, dts[k], ga, gb));
        /* NaN on either side: both get the whole gradient, as in PyTorch. */
        assert_values(ga, (double[]){0.5, 0, 1, 1, 1}, 5, "maximum grad a", dts[k]);
        assert_values(gb, (double[]){0.5, 1, 0, 1, 1}, 5, "maximum grad b", dts[k]);
        T_NO_LEAK(sum_grads(ct_minimum, a, b, 5, dts[k], ga, gb));
        assert_values(ga, (double[]){0.5, 1, 0, 1, 1}, 5, "minimum grad a", dts[k]);
        assert_values(gb, (double[]){0.5, 0, 1, 1, 1}, 5, "minimum grad b", dts[k]);
    }
}

Test(elementwise, pow_gradient_at_zero) {
    /* d/da is 0 where b == 0 (even at a == 0); d/db is 0 where a == 0 and b >= 0. */
    const double a[] = {0, 0, 2, 0}, b[] = {0, 2, 0, 1};
    double ga[4], gb[4];
    T_NO_LEAK(sum_grads(ct_pow, a, b, 4, CT_F64, ga, gb));
    assert_values(ga, (double[]){0, 0, 0, 1}, 4, "pow grad a", CT_F64);
    assert_values(gb, (double[]){0, 0, log(2.0), 0}, 4, "pow grad b", CT_F64);
}

/* ---- abs / clamp ------------------------------------------------------------------------ */

typedef struct unary_case {
    ct_tensor *(*op)(const ct_tensor *, double, double);
    double (*ref)(double, double, double);
    double lo, hi;
} unary_case;

static ct_tensor *op_abs(const ct_tensor *a, double lo, double hi) { return ct_abs(a); }
static ct_tensor *op_clamp(const ct_tensor *a, double lo, double hi) { return ct_clamp(a, lo, hi); }
static double ref_abs(double x, double lo, double hi) { return fabs(x); }
static double ref_clamp(double x, double lo, double hi) { return isnan(x) ? x : fmin(fmax(x, lo), hi); }

static void check_unary(const unary_case *c, ct_tensor *a, double tol) {
    ct_tensor *out = c->op(a, c->lo, c->hi);
    cr_assert_not_null(out, "%s", ct_last_error_message());
    t_assert_shape(out, ct_tensor_shape(a), ct_tensor_ndim(a));
    cr_assert_eq(ct_tensor_dtype(out), ct_tensor_dtype(a));
    double *x = t_values(a);
    for (int64_t i = 0; i < ct_tensor_numel(a); i++)
        x[i] = c->ref(x[i], c->lo, c->hi);
    t_assert_close(out, x, tol, tol);
    free(x);
}

Test(elementwise, abs_clamp_forward) {
    ct_manual_seed(14);
    const unary_case cases[] = {{op_abs, ref_abs, 0, 0},
                                {op_clamp, ref_clamp, -0.5, 1.25},
                                {op_clamp, ref_clamp, -INFINITY, 0.3},
                                {op_clamp, ref_clamp, 0.1, INFINITY},
                                {op_clamp, ref_clamp, 1, -1}}; /* lo > hi: every element becomes hi */
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16};
    double tols[] = {1e-7, 0, 1e-2, 1e-2}; /* only the bounds are rounded to the dtype */
    for (int k = 0; k < 5; k++) {
        for (int d = 0; d < 4; d++) {
            T_NO_LEAK({
                check_unary(&cases[k], t_rand((int64_t[]){3, 1, 5}, 3, dts[d], -2, 2), tols[d]);
                check_unary(&cases[k], ct_transpose(t_rand((int64_t[]){4, 6}, 2, dts[d], -2, 2), 0, 1), tols[d]);
                check_unary(&cases[k], ct_slice(t_rand((int64_t[]){2, 9}, 2, dts[d], -2, 2), 1, 1, 9, 3), tols[d]);
                check_unary(&cases[k], t_rand((int64_t[]){0, 4}, 2, dts[d], -2, 2), 0);
                check_unary(&cases[k], t_rand((int64_t[]){}, 0, dts[d], -2, 2), tols[d]);
            });
        }
    }
    T_NO_LEAK(check_unary(&cases[1], t_rand((int64_t[]){50000}, 1, CT_F32, -2, 2), 0));
}

Test(elementwise, abs_clamp_integers_and_special_values) {
    T_NO_LEAK({
        ct_tensor *i = ct_from_host((int32_t[]){-7, 0, 5, -1}, (int64_t[]){4}, 1, CT_I32, CT_CPU);
        t_assert_close(ct_abs(i), (double[]){7, 0, 5, 1}, 0, 0);
        t_assert_close(ct_clamp(i, -2, 3), (double[]){-2, 0, 3, -1}, 0, 0);
        t_assert_close(ct_clamp(i, -INFINITY, 0), (double[]){-7, 0, 0, -1}, 0, 0);
        cr_assert_eq(ct_tensor_dtype(ct_clamp(i, 0, 1)), CT_I32);
        ct_tensor *u = ct_from_host((uint8_t[]){0, 9, 250}, (int64_t[]){3}, 1, CT_U8, CT_CPU);
        t_assert_close(ct_clamp(u, 5, 200), (double[]){5, 9, 200}, 0, 0);
        t_assert_close(ct_abs(u), (double[]){0, 9, 250}, 0, 0);
        ct_tensor *f = ct_from_host((float[]){NAN, -INFINITY, INFINITY, -0.0f}, (int64_t[]){4}, 1, CT_F32, CT_CPU);
        t_assert_close(ct_clamp(f, -1, 1), (double[]){NAN, -1, 1, 0}, 0, 0);
        t_assert_close(ct_abs(f), (double[]){NAN, INFINITY, INFINITY, 0}, 0, 0);
    });
}

static ct_tensor *g_abs(ct_tensor **x, void *ctx) { return ct_abs(x[0]); }
static ct_tensor *g_clamp(ct_tensor **x, void *ctx) { return ct_clamp(x[0], -0.5, 0.7); }
static ct_tensor *g_clamp_t(ct_tensor **x, void *ctx) { return ct_clamp(ct_transpose(x[0], 0, 1), -INFINITY, 0.2); }

Test(elementwise, abs_clamp_gradients) {
    ct_manual_seed(15);
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){4, 5}, 2, CT_F64, -2, 2), true);
        keep_away(x, 0, 1e-3);
        t_gradcheck(g_abs, &x, 1, NULL, 1e-6, 1e-7, 1e-6);
    });
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){4, 5}, 2, CT_F64, -1.5, 1.5), true);
        keep_away(x, -0.5, 1e-3);
        keep_away(x, 0.7, 1e-3);
        t_gradcheck(g_clamp, &x, 1, NULL, 1e-6, 1e-7, 1e-6);
    });
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){3, 6}, 2, CT_F64, -1, 1), true);
        keep_away(x, 0.2, 1e-3);
        t_gradcheck(g_clamp_t, &x, 1, NULL, 1e-6, 1e-7, 1e-6);
    });
    /* The bounds themselves let the gradient through (PyTorch: lo <= x <= hi); abs'(0) = 0. */
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(ct_from_host((double[]){-1, 0, 1, 2}, (int64_t[]){4}, 1, CT_F64, CT_CPU), true);
        cr_assert_eq(ct_backward(ct_sum(ct_clamp(x, -1, 1), NULL, 0, false)), CT_OK);
        t_assert_close(ct_grad(x), (double[]){1, 1, 1, 0}, 0, 0);
        ct_zero_grad(x);
        cr_assert_eq(ct_backward(ct_sum(ct_abs(x), NULL, 0, false)), CT_OK);
        t_assert_close(ct_grad(x), (double[]){-1, 0, 1, 1}, 0, 0);
    });
}

/* ---- where / masked_fill --------------------------------------------------------------- */

static void check_where(const int64_t *cs, int cn, const int64_t *as, int an, const int64_t *bs, int bn, ct_dtype dt) {
    T_NO_LEAK({
        ct_tensor *c = ct_bernoulli(cs, cn, 0.5, CT_U8, CT_CPU);
        ct_tensor *a = ct_cast(t_rand(as, an, CT_F64, -100, 100), dt);
        ct_tensor *b = ct_cast(t_rand(bs, bn, CT_F64, -100, 100), dt);
        ct_tensor *out = ct_where(c, a, b);
        cr_assert_not_null(out, "%s", ct_last_error_message());
        cr_assert_eq(ct_tensor_dtype(out), dt);
        double *ref = naive_where(c, a, b, out);
        t_assert_close(out, ref, 0, 0); /* a selection is exact */
        free(ref);
    });
}

Test(elementwise, where_forward) {
    ct_manual_seed(16);
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16, CT_I32, CT_U8};
    for (int d = 0; d < 6; d++) {
        check_where((int64_t[]){3, 4}, 2, (int64_t[]){3, 4}, 2, (int64_t[]){3, 4}, 2, dts[d]);
        check_where((int64_t[]){3, 1}, 2, (int64_t[]){1, 4}, 2, (int64_t[]){2, 1, 1}, 3, dts[d]);
        check_where((int64_t[]){2, 3, 4}, 3, (int64_t[]){}, 0, (int64_t[]){4}, 1, dts[d]);
        check_where((int64_t[]){5}, 1, (int64_t[]){5}, 1, (int64_t[]){}, 0, dts[d]);
        check_where((int64_t[]){0, 3}, 2, (int64_t[]){3}, 1, (int64_t[]){1}, 1, dts[d]);
        check_where((int64_t[]){1, 1}, 2, (int64_t[]){1}, 1, (int64_t[]){}, 0, dts[d]);
    }
    check_where((int64_t[]){300, 200}, 2, (int64_t[]){300, 200}, 2, (int64_t[]){200}, 1, CT_F32); /* threaded */
    /* Strided operands: a transposed condition, a sliced input. */
    T_NO_LEAK({
        ct_tensor *c = ct_transpose(ct_bernoulli((int64_t[]){6, 5}, 2, 0.5, CT_U8, CT_CPU), 0, 1); /* (5, 6) */
        ct_tensor *a = ct_slice(t_rand((int64_t[]){5, 12}, 2, CT_F32, -1, 1), 1, 0, 12, 2);       /* (5, 6) */
        ct_tensor *b = ct_transpose(t_rand((int64_t[]){6, 5}, 2, CT_F32, -1, 1), 0, 1);           /* (5, 6) */
        ct_tensor *out = ct_where(c, a, b);
        double *ref = naive_where(c, a, b, out);
        t_assert_close(out, ref, 0, 0);
        free(ref);
    });
    /* Any nonzero byte is true. */
    T_NO_LEAK({
        ct_tensor *c = ct_from_host((uint8_t[]){0, 1, 7, 255}, (int64_t[]){4}, 1, CT_U8, CT_CPU);
        ct_tensor *a = ct_full((int64_t[]){4}, 1, 1, CT_F32, CT_CPU), *b = ct_zeros((int64_t[]){4}, 1, CT_F32, CT_CPU);
        t_assert_close(ct_where(c, a, b), (double[]){0, 1, 1, 1}, 0, 0);
    });
}

static ct_tensor *g_where(ct_tensor **x, void *ctx) { return ct_where(ctx, x[0], x[1]); }

Test(elementwise, where_gradients) {
    ct_manual_seed(17);
    T_NO_LEAK({
        ct_tensor *c = ct_bernoulli((int64_t[]){3, 1, 4}, 3, 0.5, CT_U8, CT_CPU);
        ct_tensor *x[2] = {ct_requires_grad(t_rand((int64_t[]){2, 1}, 2, CT_F64, -1, 1), true),
                           ct_requires_grad(t_rand((int64_t[]){3, 2, 4}, 3, CT_F64, -1, 1), true)};
        t_gradcheck(g_where, x, 2, c, 1e-6, 1e-7, 1e-6);
    });
    T_NO_LEAK({
        ct_tensor *c = ct_from_host((uint8_t[]){1, 0, 1}, (int64_t[]){3}, 1, CT_U8, CT_CPU);
        ct_tensor *a = ct_requires_grad(ct_from_host((double[]){1, 2, 3}, (int64_t[]){3}, 1, CT_F64, CT_CPU), true);
        ct_tensor *b = ct_requires_grad(ct_scalar(5, CT_F64, CT_CPU), true);
        cr_assert_eq(ct_backward(ct_sum(ct_where(c, a, b), NULL, 0, false)), CT_OK);
        t_assert_close(ct_grad(a), (double[]){1, 0, 1}, 0, 0);
        t_assert_close(ct_grad(b), (double[]){1}, 0, 0); /* summed back to the 0-dim input */
    });
}

static void check_masked_fill(const int64_t *ts, int tn, const int64_t *ms, int mn, ct_dtype dt, double value) {
    T_NO_LEAK({
        ct_tensor *t = ct_cast(t_rand(ts, tn, CT_F64, -100, 100), dt);
        ct_tensor *m = ct_bernoulli(ms, mn, 0.5, CT_U8, CT_CPU);
        ct_tensor *out = ct_masked_fill(t, m, value);
        cr_assert_not_null(out, "%s", ct_last_error_message());
        t_assert_shape(out, ts, tn);
        ct_tensor *v = ct_cast(ct_scalar(value, CT_F64, CT_CPU), dt); /* the value as stored in dt */
        double *ref = naive_where(m, v, t, out);
        t_assert_close(out, ref, 0, 0);
        free(ref);
    });
}

Test(elementwise, masked_fill_forward) {
    ct_manual_seed(18);
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16, CT_I32, CT_U8};
    for (int d = 0; d < 6; d++) {
        bool is_float = d < 4;
        check_masked_fill((int64_t[]){3, 4}, 2, (int64_t[]){3, 4}, 2, dts[d], is_float ? -INFINITY : 7);
        check_masked_fill((int64_t[]){2, 3, 4}, 3, (int64_t[]){3, 1}, 2, dts[d], 0.5);
        check_masked_fill((int64_t[]){2, 5}, 2, (int64_t[]){}, 0, dts[d], -3);
        check_masked_fill((int64_t[]){0, 5}, 2, (int64_t[]){5}, 1, dts[d], 1);
    }
    check_masked_fill((int64_t[]){64, 1024}, 2, (int64_t[]){1024}, 1, CT_F32, -1e9); /* threaded */
    T_NO_LEAK({
        ct_tensor *t = ct_transpose(ct_reshape(ct_arange(0, 6, 1, CT_F32, CT_CPU), (int64_t[]){2, 3}, 2), 0, 1); /* (3, 2): [[0, 3], [1, 4], [2, 5]] */
        ct_tensor *m = ct_from_host((uint8_t[]){1, 0}, (int64_t[]){2}, 1, CT_U8, CT_CPU);
        t_assert_close(ct_masked_fill(t, m, NAN), (double[]){NAN, 3, NAN, 4, NAN, 5}, 0, 0);
    });
}

static ct_tensor *g_masked_fill(ct_tensor **x, void *ctx) { return ct_masked_fill(x[0], ctx, 2.5); }

Test(elementwise, masked_fill_gradients) {
    ct_manual_seed(19);
    T_NO_LEAK({
        ct_tensor *m = ct_bernoulli((int64_t[]){4, 1}, 2, 0.5, CT_U8, CT_CPU);
        ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){2, 4, 3}, 3, CT_F64, -1, 1), true);
        t_gradcheck(g_masked_fill, &x, 1, m, 1e-6, 1e-7, 1e-6);
    });
    T_NO_LEAK({
        ct_tensor *m = ct_from_host((uint8_t[]){1, 0, 0, 1}, (int64_t[]){4}, 1, CT_U8, CT_CPU);
        ct_tensor *x = ct_requires_grad(ct_from_host((float[]){1, 2, 3, 4}, (int64_t[]){4}, 1, CT_F32, CT_CPU), true);
        cr_assert_eq(ct_backward(ct_sum(ct_masked_fill(x, m, -INFINITY), NULL, 0, false)), CT_OK);
        t_assert_close(ct_grad(x), (double[]){0, 1, 1, 0}, 0, 0);
    });
}

/* ---- comparisons on integers --------------------------------------------------------------- */

Test(elementwise, comparisons_on_integers_feed_where) {
    T_NO_LEAK({
        ct_tensor *a = ct_from_host((int32_t[]){-3, 0, 4, 9}, (int64_t[]){4}, 1, CT_I32, CT_CPU);
        ct_tensor *b = ct_from_host((int32_t[]){0}, (int64_t[]){1}, 1, CT_I32, CT_CPU);
        ct_tensor *gt = ct_gt(a, b);
        cr_assert_eq(ct_tensor_dtype(gt), CT_U8);
        t_assert_close(gt, (double[]){0, 0, 1, 1}, 0, 0);
        t_assert_close(ct_where(ct_le(a, b), b, a), (double[]){0, 0, 4, 9}, 0, 0); /* relu by hand */
    });
}

/* ---- bad inputs ------------------------------------------------------------------------------ */

Test(elementwise, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *a = ct_zeros((int64_t[]){2, 3}, 2, CT_F32, CT_CPU);
        ct_tensor *b = ct_zeros((int64_t[]){4}, 1, CT_F32, CT_CPU);
        ct_tensor *d = ct_zeros((int64_t[]){3}, 1, CT_F64, CT_CPU);
        ct_tensor *m = ct_zeros((int64_t[]){3}, 1, CT_U8, CT_CPU);

        cr_assert_null(ct_pow(a, b));
        t_assert_error(CT_ERR_SHAPE, "ct_pow", "[2, 3]", "[4]", NULL);
        cr_assert_null(ct_maximum(a, d));
        t_assert_error(CT_ERR_DTYPE, "ct_maximum", "f32", "f64", NULL);
        cr_assert_null(ct_minimum(a, NULL));
        t_assert_error(CT_ERR_NULL, "ct_minimum", "argument b is NULL", NULL);
        cr_assert_null(ct_abs(NULL));
        t_assert_error(CT_ERR_NULL, "ct_abs", "argument a is NULL", NULL);
        cr_assert_null(ct_clamp(a, NAN, 1));
        t_assert_error(CT_ERR_VALUE, "ct_clamp", "NaN", NULL);
        cr_assert_null(ct_clamp(NULL, 0, 1));
        t_assert_error(CT_ERR_NULL, "ct_clamp", "argument a is NULL", NULL);

        cr_assert_null(ct_where(a, a, a));
        t_assert_error(CT_ERR_DTYPE, "ct_where", "cond must be u8", "f32", NULL);
        cr_assert_null(ct_where(NULL, a, a));
        t_assert_error(CT_ERR_NULL, "ct_where", "argument cond is NULL", NULL);
        cr_assert_null(ct_where(m, a, NULL));
        t_assert_error(CT_ERR_NULL, "ct_where", "argument b is NULL", NULL);
        cr_assert_null(ct_where(m, a, d));
        t_assert_error(CT_ERR_DTYPE, "ct_where", "f32", "f64", NULL);
        cr_assert_null(ct_where(m, a, b));
        t_assert_error(CT_ERR_SHAPE, "ct_where", "[3]", "[2, 3]", "[4]", NULL);
        cr_assert_null(ct_where(ct_zeros((int64_t[]){5}, 1, CT_U8, CT_CPU), a, a));
        t_assert_error(CT_ERR_SHAPE, "ct_where", "cond [5]", "[2, 3]", NULL);

        cr_assert_null(ct_masked_fill(a, d, 0));
        t_assert_error(CT_ERR_DTYPE, "ct_masked_fill", "mask must be u8", "f64", NULL);
        cr_assert_null(ct_masked_fill(a, NULL, 0));
        t_assert_error(CT_ERR_NULL, "ct_masked_fill", "argument mask is NULL", NULL);
        /* The mask may broadcast to t, not t to the mask. */
        cr_assert_null(ct_masked_fill(m, ct_zeros((int64_t[]){2, 3}, 2, CT_U8, CT_CPU), 0));
        t_assert_error(CT_ERR_SHAPE, "ct_masked_fill", "mask of shape [2, 3]", "t of shape [3]", NULL);
        cr_assert_null(ct_masked_fill(a, ct_zeros((int64_t[]){2}, 1, CT_U8, CT_CPU), 0));
        t_assert_error(CT_ERR_SHAPE, "ct_masked_fill", "[2]", "[2, 3]", NULL);

        /* The first error survives a chain. */
        cr_assert_null(ct_abs(ct_clamp(ct_maximum(a, d), 0, 1)));
        t_assert_error(CT_ERR_DTYPE, "ct_maximum", NULL);
    });
}

/* ---- unary math and scalar ops: one table ------------------------------------------------- */

typedef struct unary_math {
    const char *name;
    ct_tensor *(*op)(const ct_tensor *a, double s);
    double (*ref)(double x, double s);
    double s;      /* the scalar of the *_scalar ops */
    double lo, hi; /* inputs are drawn from [lo, hi): log, sqrt, rsqrt and fractional powers need x > 0 */
} unary_math;

static ct_tensor *op_neg(const ct_tensor *a, double s) {
    return ct_neg(a);
}
static ct_tensor *op_exp(const ct_tensor *a, double s) {
    return ct_exp(a);
}
static ct_tensor *op_log(const ct_tensor *a, double s) {
    return ct_log(a);
}
static ct_tensor *op_sqrt(const ct_tensor *a, double s) {
    return ct_sqrt(a);
}
static ct_tensor *op_rsqrt(const ct_tensor *a, double s) {
    return ct_rsqrt(a);
}
static ct_tensor *op_add_scalar(const ct_tensor *a, double s) {
    return ct_add_scalar(a, s);
}
static ct_tensor *op_mul_scalar(const ct_tensor *a, double s) {
    return ct_mul_scalar(a, s);
}
static ct_tensor *op_pow_scalar(const ct_tensor *a, double s) {
    return ct_pow_scalar(a, s);
}
static double r_neg(double x, double s) {
    return -x;
}
static double r_exp(double x, double s) {
    return exp(x);
}
static double r_log(double x, double s) {
    return log(x);
}
static double r_sqrt(double x, double s) {
    return sqrt(x);
}
static double r_rsqrt(double x, double s) {
    return 1 / sqrt(x);
}
static double r_add_scalar(double x, double s) {
    return x + s;
}
static double r_mul_scalar(double x, double s) {
    return x * s;
}
static double r_pow_scalar(double x, double s) {
    return pow(x, s);
}

static const unary_math unary_table[] = {
    {"neg", op_neg, r_neg, 0, -3, 3},
    {"exp", op_exp, r_exp, 0, -3, 3},
    {"log", op_log, r_log, 0, 0.2, 5},
    {"sqrt", op_sqrt, r_sqrt, 0, 0.2, 5},
    {"rsqrt", op_rsqrt, r_rsqrt, 0, 0.2, 5},
    {"add_scalar", op_add_scalar, r_add_scalar, -1.75, -3, 3},
    {"mul_scalar", op_mul_scalar, r_mul_scalar, 2.5, -3, 3},
    {"pow_scalar 2", op_pow_scalar, r_pow_scalar, 2, -3, 3},
    {"pow_scalar 3", op_pow_scalar, r_pow_scalar, 3, -2, 2},
    {"pow_scalar 1", op_pow_scalar, r_pow_scalar, 1, -3, 3},
    {"pow_scalar 0", op_pow_scalar, r_pow_scalar, 0, -3, 3},
    {"pow_scalar -1", op_pow_scalar, r_pow_scalar, -1, 0.25, 4},
    {"pow_scalar 0.5", op_pow_scalar, r_pow_scalar, 0.5, 0.2, 5},
    {"pow_scalar -1.5", op_pow_scalar, r_pow_scalar, -1.5, 0.25, 4},
};
#define N_UNARY_MATH (int)(sizeof unary_table / sizeof unary_table[0])

/* assert_values on the elements of t. */
static void assert_tensor_values(const ct_tensor *t, const double *want, int n, const char *what) {
    cr_assert_not_null(t, "%s: %s", what, ct_last_error_message());
    cr_assert_eq(ct_tensor_numel(t), n, "%s: %lld elements, expected %d", what, (long long)ct_tensor_numel(t), n);
    double *v = t_values(t);
    assert_values(v, want, n, what, ct_tensor_dtype(t));
    free(v);
}

/* Elementwise |got - ref| <= atol + rtol |ref| (NaN matches NaN), naming the op on failure. */
static void assert_close_named(const char *what, const ct_tensor *t, const double *ref, double atol, double rtol) {
    cr_assert_not_null(t, "%s: %s", what, ct_last_error_message());
    double *v = t_values(t);
    for (int64_t i = 0; i < ct_tensor_numel(t); i++) {
        bool ok = isnan(ref[i]) ? isnan(v[i]) : (v[i] == ref[i] || fabs(v[i] - ref[i]) <= atol + rtol * fabs(ref[i]));
        cr_assert(ok, "%s (%s %s) element %lld: got %.10g, expected %.10g", what, ct_dtype_name(ct_tensor_dtype(t)),
                  ct_shape_str(t), (long long)i, v[i], ref[i]);
    }
    free(v);
}

static void check_unary_math(const unary_math *u, const ct_tensor *a, double atol, double rtol) {
    ct_tensor *out = u->op(a, u->s);
    cr_assert_not_null(out, "%s: %s", u->name, ct_last_error_message());
    t_assert_shape(out, ct_tensor_shape(a), ct_tensor_ndim(a));
    cr_assert_eq(ct_tensor_dtype(out), ct_tensor_dtype(a), "%s", u->name);
    double *ref = t_values(a); /* the inputs as stored in their dtype */
    for (int64_t i = 0; i < ct_tensor_numel(a); i++)
        ref[i] = u->ref(ref[i], u->s);
    assert_close_named(u->name, out, ref, atol, rtol);
    free(ref);
}

Test(elementwise, unary_math_forward) {
    ct_manual_seed(21);
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16};
    double atols[] = {1e-6, 1e-12, 1e-3, 1e-3}, rtols[] = {1e-5, 1e-12, 1e-2, 1e-2};
    for (int k = 0; k < N_UNARY_MATH; k++) {
        const unary_math *u = &unary_table[k];
        for (int d = 0; d < 4; d++) {
            T_NO_LEAK({
                double lo = u->lo, hi = u->hi, at = atols[d], rt = rtols[d];
                check_unary_math(u, t_rand((int64_t[]){3, 1, 5}, 3, dts[d], lo, hi), at, rt);
                check_unary_math(u, t_rand((int64_t[]){1, 1, 7}, 3, dts[d], lo, hi), at, rt);
                check_unary_math(u, t_rand((int64_t[]){}, 0, dts[d], lo, hi), at, rt);
                check_unary_math(u, t_rand((int64_t[]){0, 4}, 2, dts[d], lo, hi), at, rt);
                check_unary_math(u, t_rand((int64_t[]){2, 0, 1}, 3, dts[d], lo, hi), at, rt);
                check_unary_math(u, ct_transpose(t_rand((int64_t[]){4, 6}, 2, dts[d], lo, hi), 0, 1), at, rt);
                check_unary_math(u, ct_slice(t_rand((int64_t[]){2, 9}, 2, dts[d], lo, hi), 1, 1, 9, 3), at, rt);
                /* a strided view of a transposed tensor, with a size-1 dim in between */
                ct_tensor *v = ct_transpose(t_rand((int64_t[]){5, 1, 8}, 3, dts[d], lo, hi), 0, 2); /* (8, 1, 5) */
                check_unary_math(u, ct_slice(v, 0, 0, 8, 3), at, rt);
            });
        }
        /* long enough for the threaded path, and conversion chunks in F16 */
        T_NO_LEAK(check_unary_math(u, t_rand((int64_t[]){50000}, 1, CT_F32, u->lo, u->hi), 1e-6, 1e-5));
        T_NO_LEAK(check_unary_math(u, t_rand((int64_t[]){3, 1300}, 2, CT_F16, u->lo, u->hi), 1e-3, 1e-2));
    }
}

static ct_tensor *g_unary_math(ct_tensor **x, void *ctx) {
    const unary_math *u = ctx;
    return u->op(x[0], u->s);
}
/* The op on a transposed view, so that the backward reads strided saved tensors. */
static ct_tensor *g_unary_math_t(ct_tensor **x, void *ctx) {
    const unary_math *u = ctx;
    return u->op(ct_transpose(x[0], 0, 1), u->s);
}

Test(elementwise, unary_math_gradients) {
    ct_manual_seed(22);
    for (int k = 0; k < N_UNARY_MATH; k++) {
        const unary_math *u = &unary_table[k];
        T_NO_LEAK({
            ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){3, 4}, 2, CT_F64, u->lo, u->hi), true);
            t_gradcheck(g_unary_math, &x, 1, (void *)u, 1e-6, 1e-6, 1e-6);
            ct_tensor *y = ct_requires_grad(t_rand((int64_t[]){4, 3}, 2, CT_F64, u->lo, u->hi), true);
            t_gradcheck(g_unary_math_t, &y, 1, (void *)u, 1e-6, 1e-6, 1e-6);
        });
    }
}

Test(elementwise, pow_scalar_gradient_at_zero) {
    /* d/dx x^0 is 0 everywhere, also at x = 0 where p x^(p-1) would be 0 * inf (PyTorch gives 0);
     * x^1 passes the gradient through and x^2 gives 2x, both finite at 0. */
    const double x[] = {0, -0.0, 2, -3};
    const double ps[] = {0, 1, 2}, want[][4] = {{0, 0, 0, 0}, {1, 1, 1, 1}, {0, 0, 4, -6}};
    ct_dtype dts[] = {CT_F64, CT_F32, CT_F16, CT_BF16};
    for (int k = 0; k < 3; k++) {
        for (int d = 0; d < 4; d++) {
            T_NO_LEAK({
                ct_tensor *a =
                    ct_requires_grad(ct_cast(ct_from_host(x, (int64_t[]){4}, 1, CT_F64, CT_CPU), dts[d]), true);
                ct_tensor *y = ct_pow_scalar(a, ps[k]);
                if (ps[k] == 0)
                    t_assert_close(y, (double[]){1, 1, 1, 1}, 0, 0);
                cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
                assert_tensor_values(ct_grad(a), want[k], 4, ps[k] == 0 ? "x^0 grad" : "x^p grad");
            });
        }
    }
}

/* ---- comparisons ----------------------------------------------------------------------------- */

static double c_eq(double x, double y) {
    return x == y;
}
static double c_ne(double x, double y) {
    return x != y;
}
static double c_lt(double x, double y) {
    return x < y;
}
static double c_le(double x, double y) {
    return x <= y;
}
static double c_gt(double x, double y) {
    return x > y;
}
static double c_ge(double x, double y) {
    return x >= y;
}

static const struct {
    const char *name;
    op2_fn op;
    ref2_fn ref;
} comparisons[] = {{"eq", ct_eq, c_eq}, {"ne", ct_ne, c_ne}, {"lt", ct_lt, c_lt},
                   {"le", ct_le, c_le}, {"gt", ct_gt, c_gt}, {"ge", ct_ge, c_ge}};
#define N_COMPARISONS (int)(sizeof comparisons / sizeof comparisons[0])

/* Small integers (0 to 3) in `dtype`, so that ties are frequent. */
static ct_tensor *small_ints(const int64_t *shape, int ndim, ct_dtype dtype) {
    return ct_cast(ct_cast(t_rand(shape, ndim, CT_F64, 0, 3.999), CT_I32), dtype);
}

/* Every comparison of a and b: U8 0/1 of the broadcast shape, exactly the reference. */
static void check_comparisons(const ct_tensor *a, const ct_tensor *b) {
    for (int k = 0; k < N_COMPARISONS; k++) {
        ct_tensor *out = comparisons[k].op(a, b);
        cr_assert_not_null(out, "%s: %s", comparisons[k].name, ct_last_error_message());
        cr_assert_eq(ct_tensor_dtype(out), CT_U8, "%s", comparisons[k].name);
        cr_assert(!ct_tensor_requires_grad(out), "%s", comparisons[k].name);
        double *ref = naive_binary(a, b, out, comparisons[k].ref);
        assert_close_named(comparisons[k].name, out, ref, 0, 0);
        free(ref);
    }
}

static void check_comparison_shapes(const int64_t *as, int an, const int64_t *bs, int bn, ct_dtype dt) {
    T_NO_LEAK(check_comparisons(small_ints(as, an, dt), small_ints(bs, bn, dt)));
}

Test(elementwise, comparisons_forward) {
    ct_manual_seed(23);
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16, CT_I32, CT_U8};
    for (int d = 0; d < 6; d++) {
        check_comparison_shapes((int64_t[]){3, 4}, 2, (int64_t[]){3, 4}, 2, dts[d]);
        check_comparison_shapes((int64_t[]){3, 1, 5}, 3, (int64_t[]){4, 1}, 2, dts[d]);
        check_comparison_shapes((int64_t[]){2, 3, 4}, 3, (int64_t[]){}, 0, dts[d]);
        check_comparison_shapes((int64_t[]){}, 0, (int64_t[]){5, 1, 3}, 3, dts[d]);
        check_comparison_shapes((int64_t[]){1, 1}, 2, (int64_t[]){1}, 1, dts[d]);
        check_comparison_shapes((int64_t[]){0, 3}, 2, (int64_t[]){3}, 1, dts[d]);
        check_comparison_shapes((int64_t[]){2, 0, 1}, 3, (int64_t[]){4}, 1, dts[d]);
        T_NO_LEAK({
            ct_tensor *a = ct_transpose(small_ints((int64_t[]){6, 8}, 2, dts[d]), 0, 1);               /* (8, 6) */
            ct_tensor *b = ct_slice(small_ints((int64_t[]){8, 12}, 2, dts[d]), 1, 1, 12, 2);           /* (8, 6) */
            ct_tensor *c = ct_expand(ct_slice(small_ints((int64_t[]){1, 12}, 2, dts[d]), 1, 0, 12, 2), /* (8, 6) */
                                     (int64_t[]){8, 6}, 2);
            check_comparisons(a, b);
            check_comparisons(c, a);
        });
    }
    check_comparison_shapes((int64_t[]){300, 200}, 2, (int64_t[]){200}, 1, CT_F32); /* threaded */
    T_NO_LEAK(check_comparisons(t_rand((int64_t[]){5, 7}, 2, CT_F32, -2, 2), t_rand((int64_t[]){7}, 1, CT_F32, -2, 2)));
    /* Inputs that require grad give results that do not. */
    T_NO_LEAK(check_comparisons(ct_requires_grad(t_rand((int64_t[]){4}, 1, CT_F64, -1, 1), true),
                                t_rand((int64_t[]){4}, 1, CT_F64, -1, 1)));
}

Test(elementwise, comparisons_nan_and_exact_integers) {
    /* NaN compares unequal to everything, itself included: ne is 1, every other comparison 0. */
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16};
    const double want[][5] = {/* eq */ {0, 0, 0, 1, 0}, /* ne */ {1, 1, 1, 0, 1}, /* lt */ {0, 0, 0, 0, 1},
                              /* le */ {0, 0, 0, 1, 1}, /* gt */ {0, 0, 0, 0, 0}, /* ge */ {0, 0, 0, 1, 0}};
    for (int d = 0; d < 4; d++) {
        T_NO_LEAK({
            ct_tensor *a =
                ct_cast(ct_from_host((double[]){NAN, NAN, 1, 1, -INFINITY}, (int64_t[]){5}, 1, CT_F64, CT_CPU), dts[d]);
            ct_tensor *b =
                ct_cast(ct_from_host((double[]){NAN, 1, NAN, 1, 0}, (int64_t[]){5}, 1, CT_F64, CT_CPU), dts[d]);
            for (int k = 0; k < N_COMPARISONS; k++)
                assert_tensor_values(comparisons[k].op(a, b), want[k], 5, comparisons[k].name);
        });
    }
    /* I32 compares exactly, also where f32 could not tell the values apart. */
    T_NO_LEAK({
        ct_tensor *a =
            ct_from_host((int32_t[]){2147483647, 16777217, -2147483647 - 1, 5}, (int64_t[]){4}, 1, CT_I32, CT_CPU);
        ct_tensor *b =
            ct_from_host((int32_t[]){2147483646, 16777216, -2147483647, 5}, (int64_t[]){4}, 1, CT_I32, CT_CPU);
        assert_tensor_values(ct_gt(a, b), (double[]){1, 1, 0, 0}, 4, "gt");
        assert_tensor_values(ct_eq(a, b), (double[]){0, 0, 0, 1}, 4, "eq");
        ct_tensor *u = ct_from_host((uint8_t[]){255, 0, 7}, (int64_t[]){3}, 1, CT_U8, CT_CPU);
        ct_tensor *v = ct_from_host((uint8_t[]){254}, (int64_t[]){1}, 1, CT_U8, CT_CPU);
        assert_tensor_values(ct_ge(u, v), (double[]){1, 0, 0}, 3, "ge");
    });
}

/* ---- integer semantics (include/ctensor/ops.h) --------------------------------------------------- */

static ct_tensor *i32(const int32_t *v, int64_t n) {
    return ct_from_host(v, &n, 1, CT_I32, CT_CPU);
}
static ct_tensor *u8(const uint8_t *v, int64_t n) {
    return ct_from_host(v, &n, 1, CT_U8, CT_CPU);
}

Test(elementwise, integer_arithmetic_saturates_and_truncates) {
    T_NO_LEAK({
        /* computed in double: exact where f32 would round 16777217 */
        ct_tensor *a = i32((int32_t[]){2147483647, -2147483647 - 1, 16777217, 2147483647, 7, -7}, 6);
        ct_tensor *b = i32((int32_t[]){1, -1, 0, -1, 2, 2}, 6);
        ct_tensor *sum = ct_add(a, b);
        cr_assert_eq(ct_tensor_dtype(sum), CT_I32);
        assert_tensor_values(sum, (double[]){2147483647, -2147483648.0, 16777217, 2147483646, 9, -5}, 6, "add");
        assert_tensor_values(ct_mul(a, b), (double[]){2147483647, 2147483647, 0, -2147483647, 14, -14}, 6, "mul");
        /* division truncates toward zero; x / 0 saturates; 0 / 0 is NaN, stored as 0 */
        ct_tensor *n = i32((int32_t[]){7, -7, 1, -1, 0}, 5), *d = i32((int32_t[]){2, 2, 0, 0, 0}, 5);
        assert_tensor_values(ct_div(n, d), (double[]){3, -3, 2147483647, -2147483648.0, 0}, 5, "div");
        /* scalar ops and unary math too */
        assert_tensor_values(ct_mul_scalar(i32((int32_t[]){5, -5}, 2), 0.5), (double[]){2, -2}, 2, "mul_scalar");
        assert_tensor_values(ct_add_scalar(i32((int32_t[]){2147483600}, 1), 1000), (double[]){2147483647}, 1,
                             "add_scalar");
        assert_tensor_values(ct_sqrt(i32((int32_t[]){10, 16}, 2)), (double[]){3, 4}, 2, "sqrt");
        assert_tensor_values(ct_sqrt(i32((int32_t[]){-4}, 1)), (double[]){0}, 1, "sqrt of a negative");
        assert_tensor_values(ct_exp(i32((int32_t[]){1, 100}, 2)), (double[]){2, 2147483647}, 2, "exp");
        /* U8 saturates at both ends */
        ct_tensor *x = u8((uint8_t[]){200, 3, 255, 9}, 4), *y = u8((uint8_t[]){100, 5, 255, 2}, 4);
        assert_tensor_values(ct_add(x, y), (double[]){255, 8, 255, 11}, 4, "add");
        assert_tensor_values(ct_sub(x, y), (double[]){100, 0, 0, 7}, 4, "sub");
        assert_tensor_values(ct_div(x, y), (double[]){2, 0, 1, 4}, 4, "div");
        assert_tensor_values(ct_neg(x), (double[]){0, 0, 0, 0}, 4, "neg");
        /* in place follows the same rules */
        ct_tensor *acc = i32((int32_t[]){2147483000, -5}, 2);
        cr_assert_eq(ct_add_(acc, i32((int32_t[]){1000, 2}, 2)), CT_OK);
        assert_tensor_values(acc, (double[]){2147483647, -3}, 2, "add_");
        cr_assert_eq(ct_mul_scalar_(acc, -1.5), CT_OK);
        assert_tensor_values(acc, (double[]){-2147483648.0, 4}, 2, "mul_scalar_");
    });
}

Test(elementwise, float_to_integer_casts_truncate_and_map_nan_to_zero) {
    T_NO_LEAK({
        ct_tensor *f = ct_from_host((float[]){2.7f, -2.7f, NAN, 1e10f, -1e10f, INFINITY, 0.99f}, (int64_t[]){7}, 1,
                                    CT_F32, CT_CPU);
        assert_tensor_values(ct_cast(f, CT_I32), (double[]){2, -2, 0, 2147483647, -2147483648.0, 2147483647, 0}, 7,
                             "f32 -> i32");
        assert_tensor_values(ct_cast(f, CT_U8), (double[]){2, 0, 0, 255, 0, 255, 0}, 7, "f32 -> u8");
    });
}

Test(elementwise, activations_reject_integers_except_relu) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *ints[] = {i32((int32_t[]){-3, 4}, 2), u8((uint8_t[]){3, 4}, 2)};
        for (int k = 0; k < 2; k++) {
            ct_tensor *t = ints[k];
            const char *dt = ct_dtype_name(ct_tensor_dtype(t));
            cr_assert_null(ct_sigmoid(t));
            t_assert_error(CT_ERR_DTYPE, "ct_sigmoid", "floating", dt, NULL);
            cr_assert_null(ct_tanh(t));
            t_assert_error(CT_ERR_DTYPE, "ct_tanh", dt, NULL);
            cr_assert_null(ct_leaky_relu(t, 0.1));
            t_assert_error(CT_ERR_DTYPE, "ct_leaky_relu", dt, NULL);
            cr_assert_null(ct_elu(t, 1));
            t_assert_error(CT_ERR_DTYPE, "ct_elu", dt, NULL);
            cr_assert_null(ct_gelu(t, CT_GELU_ERF));
            t_assert_error(CT_ERR_DTYPE, "ct_gelu", dt, NULL);
            cr_assert_null(ct_silu(t));
            t_assert_error(CT_ERR_DTYPE, "ct_silu", dt, NULL);
            cr_assert_null(ct_softplus(t, 1, 20));
            t_assert_error(CT_ERR_DTYPE, "ct_softplus", dt, NULL);
        }
        ct_tensor *r = ct_relu(ints[0]);
        cr_assert_eq(ct_tensor_dtype(r), CT_I32);
        assert_tensor_values(r, (double[]){0, 4}, 2, "relu");
        /* integer tensors never require grad */
        cr_assert_null(ct_requires_grad(ints[0], true));
        t_assert_error(CT_ERR_DTYPE, "ct_requires_grad", NULL);
    });
}
