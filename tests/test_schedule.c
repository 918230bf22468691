/* Learning-rate schedules against closed forms and PyTorch 1.13's schedulers. */
#include "tests/common.h"

#include <string.h>

/* From tests/data/gen_optim_refs.py (PyTorch 1.13): rates (and momentum) at epochs 0, 1, ... */
static const double ref_one_cycle_lr[20] = {
    0.040000000000000036, 0.1805887450304573,   0.52000000000000002,  0.85941125496954274,  1,
    0.9890738440717014,   0.95677290173038509,  0.90450887915348499,  0.83456596491821644,  0.75000100000000003,
    0.65450987915348502,  0.55226602257690027,  0.4477379774230999,   0.3454941208465151,   0.25000300000000009,
    0.16543803508178376,  0.095495120846515083, 0.043231098269614791, 0.010930155928298624, 3.9999999999999998e-06};
static const double ref_one_cycle_momentum[20] = {
    0.94999999999999996, 0.93535533905932733, 0.89999999999999991, 0.8646446609406726,  0.84999999999999998,
    0.85109261996330965, 0.85432272711786994, 0.85954915028125256, 0.86654346968205709, 0.875,
    0.88454915028125258, 0.89477357683661729, 0.90522642316338264, 0.91545084971874735, 0.92499999999999993,
    0.93345653031794285, 0.94045084971874737, 0.94567727288212999, 0.94890738003669028, 0.94999999999999996};
static const double ref_one_cycle_three_linear[20] = {0.040000000000000001,
                                                      0.27999999999999997,
                                                      0.52000000000000002,
                                                      0.76000000000000001,
                                                      1,
                                                      0.76000000000000001,
                                                      0.52000000000000002,
                                                      0.28000000000000003,
                                                      0.040000000000000036,
                                                      0.036364,
                                                      0.032728,
                                                      0.029092,
                                                      0.025455999999999999,
                                                      0.021819999999999999,
                                                      0.018183999999999999,
                                                      0.014547999999999998,
                                                      0.010911999999999998,
                                                      0.0072759999999999977,
                                                      0.0036399999999999974,
                                                      3.9999999999970615e-06};
static const double ref_plateau_metrics[20] = {1,   0.9, 0.95, 0.95, 0.95, 0.89, 0.9, 0.9, 0.9, 0.9,
                                               0.9, 0.9, 0.5,  0.5,  0.5,  0.5,  0.5, 0.5, 0.5, 0.5};
static const double ref_plateau_lr[21] = {0.1,   0.1,   0.1,   0.1,   0.1,   0.05, 0.05, 0.05, 0.05, 0.025, 0.025,
                                          0.025, 0.025, 0.025, 0.025, 0.025, 0.02, 0.02, 0.02, 0.02, 0.02};

/* An SGD optimizer with lr 0.1 and momentum 0.9 over one parameter (freed with it). */
static ct_tensor *param;
static ct_optim *sgd(void) {
    param = ct_requires_grad(ct_zeros((int64_t[]){2}, 1, CT_F32, CT_CPU), true);
    ct_sgd_opts o = {.lr = 0.1, .momentum = 0.9};
    ct_optim *opt = ct_optim_sgd_from_tensors(&param, NULL, 1, &o);
    cr_assert_not_null(opt);
    return opt;
}
static void done(ct_lr_schedule *s, ct_optim *opt) {
    ct_schedule_free(s);
    ct_optim_free(opt);
    ct_tensor_free(param);
}

static void assert_rate(ct_lr_schedule *s, ct_optim *opt, double expect, int64_t e, const char *what) {
    cr_assert(fabs(ct_optim_lr(opt) - expect) <= 1e-15 * (1.0 + fabs(expect)),
              "%s epoch %lld: lr %.17g, expected %.17g", what, (long long)e, ct_optim_lr(opt), expect);
    cr_assert_eq(ct_schedule_lr(s), ct_optim_lr(opt));
    cr_assert_eq(ct_schedule_epoch(s), e);
}

