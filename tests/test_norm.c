/* Batch norm and layer norm: forward and running statistics against naive f64 references,
 * gradients in f64 (training and evaluation), half precision, errors. */
#include "tests/common.h"

#include <string.h>

/* ---- references ------------------------------------------------------------------------ */

/* Naive batch norm of x (N, C, S) in f64. Training: batch mean and biased variance (also
 * returned in bmean/bvar); otherwise rm/rv. */
static void bn_ref(const double *x, int64_t N, int64_t C, int64_t S, const double *w, const double *b, const double *rm,
                   const double *rv, bool training, double eps, double *y, double *bmean, double *bvar) {
    for (int64_t c = 0; c < C; c++) {
        double m, v;
        if (training) {
            double s = 0, q = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t k = 0; k < S; k++)
                    s += x[(n * C + c) * S + k];
            m = s / (double)(N * S);
            for (int64_t n = 0; n < N; n++)
                for (int64_t k = 0; k < S; k++)
                    q += (x[(n * C + c) * S + k] - m) * (x[(n * C + c) * S + k] - m);
            v = q / (double)(N * S);
            if (bmean) {
                bmean[c] = m;
                bvar[c] = v;
            }
        } else {
            m = rm[c];
            v = rv[c];
        }
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < S; k++) {
                double h = (x[(n * C + c) * S + k] - m) / sqrt(v + eps);
                y[(n * C + c) * S + k] = h * (w ? w[c] : 1) + (b ? b[c] : 0);
            }
    }
}

/* Naive layer norm of x (R, D). */
static void ln_ref(const double *x, int64_t R, int64_t D, const double *w, const double *b, double eps, double *y) {
    for (int64_t r = 0; r < R; r++) {
        double s = 0, q = 0;
        for (int64_t j = 0; j < D; j++)
            s += x[r * D + j];
        double m = s / (double)D;
        for (int64_t j = 0; j < D; j++)
            q += (x[r * D + j] - m) * (x[r * D + j] - m);
        double rs = 1 / sqrt(q / (double)D + eps);
        for (int64_t j = 0; j < D; j++)
            y[r * D + j] = (x[r * D + j] - m) * rs * (w ? w[j] : 1) + (b ? b[j] : 0);
    }
}

static double *values_or_null(const ct_tensor *t) {
    return t ? t_values(t) : NULL;
}

/* PyTorch 1.13 (tests/data/gen_loss_refs.py): BatchNorm1d(3, momentum 0.1) in training, three
 * steps on x (4, 3, 2) with x[i] = 3 sin(0.7 i + 0.3); the running stats and the last output. */
static const double BN_RUNNING_MEAN[] = {0.11690811216874385, 0.1662428106405453, -0.060396481064185131};
static const double BN_RUNNING_VAR[] = {2.00131464577548, 2.1546076653048152, 1.8913609710109067};
static const double BN_Y[] = {0.22457015652720538,  1.0326561350216836,   1.1007221579449764,  0.65857636685620913,
                              0.17943135345900596,  -0.83246385657925093, -1.6597281322278377, -1.5204828655095033,
                              -0.80871903007743495, 0.14970327933023744,  1.4320012630243559,  1.6471310976332898,
                              0.76844776513858837,  -0.17617121101416294, -1.1599644137105911, -1.6575724398247349,
                              -1.2406580038907025,  -0.43970225267297597, 0.27186703428852338, 1.0588411177755033,
                              1.0938804748560607,   0.6233736046252768,   0.12737234126716523, -0.87311194224088762};

/* ---- batch norm forward ------------------------------------------------------------------ */

typedef struct shape_case {
    int64_t shape[4];
    int ndim;
} shape_case;

static const shape_case bn_shapes[] = {
    {{7, 3}, 2}, {{4, 5, 9}, 3}, {{3, 4, 5, 6}, 4}, {{2, 3, 40, 41}, 4}, {{1, 2, 3}, 3}, {{16, 1, 70, 70}, 4},
};

