/* Softmax and log-softmax: forward against a naive f64 reference, stability, half
 * precision, gradients (also with strided output gradients), errors. */
#include "tests/common.h"

#include <string.h>

static uint64_t rng_state = 777;
static int rnd(int n) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (int)((rng_state >> 33) % (uint64_t)n);
}

/* A tensor of `shape` with values in [lo, hi); when `strided`, a non-contiguous view (a
 * permuted, step-2 slice of a larger tensor). */
static ct_tensor *make_input(const int64_t *shape, int ndim, ct_dtype dt, double lo, double hi, bool strided) {
    if (!strided || ndim == 0)
        return t_rand(shape, ndim, dt, lo, hi);
    int64_t bshape[CT_MAX_DIMS];
    int perm[CT_MAX_DIMS];
    for (int d = 0; d < ndim; d++) {
        bshape[d] = shape[ndim - 1 - d];
        perm[d] = ndim - 1 - d;
    }
    bshape[0] *= 2;
    ct_tensor *t = ct_permute(ct_slice(t_rand(bshape, ndim, dt, lo, hi), 0, 0, bshape[0], 2), perm, ndim);
    cr_assert_not_null(t, "%s", ct_last_error_message());
    return t;
}

/* Naive f64 (log-)softmax of a's values along dim. */
static double *reference(const ct_tensor *a, int dim, bool take_log) {
    int nd = ct_tensor_ndim(a);
    const int64_t *shape = ct_tensor_shape(a);
    int64_t numel = ct_tensor_numel(a);
    if (nd > 0 && dim < 0)
        dim += nd;
    int64_t n = nd ? shape[dim] : 1, inner = 1;
    for (int d = dim + 1; d < nd; d++)
        inner *= shape[d];
    double *v = t_values(a), *out = malloc(sizeof(double) * (size_t)(numel + 1));
    for (int64_t o = 0; numel > 0 && o < numel / (n * inner); o++)
        for (int64_t i = 0; i < inner; i++) {
            double m = -INFINITY, s = 0;
            for (int64_t j = 0; j < n; j++)
                m = fmax(m, v[(o * n + j) * inner + i]);
            for (int64_t j = 0; j < n; j++)
                s += exp(v[(o * n + j) * inner + i] - m);
            for (int64_t j = 0; j < n; j++) {
                double x = v[(o * n + j) * inner + i];
                out[(o * n + j) * inner + i] = take_log ? x - m - log(s) : exp(x - m) / s;
            }
        }
    free(v);
    return out;
}

static void check(const ct_tensor *a, int dim, bool take_log, double tol) {
    ct_tensor *y = take_log ? ct_log_softmax(a, dim) : ct_softmax(a, dim);
    cr_assert_not_null(y, "%s", ct_last_error_message());
    t_assert_shape(y, ct_tensor_shape(a), ct_tensor_ndim(a));
    cr_assert_eq(ct_tensor_dtype(y), ct_tensor_dtype(a));
    double *ref = reference(a, dim, take_log);
    t_assert_close(y, ref, tol, tol);
    free(ref);
}

Test(softmax, random_shapes_every_dim) {
    ct_manual_seed(1);
    static const int64_t sizes[] = {1, 2, 3, 5, 8, 1, 0};
    for (int i = 0; i < 60; i++) {
        int ndim = rnd(5);
        int64_t shape[4];
        for (int d = 0; d < ndim; d++)
            shape[d] = sizes[rnd(7)];
        for (int v = 0; v < 4; v++) {
            ct_dtype dt = v % 2 ? CT_F64 : CT_F32;
            double tol = dt == CT_F64 ? 1e-12 : 1e-5;
            T_NO_LEAK({
                ct_tensor *a = make_input(shape, ndim, dt, -5, 5, v >= 2);
                for (int dim = ndim ? -ndim : -1; dim < (ndim ? ndim : 1); dim++) {
                    check(a, dim, false, tol);
                    check(a, dim, true, tol);
                }
            });
        }
    }
}