Test(schedule, step_multistep_exponential) {
    ct_optim *opt = sgd();
    ct_lr_schedule *s = ct_schedule_step_lr(opt, 3, 0.5);
    for (int e = 0; e < 30; e++, ct_schedule_step(s))
        assert_rate(s, opt, 0.1 * pow(0.5, e / 3), e, "step");
    ct_schedule_free(s);

    /* Unsorted, with a repeat: gamma applies twice at 8. */
    cr_assert_eq(ct_optim_set_lr(opt, 0.1), CT_OK);
    s = ct_schedule_multistep(opt, (int64_t[]){5, 2, 8, 8}, 4, 0.1);
    for (int e = 0; e < 12; e++, ct_schedule_step(s)) {
        double expect = 0.1 * (e >= 2 ? 0.1 : 1) * (e >= 5 ? 0.1 : 1) * (e >= 8 ? 0.01 : 1);
        cr_assert(fabs(ct_optim_lr(opt) - expect) < 1e-17, "multistep epoch %d: %g vs %g", e, ct_optim_lr(opt), expect);
    }
    ct_schedule_free(s);

    cr_assert_eq(ct_optim_set_lr(opt, 0.1), CT_OK);
    s = ct_schedule_exponential(opt, 0.9);
    for (int e = 0; e < 50; e++, ct_schedule_step(s))
        assert_rate(s, opt, 0.1 * pow(0.9, e), e, "exponential");
    done(s, opt);
}

Test(schedule, cosine_with_warmup) {
    ct_optim *opt = sgd();
    const int warmup = 5, total = 50;
    const double base = 0.1, min_lr = 0.001;
    ct_lr_schedule *s = ct_schedule_cosine(opt, warmup, total, min_lr);
    cr_assert_not_null(s, "%s", ct_last_error_message());
    for (int e = 0; e < 70; e++) {
        /* (1 + cos x) / 2 = cos^2(x / 2): an independent form of the same curve. */
        double expect =
            e < warmup   ? base * e / warmup
            : e >= total ? min_lr
                         : min_lr + (base - min_lr) * pow(cos(M_PI / 2 * (e - warmup) / (double)(total - warmup)), 2);
        cr_assert(fabs(ct_optim_lr(opt) - expect) < 1e-15, "epoch %d: %.17g vs %.17g", e, ct_optim_lr(opt), expect);
        cr_assert_eq(ct_schedule_step(s), CT_OK);
    }
    ct_schedule_free(s);
    /* Without warmup it starts at the base rate. */
    cr_assert_eq(ct_optim_set_lr(opt, 0.1), CT_OK);
    s = ct_schedule_cosine(opt, 0, 10, 0.0);
    cr_assert_eq(ct_optim_lr(opt), 0.1);
    done(s, opt);
}

Test(schedule, one_cycle_matches_pytorch) {
    ct_optim *opt = sgd();
    ct_one_cycle_opts o = CT_ONE_CYCLE_OPTS_DEFAULT;
    o.max_lr = 1.0;
    o.total_steps = 20;
    o.pct_start = 0.25;
    ct_lr_schedule *s = ct_schedule_one_cycle(opt, &o);
    cr_assert_not_null(s, "%s", ct_last_error_message());
    for (int e = 0; e < 20; e++) {
        cr_assert(fabs(ct_optim_lr(opt) - ref_one_cycle_lr[e]) < 1e-15, "epoch %d: %.17g vs PyTorch %.17g", e,
                  ct_optim_lr(opt), ref_one_cycle_lr[e]);
        cr_assert(fabs(ct_optim_hparam(opt, "momentum") - ref_one_cycle_momentum[e]) < 1e-15, "momentum epoch %d", e);
        cr_assert_eq(ct_schedule_step(s), CT_OK);
    }
    /* PyTorch allows stepping to total_steps, not past it. */
    cr_assert_eq(ct_schedule_step(s), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "tried to step 22 times", "total_steps 20", NULL);
    cr_assert_eq(ct_schedule_epoch(s), 20);
    ct_schedule_free(s);

    o.three_phase = true;
    o.anneal_linear = true;
    o.cycle_momentum = false;
    cr_assert_eq(ct_optim_set_hparam(opt, "momentum", 0.5), CT_OK);
    s = ct_schedule_one_cycle(opt, &o);
    for (int e = 0; e < 20; e++, ct_schedule_step(s))
        cr_assert(fabs(ct_optim_lr(opt) - ref_one_cycle_three_linear[e]) < 1e-15,
                  "three-phase epoch %d: %.17g vs %.17g", e, ct_optim_lr(opt), ref_one_cycle_three_linear[e]);
    cr_assert_eq(ct_optim_hparam(opt, "momentum"), 0.5, "not cycled");
    done(s, opt);

    /* Adam cycles beta1; Adagrad has no momentum to cycle. */
    param = ct_requires_grad(ct_zeros((int64_t[]){2}, 1, CT_F32, CT_CPU), true);
    opt = ct_optim_adam_from_tensors(&param, NULL, 1, NULL);
    o = (ct_one_cycle_opts)CT_ONE_CYCLE_OPTS_DEFAULT;
    o.max_lr = 1.0;
    o.total_steps = 20;
    o.pct_start = 0.25;
    s = ct_schedule_one_cycle(opt, &o);
    cr_assert_eq(ct_optim_hparam(opt, "beta1"), 0.95);
    ct_schedule_step(s);
    cr_assert(fabs(ct_optim_hparam(opt, "beta1") - ref_one_cycle_momentum[1]) < 1e-15);
    done(s, opt);
    param = ct_requires_grad(ct_zeros((int64_t[]){2}, 1, CT_F32, CT_CPU), true);
    opt = ct_optim_adagrad_from_tensors(&param, NULL, 1, NULL);
    cr_assert_null(ct_schedule_one_cycle(opt, &o));
    t_assert_error(CT_ERR_VALUE, "cycle_momentum needs an optimizer with momentum (Adagrad has none)", NULL);
    ct_optim_free(opt);
    ct_tensor_free(param);
}

