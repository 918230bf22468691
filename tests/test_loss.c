/* Losses: PyTorch 1.13 reference values (tests/data/gen_loss_refs.py), naive f64 formulas on
 * random inputs, gradients in f64, half precision, stability at extreme logits, errors. */
#include "tests/common.h"

#include <string.h>

/* ---- reference values printed by tests/data/gen_loss_refs.py ---------------------------- */

static const double CE_A_MEAN[] = {3.0756348176321233};
static const double CE_A_MEAN_GRAD[] = {-0.039085097198621091,
                                        0.019632562820583604,
                                        0.019452534378037498,
                                        0.57618089463245736,
                                        0.078337225581009709,
                                        -0.65451812021346711,
                                        0,
                                        0,
                                        0,
                                        0.016517772558539916,
                                        -0.13103835290829921,
                                        0.1145205803497593};
static const double CE_A_SUM[] = {12.917666234054918};
static const double CE_A_SUM_GRAD[] = {-0.16415740823420857,
                                       0.08245676384645112,
                                       0.081700644387757468,
                                       2.4199597574563216,
                                       0.32901634744024083,
                                       -2.7489761048965624,
                                       0,
                                       0,
                                       0,
                                       0.069374644745867659,
                                       -0.55036108221485669,
                                       0.48098643746898911};
static const double CE_A_NONE[] = {0.58596771235471656, 11.323623109110361, 0, 1.0080754125898406};
static const double CE_A_NONE_GRAD[] = {-0.16415740823420857,
                                        0.08245676384645112,
                                        0.081700644387757468,
                                        2.4199597574563216,
                                        0.32901634744024083,
                                        -2.7489761048965624,
                                        0,
                                        0,
                                        0,
                                        0.069374644745867659,
                                        -0.55036108221485669,
                                        0.48098643746898911};
static const double CE_B[] = {0.75485455522543887};
static const double CE_B_GRAD[] = {-0.037413908307926659,   0,
                                   0.089904376682178738,    0,
                                   -0.052490468374252086,   0,
                                   -0.00074192231577968973, -0.050566290281885327,
                                   -0.00016011366965053132, -0.0046782584012793902,
                                   0.0009020359854301738,   0.05524454868316471};
static const double NLL_A[] = {3.2351638438539601};
static const double NLL_A_GRAD[] = {-0.047619047619047616, 0, 0, 0, 0, -0.71428571428571419, 0, 0, 0, 0,
                                    -0.23809523809523808,  0};
static const double BCE_A[] = {1.6803775197949093};
static const double BCE_A_GRAD_X[] = {-0.024110182247641304, 0.02117351628780902,  0.075434567351765111,
                                      0.23678729905289231,   -0.32493934613956532, -0.068939207864341975};
static const double BCE_A_GRAD_Y[] = {-0.073880051665334887, -0.19752465303000977, -0.25102792096278848,
                                      -0.67546318055115118,  0.3802326692610305,   0.11596251810020697};
static const double SMOOTH_L1_A[] = {0.60381223995534394};
static const double HUBER_A[] = {0.37174391933501327};
static const double KL_A[] = {1.132804530612417};
static const double KL_A_GRAD_X[] = {-0.26636176201391387,
                                     -0.051150964453950794,
                                     -0.0059697364326194817,
                                     -0.0098508704328491552,
                                     -0.093761737926326708,
                                     -0.20694920426316882,
                                     -0,
                                     -0.0044031533134573451,
                                     -0.011922815615175223,
                                     -0.13037209837026456,
                                     -0.172683585098547,
                                     -0.018354834249346471};
static const double KL_A_GRAD_T[] = {1.2096262144086725,
                                     0.11365075467692559,
                                     -0.75256926091251464,
                                     -0.26941528357556443,
                                     -0.015035588086120308,
                                     0.90230846914280216,
                                     0 /* PyTorch 1.13: NaN; later versions and ctensor: 0 where the target is 0 */,
                                     -0.10947890832155871,
                                     0.78352488965229505,
                                     0.89541979929990156,
                                     0.45021396716569345,
                                     -0.4358969739464989};
static const double DISTILL_A[] = {2.845670598702871};
static const double DISTILL_A_GRAD[] = {-0.44809271101213333, 0.089646087513478079, 0.22851128655084224,
                                        0.12993533694781295,  0.17444871855083394,  -0.27806766635772728,
                                        0.022046030196158865, 0.081572917610734638, 0.013611356433178385,
                                        -0.1560210341542215,  -0.11034891161443168, 0.25275858933547468};