/* Rows long enough to span many chunks, dims other than the last, sizes that run threaded. */
Test(softmax, long_rows_and_outer_dims) {
    ct_manual_seed(2);
    struct {
        int64_t shape[3];
        int ndim, dim;
    } cases[] = {
        {{8, 5000}, 2, -1}, {{5000, 8}, 2, 0}, {{16, 300, 20}, 3, 1}, {{3, 7, 2000}, 3, 0}, {{1, 70000}, 2, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int v = 0; v < 2; v++)
            T_NO_LEAK({
                ct_tensor *a = make_input(cases[i].shape, cases[i].ndim, CT_F32, -10, 10, v);
                check(a, cases[i].dim, false, 1e-5);
                check(a, cases[i].dim, true, 1e-5);
            });
    /* The max keeps growing along the row: the running sum is rescaled chunk after chunk. */
    T_NO_LEAK({
        ct_tensor *ramp = ct_arange(0, 3000, 1, CT_F32, CT_CPU);
        check(ramp, 0, false, 1e-6);
        check(ramp, 0, true, 1e-4);
        check(ct_neg(ramp), 0, true, 1e-4);
    });
}

Test(softmax, large_values_and_infinities) {
    ct_dtype dtypes[] = {CT_F32, CT_F64, CT_F16, CT_BF16};
    double p0 = 1 / (1 + exp(1.0)), p1 = 1 / (1 + exp(-1.0));
    for (int v = 0; v < 4; v++) {
        double tol = dtypes[v] == CT_F64 ? 1e-12 : dtypes[v] == CT_F32 ? 1e-6 : 1e-2;
        /* BF16 cannot tell 1000 from 1001 (its spacing there is 4): it gets [1000, 1008]. */
        double gap = dtypes[v] == CT_BF16 ? 8 : 1, q0 = 1 / (1 + exp(gap)), q1 = 1 / (1 + exp(-gap));
        T_NO_LEAK({
            ct_tensor *big =
                ct_cast(ct_from_host((double[]){1000, 1000 + gap}, (int64_t[]){2}, 1, CT_F64, CT_CPU), dtypes[v]);
            t_assert_close(ct_softmax(big, 0), (double[]){q0, q1}, tol, tol);
            t_assert_close(ct_log_softmax(big, -1), (double[]){log(q0), log(q1)}, tol, tol);
            ct_tensor *masked = ct_cast(
                ct_from_host((double[]){0, -INFINITY, 1, -INFINITY, -INFINITY, -INFINITY, 2, NAN, 0}, (int64_t[]){3, 3},
                             2, CT_F64, CT_CPU),
                dtypes[v]);
            t_assert_close(ct_softmax(masked, 1), (double[]){p0, 0, p1, NAN, NAN, NAN, NAN, NAN, NAN}, tol, tol);
            t_assert_close(ct_log_softmax(masked, 1),
                           (double[]){log(p0), -INFINITY, log(p1), NAN, NAN, NAN, NAN, NAN, NAN}, tol, tol);
            /* The same rows as columns of a contiguous tensor (the lanes path). */
            ct_tensor *columns = ct_contiguous(ct_transpose(masked, 0, 1));
            t_assert_close(ct_softmax(columns, 0), (double[]){p0, NAN, NAN, 0, NAN, NAN, p1, NAN, NAN}, tol, tol);
            t_assert_close(ct_log_softmax(columns, -2),
                           (double[]){log(p0), NAN, NAN, -INFINITY, NAN, NAN, log(p1), NAN, NAN}, tol, tol);
        });
    }
}

Test(softmax, half_precision_against_reference) {
    ct_manual_seed(3);
    for (int i = 0; i < 20; i++) {
        int ndim = 1 + rnd(3);
        int64_t shape[3];
        for (int d = 0; d < ndim; d++)
            shape[d] = 1 + rnd(9);
        for (int v = 0; v < 2; v++)
            T_NO_LEAK({
                ct_tensor *a = make_input(shape, ndim, v ? CT_BF16 : CT_F16, -4, 4, i % 2);
                int dim = rnd(ndim);
                check(a, dim, false, 1e-2);
                check(a, dim, true, 2e-2);
            });
    }
}

Test(softmax, empty_and_zero_dim) {
    T_NO_LEAK({
        check(ct_zeros((int64_t[]){0, 5}, 2, CT_F32, CT_CPU), 1, false, 0);
        check(ct_zeros((int64_t[]){3, 0}, 2, CT_F32, CT_CPU), 1, true, 0);
        check(ct_zeros((int64_t[]){3, 0}, 2, CT_F32, CT_CPU), 0, false, 0);
        ct_tensor *s = ct_scalar(3.0, CT_F64, CT_CPU);
        cr_assert_eq(ct_item(ct_softmax(s, 0)), 1.0);
        cr_assert_eq(ct_item(ct_log_softmax(s, -1)), 0.0);
    });
}

/* ---- gradients ------------------------------------------------------------------------- */

typedef struct grad_ctx {
    int dim;
    bool take_log, transpose;
} grad_ctx;

static ct_tensor *f_softmax(ct_tensor **x, void *ctx) {
    grad_ctx *c = ctx;
    ct_tensor *in = c->transpose ? ct_transpose(x[0], 0, -1) : x[0];
    return c->take_log ? ct_log_softmax(in, c->dim) : ct_softmax(in, c->dim);
}

Test(softmax, gradients) {
    ct_manual_seed(4);
    for (int take_log = 0; take_log < 2; take_log++) {
        for (int dim = -3; dim < 3; dim++)
            for (int tr = 0; tr < 2; tr++)
                T_NO_LEAK({
                    grad_ctx c = {dim, take_log, tr};
                    ct_tensor *x[1] = {ct_requires_grad(t_rand((int64_t[]){3, 4, 5}, 3, CT_F64, -3, 3), true)};
                    t_gradcheck(f_softmax, x, 1, &c, 1e-6, 1e-7, 1e-6);
                });
        T_NO_LEAK({
            grad_ctx c = {0, take_log, false};
            ct_tensor *x[1] = {ct_requires_grad(t_rand((int64_t[]){1, 6}, 2, CT_F64, -3, 3), true)};
            t_gradcheck(f_softmax, x, 1, &c, 1e-6, 1e-7, 1e-6);
            ct_tensor *s[1] = {ct_requires_grad(t_rand((int64_t[]){}, 0, CT_F64, -3, 3), true)};
            t_gradcheck(f_softmax, s, 1, &c, 1e-6, 1e-7, 1e-6);
        });
    }
}

/* Output gradients that are not contiguous reach the kernel as they are: a broadcast one
 * (from sum) and a transposed one (from ct_backward_ex). */
Test(softmax, strided_output_gradients) {
    ct_manual_seed(5);
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){4, 6}, 2, CT_F64, -2, 2), true);
        cr_assert_eq(ct_backward(ct_sum(ct_softmax(x, 1), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        double zeros[24] = {0};
        t_assert_close(ct_grad(x), zeros, 1e-12, 0);
        ct_zero_grad(x);
        cr_assert_eq(ct_backward(ct_sum(ct_log_softmax(x, 1), NULL, 0, false)), CT_OK);
        double *p = reference(x, 1, false), expected[24];
        for (int i = 0; i < 24; i++)
            expected[i] = 1 - 6 * p[i];
        t_assert_close(ct_grad(x), expected, 1e-12, 1e-12);
        free(p);

        ct_zero_grad(x);
        ct_tensor *y = ct_softmax(x, 0);
        ct_tensor *g = ct_transpose(t_rand((int64_t[]){6, 4}, 2, CT_F64, -1, 1), 0, 1);
        cr_assert_eq(ct_backward_ex(y, g, false), CT_OK, "%s", ct_last_error_message());
        double *yv = t_values(y), *gv = t_values(g), ref[24];
        for (int col = 0; col < 6; col++) {
            double dot = 0;
            for (int r = 0; r < 4; r++)
                dot += gv[r * 6 + col] * yv[r * 6 + col];
            for (int r = 0; r < 4; r++)
                ref[r * 6 + col] = yv[r * 6 + col] * (gv[r * 6 + col] - dot);
        }
        t_assert_close(ct_grad(x), ref, 1e-12, 1e-12);
        free(yv);
        free(gv);
    });
}