Test(schedule, plateau_matches_pytorch) {
    ct_optim *opt = sgd();
    ct_plateau_opts o = CT_PLATEAU_OPTS_DEFAULT;
    o.factor = 0.5;
    o.patience = 2;
    o.cooldown = 1;
    o.threshold = 0.05;
    o.min_lr = 0.02;
    ct_lr_schedule *s = ct_schedule_plateau(opt, &o);
    cr_assert_not_null(s);
    for (int e = 0; e < 21; e++) {
        cr_assert(fabs(ct_optim_lr(opt) - ref_plateau_lr[e]) < 1e-17, "epoch %d: %.17g vs PyTorch %.17g", e,
                  ct_optim_lr(opt), ref_plateau_lr[e]);
        if (e < 20)
            cr_assert_eq(ct_schedule_step_metric(s, ref_plateau_metrics[e]), CT_OK);
    }
    cr_assert_eq(ct_schedule_step(s), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "needs the metric", NULL);
    ct_schedule_free(s);

    /* Max mode, absolute threshold, no cooldown: 0.1 -> 0.01 after patience + 1 flat epochs. */
    cr_assert_eq(ct_optim_set_lr(opt, 0.1), CT_OK);
    o = (ct_plateau_opts){.mode = CT_MODE_MAX, .factor = 0.1, .patience = 1, .threshold = 0.1, .threshold_abs = true};
    s = ct_schedule_plateau(opt, &o);
    const double acc[] = {0.5, 0.65, 0.7, 0.74, 0.9, 0.95, 0.99};
    const double lr[] = {0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001};
    for (int e = 0; e < 7; e++) {
        cr_assert_eq(ct_schedule_step_metric(s, acc[e]), CT_OK);
        cr_assert(fabs(ct_optim_lr(opt) - lr[e]) < 1e-17, "max mode epoch %d: %g vs %g", e, ct_optim_lr(opt), lr[e]);
    }
    done(s, opt);
}