/* The generator's closed-form inputs. */
static ct_tensor *seq_tensor(const int64_t *shape, int ndim, double (*f)(int64_t)) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    double *v = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        v[i] = f(i);
    ct_tensor *t = ct_from_host(v, shape, ndim, CT_F64, CT_CPU);
    free(v);
    return t;
}
static double logit_at(int64_t i) {
    return sin(0.7 * (double)i + 0.3) * 3;
}
static double other_at(int64_t i) {
    return cos(1.3 * (double)i + 0.1);
}
static ct_tensor *logits_of(const int64_t *shape, int ndim) {
    return seq_tensor(shape, ndim, logit_at);
}
static ct_tensor *other_of(const int64_t *shape, int ndim) {
    return seq_tensor(shape, ndim, other_at);
}

static ct_tensor *i32(const int32_t *v, const int64_t *shape, int ndim) {
    return ct_from_host(v, shape, ndim, CT_I32, CT_CPU);
}
static ct_tensor *f64(const double *v, const int64_t *shape, int ndim) {
    return ct_from_host(v, shape, ndim, CT_F64, CT_CPU);
}

/* y = f(x) and the gradient of sum(y) (or of y for a scalar) with respect to x. */
static void check_value_and_grad(ct_tensor *y, ct_tensor *x, const double *value, const double *grad, double tol) {
    cr_assert_not_null(y, "%s", ct_last_error_message());
    t_assert_close(y, value, tol, tol);
    ct_tensor *s = ct_tensor_ndim(y) ? ct_sum(y, NULL, 0, false) : y;
    cr_assert_eq(ct_backward(s), CT_OK, "%s", ct_last_error_message());
    t_assert_close(ct_grad(x), grad, tol, tol);
}

Test(loss, pytorch_reference_values) {
    T_NO_LEAK({
        ct_tensor *w = f64((double[]){0.2, 1.0, 3.0}, (int64_t[]){3}, 1);
        ct_tensor *t = i32((int32_t[]){0, 2, -100, 1}, (int64_t[]){4}, 1);
        const ct_reduction reds[3] = {CT_REDUCTION_MEAN, CT_REDUCTION_SUM, CT_REDUCTION_NONE};
        const double *vals[3] = {CE_A_MEAN, CE_A_SUM, CE_A_NONE},
                     *grads[3] = {CE_A_MEAN_GRAD, CE_A_SUM_GRAD, CE_A_NONE_GRAD};
        for (int r = 0; r < 3; r++) {
            ct_tensor *x = ct_requires_grad(logits_of((int64_t[]){4, 3}, 2), true);
            ct_cross_entropy_opts o = CT_CROSS_ENTROPY_OPTS_DEFAULT;
            o.weight = w;
            o.label_smoothing = 0.1;
            o.reduction = reds[r];
            check_value_and_grad(ct_cross_entropy(x, t, &o), x, vals[r], grads[r], 1e-12);
        }
        ct_tensor *x = ct_requires_grad(logits_of((int64_t[]){2, 3, 2}, 3), true);
        ct_cross_entropy_opts o = {
            .weight = w, .ignore_index = 1, .reduction = CT_REDUCTION_MEAN, .label_smoothing = 0.2};
        check_value_and_grad(ct_cross_entropy(x, i32((int32_t[]){0, 1, 2, 0}, (int64_t[]){2, 2}, 2), &o), x, CE_B,
                             CE_B_GRAD, 1e-12);

        ct_tensor *lp = ct_requires_grad(ct_detach(ct_log_softmax(logits_of((int64_t[]){4, 3}, 2), 1)), true);
        ct_nll_loss_opts no = CT_NLL_LOSS_OPTS_DEFAULT;
        no.weight = w;
        check_value_and_grad(ct_nll_loss(lp, t, &no), lp, NLL_A, NLL_A_GRAD, 1e-12);

        ct_tensor *bx = ct_requires_grad(logits_of((int64_t[]){2, 3}, 2), true);
        ct_tensor *by = ct_requires_grad(ct_mul_scalar(ct_add_scalar(other_of((int64_t[]){2, 3}, 2), 1), 0.5), true);
        ct_tensor *bce = ct_bce_with_logits(bx, by, f64((double[]){0.5, 2.0}, (int64_t[]){2, 1}, 2),
                                            f64((double[]){1.0, 3.0, 0.25}, (int64_t[]){3}, 1), CT_REDUCTION_MEAN);
        check_value_and_grad(bce, bx, BCE_A, BCE_A_GRAD_X, 1e-12);
        t_assert_close(ct_grad(by), BCE_A_GRAD_Y, 1e-12, 1e-12);

        ct_tensor *rx = ct_mul_scalar(logits_of((int64_t[]){2, 5}, 2), 1.0 / 3), *ry = other_of((int64_t[]){2, 5}, 2);
        t_assert_close(ct_smooth_l1_loss(rx, ry, CT_REDUCTION_MEAN, 0.5), SMOOTH_L1_A, 1e-12, 1e-12);
        t_assert_close(ct_huber_loss(rx, ry, CT_REDUCTION_MEAN, 0.7), HUBER_A, 1e-12, 1e-12);

        ct_tensor *kx = ct_requires_grad(ct_detach(ct_log_softmax(logits_of((int64_t[]){3, 4}, 2), 1)), true);
        ct_tensor *kp = ct_detach(ct_softmax(ct_mul_scalar(other_of((int64_t[]){3, 4}, 2), 2), 1));
        cr_assert_eq(ct_fill_(ct_select(ct_select(kp, 0, 1), 0, 2), 0.0), CT_OK);
        ct_requires_grad(kp, true);
        check_value_and_grad(ct_kl_div(kx, kp, CT_REDUCTION_BATCHMEAN, false), kx, KL_A, KL_A_GRAD_X, 1e-12);
        t_assert_close(ct_grad(kp), KL_A_GRAD_T, 1e-12, 1e-12);

        ct_tensor *s = ct_requires_grad(logits_of((int64_t[]){3, 4}, 2), true);
        ct_tensor *te = ct_mul_scalar(other_of((int64_t[]){3, 4}, 2), 4);
        check_value_and_grad(ct_distillation_loss(s, te, 2.0), s, DISTILL_A, DISTILL_A_GRAD, 1e-12);
    });
}

