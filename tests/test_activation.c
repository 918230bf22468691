/* Activations: forward against naive f64 references of PyTorch's formulas (every floating
 * dtype, views, empty and size-1 dims), gradients in f64 and in half precision, saturation
 * and NaN behaviour, and bad inputs. */
#include "tests/common.h"

#include <string.h>

/* ---- the cases ---------------------------------------------------------------------------- */

typedef struct act_case {
    const char *name;
    ct_tensor *(*op)(const ct_tensor *a, const double *p);
    double (*ref)(double x, const double *p);
    double p[2];
    double kinks[2]; /* points where the derivative jumps (NAN: none), kept away from in checks */
} act_case;

static ct_tensor *op_relu(const ct_tensor *a, const double *p) { return ct_relu(a); }
static ct_tensor *op_leaky_relu(const ct_tensor *a, const double *p) { return ct_leaky_relu(a, p[0]); }
static ct_tensor *op_elu(const ct_tensor *a, const double *p) { return ct_elu(a, p[0]); }
static ct_tensor *op_gelu_erf(const ct_tensor *a, const double *p) { return ct_gelu(a, CT_GELU_ERF); }
static ct_tensor *op_gelu_tanh(const ct_tensor *a, const double *p) { return ct_gelu(a, CT_GELU_TANH); }
static ct_tensor *op_silu(const ct_tensor *a, const double *p) { return ct_silu(a); }
static ct_tensor *op_sigmoid(const ct_tensor *a, const double *p) { return ct_sigmoid(a); }
static ct_tensor *op_tanh(const ct_tensor *a, const double *p) { return ct_tanh(a); }
static ct_tensor *op_softplus(const ct_tensor *a, const double *p) { return ct_softplus(a, p[0], p[1]); }

/* Straight from the definitions (torch.nn.functional), in double. */
static double ref_relu(double x, const double *p) { return isnan(x) ? x : (x > 0 ? x : 0); }
static double ref_leaky_relu(double x, const double *p) { return x > 0 ? x : p[0] * x; }
static double ref_elu(double x, const double *p) { return x > 0 ? x : p[0] * (exp(x) - 1); }
static double ref_gelu_erf(double x, const double *p) { return x * 0.5 * (1 + erf(x / sqrt(2.0))); }
static double ref_gelu_tanh(double x, const double *p) {
    return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}
static double ref_silu(double x, const double *p) { return x / (1 + exp(-x)); }
static double ref_sigmoid(double x, const double *p) { return 1 / (1 + exp(-x)); }
static double ref_tanh(double x, const double *p) { return tanh(x); }
static double ref_softplus(double x, const double *p) {
    return x * p[0] > p[1] ? x : log1p(exp(x * p[0])) / p[0];
}

static const act_case cases[] = {
    {"relu", op_relu, ref_relu, {0, 0}, {0, NAN}},
    {"leaky_relu", op_leaky_relu, ref_leaky_relu, {0.01, 0}, {0, NAN}},
    {"leaky_relu(-0.3)", op_leaky_relu, ref_leaky_relu, {-0.3, 0}, {0, NAN}},
    {"elu", op_elu, ref_elu, {1.0, 0}, {NAN, NAN}},
    {"elu(0.5)", op_elu, ref_elu, {0.5, 0}, {0, NAN}},
    {"gelu", op_gelu_erf, ref_gelu_erf, {0, 0}, {NAN, NAN}},
    {"gelu(tanh)", op_gelu_tanh, ref_gelu_tanh, {0, 0}, {NAN, NAN}},
    {"silu", op_silu, ref_silu, {0, 0}, {NAN, NAN}},
    {"sigmoid", op_sigmoid, ref_sigmoid, {0, 0}, {NAN, NAN}},
    {"tanh", op_tanh, ref_tanh, {0, 0}, {NAN, NAN}},
    {"softplus", op_softplus, ref_softplus, {1, 20}, {NAN, NAN}},
    {"softplus(2, 1.5)", op_softplus, ref_softplus, {2, 1.5}, {0.75, NAN}}, /* linear above x = 0.75 */
};
#define N_CASES (int)(sizeof cases / sizeof cases[0])