/* Half-precision gradients against the f64 gradient at the same (rounded) inputs. */
Test(softmax, gradients_in_half_precision) {
    ct_manual_seed(6);
    for (int v = 0; v < 4; v++) {
        ct_dtype dt = v % 2 ? CT_BF16 : CT_F16;
        bool take_log = v >= 2;
        T_NO_LEAK({
            ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){5, 7}, 2, dt, -3, 3), true);
            ct_tensor *x64 = ct_requires_grad(ct_cast(ct_detach(x), CT_F64), true);
            ct_tensor *w = t_rand((int64_t[]){5, 7}, 2, CT_F64, -1, 1);
            ct_tensor *y = take_log ? ct_log_softmax(x, 1) : ct_softmax(x, 1);
            ct_tensor *y64 = take_log ? ct_log_softmax(x64, 1) : ct_softmax(x64, 1);
            cr_assert_eq(ct_backward_ex(y, ct_cast(w, dt), false), CT_OK, "%s", ct_last_error_message());
            cr_assert_eq(ct_backward_ex(y64, ct_cast(ct_cast(w, dt), CT_F64), false), CT_OK);
            cr_assert_eq(ct_tensor_dtype(ct_grad(x)), dt);
            double *ref = t_values(ct_grad(x64));
            t_assert_close(ct_grad(x), ref, 2e-2, 2e-2);
            free(ref);
        });
    }
}