static void split_bn(const shape_case *sc, int64_t *N, int64_t *C, int64_t *S) {
    *N = sc->shape[0];
    *C = sc->shape[1];
    *S = 1;
    for (int d = 2; d < sc->ndim; d++)
        *S *= sc->shape[d];
}

Test(norm, batch_norm_training_and_running_stats) {
    ct_manual_seed(1);
    for (unsigned i = 0; i < sizeof bn_shapes / sizeof bn_shapes[0]; i++)
        for (int v = 0; v < 4; v++) {
            ct_dtype dt = v % 2 ? CT_F64 : CT_F32;
            bool affine = v >= 2;
            double tol = dt == CT_F64 ? 1e-12 : 2e-5;
            T_NO_LEAK({
                const shape_case *sc = &bn_shapes[i];
                int64_t N, C, S;
                split_bn(sc, &N, &C, &S);
                /* An offset mean, so that cancellation would show. */
                ct_tensor *x = t_rand(sc->shape, sc->ndim, dt, 3, 5);
                ct_tensor *w = affine ? t_rand(&C, 1, dt, 0.5, 2) : NULL, *b = affine ? t_rand(&C, 1, dt, -1, 1) : NULL;
                ct_tensor *rm = t_rand(&C, 1, dt, -1, 1), *rv = t_rand(&C, 1, dt, 0.5, 2);
                double *xv = t_values(x), *wv = values_or_null(w), *bv = values_or_null(b);
                double *rmv = t_values(rm), *rvv = t_values(rv);
                double *ref = malloc(sizeof(double) * (size_t)(N * C * S)), *bm = malloc(sizeof(double) * (size_t)C),
                       *bvar = malloc(sizeof(double) * (size_t)C);
                /* three steps of the same batch: the running stats follow the recurrence */
                for (int step = 0; step < 3; step++) {
                    ct_tensor *y = ct_batch_norm(x, rm, rv, w, b, true, 0.2, 1e-5);
                    cr_assert_not_null(y, "%s", ct_last_error_message());
                    t_assert_shape(y, sc->shape, sc->ndim);
                    cr_assert_eq(ct_tensor_dtype(y), dt);
                    bn_ref(xv, N, C, S, wv, bv, NULL, NULL, true, 1e-5, ref, bm, bvar);
                    t_assert_close(y, ref, tol, tol);
                    for (int64_t c = 0; c < C; c++) {
                        rmv[c] = 0.8 * rmv[c] + 0.2 * bm[c];
                        rvv[c] = 0.8 * rvv[c] + 0.2 * bvar[c] * (double)(N * S) / (double)(N * S - 1);
                    }
                    t_assert_close(rm, rmv, tol, tol);
                    t_assert_close(rv, rvv, tol, tol);
                }
                /* evaluation uses the running statistics and leaves them alone */
                ct_tensor *y = ct_batch_norm(x, rm, rv, w, b, false, 0.2, 1e-3);
                bn_ref(xv, N, C, S, wv, bv, rmv, rvv, false, 1e-3, ref, NULL, NULL);
                t_assert_close(y, ref, tol, tol);
                t_assert_close(rm, rmv, tol, tol);
                free(xv);
                free(wv);
                free(bv);
                free(rmv);
                free(rvv);
                free(ref);
                free(bm);
                free(bvar);
            });
        }
}

Test(norm, batch_norm_matches_pytorch) {
    T_NO_LEAK({
        double xv[24];
        for (int i = 0; i < 24; i++)
            xv[i] = sin(0.7 * i + 0.3) * 3;
        ct_tensor *x = ct_from_host(xv, (int64_t[]){4, 3, 2}, 3, CT_F64, CT_CPU);
        ct_tensor *rm = ct_zeros((int64_t[]){3}, 1, CT_F64, CT_CPU), *rv = ct_ones((int64_t[]){3}, 1, CT_F64, CT_CPU);
        ct_tensor *y = NULL;
        for (int step = 0; step < 3; step++)
            y = ct_batch_norm(x, rm, rv, NULL, NULL, true, 0.1, 1e-5);
        t_assert_close(rm, BN_RUNNING_MEAN, 1e-12, 1e-12);
        t_assert_close(rv, BN_RUNNING_VAR, 1e-12, 1e-12);
        t_assert_close(y, BN_Y, 1e-12, 1e-12);
    });
}