/* ---- cross-entropy and NLL against the definition --------------------------------------- */

/* PyTorch's definition, written out: per sample lp = log_softmax, loss = (1 - e) w[t] (-lp[t])
 * + e / C sum_c w[c] (-lp[c]); MEAN divides by the sum of w[t] over non-ignored samples. */
static double *ce_ref(const double *x, const int32_t *t, int64_t N, int64_t C, int64_t K, const double *w, int ignore,
                      double e, ct_reduction r) {
    double *per = calloc((size_t)(N * K + 1), sizeof(double)), total = 0, wsum = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            int32_t tt = t[n * K + k];
            if (tt == ignore)
                continue;
            double m = -INFINITY, s = 0;
            for (int64_t c = 0; c < C; c++)
                m = fmax(m, x[(n * C + c) * K + k]);
            for (int64_t c = 0; c < C; c++)
                s += exp(x[(n * C + c) * K + k] - m);
            double lse = m + log(s), smooth = 0;
            for (int64_t c = 0; c < C; c++)
                smooth += (w ? w[c] : 1) * (lse - x[(n * C + c) * K + k]);
            double wt = w ? w[tt] : 1;
            per[n * K + k] = (1 - e) * wt * (lse - x[(n * C + tt) * K + k]) + e / (double)C * smooth;
            total += per[n * K + k];
            wsum += wt;
        }
    if (r != CT_REDUCTION_NONE)
        per[0] = r == CT_REDUCTION_SUM ? total : total / wsum;
    return per;
}