/* ---- errors ------------------------------------------------------------------------- */

Test(softmax, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *a = ct_zeros((int64_t[]){2, 3}, 2, CT_F32, CT_CPU);
        cr_assert_null(ct_softmax(a, 2));
        t_assert_error(CT_ERR_DIM, "ct_softmax", "dim 2", "2-dimensional", NULL);
        cr_assert_null(ct_log_softmax(a, -3));
        t_assert_error(CT_ERR_DIM, "ct_log_softmax", "dim -3", "2-dimensional", NULL);
        cr_assert_null(ct_softmax(ct_scalar(1, CT_F32, CT_CPU), 1));
        t_assert_error(CT_ERR_DIM, "ct_softmax", "dim 1", "0-dimensional", NULL);
        ct_tensor *ints = ct_zeros((int64_t[]){2, 3}, 2, CT_I32, CT_CPU);
        cr_assert_null(ct_softmax(ints, 1));
        t_assert_error(CT_ERR_DTYPE, "ct_softmax", "i32", NULL);
        cr_assert_null(ct_log_softmax(ct_zeros((int64_t[]){2}, 1, CT_U8, CT_CPU), 0));
        t_assert_error(CT_ERR_DTYPE, "ct_log_softmax", "u8", NULL);
        cr_assert_null(ct_log_softmax(NULL, 0));
        t_assert_error(CT_ERR_NULL, "ct_log_softmax", "argument a is NULL", NULL);
        cr_assert_null(ct_softmax(ct_log_softmax(ct_softmax(ints, 0), 0), 0));
        t_assert_error(CT_ERR_DTYPE, "ct_softmax", "i32", NULL);
    });
}