/* A permuted (channels-last) input and strided running statistics. */
Test(norm, batch_norm_strided_operands) {
    ct_manual_seed(2);
    T_NO_LEAK({
        ct_tensor *base = t_rand((int64_t[]){4, 5, 6, 3}, 4, CT_F32, -2, 2);
        ct_tensor *x = ct_permute(base, (int[]){0, 3, 1, 2}, 4); /* (4, 3, 5, 6), not contiguous */
        ct_tensor *stats = ct_zeros((int64_t[]){3, 2}, 2, CT_F32, CT_CPU);
        ct_tensor *rm = ct_select(stats, 1, 0), *rv = ct_select(stats, 1, 1);
        cr_assert_eq(ct_fill_(rv, 1.0), CT_OK);
        ct_tensor *y = ct_batch_norm(x, rm, rv, NULL, NULL, true, 0.1, 1e-5);
        double *xv = t_values(x), ref[360], bm[3], bvar[3], rmv[3], rvv[3];
        bn_ref(xv, 4, 3, 30, NULL, NULL, NULL, NULL, true, 1e-5, ref, bm, bvar);
        t_assert_close(y, ref, 2e-5, 2e-5);
        for (int c = 0; c < 3; c++) {
            rmv[c] = 0.1 * bm[c];
            rvv[c] = 0.9 + 0.1 * bvar[c] * 120.0 / 119.0;
        }
        t_assert_close(rm, rmv, 1e-6, 1e-6);
        t_assert_close(rv, rvv, 1e-6, 1e-6);
        free(xv);
    });
}

/* Running statistics are buffers: the update happens outside the graph, bumps their version
 * (so a node that saved them notices) and works while they are read by nothing else. */
Test(norm, batch_norm_running_stats_are_versioned_buffers) {
    ct_manual_seed(3);
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){8, 2}, 2, CT_F32, -1, 1), true);
        ct_tensor *rm = ct_zeros((int64_t[]){2}, 1, CT_F32, CT_CPU), *rv = ct_ones((int64_t[]){2}, 1, CT_F32, CT_CPU);
        ct_tensor *a = ct_requires_grad(t_rand((int64_t[]){2}, 1, CT_F32, -1, 1), true);
        ct_tensor *uses_rm = ct_sum(ct_mul(a, rm), NULL, 0, false); /* saves rm */
        ct_tensor *y = ct_batch_norm(x, rm, rv, NULL, NULL, true, 0.1, 1e-5);
        cr_assert_not_null(y, "%s", ct_last_error_message());
        cr_assert(!ct_tensor_requires_grad(rm) && !ct_tensor_requires_grad(rv));
        cr_assert_eq(ct_backward(uses_rm), CT_ERR_AUTOGRAD);
        t_assert_error(CT_ERR_AUTOGRAD, "modified in place", NULL);
        cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
    });
}

/* ---- gradients ------------------------------------------------------------------------------ */

typedef struct bn_ctx {
    bool training, affine;
    ct_tensor *rm, *rv;
} bn_ctx;

static ct_tensor *f_bn(ct_tensor **in, void *ctx) {
    bn_ctx *c = ctx;
    /* evaluation: fixed statistics; training: no running stats, so repeated calls agree */
    return ct_batch_norm(in[0], c->training ? NULL : c->rm, c->training ? NULL : c->rv, c->affine ? in[1] : NULL,
                         c->affine ? in[2] : NULL, c->training, 0.1, 1e-3);
}

