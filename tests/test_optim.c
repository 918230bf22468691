/* Optimizers against PyTorch 1.13 and closed forms; state save/load; clipping; penalties;
 * early stopping. */
#include "tests/common.h"

#include <string.h>

/* From tests/data/gen_optim_refs.py (PyTorch 1.13, float64): a (2, 3) then b (3,) after 5 steps. */
static const double ref_sgd_plain[9] = {-0.46558752597452985, -0.2177488439872878,  -0.05770114511874392,
                                        0.043104875777031169, 0.11398821385981051,  0.17838823790601574,
                                        0.43221613348473054,  -0.72051317393291014, 1.3011798712521958};
static const double ref_sgd_momentum[9] = {-0.08928440549288516, 0.26510799148532466,   0.35378515919961045,
                                           0.21825048740928146,  -0.071506943032379033, -0.43367526243112142,
                                           0.31335789900850047,  -0.29416858198753709,  0.70939069845284564};
static const double ref_sgd_nesterov[9] = {0.13322547220516906,   0.3372814851117415,   0.24039502638913612,
                                           -0.031075680048030345, -0.34448256102700509, -0.59308899965164685,
                                           0.29676490412480511,   -0.1462943284019064,  0.26717211050459838};
static const double ref_adam[9] = {-0.53652638872625658, -0.028571895341194684, 0.20176809773388332,
                                   0.33234658564831482,  0.33348472347213864,   0.27058101244430921,
                                   0.31441447811156686,  -0.63312718397301604,  1.6085556521196431};
static const double ref_adam_amsgrad[9] = {-0.54756499857004493, -0.043118710893481488, 0.18126117829230218,
                                           0.31321590903689506,  0.34107305381099373,   0.2710721071427834,
                                           0.34710986034584435,  -0.64519015451355921,  1.6105334023324711};
static const double ref_adamw_amsgrad[9] = {-0.51677943968878259, -0.021123220621359511, 0.20075808277325616,
                                            0.32800531528557869,  0.33935247746263042,   0.24718797411572097,
                                            0.31856801972303417,  -0.60540480322656898,  1.5384212752687831};
static const double ref_rmsprop[9] = {-0.61331568929299285, -0.19419260905801966, -0.0023075539080088317,
                                      0.15558420617550472,  0.27062804718310413,  0.36618613447732751,
                                      0.42488850188256083,  -0.77143135653668871, 1.7036865310513489};
static const double ref_rmsprop_centered[9] = {-0.47885134984293493, 0.44878121262281617,  0.51643983883313538,
                                               0.47234804865556496,  0.16850780870833926,  -0.3274294168910663,
                                               0.25605238895584592,  -0.34130496939029997, 1.3023266520540104};
static const double ref_adagrad[9] = {-0.55091211655117145, -0.22560003239213211, -0.013032265201302018,
                                      0.14685295565291712,  0.25672405710337426,  0.39823698338902613,
                                      0.41657514180961613,  -0.77795065873936586, 1.7117011120580918};

static const char *const names[2] = {"a", "b"};

/* a (2, 3) and b (3,), the leaves of the reference problem. */
static void make_params(ct_dtype dtype, ct_tensor **params) {
    double a0[6], b0[3] = {0.5, -1.0, 2.0};
    for (int i = 0; i < 6; i++)
        a0[i] = (i - 2.5) * 0.3;
    ct_scope_begin();
    params[0] = ct_keep(ct_requires_grad(ct_cast(ct_from_host(a0, (int64_t[]){2, 3}, 2, CT_F64, CT_CPU), dtype), true));
    params[1] = ct_keep(ct_requires_grad(ct_cast(ct_from_host(b0, (int64_t[]){3}, 1, CT_F64, CT_CPU), dtype), true));
    ct_scope_end();
    cr_assert(params[0] && params[1], "%s", ct_last_error_message());
}

/* Gradients of step k of the reference problem: L = sum(0.5 c p^2 + d_k p), b left out at k = 2. */
static void backward_step(ct_tensor **params, int k) {
    ct_scope_begin();
    ct_tensor *loss = NULL;
    for (int j = 0; j < (k == 2 ? 1 : 2); j++) {
        ct_tensor *p = params[j];
        int64_t n = ct_tensor_numel(p);
        double c[6], d[6];
        for (int i = 0; i < n; i++) {
            c[i] = 0.5 + 0.25 * i;
            d[i] = cos(1.0 + k + 0.5 * i);
        }
        ct_dtype dt = ct_tensor_dtype(p);
        ct_tensor *ct = ct_cast(ct_from_host(c, ct_tensor_shape(p), ct_tensor_ndim(p), CT_F64, CT_CPU), dt);
        ct_tensor *dk = ct_cast(ct_from_host(d, ct_tensor_shape(p), ct_tensor_ndim(p), CT_F64, CT_CPU), dt);
        ct_tensor *term = ct_add(ct_mul_scalar(ct_mul(ct, ct_mul(p, p)), 0.5), ct_mul(dk, p));
        ct_tensor *s = ct_sum(term, NULL, 0, false);
        loss = loss ? ct_add(loss, s) : s;
    }
    cr_assert_eq(ct_backward(loss), CT_OK, "%s", ct_last_error_message());
    ct_scope_end();
}

static void train(ct_optim *opt, ct_tensor **params, int first, int last) {
    for (int k = first; k < last; k++) {
        ct_optim_zero_grad(opt);
        backward_step(params, k);
        cr_assert_eq(ct_optim_step(opt), CT_OK, "%s", ct_last_error_message());
    }
}