Test(loss, cross_entropy_against_definition) {
    ct_manual_seed(11);
    static const struct {
        int64_t shape[4];
        int ndim;
    } cases[] = {{{5, 4}, 2}, {{3, 7, 6}, 3}, {{2, 3, 4, 5}, 4}, {{1, 1}, 2}, {{300, 10}, 2}, {{64, 1000}, 2}};
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int v = 0; v < 12; v++) {
            ct_dtype dt = v % 2 ? CT_F64 : CT_F32;
            bool weighted = (v / 2) % 2, smooth = v >= 4, with_ignore = v >= 8;
            ct_reduction r = (ct_reduction)(v % 3);
            T_NO_LEAK({
                int64_t N = cases[i].shape[0], C = cases[i].shape[1], K = 1, tshape[3];
                int tnd = cases[i].ndim - 1;
                tshape[0] = N;
                for (int d = 2; d < cases[i].ndim; d++) {
                    K *= cases[i].shape[d];
                    tshape[d - 1] = cases[i].shape[d];
                }
                ct_tensor *x = t_rand(cases[i].shape, cases[i].ndim, dt, -4, 4);
                int32_t *tv = malloc(sizeof(int32_t) * (size_t)(N * K));
                for (int64_t s = 0; s < N * K; s++)
                    tv[s] = with_ignore && s % 3 == 1 ? -1 : (int32_t)((s * 7 + 3) % C);
                ct_tensor *t = i32(tv, tshape, tnd);
                ct_tensor *w = weighted ? t_rand(&C, 1, dt, 0.1, 2) : NULL;
                ct_cross_entropy_opts o = {w, -1, r, smooth ? 0.15 : 0.0};
                ct_tensor *y = ct_cross_entropy(x, t, &o);
                cr_assert_not_null(y, "%s", ct_last_error_message());
                cr_assert_eq(ct_tensor_dtype(y), dt);
                if (r == CT_REDUCTION_NONE)
                    t_assert_shape(y, tshape, tnd);
                else
                    cr_assert_eq(ct_tensor_ndim(y), 0);
                double *xv = t_values(x), *wv = w ? t_values(w) : NULL;
                double *ref = ce_ref(xv, tv, N, C, K, wv, -1, o.label_smoothing, r);
                double tol = dt == CT_F64 ? 1e-11 : 2e-5;
                t_assert_close(y, ref, tol, tol);
                free(ref);
                free(xv);
                free(wv);
                free(tv);
            });
        }
}

/* Every target ignored: MEAN is 0 / 0 (NaN, as in PyTorch), SUM 0, and the gradient 0. */
Test(loss, all_targets_ignored) {
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(logits_of((int64_t[]){2, 3}, 2), true);
        ct_tensor *t = i32((int32_t[]){-100, -100}, (int64_t[]){2}, 1);
        cr_assert(isnan(ct_item(ct_cross_entropy(x, t, NULL))));
        ct_cross_entropy_opts o = CT_CROSS_ENTROPY_OPTS_DEFAULT;
        o.reduction = CT_REDUCTION_SUM;
        ct_tensor *y = ct_cross_entropy(x, t, &o);
        cr_assert_eq(ct_item(y), 0.0);
        cr_assert_eq(ct_backward(y), CT_OK);
        double zeros[6] = {0};
        t_assert_close(ct_grad(x), zeros, 0, 0);
    });
}

/* Logits of 1e4 and a row with -inf: log-sum-exp keeps everything finite where it should be. */
Test(loss, stable_at_extreme_logits) {
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(f64((double[]){1e4, 0, -1e4, 3e4, 3e4, 3e4}, (int64_t[]){2, 3}, 2), true);
        ct_tensor *t = i32((int32_t[]){1, 2}, (int64_t[]){2}, 1);
        ct_cross_entropy_opts o = CT_CROSS_ENTROPY_OPTS_DEFAULT;
        o.reduction = CT_REDUCTION_NONE;
        ct_tensor *y = ct_cross_entropy(x, t, &o);
        t_assert_close(y, (double[]){1e4, log(3.0)}, 1e-9, 1e-12);
        cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_OK);
        double third = 1.0 / 3;
        t_assert_close(ct_grad(x), (double[]){1, -1, 0, third, third, third - 1}, 1e-12, 1e-12);
        for (int v = 0; v < 3; v++) {
            ct_dtype dt = v == 0 ? CT_F32 : v == 1 ? CT_F16 : CT_BF16;
            ct_tensor *z = ct_cast(f64((double[]){1000, -1000, 30, -30}, (int64_t[]){4}, 1), dt);
            ct_tensor *b = ct_bce_with_logits(z, ct_cast(f64((double[]){0, 1, 1, 0}, (int64_t[]){4}, 1), dt), NULL,
                                              NULL, CT_REDUCTION_NONE);
            t_assert_close(b, (double[]){1000, 1000, 9.357622968840175e-14, 9.357622968840175e-14}, 1e-2, 1e-2);
        }
    });
}