/* Bring every element of a contiguous F64 tensor at least `margin` away from the case's kinks. */
static void keep_away_from_kinks(ct_tensor *t, const act_case *c, double margin) {
    double *x = ct_tensor_data(t);
    for (int k = 0; k < 2; k++) {
        double point = c->kinks[k];
        if (isnan(point))
            continue;
        for (int64_t i = 0; i < ct_tensor_numel(t); i++)
            if (fabs(x[i] - point) < margin)
                x[i] = x[i] >= point ? point + margin : point - margin;
    }
}

/* ---- forward ------------------------------------------------------------------------------- */

static void check_forward(const act_case *c, ct_tensor *a, double tol) {
    ct_tensor *out = c->op(a, c->p);
    cr_assert_not_null(out, "%s: %s", c->name, ct_last_error_message());
    t_assert_shape(out, ct_tensor_shape(a), ct_tensor_ndim(a));
    cr_assert_eq(ct_tensor_dtype(out), ct_tensor_dtype(a), "%s: dtype", c->name);
    double *x = t_values(a);
    for (int64_t i = 0; i < ct_tensor_numel(a); i++)
        x[i] = c->ref(x[i], c->p);
    double *v = t_values(out);
    for (int64_t i = 0; i < ct_tensor_numel(a); i++)
        cr_assert(fabs(v[i] - x[i]) <= tol * (1 + fabs(x[i])), "%s (%s) element %lld of %s: got %.10g, expected %.10g",
                  c->name, ct_dtype_name(ct_tensor_dtype(a)), (long long)i, ct_shape_str(a), v[i], x[i]);
    free(v);
    free(x);
}

Test(activation, forward_all_dtypes_and_layouts) {
    ct_manual_seed(21);
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16};
    double tols[] = {2e-6, 1e-13, 1e-2, 1e-2};
    for (int k = 0; k < N_CASES; k++) {
        for (int d = 0; d < 4; d++) {
            T_NO_LEAK({
                const act_case *c = &cases[k];
                check_forward(c, t_rand((int64_t[]){3, 1, 7}, 3, dts[d], -6, 6), tols[d]);
                check_forward(c, ct_transpose(t_rand((int64_t[]){5, 4}, 2, dts[d], -4, 4), 0, 1), tols[d]);
                check_forward(c, ct_slice(t_rand((int64_t[]){2, 11}, 2, dts[d], -4, 4), 1, 1, 11, 3), tols[d]);
                check_forward(c, ct_expand(t_rand((int64_t[]){3, 1}, 2, dts[d], -4, 4), (int64_t[]){3, 5}, 2), tols[d]);
                check_forward(c, t_rand((int64_t[]){}, 0, dts[d], -3, 3), tols[d]);
                check_forward(c, t_rand((int64_t[]){1, 1}, 2, dts[d], -3, 3), tols[d]);
                check_forward(c, t_rand((int64_t[]){4, 0}, 2, dts[d], -3, 3), tols[d]);
            });
        }
    }
    /* Long rows split between threads, and 2-D rows. */
    for (int k = 0; k < N_CASES; k++)
        T_NO_LEAK({
            check_forward(&cases[k], t_rand((int64_t[]){70001}, 1, CT_F32, -8, 8), 2e-6);
            check_forward(&cases[k], t_rand((int64_t[]){300, 129}, 2, CT_BF16, -8, 8), 1e-2);
        });
}

Test(activation, relu_on_integers) {
    T_NO_LEAK({
        ct_tensor *i = ct_from_host((int32_t[]){-5, 0, 3, 2147483647}, (int64_t[]){4}, 1, CT_I32, CT_CPU);
        ct_tensor *r = ct_relu(i);
        cr_assert_eq(ct_tensor_dtype(r), CT_I32);
        t_assert_close(r, (double[]){0, 0, 3, 2147483647}, 0, 0);
        ct_tensor *u = ct_from_host((uint8_t[]){0, 9, 255}, (int64_t[]){3}, 1, CT_U8, CT_CPU);
        t_assert_close(ct_relu(u), (double[]){0, 9, 255}, 0, 0);
    });
}