typedef ct_optim *(*make_fn)(ct_tensor **params);

static void check_against(make_fn make, const double *ref, const char *what) {
    const ct_dtype dtypes[2] = {CT_F64, CT_F32};
    int64_t live = ct_live_tensors();
    for (int t = 0; t < 2; t++) {
        ct_tensor *params[2];
        make_params(dtypes[t], params);
        ct_optim *opt = make(params);
        cr_assert_not_null(opt, "%s: %s", what, ct_last_error_message());
        train(opt, params, 0, 5);
        double out[9];
        double *a = t_values(params[0]), *b = t_values(params[1]);
        memcpy(out, a, 6 * sizeof(double));
        memcpy(out + 6, b, 3 * sizeof(double));
        free(a);
        free(b);
        /* F64 follows PyTorch's float64 run to rounding; F32 to float precision. */
        double tol = dtypes[t] == CT_F64 ? 1e-12 : 2e-5;
        for (int i = 0; i < 9; i++)
            cr_assert(fabs(out[i] - ref[i]) <= tol * (1.0 + fabs(ref[i])), "%s %s: element %d is %.17g, PyTorch %.17g",
                      what, ct_dtype_name(dtypes[t]), i, out[i], ref[i]);
        ct_optim_free(opt);
        ct_tensor_free(params[0]);
        ct_tensor_free(params[1]);
    }
    cr_assert_eq(ct_live_tensors(), live, "%s leaked %lld tensors", what, (long long)(ct_live_tensors() - live));
}

static ct_optim *sgd_plain(ct_tensor **p) {
    ct_sgd_opts o = CT_SGD_OPTS_DEFAULT;
    o.lr = 0.1;
    return ct_optim_sgd_from_tensors(p, names, 2, &o);
}
static ct_optim *sgd_momentum(ct_tensor **p) {
    ct_sgd_opts o = {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01};
    return ct_optim_sgd_from_tensors(p, names, 2, &o);
}
static ct_optim *sgd_nesterov(ct_tensor **p) {
    ct_sgd_opts o = {.lr = 0.1, .momentum = 0.9, .nesterov = true, .weight_decay = 0.01};
    return ct_optim_sgd_from_tensors(p, names, 2, &o);
}
static ct_optim *adam(ct_tensor **p) {
    ct_adam_opts o = CT_ADAM_OPTS_DEFAULT;
    o.lr = 0.1;
    o.weight_decay = 0.1;
    return ct_optim_adam_from_tensors(p, names, 2, &o);
}
static ct_optim *adam_amsgrad(ct_tensor **p) {
    ct_adam_opts o = CT_ADAM_OPTS_DEFAULT;
    o.lr = 0.1;
    o.beta1 = 0.8;
    o.beta2 = 0.9;
    o.amsgrad = true;
    return ct_optim_adam_from_tensors(p, names, 2, &o);
}
static ct_optim *adamw_amsgrad(ct_tensor **p) {
    ct_adam_opts o = CT_ADAMW_OPTS_DEFAULT;
    o.lr = 0.1;
    o.weight_decay = 0.1;
    o.amsgrad = true;
    return ct_optim_adamw_from_tensors(p, names, 2, &o);
}
static ct_optim *rmsprop(ct_tensor **p) {
    return ct_optim_rmsprop_from_tensors(p, names, 2, NULL);
}
static ct_optim *rmsprop_centered(ct_tensor **p) {
    ct_rmsprop_opts o = CT_RMSPROP_OPTS_DEFAULT;
    o.momentum = 0.9;
    o.centered = true;
    o.weight_decay = 0.1;
    return ct_optim_rmsprop_from_tensors(p, names, 2, &o);
}
static ct_optim *adagrad(ct_tensor **p) {
    ct_adagrad_opts o = {
        .lr = 0.1, .lr_decay = 0.01, .weight_decay = 0.1, .initial_accumulator_value = 0.1, .eps = 1e-10};
    return ct_optim_adagrad_from_tensors(p, names, 2, &o);
}

Test(optim, sgd_matches_pytorch) {
    check_against(sgd_plain, ref_sgd_plain, "SGD");
    check_against(sgd_momentum, ref_sgd_momentum, "SGD momentum+dampening+wd");
    check_against(sgd_nesterov, ref_sgd_nesterov, "SGD nesterov");
}
Test(optim, adam_matches_pytorch) {
    check_against(adam, ref_adam, "Adam wd");
    check_against(adam_amsgrad, ref_adam_amsgrad, "Adam amsgrad");
}
Test(optim, adamw_matches_pytorch) {
    check_against(adamw_amsgrad, ref_adamw_amsgrad, "AdamW amsgrad");
}
Test(optim, rmsprop_matches_pytorch) {
    check_against(rmsprop, ref_rmsprop, "RMSprop");
    check_against(rmsprop_centered, ref_rmsprop_centered, "RMSprop centered momentum wd");
}
Test(optim, adagrad_matches_pytorch) {
    check_against(adagrad, ref_adagrad, "Adagrad");
}

/* ---- closed forms with a constant gradient g (loss = sum(g p)) ------------------------------ */