Test(norm, batch_norm_gradients) {
    ct_manual_seed(4);
    static const shape_case shapes[] = {{{5, 3}, 2}, {{3, 2, 4}, 3}, {{2, 3, 2, 3}, 4}};
    for (unsigned i = 0; i < 3; i++)
        for (int v = 0; v < 4; v++)
            T_NO_LEAK({
                int64_t C = shapes[i].shape[1];
                bn_ctx c = {v % 2 == 0, v < 2, t_rand(&C, 1, CT_F64, -1, 1), t_rand(&C, 1, CT_F64, 0.5, 2)};
                ct_tensor *in[3] = {ct_requires_grad(t_rand(shapes[i].shape, shapes[i].ndim, CT_F64, -2, 2), true),
                                    ct_requires_grad(t_rand(&C, 1, CT_F64, 0.5, 2), true),
                                    ct_requires_grad(t_rand(&C, 1, CT_F64, -1, 1), true)};
                t_gradcheck(f_bn, in, c.affine ? 3 : 1, &c, 1e-6, 1e-7, 1e-6);
            });
}

/* Only some inputs requiring grad, and a non-contiguous output gradient. */
Test(norm, batch_norm_partial_gradients) {
    ct_manual_seed(5);
    T_NO_LEAK({
        ct_tensor *x = t_rand((int64_t[]){6, 4}, 2, CT_F64, -2, 2);
        ct_tensor *w = ct_requires_grad(t_rand((int64_t[]){4}, 1, CT_F64, 0.5, 2), true);
        ct_tensor *y = ct_batch_norm(x, NULL, NULL, w, NULL, true, 0.1, 1e-5);
        ct_tensor *g = ct_transpose(t_rand((int64_t[]){4, 6}, 2, CT_F64, -1, 1), 0, 1);
        cr_assert_eq(ct_backward_ex(y, g, false), CT_OK, "%s", ct_last_error_message());
        double *xv = t_values(x), *gv = t_values(g), ref[24], bm[4], bvar[4], dw[4] = {0};
        bn_ref(xv, 6, 4, 1, NULL, NULL, NULL, NULL, true, 1e-5, ref, bm, bvar);
        for (int n = 0; n < 6; n++)
            for (int c = 0; c < 4; c++)
                dw[c] += gv[n * 4 + c] * ref[n * 4 + c];
        t_assert_close(ct_grad(w), dw, 1e-12, 1e-10);
        free(xv);
        free(gv);
    });
}

/* ---- layer norm ------------------------------------------------------------------------------ */

Test(norm, layer_norm_forward) {
    ct_manual_seed(6);
    static const struct {
        int64_t shape[4];
        int ndim, nd;
    } cases[] = {{{4, 7}, 2, 1}, {{2, 3, 5}, 3, 2}, {{3, 2000}, 2, 1},
                 {{5}, 1, 1},    {{64, 768}, 2, 1}, {{2, 1, 3}, 3, 3}};
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int v = 0; v < 4; v++) {
            ct_dtype dt = v % 2 ? CT_F64 : CT_F32;
            bool affine = v >= 2;
            double tol = dt == CT_F64 ? 1e-12 : 2e-5;
            T_NO_LEAK({
                int nd = cases[i].nd, ndim = cases[i].ndim;
                const int64_t *ps = cases[i].shape + ndim - nd;
                int64_t D = 1, R = 1;
                for (int d = 0; d < ndim; d++) {
                    if (d < ndim - nd)
                        R *= cases[i].shape[d];
                    else
                        D *= cases[i].shape[d];
                }
                ct_tensor *x = t_rand(cases[i].shape, ndim, dt, 10, 12);
                ct_tensor *w = affine ? t_rand(ps, nd, dt, 0.5, 2) : NULL,
                          *b = affine ? t_rand(ps, nd, dt, -1, 1) : NULL;
                ct_tensor *y = ct_layer_norm(x, nd, w, b, 1e-5);
                t_assert_shape(y, cases[i].shape, ndim);
                double *xv = t_values(x), *wv = values_or_null(w), *bv = values_or_null(b);
                double *ref = malloc(sizeof(double) * (size_t)(R * D));
                ln_ref(xv, R, D, wv, bv, 1e-5, ref);
                t_assert_close(y, ref, tol, tol);
                /* a transposed input normalizes the same rows */
                if (ndim == 2) {
                    ct_tensor *xt = ct_transpose(ct_contiguous(ct_transpose(x, 0, 1)), 0, 1);
                    t_assert_close(ct_layer_norm(xt, nd, w, b, 1e-5), ref, tol, tol);
                }
                free(xv);
                free(wv);
                free(bv);
                free(ref);
            });
        }
}