/* ---- gradients ------------------------------------------------------------------------------ */

static ct_tensor *g_act(ct_tensor **x, void *ctx) {
    const act_case *c = ctx;
    return c->op(x[0], c->p);
}
/* Through a transposed view, so the backward kernel reads strided grads and inputs. */
static ct_tensor *g_act_t(ct_tensor **x, void *ctx) {
    const act_case *c = ctx;
    return c->op(ct_transpose(x[0], 0, 1), c->p);
}

Test(activation, gradients_f64) {
    ct_manual_seed(22);
    for (int k = 0; k < N_CASES; k++) {
        T_NO_LEAK({
            ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){4, 6}, 2, CT_F64, -4, 4), true);
            keep_away_from_kinks(x, &cases[k], 1e-3);
            t_gradcheck(g_act, &x, 1, (void *)&cases[k], 1e-6, 1e-7, 1e-6);
        });
        T_NO_LEAK({
            ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){3, 5}, 2, CT_F64, -2, 2), true);
            keep_away_from_kinks(x, &cases[k], 1e-3);
            t_gradcheck(g_act_t, &x, 1, (void *)&cases[k], 1e-6, 1e-7, 1e-6);
        });
    }
}

/* In F32, F16 and BF16 the fused backward must agree with the derivative of the reference. */
Test(activation, gradients_low_precision) {
    ct_manual_seed(23);
    ct_dtype dts[] = {CT_F32, CT_F16, CT_BF16};
    double tols[] = {1e-5, 1e-2, 2e-2};
    for (int k = 0; k < N_CASES; k++) {
        const act_case *c = &cases[k];
        for (int d = 0; d < 3; d++) {
            T_NO_LEAK({
                ct_tensor *x64 = t_rand((int64_t[]){3, 601}, 2, CT_F64, -5, 5); /* rows over one chunk */
                keep_away_from_kinks(x64, c, 0.05);
                ct_tensor *x = ct_requires_grad(ct_cast(x64, dts[d]), true);
                cr_assert_eq(ct_backward(ct_sum(c->op(x, c->p), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
                double *xv = t_values(x), *gv = t_values(ct_grad(x));
                for (int i = 0; i < 3 * 601; i++) {
                    double h = 1e-6, want = (c->ref(xv[i] + h, c->p) - c->ref(xv[i] - h, c->p)) / (2 * h);
                    cr_assert(fabs(gv[i] - want) <= tols[d] * (1 + fabs(want)), "%s (%s) at x = %g: grad %g, expected %g",
                              c->name, ct_dtype_name(dts[d]), xv[i], gv[i], want);
                }
                free(xv);
                free(gv);
            });
        }
    }
}

Test(activation, relu_gradient_is_zero_at_zero) {
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(ct_from_host((double[]){-1, 0, 2}, (int64_t[]){3}, 1, CT_F64, CT_CPU), true);
        cr_assert_eq(ct_backward(ct_sum(ct_relu(x), NULL, 0, false)), CT_OK);
        t_assert_close(ct_grad(x), (double[]){0, 0, 1}, 0, 0);
        cr_assert_str_eq(ct_grad_fn_name(ct_relu(x)), "ct_relu");
    });
}

/* sigmoid, tanh and relu save their output: changing it in place is caught at backward. */
Test(activation, modified_saved_output_is_an_error) {
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){4}, 1, CT_F32, -1, 1), true);
        ct_tensor *y = ct_sigmoid(x);
        ct_no_grad_begin(); /* in grad mode the in-place op itself is refused */
        cr_assert_eq(ct_mul_scalar_(y, 2), CT_OK, "%s", ct_last_error_message());
        ct_no_grad_end();
        cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_ERR_AUTOGRAD);
        t_assert_error(CT_ERR_AUTOGRAD, "ct_sigmoid", "modified in place", NULL);
    });
}

/* ---- special values ----------------------------------------------------------------------- */