Test(schedule, state_round_trip) {
    int64_t live = ct_live_tensors();
    /* Cosine: a schedule restored at epoch 7 continues with the same rates. */
    ct_optim *a = sgd();
    ct_tensor *pa = param;
    ct_lr_schedule *sa = ct_schedule_cosine(a, 3, 20, 0.01);
    for (int e = 0; e < 7; e++)
        ct_schedule_step(sa);
    const char *names[CT_SCHEDULE_MAX_STATE];
    double values[CT_SCHEDULE_MAX_STATE];
    int n = ct_schedule_state(sa, names, values, CT_SCHEDULE_MAX_STATE);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(names[0], "last_epoch");
    cr_assert_eq(values[0], 7.0);
    ct_optim *b = sgd();
    ct_lr_schedule *sb = ct_schedule_cosine(b, 3, 20, 0.01);
    cr_assert_eq(ct_schedule_load_state(sb, names, values, n), CT_OK, "%s", ct_last_error_message());
    for (int e = 7; e < 25; e++) {
        cr_assert_eq(ct_optim_lr(b), ct_optim_lr(a), "epoch %d", e);
        ct_schedule_step(sa);
        ct_schedule_step(sb);
    }
    ct_schedule_free(sa);
    ct_schedule_free(sb);

    /* Plateau: best, bad epochs and cooldown carry over, and the rate is restored. */
    cr_assert_eq(ct_optim_set_lr(a, 0.1), CT_OK);
    cr_assert_eq(ct_optim_set_lr(b, 0.1), CT_OK);
    ct_plateau_opts o = {.factor = 0.5, .patience = 2, .cooldown = 1, .threshold = 0.05, .min_lr = 0.02};
    sa = ct_schedule_plateau(a, &o);
    for (int e = 0; e < 8; e++)
        ct_schedule_step_metric(sa, ref_plateau_metrics[e]);
    n = ct_schedule_state(sa, names, values, CT_SCHEDULE_MAX_STATE);
    cr_assert_eq(n, 6);
    sb = ct_schedule_plateau(b, &o);
    cr_assert_eq(ct_schedule_load_state(sb, names, values, n), CT_OK);
    for (int e = 8; e < 20; e++) {
        cr_assert_eq(ct_optim_lr(b), ct_optim_lr(a), "epoch %d", e);
        ct_schedule_step_metric(sa, ref_plateau_metrics[e]);
        ct_schedule_step_metric(sb, ref_plateau_metrics[e]);
    }
    cr_assert_eq(ct_schedule_load_state(sb, (const char *[]){"best", "bogus"}, (double[]){1, 2}, 2), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "unknown schedule state \"bogus\"", NULL);
    cr_assert_eq(ct_schedule_load_state(sb, (const char *[]){"last_epoch"}, (double[]){-1}, 1), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "invalid last_epoch = -1", NULL);
    ct_schedule_free(sa);
    ct_schedule_free(sb);
    ct_optim_free(a);
    ct_optim_free(b);
    ct_tensor_free(pa);
    ct_tensor_free(param);
    cr_assert_eq(ct_live_tensors(), live);
}

Test(schedule, bad_arguments) {
    ct_optim *opt = sgd();
    cr_assert_null(ct_schedule_step_lr(opt, 0, 0.5));
    t_assert_error(CT_ERR_VALUE, "step_size must be > 0", NULL);
    cr_assert_null(ct_schedule_exponential(opt, -0.5));
    t_assert_error(CT_ERR_VALUE, "gamma must be a finite number >= 0, got -0.5", NULL);
    cr_assert_null(ct_schedule_multistep(opt, (int64_t[]){-1}, 1, 0.5));
    t_assert_error(CT_ERR_VALUE, "milestone 0 is -1", NULL);
    cr_assert_null(ct_schedule_cosine(opt, 10, 10, 0.0));
    t_assert_error(CT_ERR_VALUE, "0 <= warmup_steps < total_steps", NULL);
    cr_assert_null(ct_schedule_cosine(NULL, 1, 10, 0.0));
    t_assert_error(CT_ERR_NULL, "ct_schedule_cosine", NULL);
    ct_one_cycle_opts o = CT_ONE_CYCLE_OPTS_DEFAULT;
    cr_assert_null(ct_schedule_one_cycle(opt, &o));
    t_assert_error(CT_ERR_VALUE, "total_steps must be > 0", NULL);
    o.total_steps = 10;
    o.pct_start = 0.1;
    cr_assert_null(ct_schedule_one_cycle(opt, &o));
    t_assert_error(CT_ERR_VALUE, "empty phase", NULL);
    ct_plateau_opts p = CT_PLATEAU_OPTS_DEFAULT;
    p.factor = 1.0;
    cr_assert_null(ct_schedule_plateau(opt, &p));
    t_assert_error(CT_ERR_VALUE, "factor must be in [0, 1)", NULL);
    cr_assert_eq(ct_schedule_step(NULL), CT_ERR_NULL);
    ct_clear_error();
    cr_assert(isnan(ct_schedule_lr(NULL)));
    cr_assert_eq(ct_schedule_state(NULL, NULL, NULL, 0), -1);
    ct_clear_error();
    ct_schedule_free(NULL);
    cr_assert_eq(ct_optim_lr(opt), 0.1, "failed schedules leave the rate alone");
    ct_optim_free(opt);
    ct_tensor_free(param);
}