typedef struct ln_ctx {
    int nd;
    bool affine;
} ln_ctx;

static ct_tensor *f_ln(ct_tensor **in, void *ctx) {
    ln_ctx *c = ctx;
    return ct_layer_norm(in[0], c->nd, c->affine ? in[1] : NULL, c->affine ? in[2] : NULL, 1e-4);
}

Test(norm, layer_norm_gradients) {
    ct_manual_seed(7);
    for (int nd = 1; nd <= 2; nd++)
        for (int affine = 0; affine < 2; affine++)
            T_NO_LEAK({
                ln_ctx c = {nd, affine};
                const int64_t shape[3] = {3, 2, 5};
                const int64_t *ps = shape + 3 - nd;
                ct_tensor *in[3] = {ct_requires_grad(t_rand(shape, 3, CT_F64, -2, 2), true),
                                    ct_requires_grad(t_rand(ps, nd, CT_F64, 0.5, 2), true),
                                    ct_requires_grad(t_rand(ps, nd, CT_F64, -1, 1), true)};
                t_gradcheck(f_ln, in, affine ? 3 : 1, &c, 1e-6, 1e-7, 1e-6);
            });
    /* long rows: several chunks, several column blocks */
    T_NO_LEAK({
        ln_ctx c = {1, true};
        ct_tensor *in[3] = {ct_requires_grad(t_rand((int64_t[]){2, 1100}, 2, CT_F64, -2, 2), true),
                            ct_requires_grad(t_rand((int64_t[]){1100}, 1, CT_F64, 0.5, 2), true),
                            ct_requires_grad(t_rand((int64_t[]){1100}, 1, CT_F64, -1, 1), true)};
        ct_tensor *y = f_ln(in, &c);
        ct_tensor *g = t_rand((int64_t[]){2, 1100}, 2, CT_F64, -1, 1);
        cr_assert_eq(ct_backward_ex(y, g, false), CT_OK, "%s", ct_last_error_message());
        /* against the f32 kernel on the same data */
        ct_tensor *x32 = ct_requires_grad(ct_cast(ct_detach(in[0]), CT_F32), true);
        ct_tensor *w32 = ct_requires_grad(ct_cast(ct_detach(in[1]), CT_F32), true);
        ct_tensor *b32 = ct_requires_grad(ct_cast(ct_detach(in[2]), CT_F32), true);
        cr_assert_eq(ct_backward_ex(ct_layer_norm(x32, 1, w32, b32, 1e-4), ct_cast(g, CT_F32), false), CT_OK);
        double *r0 = t_values(ct_grad(in[0])), *r1 = t_values(ct_grad(in[1])), *r2 = t_values(ct_grad(in[2]));
        t_assert_close(ct_grad(x32), r0, 1e-5, 1e-4);
        t_assert_close(ct_grad(w32), r1, 1e-5, 1e-4);
        t_assert_close(ct_grad(b32), r2, 1e-5, 1e-4);
        free(r0);
        free(r1);
        free(r2);
    });
}

/* ---- half precision --------------------------------------------------------------------------- */

/* F16/BF16 x with F32 parameters (mixed precision) against the f64 computation on the same
 * rounded values: forward, running stats and gradients. */