static void constant_grad(ct_tensor *p, const double *g) {
    ct_scope_begin();
    ct_tensor *gt = ct_cast(ct_from_host(g, ct_tensor_shape(p), ct_tensor_ndim(p), CT_F64, CT_CPU), ct_tensor_dtype(p));
    cr_assert_eq(ct_backward(ct_sum(ct_mul(gt, p), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
    ct_scope_end();
}

Test(optim, closed_forms_with_constant_gradient) {
    const double g[3] = {0.5, -2.0, 0.0}, p0[3] = {1.0, 2.0, 3.0};
    const int K = 7;
    /* SGD momentum m, no dampening: buf_k = g (1 - m^k) / (1 - m). */
    ct_tensor *p = ct_requires_grad(ct_from_host(p0, (int64_t[]){3}, 1, CT_F64, CT_CPU), true);
    ct_sgd_opts so = {.lr = 0.1, .momentum = 0.5};
    ct_optim *opt = ct_optim_sgd_from_tensors(&p, NULL, 1, &so);
    for (int k = 0; k < K; k++) {
        ct_optim_zero_grad(opt);
        constant_grad(p, g);
        cr_assert_eq(ct_optim_step(opt), CT_OK);
    }
    double expect[3], sum = 0.0;
    for (int k = 1; k <= K; k++)
        sum += (1.0 - pow(0.5, k)) / 0.5;
    for (int i = 0; i < 3; i++)
        expect[i] = p0[i] - 0.1 * g[i] * sum;
    t_assert_close(p, expect, 1e-13, 1e-13);
    ct_optim_free(opt);
    ct_tensor_free(p);

    /* Adam: the bias-corrected moments of a constant gradient are g and g^2, so every step
     * moves by lr g / (|g| + eps). */
    p = ct_requires_grad(ct_from_host(p0, (int64_t[]){3}, 1, CT_F64, CT_CPU), true);
    ct_adam_opts ao = {.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    opt = ct_optim_adam_from_tensors(&p, NULL, 1, &ao);
    for (int k = 0; k < K; k++) {
        ct_optim_zero_grad(opt);
        constant_grad(p, g);
        cr_assert_eq(ct_optim_step(opt), CT_OK);
    }
    for (int i = 0; i < 3; i++)
        expect[i] = p0[i] - K * 0.01 * g[i] / (fabs(g[i]) + 1e-8);
    t_assert_close(p, expect, 1e-12, 1e-12);
    ct_optim_free(opt);
    ct_tensor_free(p);

    /* Adagrad: sum_k = init + k g^2, step k scaled by lr / (1 + (k - 1) lr_decay). */
    p = ct_requires_grad(ct_from_host(p0, (int64_t[]){3}, 1, CT_F64, CT_CPU), true);
    ct_adagrad_opts go = {.lr = 0.1, .lr_decay = 0.5, .initial_accumulator_value = 0.25, .eps = 1e-10};
    opt = ct_optim_adagrad_from_tensors(&p, NULL, 1, &go);
    for (int k = 0; k < K; k++) {
        ct_optim_zero_grad(opt);
        constant_grad(p, g);
        cr_assert_eq(ct_optim_step(opt), CT_OK);
    }
    for (int i = 0; i < 3; i++) {
        expect[i] = p0[i];
        for (int k = 1; k <= K; k++)
            expect[i] -= 0.1 / (1.0 + (k - 1) * 0.5) * g[i] / (sqrt(0.25 + k * g[i] * g[i]) + 1e-10);
    }
    t_assert_close(p, expect, 1e-13, 1e-13);
    ct_optim_free(opt);
    ct_tensor_free(p);
}

/* ---- behaviour ------------------------------------------------------------------------------ */

static double state_value(ct_optim *opt, const char *name) {
    ct_optim_state_dict *s = ct_optim_state(opt);
    cr_assert_not_null(s);
    double v = NAN;
    for (int i = 0; i < s->count; i++)
        if (strcmp(s->names[i], name) == 0)
            v = ct_item(s->tensors[i]);
    ct_optim_state_dict_free(s);
    return v;
}

Test(optim, skips_params_without_grad_and_zero_grad_drops_grads) {
    int64_t live = ct_live_tensors();
    ct_tensor *params[2];
    make_params(CT_F32, params);
    ct_optim *opt = adam(params);
    train(opt, params, 0, 5); /* b has no gradient at step 2 */
    cr_assert_eq(state_value(opt, "a.step"), 5.0);
    cr_assert_eq(state_value(opt, "b.step"), 4.0);
    /* A parameter without a gradient is not touched at all. */
    ct_optim_zero_grad(opt);
    cr_assert_null(ct_grad(params[0]));
    cr_assert_null(ct_grad(params[1]));
    double *before = t_values(params[1]);
    backward_step(params, 2);
    cr_assert_not_null(ct_grad(params[0]));
    cr_assert_null(ct_grad(params[1]));
    cr_assert_eq(ct_optim_step(opt), CT_OK);
    t_assert_close(params[1], before, 0.0, 0.0);
    free(before);
    cr_assert_eq(state_value(opt, "b.step"), 4.0);
    ct_optim_free(opt);
    ct_tensor_free(params[0]);
    ct_tensor_free(params[1]);
    cr_assert_eq(ct_live_tensors(), live);
}

Test(optim, parameters_left_to_their_scope_are_released_with_it) {
    /* The optimizer's reference to each parameter is its own: freeing the optimizer must not
     * take the parameter out of the caller's scope (that leaked the parameter and its grad). */
    T_NO_LEAK({
        ct_tensor *w = ct_full((int64_t[]){8}, 1, 1.0, CT_F32, CT_CPU);
        ct_requires_grad(w, true);
        cr_assert_eq(ct_backward(ct_sum(ct_mul_scalar(w, 2.0), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        ct_sgd_opts o = CT_SGD_OPTS_DEFAULT;
        o.momentum = 0.9;
        ct_optim *opt = ct_optim_sgd_from_tensors(&w, (const char *[]){"w"}, 1, &o);
        cr_assert_not_null(opt, "%s", ct_last_error_message());
        cr_assert_eq(ct_optim_step(opt), CT_OK, "%s", ct_last_error_message());
        ct_optim_free(opt);
        cr_assert_float_eq(ct_item(ct_sum(w, NULL, 0, false)), 8.0 * (1.0 - 0.01 * 2.0), 1e-6,
                           "the parameter is still the caller's after ct_optim_free");
    });
    /* The other way round: the caller frees its parameter, and its scope ends, while the
     * optimizer holds it; the optimizer's reference keeps it alive until ct_optim_free. */
    int64_t before = ct_live_tensors();
    ct_scope_begin();
    ct_tensor *w = ct_requires_grad(ct_full((int64_t[]){4}, 1, 1.0, CT_F32, CT_CPU), true);
    ct_optim *opt = ct_optim_sgd_from_tensors(&w, NULL, 1, NULL);
    cr_assert_not_null(opt, "%s", ct_last_error_message());
    ct_tensor_free(w);
    ct_scope_end();
    ct_scope_begin();
    ct_tensor *p = ct_optim_params(opt)[0];
    cr_assert_eq(ct_backward(ct_sum(ct_mul_scalar(p, 2.0), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
    cr_assert_eq(ct_optim_step(opt), CT_OK, "%s", ct_last_error_message());
    cr_assert_float_eq(ct_item(ct_sum(p, NULL, 0, false)), 4.0 * (1.0 - 0.01 * 2.0), 1e-6, "%s",
                       ct_last_error_message());
    ct_scope_end();
    ct_optim_free(opt);
    cr_assert_eq(ct_live_tensors(), before, "leaked %lld tensors", (long long)(ct_live_tensors() - before));
}

Test(optim, step_bumps_versions) {
    /* A tensor saved for backward and then updated by the optimizer makes backward fail. */
    ct_tensor *params[2];
    make_params(CT_F32, params);
    ct_optim *opt = sgd_plain(params);
    backward_step(params, 0);
    ct_scope_begin();
    ct_tensor *y = ct_sum(ct_mul(params[0], params[0]), NULL, 0, false);
    cr_assert_eq(ct_optim_step(opt), CT_OK);
    cr_assert_eq(ct_backward(y), CT_ERR_AUTOGRAD);
    ct_clear_error();
    ct_scope_end();
    ct_optim_free(opt);
    ct_tensor_free(params[0]);
    ct_tensor_free(params[1]);
}

/* y = x @ w + b as a custom module, to create optimizers from modules. */
static ct_tensor *affine_forward(ct_module *m, ct_tensor *x) {
    return ct_add(ct_matmul(x, ct_module_param(m, "weight")), ct_module_param(m, "bias"));
}
static const ct_module_vtable affine_vt = {"Affine", affine_forward, NULL, NULL};
static ct_tensor *net_forward(ct_module *m, ct_tensor *x) {
    return ct_module_forward(ct_module_child(m, "fc"), x);
}
static const ct_module_vtable net_vt = {"Net", net_forward, NULL, NULL};

static ct_module *net(void) {
    const float w[6] = {1, -2, 3, -4, 5, -6}, b[2] = {0.5f, -0.5f};
    ct_module *fc = ct_module_create(&affine_vt, NULL);
    cr_assert_eq(ct_module_add_parameter(fc, "weight", ct_from_host(w, (int64_t[]){3, 2}, 2, CT_F32, CT_CPU)), CT_OK);
    cr_assert_eq(ct_module_add_parameter(fc, "bias", ct_from_host(b, (int64_t[]){2}, 1, CT_F32, CT_CPU)), CT_OK);
    ct_module *m = ct_module_create(&net_vt, NULL);
    cr_assert_eq(ct_module_add_child(m, "fc", fc), CT_OK);
    return m;
}

Test(optim, from_module_names_state_and_outlives_module) {
    int64_t live = ct_live_tensors();
    ct_module *m = net();
    ct_sgd_opts o = {.lr = 0.1, .momentum = 0.9};
    ct_optim *opt = ct_optim_sgd(m, &o);
    cr_assert_not_null(opt, "%s", ct_last_error_message());
    cr_assert_str_eq(ct_optim_name(opt), "SGD");
    cr_assert_eq(ct_optim_num_params(opt), 2);
    cr_assert_str_eq(ct_optim_param_name(opt, 0), "fc.weight");
    cr_assert_str_eq(ct_optim_param_name(opt, 1), "fc.bias");
    cr_assert_eq(ct_optim_params(opt)[1], ct_module_find(m, "fc.bias"));
    /* No momentum buffer before the first step (PyTorch's SGD makes it from the first gradient). */
    ct_optim_state_dict *s = ct_optim_state(opt);
    cr_assert_eq(s->count, 2);
    cr_assert_str_eq(s->names[0], "fc.weight.step");
    ct_optim_state_dict_free(s);
    ct_scope_begin();
    ct_tensor *x = ct_ones((int64_t[]){4, 3}, 2, CT_F32, CT_CPU);
    cr_assert_eq(ct_backward(ct_sum(ct_module_forward(m, x), NULL, 0, false)), CT_OK);
    ct_scope_end();
    cr_assert_eq(ct_optim_step(opt), CT_OK);
    s = ct_optim_state(opt);
    cr_assert_eq(s->count, 4);
    cr_assert_str_eq(s->names[1], "fc.weight.momentum_buffer");
    cr_assert_str_eq(s->names[3], "fc.bias.momentum_buffer");
    /* The buffer is the first gradient: d(sum(x w + b))/db = 4. */
    t_assert_close(s->tensors[3], (double[]){4, 4}, 0, 0);
    cr_assert_eq(s->num_hparams, 5);
    cr_assert_str_eq(s->hparam_names[1], "momentum");
    cr_assert_eq(s->hparam_values[1], 0.9);
    ct_optim_state_dict_free(s);
    t_assert_close(ct_module_find(m, "fc.bias"), (double[]){0.5 - 0.4, -0.5 - 0.4}, 1e-7, 0);
    /* Freeing the module first is safe: the optimizer holds references. */
    ct_tensor *bias = ct_module_find(m, "fc.bias");
    ct_module_free(m);
    ct_optim_zero_grad(opt);
    cr_assert_eq(ct_optim_step(opt), CT_OK, "nothing to do");
    t_assert_close(bias, (double[]){0.1, -0.9}, 1e-7, 0);
    ct_optim_free(opt);
    cr_assert_eq(ct_live_tensors(), live);
}

Test(optim, hyper_parameters) {
    ct_tensor *params[2];
    make_params(CT_F32, params);
    ct_optim *opt = adam_amsgrad(params);
    cr_assert_eq(ct_optim_lr(opt), 0.1);
    cr_assert_eq(ct_optim_set_lr(opt, 0.05), CT_OK);
    cr_assert_eq(ct_optim_hparam(opt, "lr"), 0.05);
    cr_assert_eq(ct_optim_hparam(opt, "beta1"), 0.8);
    cr_assert_eq(ct_optim_hparam(opt, "amsgrad"), 1.0);
    cr_assert_eq(ct_optim_set_hparam(opt, "beta2", 0.95), CT_OK);
    cr_assert_eq(ct_optim_hparam(opt, "beta2"), 0.95);
    cr_assert_eq(ct_optim_set_hparam(opt, "amsgrad", 1.0), CT_OK, "setting a fixed one to its value is fine");
    cr_assert_eq(ct_optim_set_hparam(opt, "amsgrad", 0.0), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "amsgrad is fixed", NULL);
    cr_assert(isnan(ct_optim_hparam(opt, "momentum")));
    t_assert_error(CT_ERR_VALUE, "Adam has no hyper-parameter \"momentum\"", NULL);
    cr_assert_eq(ct_optim_set_lr(opt, -1.0), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "lr must be", "-1", NULL);
    cr_assert_eq(ct_optim_set_hparam(opt, "beta1", 1.0), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "beta1 must be in [0, 1)", NULL);
    cr_assert_eq(ct_optim_lr(opt), 0.05, "a rejected value changes nothing");
    ct_optim_free(opt);
    ct_tensor_free(params[0]);
    ct_tensor_free(params[1]);
}

/* ---- state save / load ------------------------------------------------------------------------ */

/* A new tensor with the same values as t (a snapshot outside the graph: ct_copy_ refuses a
 * source that requires grad while grad mode is on). */
static ct_tensor *copy_of(const ct_tensor *t) {
    ct_tensor *c = ct_zeros(ct_tensor_shape(t), ct_tensor_ndim(t), ct_tensor_dtype(t), CT_CPU);
    ct_no_grad_begin();
    cr_assert_eq(ct_copy_(c, t), CT_OK);
    ct_no_grad_end();
    return c;
}

static void assert_bitwise_equal(const ct_tensor *x, const ct_tensor *y, const char *what) {
    size_t n = (size_t)ct_tensor_numel(x) * ct_dtype_size(ct_tensor_dtype(x));
    cr_assert_eq((size_t)ct_tensor_numel(y) * ct_dtype_size(ct_tensor_dtype(y)), n);
    char *bx = malloc(n + 1), *by = malloc(n + 1);
    cr_assert_eq(ct_to_host(x, bx, n), CT_OK);
    cr_assert_eq(ct_to_host(y, by, n), CT_OK);
    cr_assert(memcmp(bx, by, n) == 0, "%s differs", what);
    free(bx);
    free(by);
}

static void round_trip(make_fn make, const char *what) {
    int64_t live = ct_live_tensors();
    ct_tensor *p[2], *q[2];
    make_params(CT_F32, p);
    ct_optim *a = make(p);
    train(a, p, 0, 3);
    /* "Checkpoint": copies of the state tensors and the hyper-parameters. */
    ct_optim_state_dict *s = ct_optim_state(a);
    ct_tensor **saved = calloc((size_t)s->count, sizeof *saved);
    for (int i = 0; i < s->count; i++)
        saved[i] = copy_of(s->tensors[i]);
    q[0] = ct_requires_grad(copy_of(p[0]), true);
    q[1] = ct_requires_grad(copy_of(p[1]), true);
    ct_optim *b = make(q);
    cr_assert_eq(ct_optim_set_lr(b, 1.0), CT_OK);
    for (int i = 0; i < s->num_hparams; i++)
        cr_assert_eq(ct_optim_set_hparam(b, s->hparam_names[i], s->hparam_values[i]), CT_OK);
    cr_assert_eq(ct_optim_load_state(b, (const char *const *)s->names, saved, s->count), CT_OK, "%s: %s", what,
                 ct_last_error_message());
    cr_assert_eq(ct_optim_lr(b), ct_optim_lr(a));
    /* The next steps are bit-for-bit the same. */
    train(a, p, 3, 5);
    train(b, q, 3, 5);
    assert_bitwise_equal(p[0], q[0], what);
    assert_bitwise_equal(p[1], q[1], what);
    ct_optim_state_dict *sa = ct_optim_state(a), *sb = ct_optim_state(b);
    cr_assert_eq(sa->count, sb->count);
    for (int i = 0; i < sa->count; i++) {
        cr_assert_str_eq(sa->names[i], sb->names[i]);
        assert_bitwise_equal(sa->tensors[i], sb->tensors[i], sa->names[i]);
    }
    ct_optim_state_dict_free(sa);
    ct_optim_state_dict_free(sb);
    for (int i = 0; i < s->count; i++)
        ct_tensor_free(saved[i]);
    free(saved);
    ct_optim_state_dict_free(s);
    ct_optim_free(a);
    ct_optim_free(b);
    for (int i = 0; i < 2; i++) {
        ct_tensor_free(p[i]);
        ct_tensor_free(q[i]);
    }
    cr_assert_eq(ct_live_tensors(), live, "%s leaked", what);
}

Test(optim, state_round_trip_is_bit_exact) {
    round_trip(sgd_nesterov, "SGD nesterov");
    round_trip(adam_amsgrad, "Adam amsgrad");
    round_trip(adamw_amsgrad, "AdamW amsgrad");
    round_trip(rmsprop_centered, "RMSprop centered");
    round_trip(adagrad, "Adagrad");
}

Test(optim, load_reports_every_mismatch) {
    int64_t live = ct_live_tensors();
    ct_tensor *p[2];
    make_params(CT_F32, p);
    ct_optim *opt = adam(p);
    train(opt, p, 0, 2);
    ct_tensor *wrong_shape = ct_zeros((int64_t[]){3}, 1, CT_F32, CT_CPU);
    ct_tensor *wrong_dtype = ct_zeros((int64_t[]){3}, 1, CT_F64, CT_CPU);
    ct_tensor *step = ct_scalar(7.0, CT_F64, CT_CPU);
    ct_tensor *bad_step = ct_scalar(1.5, CT_F64, CT_CPU);
    const char *n[] = {"a.exp_avg", "b.exp_avg", "c.step", "a.max_exp_avg_sq", "a.step", "b.step", "a.step"};
    ct_tensor *t[] = {wrong_shape, wrong_dtype, step, wrong_shape, step, bad_step, step};
    cr_assert_eq(ct_optim_load_state(opt, n, t, 7), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "ct_optim_load_state: 8 mismatches", "a.exp_avg has shape [3], expected [2, 3]",
                   "b.exp_avg is f64, expected f32", "unexpected c.step", "unexpected a.max_exp_avg_sq",
                   "b.step is 1.5, expected a count", "a.step appears twice", "missing a.exp_avg_sq",
                   "missing b.exp_avg_sq", NULL);
    cr_assert_eq(state_value(opt, "a.step"), 2.0, "nothing was loaded");
    ct_optim_free(opt);
    ct_tensor_free(p[0]);
    ct_tensor_free(p[1]);
    ct_tensor_free(wrong_shape);
    ct_tensor_free(wrong_dtype);
    ct_tensor_free(step);
    ct_tensor_free(bad_step);
    cr_assert_eq(ct_live_tensors(), live);
}

/* Found by fuzz_checkpoint: a step of 7.8e247 was converted to int64_t to check that it is
 * whole (undefined); steps beyond 2^53, infinite or NaN are mismatches like 1.5. */
Test(optim, load_refuses_huge_steps) {
    int64_t live = ct_live_tensors();
    ct_tensor *p[2];
    make_params(CT_F32, p);
    ct_optim *opt = adam(p);
    static const double bad[] = {7.831e247, INFINITY, NAN, 18014398509481984.0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ct_tensor *step = ct_scalar(bad[i], CT_F64, CT_CPU);
        cr_assert_eq(ct_optim_load_state(opt, (const char *[]){"a.step"}, &step, 1), CT_ERR_VALUE);
        t_assert_error(CT_ERR_VALUE, "a.step is", "expected a count", NULL);
        ct_tensor_free(step);
    }
    ct_optim_free(opt);
    ct_tensor_free(p[0]);
    ct_tensor_free(p[1]);
    cr_assert_eq(ct_live_tensors(), live);
}

Test(optim, bad_arguments) {
    int64_t live = ct_live_tensors();
    ct_tensor *p[2];
    make_params(CT_F32, p);
    ct_sgd_opts so = {.lr = -0.1};
    cr_assert_null(ct_optim_sgd_from_tensors(p, names, 2, &so));
    t_assert_error(CT_ERR_VALUE, "ct_optim_sgd_from_tensors: lr must be a finite number >= 0, got -0.1", NULL);
    so = (ct_sgd_opts){.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true};
    cr_assert_null(ct_optim_sgd_from_tensors(p, names, 2, &so));
    t_assert_error(CT_ERR_VALUE, "nesterov needs momentum > 0 and dampening = 0", NULL);
    ct_adam_opts ao = CT_ADAM_OPTS_DEFAULT;
    ao.beta1 = 1.0;
    cr_assert_null(ct_optim_adam_from_tensors(p, names, 2, &ao));
    t_assert_error(CT_ERR_VALUE, "beta1 must be in [0, 1), got 1", NULL);
    ao = (ct_adam_opts)CT_ADAMW_OPTS_DEFAULT;
    ao.beta2 = -0.5;
    cr_assert_null(ct_optim_adamw_from_tensors(p, names, 2, &ao));
    t_assert_error(CT_ERR_VALUE, "ct_optim_adamw_from_tensors: beta2 must be in [0, 1), got -0.5", NULL);
    ao.beta2 = NAN;
    cr_assert_null(ct_optim_adamw_from_tensors(p, names, 2, &ao));
    t_assert_error(CT_ERR_VALUE, "beta2 must be in [0, 1)", NULL);
    ct_rmsprop_opts ro = CT_RMSPROP_OPTS_DEFAULT;
    ro.alpha = -1;
    cr_assert_null(ct_optim_rmsprop_from_tensors(p, names, 2, &ro));
    t_assert_error(CT_ERR_VALUE, "alpha must be >= 0", NULL);
    ct_adagrad_opts go = CT_ADAGRAD_OPTS_DEFAULT;
    go.lr_decay = -1;
    cr_assert_null(ct_optim_adagrad_from_tensors(p, names, 2, &go));
    t_assert_error(CT_ERR_VALUE, "lr_decay must be >= 0", NULL);

    cr_assert_null(ct_optim_sgd(NULL, NULL));
    t_assert_error(CT_ERR_NULL, "ct_optim_sgd", NULL);
    cr_assert_null(ct_optim_adam_from_tensors(NULL, NULL, 2, NULL));
    t_assert_error(CT_ERR_NULL, "params", NULL);
    cr_assert_null(ct_optim_adam_from_tensors(p, NULL, 0, NULL));
    t_assert_error(CT_ERR_VALUE, "no parameters", NULL);
    ct_tensor *twice[2] = {p[0], p[0]};
    cr_assert_null(ct_optim_adam_from_tensors(twice, NULL, 2, NULL));
    t_assert_error(CT_ERR_VALUE, "appears twice", NULL);
    const char *same[2] = {"w", "w"};
    cr_assert_null(ct_optim_adam_from_tensors(p, same, 2, NULL));
    t_assert_error(CT_ERR_VALUE, "two parameters are named \"w\"", NULL);
    ct_tensor *half = ct_requires_grad(ct_zeros((int64_t[]){2}, 1, CT_F16, CT_CPU), true);
    cr_assert_null(ct_optim_adam_from_tensors(&half, NULL, 1, NULL));
    t_assert_error(CT_ERR_DTYPE, "parameter \"params[0]\" is f16", NULL);
    ct_tensor *view = ct_transpose(p[0], 0, 1);
    cr_assert_null(ct_optim_adam_from_tensors(&view, NULL, 1, NULL));
    t_assert_error(CT_ERR_SHAPE, "not contiguous", NULL);
    ct_tensor_free(view);
    ct_tensor_free(half);

    cr_assert_eq(ct_optim_step(NULL), CT_ERR_NULL);
    ct_clear_error();
    cr_assert_eq(ct_optim_set_lr(NULL, 0.1), CT_ERR_NULL);
    ct_clear_error();
    cr_assert(isnan(ct_optim_lr(NULL)));
    cr_assert_null(ct_optim_state(NULL));
    ct_clear_error();
    ct_optim_zero_grad(NULL);
    ct_optim_free(NULL);
    ct_tensor_free(p[0]);
    ct_tensor_free(p[1]);
    cr_assert_eq(ct_live_tensors(), live);
}

/* ---- clipping --------------------------------------------------------------------------------- */

Test(optim, clip_grad_norm) {
    int64_t live = ct_live_tensors();
    const double ga[6] = {3, 0, -4, 1, 2, -2}, gb[3] = {0.5, -0.5, 12};
    ct_tensor *p[3];
    make_params(CT_F32, p);
    p[2] = ct_requires_grad(ct_zeros((int64_t[]){4}, 1, CT_F32, CT_CPU), true); /* no gradient: skipped */
    constant_grad(p[0], ga);
    constant_grad(p[1], gb);
    double sq = 0.0, mx = 0.0, l1 = 0.0;
    for (int i = 0; i < 6; i++)
        sq += ga[i] * ga[i], mx = fmax(mx, fabs(ga[i])), l1 += fabs(ga[i]);
    for (int i = 0; i < 3; i++)
        sq += gb[i] * gb[i], mx = fmax(mx, fabs(gb[i])), l1 += fabs(gb[i]);
    /* Large max_norm: the norm, and the gradients untouched. */
    cr_assert_float_eq(ct_clip_grad_norm(p, 3, 100.0, 2.0), sqrt(sq), 1e-12);
    cr_assert_float_eq(ct_clip_grad_norm(p, 3, 100.0, INFINITY), mx, 1e-12);
    cr_assert_float_eq(ct_clip_grad_norm(p, 3, 100.0, 1.0), l1, 1e-12);
    t_assert_close(ct_grad(p[0]), ga, 0, 0);
    /* Clipping to 2: every gradient scaled by 2 / (norm + 1e-6). */
    double total = ct_clip_grad_norm(p, 3, 2.0, 2.0);
    cr_assert_float_eq(total, sqrt(sq), 1e-12);
    double coef = 2.0 / (sqrt(sq) + 1e-6), ea[6], eb[3];
    for (int i = 0; i < 6; i++)
        ea[i] = ga[i] * coef;
    for (int i = 0; i < 3; i++)
        eb[i] = gb[i] * coef;
    t_assert_close(ct_grad(p[0]), ea, 1e-6, 1e-6);
    t_assert_close(ct_grad(p[1]), eb, 1e-6, 1e-6);
    cr_assert_float_eq(ct_clip_grad_norm(p, 3, 100.0, 2.0), 2.0, 1e-5);
    cr_assert_null(ct_grad(p[2]));
    /* By value. */
    cr_assert_eq(ct_clip_grad_value(p, 3, 0.5), CT_OK);
    double *v = t_values(ct_grad(p[1]));
    cr_assert_float_eq(v[0], eb[0], 1e-6);
    cr_assert_eq(v[2], 0.5);
    free(v);
    /* Nothing to clip: 0. */
    cr_assert_eq(ct_clip_grad_norm(&p[2], 1, 1.0, 2.0), 0.0);
    /* Bad arguments. */
    cr_assert(isnan(ct_clip_grad_norm(p, 3, -1.0, 2.0)));
    t_assert_error(CT_ERR_VALUE, "max_norm must be >= 0", NULL);
    cr_assert(isnan(ct_clip_grad_norm(p, 3, 1.0, 0.0)));
    t_assert_error(CT_ERR_VALUE, "norm_type must be > 0", NULL);
    cr_assert(isnan(ct_clip_grad_norm(NULL, 3, 1.0, 2.0)));
    t_assert_error(CT_ERR_NULL, "params", NULL);
    cr_assert_eq(ct_clip_grad_value(p, 3, -1.0), CT_ERR_VALUE);
    ct_clear_error();
    for (int i = 0; i < 3; i++)
        ct_tensor_free(p[i]);
    cr_assert_eq(ct_live_tensors(), live);
}

Test(optim, clip_grad_norm_large_tensor_is_thread_independent) {
    /* Many blocks of the CPU reduction; f64 accumulation gives the exact sum of squares of
     * small integers. */
    int64_t n = 100003;
    double *g = malloc(sizeof(double) * (size_t)n), sq = 0.0;
    for (int64_t i = 0; i < n; i++)
        g[i] = (double)(i % 7) - 3.0, sq += g[i] * g[i];
    ct_tensor *p = ct_requires_grad(ct_zeros((int64_t[]){n}, 1, CT_F32, CT_CPU), true);
    ct_scope_begin();
    ct_tensor *gt = ct_cast(ct_from_host(g, (int64_t[]){n}, 1, CT_F64, CT_CPU), CT_F32);
    cr_assert_eq(ct_backward(ct_sum(ct_mul(gt, p), NULL, 0, false)), CT_OK);
    ct_scope_end();
    cr_assert_eq(ct_clip_grad_norm(&p, 1, 1e9, 2.0), sqrt(sq));
    free(g);
    ct_tensor_free(p);
}

/* ---- penalties and early stopping ----------------------------------------------------------------- */

Test(optim, l1_l2_penalties) {
    int64_t live = ct_live_tensors();
    ct_module *m = net(); /* weight {1, -2, 3, -4, 5, -6}, bias {0.5, -0.5} */
    ct_module_freeze(m, "fc.bias", true);
    ct_tensor *l1 = ct_l1_penalty(m, 0.1);
    cr_assert_not_null(l1, "%s", ct_last_error_message());
    cr_assert_float_eq(ct_item(l1), 0.1 * 21, 1e-6);
    cr_assert_eq(ct_backward(l1), CT_OK);
    t_assert_close(ct_grad(ct_module_find(m, "fc.weight")), (double[]){0.1, -0.1, 0.1, -0.1, 0.1, -0.1}, 1e-7, 0);
    ct_tensor_free(l1);
    ct_zero_grad(ct_module_find(m, "fc.weight"));
    ct_tensor *l2 = ct_l2_penalty(m, 0.5);
    cr_assert_float_eq(ct_item(l2), 0.5 * 91, 1e-5);
    cr_assert_eq(ct_backward(l2), CT_OK);
    t_assert_close(ct_grad(ct_module_find(m, "fc.weight")), (double[]){1, -2, 3, -4, 5, -6}, 1e-6, 0);
    ct_tensor_free(l2);
    cr_assert_null(ct_l2_penalty(NULL, 0.5));
    t_assert_error(CT_ERR_NULL, "ct_l2_penalty", NULL);
    cr_assert_null(ct_l1_penalty(m, NAN));
    t_assert_error(CT_ERR_VALUE, "lambda must be finite", NULL);
    ct_module_free(m);
    cr_assert_eq(ct_live_tensors(), live);
}

Test(optim, early_stopping) {
    ct_early_stopping es = CT_EARLY_STOPPING_DEFAULT;
    es.patience = 2;
    es.min_delta = 0.01;
    const double losses[] = {1.0, 0.8, 0.795, 0.7, 0.71, 0.705, 0.6};
    const bool stop[] = {false, false, false, false, false, true, false};
    for (int i = 0; i < 7; i++)
        cr_assert_eq(ct_early_stopping_update(&es, losses[i]), stop[i], "update %d", i);
    cr_assert_eq(es.best, 0.6);
    cr_assert_eq(es.best_epoch, 6);
    cr_assert_eq(es.epochs, 7);

    ct_early_stopping acc = {.patience = 2, .mode = CT_MODE_MAX};
    cr_assert(!ct_early_stopping_update(&acc, NAN), "a first NaN is not an improvement");
    cr_assert_eq(acc.bad_epochs, 1);
    cr_assert(!ct_early_stopping_update(&acc, 0.5));
    cr_assert_eq(acc.best, 0.5);
    cr_assert(!ct_early_stopping_update(&acc, 0.6));
    cr_assert(!ct_early_stopping_update(&acc, NAN));
    cr_assert(ct_early_stopping_update(&acc, 0.6));
    cr_assert_eq(acc.best_epoch, 2);
    cr_assert(!ct_early_stopping_update(NULL, 1.0));
    t_assert_error(CT_ERR_NULL, "ct_early_stopping_update", NULL);
}