Test(loss, nll_against_definition) {
    ct_manual_seed(12);
    for (int v = 0; v < 6; v++)
        T_NO_LEAK({
            ct_reduction r = (ct_reduction)(v % 3);
            ct_tensor *x = t_rand((int64_t[]){4, 5, 3}, 3, CT_F64, -3, 0);
            int32_t tv[12];
            for (int s = 0; s < 12; s++)
                tv[s] = s % 4 == 2 ? 7 : (s * 3) % 5;
            ct_tensor *w = v >= 3 ? t_rand((int64_t[]){5}, 1, CT_F64, 0.1, 2) : NULL;
            ct_nll_loss_opts o = {w, 7, r};
            ct_tensor *y = ct_nll_loss(x, i32(tv, (int64_t[]){4, 3}, 2), &o);
            double *xv = t_values(x), *wv = w ? t_values(w) : NULL, per[12] = {0}, total = 0, wsum = 0;
            for (int n = 0; n < 4; n++)
                for (int k = 0; k < 3; k++) {
                    int32_t tt = tv[n * 3 + k];
                    if (tt == 7)
                        continue;
                    double wt = wv ? wv[tt] : 1;
                    per[n * 3 + k] = -wt * xv[(n * 5 + tt) * 3 + k];
                    total += per[n * 3 + k];
                    wsum += wt;
                }
            if (r != CT_REDUCTION_NONE)
                per[0] = r == CT_REDUCTION_SUM ? total : total / wsum;
            t_assert_close(y, per, 1e-12, 1e-12);
            free(xv);
            free(wv);
        });
}

/* ---- pointwise losses against their formulas --------------------------------------------- */

typedef double (*point_fn)(double x, double y, double p);
static double f_mse(double x, double y, double p) {
    return (x - y) * (x - y);
}
static double f_l1(double x, double y, double p) {
    return fabs(x - y);
}
static double f_smooth(double x, double y, double p) {
    double d = fabs(x - y);
    return d < p ? 0.5 * d * d / p : d - 0.5 * p;
}
static double f_huber(double x, double y, double p) {
    double d = fabs(x - y);
    return d < p ? 0.5 * d * d : p * (d - 0.5 * p);
}
static double f_kl(double x, double y, double p) {
    return y == 0 ? 0 : y * (log(y) - x);
}
static double f_kl_log(double x, double y, double p) {
    return exp(y) * (y - x);
}

static ct_tensor *run_point(int kind, ct_tensor *x, ct_tensor *y, ct_reduction r, double p) {
    switch (kind) {
    case 0: return ct_mse_loss(x, y, r);
    case 1: return ct_l1_loss(x, y, r);
    case 2: return ct_smooth_l1_loss(x, y, r, p);
    case 3: return ct_huber_loss(x, y, r, p);
    case 4: return ct_kl_div(x, y, r, false);
    default: return ct_kl_div(x, y, r, true);
    }
}

Test(loss, pointwise_against_formulas) {
    ct_manual_seed(13);
    point_fn fns[6] = {f_mse, f_l1, f_smooth, f_huber, f_kl, f_kl_log};
    for (int kind = 0; kind < 6; kind++)
        for (int r = 0; r < 4; r++)
            for (int dv = 0; dv < 2; dv++) {
                if (r == CT_REDUCTION_BATCHMEAN && kind < 4)
                    continue;
                ct_dtype dt = dv ? CT_F64 : CT_F32;
                T_NO_LEAK({
                    int64_t shape[3] = {5, 40, 30};
                    ct_tensor *x = t_rand(shape, 3, dt, -2, 2);
                    ct_tensor *y = t_rand(shape, 3, dt, kind == 4 ? 0 : -2, 2);
                    ct_tensor *yt = kind == 4 ? ct_transpose(ct_contiguous(ct_transpose(y, 0, 2)), 0, 2) : y;
                    double p = kind == 2 ? 0.5 : 0.8;
                    ct_tensor *out = run_point(kind, x, yt, (ct_reduction)r, p);
                    cr_assert_not_null(out, "%s", ct_last_error_message());
                    double *xv = t_values(x), *yv = t_values(y);
                    double *ref = malloc(sizeof(double) * 6000), total = 0;
                    for (int i = 0; i < 6000; i++) {
                        ref[i] = fns[kind](xv[i], yv[i], p);
                        total += ref[i];
                    }
                    if (r == CT_REDUCTION_MEAN)
                        ref[0] = total / 6000;
                    else if (r == CT_REDUCTION_SUM)
                        ref[0] = total;
                    else if (r == CT_REDUCTION_BATCHMEAN)
                        ref[0] = total / 5;
                    double tol = dt == CT_F64 ? 1e-12 : 1e-5;
                    t_assert_close(out, ref, tol, tol);
                    free(xv);
                    free(yv);
                    free(ref);
                });
            }
}

/* ---- gradients ------------------------------------------------------------------------------ */

typedef struct loss_ctx {
    int which;
    ct_reduction r;
    ct_tensor *targets, *weight, *pos_weight;
    double p;
} loss_ctx;