/* op over `n` values in each floating dtype against `want` (NaN = expect NaN), exactly or
 * within `tol` relative (values below 1e-12 may flush to 0 in half precision); and, when
 * `want_grad` is given, the gradient of the sum against it. */
static void check_special(const act_case *c, const double *x, const double *want, const double *want_grad, int n,
                          double tol) {
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16};
    for (int d = 0; d < 4; d++) {
        T_NO_LEAK({
            ct_tensor *a = ct_requires_grad(ct_cast(ct_from_host(x, (int64_t[]){n}, 1, CT_F64, CT_CPU), dts[d]), true);
            ct_tensor *out = c->op(a, c->p);
            cr_assert_not_null(out, "%s", ct_last_error_message());
            double *v = t_values(out);
            for (int i = 0; i < n; i++) {
                if (isnan(want[i]))
                    cr_assert(isnan(v[i]), "%s (%s) of %g: got %g, expected NaN", c->name, ct_dtype_name(dts[d]), x[i],
                              v[i]);
                else
                    cr_assert(v[i] == want[i] || fabs(v[i] - want[i]) <= tol * fabs(want[i]) + 1e-12,
                              "%s (%s) of %g: got %.10g, expected %.10g", c->name, ct_dtype_name(dts[d]), x[i], v[i],
                              want[i]);
            }
            free(v);
            if (want_grad) {
                cr_assert_eq(ct_backward(ct_sum(out, NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
                double *g = t_values(ct_grad(a));
                for (int i = 0; i < n; i++)
                    cr_assert(isnan(want_grad[i]) ? isnan(g[i]) : fabs(g[i] - want_grad[i]) <= 1e-6,
                              "%s (%s) grad at %g: got %g, expected %g", c->name, ct_dtype_name(dts[d]), x[i], g[i],
                              want_grad[i]);
                free(g);
            }
        });
    }
}

Test(activation, saturation_and_nan) {
    const act_case *relu = &cases[0], *sigmoid = &cases[8], *tanh_case = &cases[9], *softplus = &cases[10];
    const act_case *gelu = &cases[5], *gelu_tanh = &cases[6], *silu = &cases[7], *elu = &cases[3];
    /* relu: NaN propagates, the infinities pass or vanish. */
    check_special(relu, (double[]){NAN, -INFINITY, INFINITY, -0.0, 3}, (double[]){NAN, 0, INFINITY, 0, 3}, NULL, 5,
                  0);
    /* sigmoid / tanh saturate to exact limits with zero gradient, never NaN. */
    const double big[] = {-1000, -100, -30, 30, 100, 1000};
    check_special(sigmoid, big, (double[]){0, 0, 9.357622968840175e-14, 1, 1, 1},
                  (double[]){0, 0, 0, 0, 0, 0}, 6, 1e-2);
    check_special(tanh_case, big, (double[]){-1, -1, -1, 1, 1, 1}, (double[]){0, 0, 0, 0, 0, 0}, 6, 0);
    check_special(sigmoid, (double[]){-INFINITY, INFINITY, NAN}, (double[]){0, 1, NAN}, NULL, 3, 0);
    check_special(tanh_case, (double[]){-INFINITY, INFINITY, NAN}, (double[]){-1, 1, NAN}, NULL, 3, 0);
    /* softplus: linear above the threshold, tiny and not NaN far below it. */
    check_special(softplus, (double[]){1000, 50, -1000, NAN}, (double[]){1000, 50, 0, NAN}, NULL, 4, 0);
    check_special(softplus, (double[]){10000, 25, -60}, (double[]){10000, 25, exp(-60.0)},
                  (double[]){1, 1, exp(-60.0)}, 3, 1e-2);
    /* Far out, gelu / silu / elu tend to 0 or x without NaN. */
    check_special(gelu, (double[]){-1000, 1000, NAN}, (double[]){0, 1000, NAN}, NULL, 3, 0);
    check_special(gelu_tanh, (double[]){-1000, 1000, NAN}, (double[]){0, 1000, NAN}, NULL, 3, 0);
    check_special(silu, (double[]){-1000, 1000, NAN}, (double[]){0, 1000, NAN}, NULL, 3, 0);
    check_special(elu, (double[]){-1000, 1000, NAN}, (double[]){-1, 1000, NAN}, NULL, 3, 0);
    check_special(gelu, (double[]){-1000, 1000}, (double[]){0, 1000}, (double[]){0, 1}, 2, 0);
    check_special(silu, (double[]){-1000, 1000}, (double[]){0, 1000}, (double[]){0, 1}, 2, 0);
}

/* softplus far above exp's range with a huge threshold stays finite (no log(1 + inf)). */
Test(activation, softplus_is_stable_without_threshold) {
    T_NO_LEAK({
        ct_tensor *x = ct_from_host((float[]){100, 200, -200, 0}, (int64_t[]){4}, 1, CT_F32, CT_CPU);
        t_assert_close(ct_softplus(x, 1, 1e30), (double[]){100, 200, 0, log(2.0)}, 1e-6, 1e-6);
        ct_tensor *y = ct_requires_grad(ct_from_host((double[]){800, -800}, (int64_t[]){2}, 1, CT_F64, CT_CPU), true);
        cr_assert_eq(ct_backward(ct_sum(ct_softplus(y, 1, INFINITY), NULL, 0, false)), CT_OK);
        t_assert_close(ct_grad(y), (double[]){1, 0}, 1e-12, 0);
        ct_tensor *z = ct_from_host((double[]){-60, -700}, (int64_t[]){2}, 1, CT_F64, CT_CPU);
        t_assert_close(ct_softplus(z, 1, 20), (double[]){exp(-60.0), exp(-700.0)}, 0, 1e-12); /* not flushed */
        /* beta scales the input: softplus(x, 2) = log(1 + e^{2x}) / 2 */
        t_assert_close(ct_softplus(x, 2, 1e30), (double[]){100, 200, 0, log(2.0) / 2}, 1e-6, 1e-6);
    });
}

/* ---- bad inputs ----------------------------------------------------------------------------- */

Test(activation, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *i = ct_zeros((int64_t[]){2, 3}, 2, CT_I32, CT_CPU);
        ct_tensor *u = ct_zeros((int64_t[]){2}, 1, CT_U8, CT_CPU);
        ct_tensor *f = ct_zeros((int64_t[]){2}, 1, CT_F32, CT_CPU);
        for (int k = 1; k < N_CASES; k++) { /* all but relu refuse integers */
            cr_assert_null(cases[k].op(i, cases[k].p), "%s", cases[k].name);
            t_assert_error(CT_ERR_DTYPE, "needs a floating tensor", "i32", NULL);
            cr_assert_null(cases[k].op(u, cases[k].p), "%s", cases[k].name);
            t_assert_error(CT_ERR_DTYPE, "u8", NULL);
            cr_assert_null(cases[k].op(NULL, cases[k].p), "%s", cases[k].name);
            t_assert_error(CT_ERR_NULL, "argument a is NULL", NULL);
        }
        cr_assert_null(ct_sigmoid(i));
        t_assert_error(CT_ERR_DTYPE, "ct_sigmoid", "i32", NULL);
        cr_assert_null(ct_gelu(f, (ct_gelu_approx)7));
        t_assert_error(CT_ERR_VALUE, "ct_gelu", "CT_GELU_ERF", NULL);
        cr_assert_null(ct_softplus(f, 0, 20));
        t_assert_error(CT_ERR_VALUE, "ct_softplus", "beta", NULL);
        cr_assert_null(ct_relu(NULL));
        t_assert_error(CT_ERR_NULL, "ct_relu: argument a is NULL", NULL);
        /* An error in an inner op is the one reported. */
        cr_assert_null(ct_tanh(ct_softplus(ct_sigmoid(i), 1, 20)));
        t_assert_error(CT_ERR_DTYPE, "ct_sigmoid", NULL);
        cr_assert_null(ct_gelu(NULL, (ct_gelu_approx)7));
        t_assert_error(CT_ERR_NULL, "ct_gelu", NULL);
    });
}