Test(norm, half_precision) {
    ct_manual_seed(8);
    for (int v = 0; v < 4; v++) {
        ct_dtype dt = v % 2 ? CT_BF16 : CT_F16;
        bool layer = v >= 2;
        T_NO_LEAK({
            int64_t shape[4] = {4, 3, 5, 6}, C = 3, D[2] = {5, 6};
            ct_tensor *x = ct_requires_grad(t_rand(shape, 4, dt, -3, 3), true);
            ct_tensor *x64 = ct_requires_grad(ct_cast(ct_detach(x), CT_F64), true);
            ct_tensor *w = ct_requires_grad(layer ? t_rand(D, 2, CT_F32, 0.5, 2) : t_rand(&C, 1, CT_F32, 0.5, 2), true);
            ct_tensor *w64 = ct_requires_grad(ct_cast(ct_detach(w), CT_F64), true);
            ct_tensor *rm = ct_zeros(&C, 1, CT_F32, CT_CPU), *rv = ct_ones(&C, 1, CT_F32, CT_CPU);
            ct_tensor *rm64 = ct_zeros(&C, 1, CT_F64, CT_CPU), *rv64 = ct_ones(&C, 1, CT_F64, CT_CPU);
            ct_tensor *y =
                layer ? ct_layer_norm(x, 2, w, NULL, 1e-5) : ct_batch_norm(x, rm, rv, w, NULL, true, 0.1, 1e-5);
            ct_tensor *y64 = layer ? ct_layer_norm(x64, 2, w64, NULL, 1e-5)
                                   : ct_batch_norm(x64, rm64, rv64, w64, NULL, true, 0.1, 1e-5);
            cr_assert_not_null(y, "%s", ct_last_error_message());
            cr_assert_eq(ct_tensor_dtype(y), dt);
            double *ref = t_values(y64);
            t_assert_close(y, ref, 2e-2, 1e-2);
            free(ref);
            if (!layer) {
                ref = t_values(rv64);
                t_assert_close(rv, ref, 1e-5, 1e-5);
                free(ref);
            }
            ct_tensor *g = t_rand(shape, 4, CT_F64, -1, 1);
            cr_assert_eq(ct_backward_ex(y, ct_cast(g, dt), false), CT_OK, "%s", ct_last_error_message());
            cr_assert_eq(ct_backward_ex(y64, ct_cast(ct_cast(g, dt), CT_F64), false), CT_OK);
            cr_assert_eq(ct_tensor_dtype(ct_grad(x)), dt);
            cr_assert_eq(ct_tensor_dtype(ct_grad(w)), CT_F32);
            ref = t_values(ct_grad(x64));
            t_assert_close(ct_grad(x), ref, 3e-2, 2e-2);
            free(ref);
            ref = t_values(ct_grad(w64));
            t_assert_close(ct_grad(w), ref, 3e-2, 2e-2);
            free(ref);
        });
    }
}

/* ---- errors ----------------------------------------------------------------------------------- */