static ct_tensor *f_loss(ct_tensor **in, void *ctx) {
    loss_ctx *c = ctx;
    switch (c->which) {
    case 0: {
        ct_cross_entropy_opts o = {c->weight, 1, c->r, c->p};
        return ct_cross_entropy(in[0], c->targets, &o);
    }
    case 1: {
        ct_nll_loss_opts o = {c->weight, 1, c->r};
        return ct_nll_loss(in[0], c->targets, &o);
    }
    case 2: return ct_bce_with_logits(in[0], in[1], c->weight, c->pos_weight, c->r);
    case 3: return ct_distillation_loss(in[0], in[1], c->p);
    default: return run_point(c->which - 4, in[0], in[1], c->r, c->p);
    }
}

Test(loss, classification_gradients) {
    ct_manual_seed(14);
    for (int v = 0; v < 12; v++)
        T_NO_LEAK({
            bool spatial = v % 2, weighted = (v / 2) % 2;
            int64_t xs[3] = {4, 3, 2}, ts[2] = {4, 2};
            int32_t tv[8] = {0, 2, 1, 2, 0, 1, 1, 0};
            loss_ctx c = {v >= 8 ? 1 : 0,
                          (ct_reduction)(v % 3),
                          i32(tv, ts, spatial ? 2 : 1),
                          weighted ? t_rand((int64_t[]){3}, 1, CT_F64, 0.2, 2) : NULL,
                          NULL,
                          v >= 4 ? 0.3 : 0.0};
            ct_tensor *in[1] = {ct_requires_grad(t_rand(xs, spatial ? 3 : 2, CT_F64, -3, 3), true)};
            t_gradcheck(f_loss, in, 1, &c, 1e-6, 1e-7, 1e-6);
        });
}

Test(loss, pointwise_gradients) {
    ct_manual_seed(15);
    for (int which = 2; which < 10; which++)
        for (int r = 0; r < 4; r++) {
            if (r == CT_REDUCTION_BATCHMEAN && which < 8)
                continue;
            T_NO_LEAK({
                int64_t shape[2] = {3, 4};
                loss_ctx c = {which, (ct_reduction)r, NULL, NULL, NULL, which == 6 ? 0.5 : 0.8};
                if (which == 2) {
                    c.weight = t_rand((int64_t[]){3, 1}, 2, CT_F64, 0.5, 2);
                    c.pos_weight = t_rand((int64_t[]){4}, 1, CT_F64, 0.5, 3);
                }
                if (which == 3)
                    c.p = 1.7;
                double lo = which == 8 ? 0.05 : (which == 2 ? 0 : -2), hi = which == 2 || which == 8 ? 1 : 2;
                ct_tensor *in[2] = {ct_requires_grad(t_rand(shape, 2, CT_F64, -2, 2), true),
                                    ct_requires_grad(t_rand(shape, 2, CT_F64, lo, hi), true)};
                /* keep |x - y| away from the kinks of L1, smooth L1 and Huber */
                if (which >= 5 && which <= 7) {
                    double *xv = ct_tensor_data(in[0]), *yv = ct_tensor_data(in[1]);
                    for (int i = 0; i < 12; i++) {
                        double d = xv[i] - yv[i], kink = which == 5 ? 0 : c.p;
                        if (fabs(fabs(d) - kink) < 1e-3)
                            xv[i] += 0.01;
                    }
                }
                t_gradcheck(f_loss, in, 2, &c, 1e-6, 1e-7, 1e-6);
            });
        }
}

/* The distillation gradient reaches the teacher too, unless it is detached. */
Test(loss, distillation_gradients) {
    ct_manual_seed(16);
    T_NO_LEAK({
        loss_ctx c = {3, CT_REDUCTION_MEAN, NULL, NULL, NULL, 3.0};
        ct_tensor *in[2] = {ct_requires_grad(t_rand((int64_t[]){3, 5}, 2, CT_F64, -3, 3), true),
                            ct_requires_grad(t_rand((int64_t[]){3, 5}, 2, CT_F64, -3, 3), true)};
        t_gradcheck(f_loss, in, 2, &c, 1e-6, 1e-7, 1e-6);
        /* identical logits: zero loss at any temperature */
        cr_assert_float_eq(ct_item(ct_distillation_loss(in[0], in[0], 4.0)), 0.0, 1e-12);
    });
}

/* ---- half precision ---------------------------------------------------------------------- */