Test(softmax, nan_poisons_the_whole_row_even_after_minus_infinity) {
    T_NO_LEAK({
        /* 300 elements: the NaN sits in the first 256-element chunk, where the max is -inf */
        double v[300];
        for (int i = 0; i < 300; i++)
            v[i] = i < 256 ? -INFINITY : 1.0;
        v[7] = NAN;
        ct_tensor *x = ct_from_host(v, (int64_t[]){1, 300}, 2, CT_F64, CT_CPU);
        double *s = t_values(ct_softmax(x, 1)), *l = t_values(ct_log_softmax(x, 1));
        for (int i = 0; i < 300; i++)
            cr_assert(isnan(s[i]) && isnan(l[i]), "element %d is %g / %g", i, s[i], l[i]);
        free(s);
        free(l);
    });
}

/* The rows path (dim last) and the lanes path (dim 0 of a contiguous tensor) follow one rule,
 * PyTorch's: a row holding +inf (once or twice, first, last, beside -inf), a NaN, or only
 * -inf is NaN throughout; -inf elements of other rows give 0 (log: -inf). Rows of 10, and of
 * 300, past the rows path's first chunk of 256. */
Test(softmax, rows_and_lanes_agree_on_infinities_and_nan) {
    enum { R = 10 };
    static const bool nan_row[R] = {true, true, true, true, true, false, true, true, true, false};
    ct_dtype dtypes[] = {CT_F32, CT_F64, CT_F16, CT_BF16};
    const int64_t lengths[] = {10, 300};
    for (int v = 0; v < 4; v++)
        for (int k = 0; k < 2; k++)
            T_NO_LEAK({
                int64_t n = lengths[k];
                double *x = malloc(sizeof(double) * R * (size_t)n);
                for (int r = 0; r < R; r++)
                    for (int64_t j = 0; j < n; j++)
                        x[r * n + j] = r == 7 || (r == 8 && j < n - 1) ? -INFINITY : 0.1 * (double)(j % 13) - 0.5;
                x[0 * n + 1] = INFINITY;
                x[1 * n + 0] = INFINITY;
                x[2 * n + n - 1] = INFINITY;
                x[3 * n + 2] = x[3 * n + n - 2] = INFINITY;
                x[4 * n + 0] = -INFINITY;
                x[4 * n + 3] = INFINITY;
                x[5 * n + 0] = x[5 * n + n - 1] = -INFINITY;
                x[6 * n + n / 2] = NAN;
                x[8 * n + n - 1] = INFINITY;
                ct_tensor *rows = ct_cast(ct_from_host(x, (int64_t[]){R, n}, 2, CT_F64, CT_CPU), dtypes[v]);
                ct_tensor *columns = ct_contiguous(ct_transpose(rows, 0, 1));
                double tol = dtypes[v] == CT_F64 ? 1e-12 : dtypes[v] == CT_F32 ? 1e-6 : 1e-2;
                for (int take_log = 0; take_log < 2; take_log++) {
                    double *by_row = t_values(take_log ? ct_log_softmax(rows, 1) : ct_softmax(rows, 1));
                    double *by_lane = t_values(take_log ? ct_log_softmax(columns, 0) : ct_softmax(columns, 0));
                    for (int r = 0; r < R; r++)
                        for (int64_t j = 0; j < n; j++) {
                            double a = by_row[r * n + j], b = by_lane[j * R + r];
                            if (nan_row[r])
                                cr_assert(isnan(a) && isnan(b), "%s %s, n %lld, row %d, element %lld: %g / %g, not NaN",
                                          ct_dtype_name(dtypes[v]), take_log ? "log_softmax" : "softmax", (long long)n,
                                          r, (long long)j, a, b);
                            else
                                cr_assert(a == b || fabs(a - b) <= tol,
                                          "%s %s, n %lld, row %d, element %lld: rows %g, lanes %g",
                                          ct_dtype_name(dtypes[v]), take_log ? "log_softmax" : "softmax", (long long)n,
                                          r, (long long)j, a, b);
                        }
                    free(by_row);
                    free(by_lane);
                }
                free(x);
            });
}