Test(norm, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        int64_t C = 3;
        ct_tensor *x = ct_zeros((int64_t[]){4, 3, 2}, 3, CT_F32, CT_CPU);
        ct_tensor *w = ct_ones(&C, 1, CT_F32, CT_CPU), *rm = ct_zeros(&C, 1, CT_F32, CT_CPU);
        ct_tensor *rv = ct_ones(&C, 1, CT_F32, CT_CPU);
        cr_assert_null(ct_batch_norm(NULL, rm, rv, w, NULL, true, 0.1, 1e-5));
        t_assert_error(CT_ERR_NULL, "ct_batch_norm", "argument x is NULL", NULL);
        cr_assert_null(
            ct_batch_norm(ct_zeros((int64_t[]){4}, 1, CT_F32, CT_CPU), NULL, NULL, NULL, NULL, true, 0.1, 1e-5));
        t_assert_error(CT_ERR_SHAPE, "ct_batch_norm", "(N, C)", "[4]", NULL);
        cr_assert_null(
            ct_batch_norm(ct_zeros((int64_t[]){4, 3}, 2, CT_I32, CT_CPU), NULL, NULL, NULL, NULL, true, 0.1, 1e-5));
        t_assert_error(CT_ERR_DTYPE, "ct_batch_norm", "i32", NULL);
        cr_assert_null(ct_batch_norm(x, rm, rv, ct_ones((int64_t[]){4}, 1, CT_F32, CT_CPU), NULL, true, 0.1, 1e-5));
        t_assert_error(CT_ERR_SHAPE, "ct_batch_norm", "weight", "[3]", "[4]", NULL);
        cr_assert_null(ct_batch_norm(x, rm, rv, ct_ones(&C, 1, CT_F64, CT_CPU), NULL, true, 0.1, 1e-5));
        t_assert_error(CT_ERR_DTYPE, "ct_batch_norm", "weight is f64", NULL);
        cr_assert_null(ct_batch_norm(x, rm, NULL, w, NULL, true, 0.1, 1e-5));
        t_assert_error(CT_ERR_NULL, "ct_batch_norm", "running_var", NULL);
        cr_assert_null(ct_batch_norm(x, NULL, NULL, w, NULL, false, 0.1, 1e-5));
        t_assert_error(CT_ERR_VALUE, "ct_batch_norm", "evaluation mode needs running_mean", NULL);
        cr_assert_null(ct_batch_norm(x, rm, rv, w, NULL, true, 1.5, 1e-5));
        t_assert_error(CT_ERR_VALUE, "ct_batch_norm", "momentum", "1.5", NULL);
        cr_assert_null(ct_batch_norm(x, rm, rv, w, NULL, true, 0.1, -1));
        t_assert_error(CT_ERR_VALUE, "ct_batch_norm", "eps", NULL);
        cr_assert_null(ct_batch_norm(ct_zeros((int64_t[]){1, 3}, 2, CT_F32, CT_CPU), rm, rv, w, NULL, true, 0.1, 1e-5));
        t_assert_error(CT_ERR_SHAPE, "ct_batch_norm", "more than one value per channel", "[1, 3]", NULL);
        /* nothing was updated by the failed calls */
        double zeros[3] = {0}, ones[3] = {1, 1, 1};
        t_assert_close(rm, zeros, 0, 0);
        t_assert_close(rv, ones, 0, 0);
        /* f16 x takes f32 parameters, not f64 ones */
        cr_assert_not_null(ct_batch_norm(ct_cast(x, CT_F16), rm, rv, w, NULL, true, 0.1, 1e-5));
        cr_assert_null(ct_batch_norm(ct_cast(x, CT_F16), rm, rv, ct_cast(w, CT_BF16), NULL, true, 0.1, 1e-5));
        t_assert_error(CT_ERR_DTYPE, "ct_batch_norm", "weight is bf16", "x is f16", NULL);

        cr_assert_null(ct_layer_norm(x, 0, NULL, NULL, 1e-5));
        t_assert_error(CT_ERR_DIM, "ct_layer_norm", "normalized_ndim", NULL);
        cr_assert_null(ct_layer_norm(x, 4, NULL, NULL, 1e-5));
        t_assert_error(CT_ERR_DIM, "ct_layer_norm", "[1, 3]", NULL);
        cr_assert_null(ct_layer_norm(x, 2, ct_ones((int64_t[]){2, 3}, 2, CT_F32, CT_CPU), NULL, 1e-5));
        t_assert_error(CT_ERR_SHAPE, "ct_layer_norm", "weight must have shape [3, 2]", NULL);
        cr_assert_null(ct_layer_norm(x, 1, NULL, NULL, NAN));
        t_assert_error(CT_ERR_VALUE, "ct_layer_norm", "eps", NULL);
        cr_assert_null(ct_layer_norm(ct_relu(NULL), 1, NULL, NULL, 1e-5));
        t_assert_error(CT_ERR_NULL, "ct_relu", NULL);
    });
}

/* Empty batches in evaluation and zero-sized normalized rows. */
Test(norm, empty_tensors) {
    T_NO_LEAK({
        int64_t C = 2;
        ct_tensor *rm = ct_zeros(&C, 1, CT_F32, CT_CPU), *rv = ct_ones(&C, 1, CT_F32, CT_CPU);
        ct_tensor *y =
            ct_batch_norm(ct_zeros((int64_t[]){0, 2, 3}, 3, CT_F32, CT_CPU), rm, rv, NULL, NULL, false, 0.1, 1e-5);
        t_assert_shape(y, (int64_t[]){0, 2, 3}, 3);
        y = ct_layer_norm(ct_zeros((int64_t[]){0, 4}, 2, CT_F32, CT_CPU), 1, NULL, NULL, 1e-5);
        t_assert_shape(y, (int64_t[]){0, 4}, 2);
    });
}