Test(loss, half_precision) {
    ct_manual_seed(17);
    for (int v = 0; v < 8; v++) {
        ct_dtype dt = v % 2 ? CT_BF16 : CT_F16;
        int which = v / 2; /* cross-entropy, BCE, MSE, KL */
        T_NO_LEAK({
            int64_t shape[2] = {6, 5};
            ct_tensor *x = ct_requires_grad(t_rand(shape, 2, dt, -3, 3), true);
            ct_tensor *x64 = ct_requires_grad(ct_cast(ct_detach(x), CT_F64), true);
            ct_tensor *y = t_rand(shape, 2, dt, 0, 1), *y64 = ct_cast(y, CT_F64);
            ct_tensor *t = i32((int32_t[]){0, 4, 2, 1, 3, 4}, (int64_t[]){6}, 1);
            ct_tensor *w = ct_cast(t_rand((int64_t[]){5}, 1, CT_F64, 0.5, 2), CT_F32);
            ct_tensor *out, *out64;
            if (which == 0) {
                ct_cross_entropy_opts o = {w, -100, CT_REDUCTION_MEAN, 0.1},
                                      o64 = {ct_cast(w, CT_F64), -100, CT_REDUCTION_MEAN, 0.1};
                out = ct_cross_entropy(x, t, &o);
                out64 = ct_cross_entropy(x64, t, &o64);
            } else if (which == 1) {
                out = ct_bce_with_logits(x, y, NULL, w, CT_REDUCTION_SUM);
                out64 = ct_bce_with_logits(x64, y64, NULL, ct_cast(w, CT_F64), CT_REDUCTION_SUM);
            } else if (which == 2) {
                out = ct_mse_loss(x, y, CT_REDUCTION_NONE);
                out64 = ct_mse_loss(x64, y64, CT_REDUCTION_NONE);
            } else {
                out = ct_kl_div(x, y, CT_REDUCTION_BATCHMEAN, false);
                out64 = ct_kl_div(x64, y64, CT_REDUCTION_BATCHMEAN, false);
            }
            cr_assert_not_null(out, "%s", ct_last_error_message());
            cr_assert_eq(ct_tensor_dtype(out), dt);
            double *ref = t_values(out64);
            t_assert_close(out, ref, 2e-2, 1e-2);
            free(ref);
            if (ct_tensor_ndim(out))
                out = ct_sum(out, NULL, 0, false), out64 = ct_sum(out64, NULL, 0, false);
            cr_assert_eq(ct_backward(out), CT_OK, "%s", ct_last_error_message());
            cr_assert_eq(ct_backward(out64), CT_OK);
            cr_assert_eq(ct_tensor_dtype(ct_grad(x)), dt);
            ref = t_values(ct_grad(x64));
            t_assert_close(ct_grad(x), ref, 2e-2, 2e-2);
            free(ref);
        });
    }
}

/* ---- errors ---------------------------------------------------------------------------------- */

Test(loss, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *x = ct_zeros((int64_t[]){4, 3}, 2, CT_F32, CT_CPU);
        ct_tensor *t = i32((int32_t[]){0, 1, 2, 1}, (int64_t[]){4}, 1);
        cr_assert_null(ct_cross_entropy(x, i32((int32_t[]){0, 1, 3, 1}, (int64_t[]){4}, 1), NULL));
        t_assert_error(CT_ERR_DIM, "ct_cross_entropy", "target 3", "3 classes", "ignore_index -100", NULL);
        cr_assert_null(ct_cross_entropy(x, i32((int32_t[]){0, -1, 2, 1}, (int64_t[]){4}, 1), NULL));
        t_assert_error(CT_ERR_DIM, "ct_cross_entropy", "target -1", NULL);
        cr_assert_null(ct_cross_entropy(x, ct_zeros((int64_t[]){4}, 1, CT_F32, CT_CPU), NULL));
        t_assert_error(CT_ERR_DTYPE, "ct_cross_entropy", "targets must be i32", "f32", NULL);
        cr_assert_null(ct_cross_entropy(x, i32((int32_t[]){0, 1, 2}, (int64_t[]){3}, 1), NULL));
        t_assert_error(CT_ERR_SHAPE, "ct_cross_entropy", "targets must have shape [4]", "[3]", NULL);
        cr_assert_null(ct_cross_entropy(NULL, t, NULL));
        t_assert_error(CT_ERR_NULL, "ct_cross_entropy", "logits", NULL);
        cr_assert_null(ct_cross_entropy(x, NULL, NULL));
        t_assert_error(CT_ERR_NULL, "ct_cross_entropy", "targets", NULL);
        ct_cross_entropy_opts o = CT_CROSS_ENTROPY_OPTS_DEFAULT;
        o.weight = ct_ones((int64_t[]){4}, 1, CT_F32, CT_CPU);
        cr_assert_null(ct_cross_entropy(x, t, &o));
        t_assert_error(CT_ERR_SHAPE, "ct_cross_entropy", "weight must have shape [3]", NULL);
        o.weight = ct_ones((int64_t[]){3}, 1, CT_F64, CT_CPU);
        cr_assert_null(ct_cross_entropy(x, t, &o));
        t_assert_error(CT_ERR_DTYPE, "ct_cross_entropy", "weight is f64", NULL);
        o.weight = NULL;
        o.label_smoothing = 1.5;
        cr_assert_null(ct_cross_entropy(x, t, &o));
        t_assert_error(CT_ERR_VALUE, "ct_cross_entropy", "label_smoothing", NULL);
        o.label_smoothing = 0;
        o.reduction = CT_REDUCTION_BATCHMEAN;
        cr_assert_null(ct_cross_entropy(x, t, &o));
        t_assert_error(CT_ERR_VALUE, "ct_cross_entropy", "reduction", NULL);
        cr_assert_null(ct_nll_loss(ct_zeros((int64_t[]){4, 3}, 2, CT_I32, CT_CPU), t, NULL));
        t_assert_error(CT_ERR_DTYPE, "ct_nll_loss", "input must be a floating", NULL);
        cr_assert_null(ct_nll_loss(ct_scalar(1, CT_F32, CT_CPU), t, NULL));
        t_assert_error(CT_ERR_SHAPE, "ct_nll_loss", "0-dim", NULL);

        ct_tensor *y = ct_zeros((int64_t[]){4, 2}, 2, CT_F32, CT_CPU);
        cr_assert_null(ct_mse_loss(x, y, CT_REDUCTION_MEAN));
        t_assert_error(CT_ERR_SHAPE, "ct_mse_loss", "[4, 3]", "[4, 2]", NULL);
        cr_assert_null(ct_l1_loss(x, ct_zeros((int64_t[]){4, 3}, 2, CT_F64, CT_CPU), CT_REDUCTION_MEAN));
        t_assert_error(CT_ERR_DTYPE, "ct_l1_loss", NULL);
        cr_assert_null(ct_mse_loss(x, x, CT_REDUCTION_BATCHMEAN));
        t_assert_error(CT_ERR_VALUE, "ct_mse_loss", "BATCHMEAN is for ct_kl_div", NULL);
        cr_assert_null(ct_mse_loss(x, x, (ct_reduction)9));
        t_assert_error(CT_ERR_VALUE, "ct_mse_loss", "reduction 9", NULL);
        cr_assert_null(ct_huber_loss(x, x, CT_REDUCTION_MEAN, 0));
        t_assert_error(CT_ERR_VALUE, "ct_huber_loss", "delta", NULL);
        cr_assert_null(ct_smooth_l1_loss(x, x, CT_REDUCTION_MEAN, -1));
        t_assert_error(CT_ERR_VALUE, "ct_smooth_l1_loss", "beta", NULL);
        cr_assert_null(ct_bce_with_logits(x, x, NULL, ct_ones((int64_t[]){2}, 1, CT_F32, CT_CPU), CT_REDUCTION_MEAN));
        t_assert_error(CT_ERR_SHAPE, "ct_bce_with_logits", NULL);
        cr_assert_null(
            ct_bce_with_logits(x, x, ct_ones((int64_t[]){5, 4, 3}, 3, CT_F32, CT_CPU), NULL, CT_REDUCTION_MEAN));
        t_assert_error(CT_ERR_SHAPE, "ct_bce_with_logits", "weight", "does not broadcast", NULL);
        cr_assert_null(ct_distillation_loss(x, y, 2.0));
        t_assert_error(CT_ERR_SHAPE, "ct_distillation_loss", "[4, 3]", "[4, 2]", NULL);
        cr_assert_null(ct_distillation_loss(x, x, 0));
        t_assert_error(CT_ERR_VALUE, "ct_distillation_loss", "temperature", NULL);
        cr_assert_null(ct_kl_div(ct_log_softmax(NULL, 0), x, CT_REDUCTION_SUM, false));
        t_assert_error(CT_ERR_NULL, "ct_log_softmax", NULL);
    });
}
