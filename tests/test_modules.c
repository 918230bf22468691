/* Built-in modules: forward against op compositions, PyTorch's names and shapes, modes,
 * initialization, containers, freezing, summary, bad arguments. Every test frees its modules
 * and checks that no tensor outlives it. */
#include "tests/common.h"
#include "ctensor/init.h"
#include "ctensor/modules.h"

#include <string.h>
#include <unistd.h>

/* Start / end of a leak-checked test. */
#define LIVE_BEGIN() int64_t live_at_start_ = ct_live_tensors()
#define LIVE_END()                                                                                                     \
    cr_assert_eq(ct_live_tensors(), live_at_start_, "leaked %lld tensors",                                             \
                 (long long)(ct_live_tensors() - live_at_start_))

/* Assert the module's state (parameters then buffers, in order) has exactly these names and
 * shapes; shapes are written "[32, 1, 3, 3]". */
static void assert_state(const ct_module *m, int count, const char *const *names, const char *const *shapes) {
    ct_named_tensors *state = ct_module_state(m);
    cr_assert_not_null(state);
    cr_assert_eq(state->count, count, "%d tensors, expected %d", state->count, count);
    for (int i = 0; i < count; i++) {
        cr_assert_str_eq(state->names[i], names[i]);
        cr_assert_str_eq(ct_shape_str(state->tensors[i]), shapes[i], "%s is %s", names[i],
                         ct_shape_str(state->tensors[i]));
    }
    ct_named_tensors_free(state);
}

static void assert_all_within(const ct_tensor *t, double bound) {
    double *v = t_values(t);
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < ct_tensor_numel(t); i++) {
        lo = fmin(lo, v[i]);
        hi = fmax(hi, v[i]);
    }
    free(v);
    cr_assert(lo >= -bound && hi <= bound, "values in [%g, %g], bound %g", lo, hi, bound);
    cr_assert(hi - lo > bound, "the values spread over the range: [%g, %g]", lo, hi);
}

static void assert_tensors_equal(const ct_tensor *a, const ct_tensor *b, double atol) {
    cr_assert_str_eq(ct_shape_str(a), ct_shape_str(b));
    double *vb = t_values(b);
    t_assert_close(a, vb, atol, atol);
    free(vb);
}

/* ---- Linear -------------------------------------------------------------------------- */

Test(modules, linear_names_init_and_forward) {
    LIVE_BEGIN();
    ct_manual_seed(1);
    ct_module *fc = ct_linear(20, 7, true);
    cr_assert_not_null(fc, "%s", ct_last_error_message());
    cr_assert_str_eq(ct_module_type(fc), "Linear");
    assert_state(fc, 2, (const char *[]){"weight", "bias"}, (const char *[]){"[7, 20]", "[7]"});
    cr_assert_eq(ct_module_num_parameters(fc, false), 7 * 20 + 7);
    assert_all_within(ct_module_param(fc, "weight"), 1 / sqrt(20.0));
    assert_all_within(ct_module_param(fc, "bias"), 1 / sqrt(20.0));
    ct_scope_begin();
    ct_tensor *x = ct_randn((int64_t[]){3, 5, 20}, 3, CT_F32, CT_CPU);
    ct_tensor *y = ct_module_forward(fc, x);
    t_assert_shape(y, (int64_t[]){3, 5, 7}, 3);
    ct_tensor *w = ct_module_param(fc, "weight"), *b = ct_module_param(fc, "bias");
    /* by hand: y[i, o] = sum_k x[i, k] w[o, k] + b[o] */
    double *xv = t_values(x), *wv = t_values(w), *bv = t_values(b);
    double ref[15 * 7];
    for (int i = 0; i < 15; i++)
        for (int o = 0; o < 7; o++) {
            double s = bv[o];
            for (int k = 0; k < 20; k++)
                s += xv[i * 20 + k] * wv[o * 20 + k];
            ref[i * 7 + o] = s;
        }
    free(xv), free(wv), free(bv);
    t_assert_close(y, ref, 1e-5, 1e-5);
    cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_OK);
    t_assert_shape(ct_grad(w), (int64_t[]){7, 20}, 2);
    t_assert_shape(ct_grad(b), (int64_t[]){7}, 1);
    double *gb = t_values(ct_grad(b));
    cr_assert_float_eq(gb[0], 15.0, 1e-5, "d sum / d b = number of rows");
    free(gb);
    ct_scope_end();
    ct_module_free(fc);
    LIVE_END();
}

Test(modules, linear_without_bias) {
    LIVE_BEGIN();
    ct_module *fc = ct_linear(4, 3, false);
    assert_state(fc, 1, (const char *[]){"weight"}, (const char *[]){"[3, 4]"});
    cr_assert_eq(ct_module_num_children(fc), 0);
    ct_scope_begin();
    ct_tensor *x = ct_randn((int64_t[]){4}, 1, CT_F32, CT_CPU);
    ct_tensor *y = ct_module_forward(fc, x);
    t_assert_shape(y, (int64_t[]){3}, 1);
    assert_tensors_equal(y, ct_matmul(ct_module_param(fc, "weight"), x), 1e-6);
    cr_assert_null(ct_module_forward(fc, ct_randn((int64_t[]){2, 5}, 2, CT_F32, CT_CPU)));
    t_assert_error(CT_ERR_SHAPE, "Linear(4, 3)", "[2, 5]", "[*, 4]", NULL);
    ct_scope_end();
    ct_module_free(fc);
    LIVE_END();
}

/* ---- activations ----------------------------------------------------------------------- */

Test(modules, activations_match_their_ops) {
    LIVE_BEGIN();
    ct_manual_seed(2);
    ct_scope_begin();
    ct_tensor *x = ct_randn((int64_t[]){4, 6}, 2, CT_F32, CT_CPU);
    struct {
        ct_module *m;
        ct_tensor *expect;
        const char *type;
    } cases[] = {
        {ct_relu_layer(), ct_relu(x), "ReLU"},
        {ct_leaky_relu_layer(0.2), ct_leaky_relu(x, 0.2), "LeakyReLU"},
        {ct_gelu_layer(CT_GELU_ERF), ct_gelu(x, CT_GELU_ERF), "GELU"},
        {ct_gelu_layer(CT_GELU_TANH), ct_gelu(x, CT_GELU_TANH), "GELU"},
        {ct_silu_layer(), ct_silu(x), "SiLU"},
        {ct_sigmoid_layer(), ct_sigmoid(x), "Sigmoid"},
        {ct_tanh_layer(), ct_tanh(x), "Tanh"},
        {ct_elu_layer(0.5), ct_elu(x, 0.5), "ELU"},
        {ct_softplus_layer(2, 10), ct_softplus(x, 2, 10), "Softplus"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_not_null(cases[i].m);
        cr_assert_str_eq(ct_module_type(cases[i].m), cases[i].type);
        cr_assert_eq(ct_module_num_parameters(cases[i].m, false), 0);
        assert_tensors_equal(ct_module_forward(cases[i].m, x), cases[i].expect, 0);
        ct_module_free(cases[i].m);
    }
    ct_scope_end();
    ct_clear_error();
    cr_assert_null(ct_leaky_relu_layer(NAN));
    t_assert_error(CT_ERR_VALUE, "ct_leaky_relu_layer", NULL);
    cr_assert_null(ct_gelu_layer((ct_gelu_approx)7));
    t_assert_error(CT_ERR_VALUE, "ct_gelu_layer", NULL);
    cr_assert_null(ct_softplus_layer(0, 20));
    t_assert_error(CT_ERR_VALUE, "beta", NULL);
    cr_assert_null(ct_elu_layer(INFINITY));
    t_assert_error(CT_ERR_VALUE, "alpha", NULL);
    LIVE_END();
}

/* ---- Flatten ------------------------------------------------------------------------- */

Test(modules, flatten) {
    LIVE_BEGIN();
    ct_module *f = ct_flatten_layer(1, -1), *g = ct_flatten_layer(0, 1);
    ct_scope_begin();
    ct_tensor *x = ct_randn((int64_t[]){2, 3, 4, 5}, 4, CT_F32, CT_CPU);
    t_assert_shape(ct_module_forward(f, x), (int64_t[]){2, 60}, 2);
    t_assert_shape(ct_module_forward(g, x), (int64_t[]){6, 4, 5}, 3);
    ct_scope_end();
    ct_module_free(f);
    ct_module_free(g);
    cr_assert_null(ct_flatten_layer(2, 1));
    t_assert_error(CT_ERR_VALUE, "start_dim 2 comes after end_dim 1", NULL);
    LIVE_END();
}

/* ---- Sequential ------------------------------------------------------------------------ */

static ct_module *mlp(void) {
    return ct_sequential(
        4, (ct_module *[]){ct_flatten_layer(1, -1), ct_linear(12, 8, true), ct_relu_layer(), ct_linear(8, 3, true)});
}

Test(modules, sequential_names_forward_and_nesting) {
    LIVE_BEGIN();
    ct_manual_seed(3);
    ct_module *net = mlp();
    cr_assert_not_null(net, "%s", ct_last_error_message());
    cr_assert_str_eq(ct_module_type(net), "Sequential");
    assert_state(net, 4, (const char *[]){"1.weight", "1.bias", "3.weight", "3.bias"},
                 (const char *[]){"[8, 12]", "[8]", "[3, 8]", "[3]"});
    ct_scope_begin();
    ct_tensor *x = ct_randn((int64_t[]){5, 3, 4}, 3, CT_F32, CT_CPU);
    ct_tensor *y = ct_module_forward(net, x);
    ct_tensor *h = ct_flatten(x, 1, -1);
    h = ct_module_forward(ct_module_child(net, "1"), h);
    h = ct_relu(h);
    h = ct_module_forward(ct_module_child(net, "3"), h);
    assert_tensors_equal(y, h, 0);
    ct_scope_end();

    /* nesting: Sequential(Sequential(...), Linear) -> "0.3.weight", "1.weight" */
    ct_module *outer = ct_sequential(2, (ct_module *[]){net, ct_linear(3, 2, false)});
    cr_assert_not_null(outer);
    cr_assert_not_null(ct_module_find(outer, "0.3.weight"));
    cr_assert_not_null(ct_module_find(outer, "1.weight"));
    /* transfer learning: swap the last layer for a new head, in place */
    cr_assert_eq(ct_module_set_child(net, "3", ct_linear(8, 3, true)), CT_OK);
    cr_assert_str_eq(ct_module_type(ct_module_child_at(net, 3)), "Linear");
    cr_assert_eq(ct_sequential_append(outer, ct_tanh_layer()), CT_OK);
    cr_assert_str_eq(ct_module_type(ct_module_child(outer, "2")), "Tanh");
    ct_scope_begin();
    ct_tensor *z = ct_module_forward(outer, ct_randn((int64_t[]){5, 12}, 2, CT_F32, CT_CPU));
    t_assert_shape(z, (int64_t[]){5, 2}, 2);
    cr_assert_eq(ct_backward(ct_sum(z, NULL, 0, false)), CT_OK);
    ct_named_tensors *params = ct_module_parameters(outer);
    cr_assert_eq(params->count, 5);
    for (int i = 0; i < params->count; i++)
        cr_assert_not_null(ct_grad(params->tensors[i]), "%s has a gradient", params->names[i]);
    ct_named_tensors_free(params);
    ct_scope_end();
    ct_module_free(outer);
    LIVE_END();
}

Test(modules, sequential_empty_is_identity_and_errors) {
    LIVE_BEGIN();
    ct_module *id = ct_sequential(0, NULL);
    cr_assert_not_null(id);
    ct_scope_begin();
    ct_tensor *x = ct_requires_grad(ct_randn((int64_t[]){2, 3}, 2, CT_F32, CT_CPU), true);
    ct_tensor *y = ct_module_forward(id, x);
    assert_tensors_equal(y, x, 0);
    cr_assert_neq(y, x, "a new handle");
    cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_OK);
    cr_assert_not_null(ct_grad(x));
    ct_scope_end();

    ct_clear_error();
    cr_assert_eq(ct_sequential_append(id, NULL), CT_ERR_NULL);
    ct_clear_error();
    ct_module *relu = ct_relu_layer();
    cr_assert_eq(ct_sequential_append(relu, ct_module_child_at(id, 0)), CT_ERR_NULL);
    ct_clear_error();
    ct_module *tanh = ct_tanh_layer();
    cr_assert_eq(ct_sequential_append(relu, tanh), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "ReLU, not a Sequential", NULL);
    ct_module_free(tanh);
    ct_module_free(relu);
    ct_module_free(id);

    /* a failed constructor inside the list: the others are freed, the first error kept */
    cr_assert_null(ct_sequential(3, (ct_module *[]){ct_linear(4, 4, true), ct_linear(0, 4, true), ct_relu_layer()}));
    t_assert_error(CT_ERR_VALUE, "ct_linear", "positive", NULL);
    /* a module that already has a parent: refused, not freed (its parent still owns it) */
    ct_module *parent = ct_sequential(1, (ct_module *[]){ct_relu_layer()});
    cr_assert_null(ct_sequential(2, (ct_module *[]){ct_tanh_layer(), ct_module_child(parent, "0")}));
    t_assert_error(CT_ERR_VALUE, "already belongs", NULL);
    cr_assert_str_eq(ct_module_type(ct_module_child(parent, "0")), "ReLU");
    ct_module_free(parent);
    cr_assert_null(ct_sequential(-1, NULL));
    t_assert_error(CT_ERR_VALUE, "n >= 0", NULL);
    cr_assert_null(ct_sequential(2, NULL));
    t_assert_error(CT_ERR_NULL, "NULL array", NULL);
    LIVE_END();
}

Test(modules, bad_arguments) {
    LIVE_BEGIN();
    ct_clear_error();
    cr_assert_null(ct_linear(0, 3, true));
    t_assert_error(CT_ERR_VALUE, "ct_linear", "0 and 3", NULL);
    cr_assert_null(ct_linear(3, -2, false));
    t_assert_error(CT_ERR_VALUE, "ct_linear", NULL);
    ct_module *fc = ct_linear(3, 2, true);
    cr_assert_null(ct_module_forward(fc, NULL));
    t_assert_error(CT_ERR_NULL, "ct_module_forward", NULL);
    ct_module_free(fc);
    LIVE_END();
}

/* ---- BatchNorm ------------------------------------------------------------------------- */

/* Per-channel mean and biased variance of x (N, C, S...) as doubles. */
static void channel_stats(const ct_tensor *x, double *mean, double *var) {
    int64_t N = ct_tensor_size(x, 0), C = ct_tensor_size(x, 1), S = ct_tensor_numel(x) / (N * C);
    double *v = t_values(x);
    for (int64_t c = 0; c < C; c++) {
        double s = 0, ss = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < S; i++)
                s += v[(n * C + c) * S + i];
        mean[c] = s / (double)(N * S);
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < S; i++)
                ss += (v[(n * C + c) * S + i] - mean[c]) * (v[(n * C + c) * S + i] - mean[c]);
        var[c] = ss / (double)(N * S);
    }
    free(v);
}

/* y = (x - mean[c]) / sqrt(var[c] + eps) * w[c] + b[c] */
static double *normalize_ref(const ct_tensor *x, const double *mean, const double *var, const double *w,
                             const double *b, double eps) {
    int64_t N = ct_tensor_size(x, 0), C = ct_tensor_size(x, 1), S = ct_tensor_numel(x) / (N * C);
    double *v = t_values(x);
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t i = 0; i < S; i++) {
                double *e = &v[(n * C + c) * S + i];
                *e = (*e - mean[c]) / sqrt(var[c] + eps) * w[c] + b[c];
            }
    return v;
}

Test(modules, batchnorm2d_state_like_torch) {
    LIVE_BEGIN();
    ct_module *bn = ct_batchnorm2d(16, 1e-5, 0.1);
    cr_assert_not_null(bn, "%s", ct_last_error_message());
    cr_assert_str_eq(ct_module_type(bn), "BatchNorm2d");
    assert_state(bn, 5, (const char *[]){"weight", "bias", "running_mean", "running_var", "num_batches_tracked"},
                 (const char *[]){"[16]", "[16]", "[16]", "[16]", "[]"});
    cr_assert_eq(ct_tensor_dtype(ct_module_buffer(bn, "num_batches_tracked")), CT_I32);
    cr_assert_eq(ct_module_num_parameters(bn, false), 32, "buffers are not parameters");
    double ones[16], zeros[16] = {0};
    for (int i = 0; i < 16; i++)
        ones[i] = 1;
    t_assert_close(ct_module_param(bn, "weight"), ones, 0, 0);
    t_assert_close(ct_module_param(bn, "bias"), zeros, 0, 0);
    t_assert_close(ct_module_buffer(bn, "running_mean"), zeros, 0, 0);
    t_assert_close(ct_module_buffer(bn, "running_var"), ones, 0, 0);
    cr_assert(!ct_tensor_requires_grad(ct_module_buffer(bn, "running_mean")));
    ct_module_free(bn);
    LIVE_END();
}

Test(modules, batchnorm_train_updates_running_stats_eval_uses_them) {
    LIVE_BEGIN();
    ct_manual_seed(4);
    const int C = 3;
    const double eps = 1e-5, momentum = 0.25;
    ct_module *bn = ct_batchnorm2d(C, eps, momentum);
    /* non-trivial affine parameters */
    cr_assert_eq(ct_init_uniform(ct_module_param(bn, "weight"), 0.5, 2), CT_OK);
    cr_assert_eq(ct_init_uniform(ct_module_param(bn, "bias"), -1, 1), CT_OK);
    double *w = t_values(ct_module_param(bn, "weight")), *b = t_values(ct_module_param(bn, "bias"));
    ct_scope_begin();
    ct_tensor *x = ct_add_scalar(ct_mul_scalar(ct_randn((int64_t[]){4, C, 5, 6}, 4, CT_F32, CT_CPU), 3), 2);
    double mean[3], var[3], run_mean[3], run_var[3];
    channel_stats(x, mean, var);
    /* train: batch statistics, running stats updated with the unbiased variance */
    ct_tensor *y = ct_module_forward(bn, x);
    cr_assert_not_null(y, "%s", ct_last_error_message());
    double *ref = normalize_ref(x, mean, var, w, b, eps);
    t_assert_close(y, ref, 1e-4, 1e-4);
    free(ref);
    double n = 4 * 5 * 6;
    for (int c = 0; c < C; c++) {
        run_mean[c] = momentum * mean[c];
        run_var[c] = (1 - momentum) + momentum * var[c] * n / (n - 1);
    }
    t_assert_close(ct_module_buffer(bn, "running_mean"), run_mean, 1e-5, 1e-5);
    t_assert_close(ct_module_buffer(bn, "running_var"), run_var, 1e-5, 1e-5);
    cr_assert_eq(ct_item(ct_module_buffer(bn, "num_batches_tracked")), 1);
    cr_assert_not_null(ct_module_forward(bn, x));
    cr_assert_eq(ct_item(ct_module_buffer(bn, "num_batches_tracked")), 2);
    for (int c = 0; c < C; c++) {
        run_mean[c] = (1 - momentum) * run_mean[c] + momentum * mean[c];
        run_var[c] = (1 - momentum) * run_var[c] + momentum * var[c] * n / (n - 1);
    }
    t_assert_close(ct_module_buffer(bn, "running_mean"), run_mean, 1e-5, 1e-5);
    /* eval: running statistics, nothing changes */
    ct_module_train(bn, false);
    ct_tensor *z = ct_module_forward(bn, x);
    ref = normalize_ref(x, run_mean, run_var, w, b, eps);
    t_assert_close(z, ref, 1e-4, 1e-4);
    free(ref);
    t_assert_close(ct_module_buffer(bn, "running_mean"), run_mean, 1e-5, 1e-5);
    t_assert_close(ct_module_buffer(bn, "running_var"), run_var, 1e-5, 1e-5);
    cr_assert_eq(ct_item(ct_module_buffer(bn, "num_batches_tracked")), 2);
    /* eval also accepts a batch of one */
    t_assert_shape(ct_module_forward(bn, ct_randn((int64_t[]){1, C, 1, 1}, 4, CT_F32, CT_CPU)), (int64_t[]){1, C, 1, 1},
                   4);
    ct_scope_end();
    free(w), free(b);
    ct_module_free(bn);
    LIVE_END();
}

Test(modules, batchnorm1d_shapes_and_gradients) {
    LIVE_BEGIN();
    ct_manual_seed(5);
    ct_module *bn = ct_batchnorm1d(6, 1e-5, 0.1);
    cr_assert_str_eq(ct_module_type(bn), "BatchNorm1d");
    ct_scope_begin();
    ct_tensor *x2 = ct_randn((int64_t[]){8, 6}, 2, CT_F32, CT_CPU);
    ct_tensor *x3 = ct_randn((int64_t[]){8, 6, 3}, 3, CT_F32, CT_CPU);
    assert_tensors_equal(
        ct_module_forward(bn, x2),
        ct_batch_norm(x2, NULL, NULL, ct_module_param(bn, "weight"), ct_module_param(bn, "bias"), true, 0.1, 1e-5),
        1e-6);
    ct_tensor *y = ct_module_forward(bn, x3);
    t_assert_shape(y, (int64_t[]){8, 6, 3}, 3);
    cr_assert_eq(ct_backward(ct_sum(ct_mul(y, x3), NULL, 0, false)), CT_OK);
    cr_assert_not_null(ct_grad(ct_module_param(bn, "weight")));
    cr_assert_not_null(ct_grad(ct_module_param(bn, "bias")));
    cr_assert_null(ct_grad(ct_module_buffer(bn, "running_mean")));
    cr_assert_null(ct_module_forward(bn, ct_randn((int64_t[]){8, 5}, 2, CT_F32, CT_CPU)));
    t_assert_error(CT_ERR_SHAPE, "BatchNorm1d(6)", "[8, 5]", NULL);
    cr_assert_null(ct_module_forward(bn, ct_randn((int64_t[]){2, 6, 2, 2}, 4, CT_F32, CT_CPU)));
    t_assert_error(CT_ERR_SHAPE, "BatchNorm1d(6)", NULL);
    ct_scope_end();
    ct_module_free(bn);
    ct_module *bn2 = ct_batchnorm2d(6, 1e-5, 0.1);
    ct_scope_begin();
    cr_assert_null(ct_module_forward(bn2, ct_randn((int64_t[]){8, 6}, 2, CT_F32, CT_CPU)));
    t_assert_error(CT_ERR_SHAPE, "BatchNorm2d(6)", "(N, C, H, W)", NULL);
    /* training on one value per channel is refused by the op, and nothing is counted */
    cr_assert_null(ct_module_forward(bn2, ct_randn((int64_t[]){1, 6, 1, 1}, 4, CT_F32, CT_CPU)));
    t_assert_error(CT_ERR_SHAPE, "more than one value", NULL);
    cr_assert_eq(ct_item(ct_module_buffer(bn2, "num_batches_tracked")), 0);
    ct_scope_end();
    ct_module_free(bn2);
    LIVE_END();
}

/* PyTorch's momentum=None: after k batches the running statistics are the plain averages of
 * the k batch means and unbiased variances (the initial values are gone after the first),
 * and a count loaded from a checkpoint continues the average. */
Test(modules, batchnorm_cumulative_average) {
    LIVE_BEGIN();
    ct_manual_seed(21);
    const int C = 3, K = 4;
    ct_batchnorm_opts opts = CT_BATCHNORM_OPTS_DEFAULT;
    opts.cumulative_average = true;
    opts.momentum = 7; /* ignored, as PyTorch has no momentum then */
    ct_module *bn = ct_batchnorm2d_ex(C, &opts);
    cr_assert_not_null(bn, "%s", ct_last_error_message());
    double sum_mean[3] = {0}, sum_var[3] = {0}, run_mean[3], run_var[3];
    ct_scope_begin();
    for (int k = 1; k <= K; k++) {
        /* batches of different sizes, means and spreads */
        ct_tensor *x = ct_add_scalar(ct_mul_scalar(ct_randn((int64_t[]){k + 1, C, 3, 2}, 4, CT_F32, CT_CPU), k), -k);
        double mean[3], var[3], n = (k + 1) * 3 * 2;
        channel_stats(x, mean, var);
        cr_assert_not_null(ct_module_forward(bn, x), "%s", ct_last_error_message());
        for (int c = 0; c < C; c++) {
            sum_mean[c] += mean[c];
            sum_var[c] += var[c] * n / (n - 1);
            run_mean[c] = sum_mean[c] / k;
            run_var[c] = sum_var[c] / k;
        }
        t_assert_close(ct_module_buffer(bn, "running_mean"), run_mean, 1e-5, 1e-5);
        t_assert_close(ct_module_buffer(bn, "running_var"), run_var, 1e-5, 1e-5);
        cr_assert_eq(ct_item(ct_module_buffer(bn, "num_batches_tracked")), k);
    }
    /* a refused batch is neither averaged nor counted */
    cr_assert_null(ct_module_forward(bn, ct_randn((int64_t[]){1, C, 1, 1}, 4, CT_F32, CT_CPU)));
    t_assert_error(CT_ERR_SHAPE, "more than one value", NULL);
    cr_assert_eq(ct_item(ct_module_buffer(bn, "num_batches_tracked")), K);
    /* as if loaded: 9 batches seen, so the next one weighs 1/10 */
    cr_assert_eq(ct_fill_(ct_module_buffer(bn, "num_batches_tracked"), 9), CT_OK);
    ct_tensor *x = ct_randn((int64_t[]){5, C, 2, 2}, 4, CT_F32, CT_CPU);
    double mean[3], var[3];
    channel_stats(x, mean, var);
    cr_assert_not_null(ct_module_forward(bn, x));
    for (int c = 0; c < C; c++) {
        run_mean[c] += (mean[c] - run_mean[c]) / 10;
        run_var[c] += (var[c] * 20.0 / 19.0 - run_var[c]) / 10;
    }
    t_assert_close(ct_module_buffer(bn, "running_mean"), run_mean, 1e-5, 1e-5);
    t_assert_close(ct_module_buffer(bn, "running_var"), run_var, 1e-5, 1e-5);
    cr_assert_eq(ct_item(ct_module_buffer(bn, "num_batches_tracked")), 10);
    /* eval changes nothing */
    ct_module_train(bn, false);
    cr_assert_not_null(ct_module_forward(bn, x));
    t_assert_close(ct_module_buffer(bn, "running_mean"), run_mean, 1e-5, 1e-5);
    cr_assert_eq(ct_item(ct_module_buffer(bn, "num_batches_tracked")), 10);
    ct_scope_end();
    ct_module_free(bn);

    /* the exponential mode through the options: momentum 0.5 from ones and zeros */
    opts = CT_BATCHNORM_OPTS_DEFAULT;
    opts.momentum = 0.5;
    bn = ct_batchnorm1d_ex(C, &opts);
    cr_assert_not_null(bn, "%s", ct_last_error_message());
    ct_scope_begin();
    x = ct_randn((int64_t[]){6, C}, 2, CT_F32, CT_CPU);
    channel_stats(x, mean, var);
    cr_assert_not_null(ct_module_forward(bn, x));
    cr_assert_not_null(ct_module_forward(bn, x));
    for (int c = 0; c < C; c++) {
        run_mean[c] = 0.75 * mean[c];
        run_var[c] = 0.25 + 0.75 * var[c] * 6.0 / 5.0;
    }
    t_assert_close(ct_module_buffer(bn, "running_mean"), run_mean, 1e-5, 1e-5);
    t_assert_close(ct_module_buffer(bn, "running_var"), run_var, 1e-5, 1e-5);
    ct_scope_end();
    ct_module_free(bn);
    LIVE_END();
}

/* affine=False: no weight or bias (PyTorch's state names), y = (x - mean) / sqrt(var + eps),
 * and dx the closed-form batch-norm gradient without the scale. */
Test(modules, batchnorm_without_affine) {
    LIVE_BEGIN();
    ct_manual_seed(22);
    const int N = 4, C = 3, S = 10;
    const double eps = 1e-3;
    ct_batchnorm_opts opts = CT_BATCHNORM_OPTS_DEFAULT;
    opts.affine = false;
    opts.eps = eps;
    ct_module *bn = ct_batchnorm1d_ex(C, &opts);
    cr_assert_not_null(bn, "%s", ct_last_error_message());
    assert_state(bn, 3, (const char *[]){"running_mean", "running_var", "num_batches_tracked"},
                 (const char *[]){"[3]", "[3]", "[]"});
    cr_assert_null(ct_module_param(bn, "weight"));
    cr_assert_eq(ct_module_num_parameters(bn, false), 0);
    ct_named_tensors *params = ct_module_parameters(bn);
    cr_assert_eq(params->count, 0);
    ct_named_tensors_free(params);
    ct_scope_begin();
    ct_tensor *x = ct_requires_grad(ct_randn((int64_t[]){N, C, S}, 3, CT_F32, CT_CPU), true);
    ct_tensor *g = ct_randn((int64_t[]){N, C, S}, 3, CT_F32, CT_CPU);
    ct_tensor *y = ct_module_forward(bn, x);
    cr_assert_not_null(y, "%s", ct_last_error_message());
    double mean[3], var[3], ones[3] = {1, 1, 1}, zeros[3] = {0};
    channel_stats(x, mean, var);
    double *ref = normalize_ref(x, mean, var, ones, zeros, eps);
    t_assert_close(y, ref, 1e-5, 1e-5);
    cr_assert_eq(ct_backward_ex(y, g, false), CT_OK, "%s", ct_last_error_message());
    /* dx = invstd (g - mean_c(g) - xhat mean_c(g xhat)) */
    double *gv = t_values(g), dx[N * C * S];
    for (int c = 0; c < C; c++) {
        double mg = 0, mgx = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < S; i++) {
                int64_t at = (n * C + c) * S + i;
                mg += gv[at] / (N * S);
                mgx += gv[at] * ref[at] / (N * S);
            }
        for (int n = 0; n < N; n++)
            for (int i = 0; i < S; i++) {
                int64_t at = (n * C + c) * S + i;
                dx[at] = (gv[at] - mg - ref[at] * mgx) / sqrt(var[c] + eps);
            }
    }
    t_assert_close(ct_grad(x), dx, 1e-4, 1e-4);
    free(ref);
    free(gv);
    ct_scope_end();
    ct_module_free(bn);
    LIVE_END();
}

/* The checkpoint of an affine=False BatchNorm holds only the running statistics and the count,
 * under PyTorch's names: it loads strictly into the same module, not into an affine one. */
Test(modules, batchnorm_without_affine_checkpoint) {
    LIVE_BEGIN();
    char path[64];
    snprintf(path, sizeof path, "/tmp/ct_test_bn_%d.safetensors", (int)getpid());
    ct_batchnorm_opts opts = CT_BATCHNORM_OPTS_DEFAULT;
    opts.affine = false;
    opts.cumulative_average = true;
    ct_module *bn = ct_batchnorm2d_ex(2, &opts);
    ct_scope_begin();
    cr_assert_not_null(ct_module_forward(bn, ct_randn((int64_t[]){3, 2, 2, 2}, 4, CT_F32, CT_CPU)));
    ct_scope_end();
    cr_assert_eq(ct_module_save(bn, path, NULL, NULL, 0), CT_OK, "%s", ct_last_error_message());
    ct_safetensors *f = ct_safetensors_load(path);
    cr_assert_not_null(f, "%s", ct_last_error_message());
    cr_assert_null(ct_safetensors_get(f, "weight"));
    cr_assert_null(ct_safetensors_get(f, "bias"));
    cr_assert_not_null(ct_safetensors_get(f, "running_mean"));
    cr_assert_not_null(ct_safetensors_get(f, "running_var"));
    cr_assert_eq(ct_item(ct_safetensors_get(f, "num_batches_tracked")), 1);
    ct_safetensors_free(f);
    ct_module *same = ct_batchnorm2d_ex(2, &opts), *affine = ct_batchnorm2d(2, 1e-5, 0.1);
    ct_load_opts strict = CT_LOAD_OPTS_STRICT;
    cr_assert_eq(ct_module_load(same, path, &strict, NULL), CT_OK, "%s", ct_last_error_message());
    cr_assert_eq(ct_item(ct_module_buffer(same, "num_batches_tracked")), 1);
    double *rm = t_values(ct_module_buffer(bn, "running_mean"));
    t_assert_close(ct_module_buffer(same, "running_mean"), rm, 0, 0);
    free(rm);
    cr_assert_neq(ct_module_load(affine, path, &strict, NULL), CT_OK);
    t_assert_error(ct_last_error(), "weight", NULL);
    remove(path);
    ct_module_free(bn);
    ct_module_free(same);
    ct_module_free(affine);
    LIVE_END();
}

/* ---- LayerNorm ------------------------------------------------------------------------ */

Test(modules, layernorm) {
    LIVE_BEGIN();
    ct_manual_seed(6);
    ct_module *ln = ct_layernorm((int64_t[]){4, 5}, 2, 1e-5, true);
    cr_assert_not_null(ln, "%s", ct_last_error_message());
    assert_state(ln, 2, (const char *[]){"weight", "bias"}, (const char *[]){"[4, 5]", "[4, 5]"});
    ct_module *plain = ct_layernorm((int64_t[]){5}, 1, 1e-6, false);
    cr_assert_eq(ct_module_num_parameters(plain, false), 0);
    ct_scope_begin();
    ct_tensor *x = ct_randn((int64_t[]){3, 4, 5}, 3, CT_F32, CT_CPU);
    /* by hand, rows of 20 (weight 1, bias 0) */
    double *v = t_values(x);
    for (int r = 0; r < 3; r++) {
        double mean = 0, var = 0;
        for (int i = 0; i < 20; i++)
            mean += v[r * 20 + i] / 20;
        for (int i = 0; i < 20; i++)
            var += (v[r * 20 + i] - mean) * (v[r * 20 + i] - mean) / 20;
        for (int i = 0; i < 20; i++)
            v[r * 20 + i] = (v[r * 20 + i] - mean) / sqrt(var + 1e-5);
    }
    t_assert_close(ct_module_forward(ln, x), v, 1e-4, 1e-4);
    free(v);
    assert_tensors_equal(ct_module_forward(plain, x), ct_layer_norm(x, 1, NULL, NULL, 1e-6), 0);
    cr_assert_null(ct_module_forward(ln, ct_randn((int64_t[]){3, 5, 4}, 3, CT_F32, CT_CPU)));
    t_assert_error(CT_ERR_SHAPE, "LayerNorm([4, 5])", "[3, 5, 4]", NULL);
    ct_scope_end();
    ct_module_free(ln);
    ct_module_free(plain);
    cr_assert_null(ct_layernorm((int64_t[]){4, 0}, 2, 1e-5, true));
    t_assert_error(CT_ERR_VALUE, "positive sizes", NULL);
    cr_assert_null(ct_layernorm(NULL, 1, 1e-5, true));
    t_assert_error(CT_ERR_NULL, "ct_layernorm", NULL);
    cr_assert_null(ct_layernorm((int64_t[]){4}, 0, 1e-5, true));
    t_assert_error(CT_ERR_VALUE, "1 to 8 dims", NULL);
    cr_assert_null(ct_layernorm((int64_t[]){4}, 1, -1, true));
    t_assert_error(CT_ERR_VALUE, "eps", NULL);
    LIVE_END();
}

/* ---- convolution ---------------------------------------------------------------------- */

Test(modules, conv2d_like_torch) {
    LIVE_BEGIN();
    ct_manual_seed(11);
    ct_conv2d_opts o = CT_CONV2D_OPTS_DEFAULT;
    o.padding[0] = o.padding[1] = 1;
    ct_module *conv = ct_conv2d_layer(1, 32, 3, &o, true);
    cr_assert_not_null(conv, "%s", ct_last_error_message());
    cr_assert_str_eq(ct_module_type(conv), "Conv2d");
    assert_state(conv, 2, (const char *[]){"weight", "bias"}, (const char *[]){"[32, 1, 3, 3]", "[32]"});
    cr_assert_eq(ct_module_num_parameters(conv, false), 320);
    assert_all_within(ct_module_param(conv, "weight"), 1.0 / 3);
    assert_all_within(ct_module_param(conv, "bias"), 1.0 / 3);
    ct_scope_begin();
    ct_tensor *x = ct_randn((int64_t[]){2, 1, 6, 5}, 4, CT_F32, CT_CPU);
    ct_tensor *y = ct_module_forward(conv, x);
    t_assert_shape(y, (int64_t[]){2, 32, 6, 5}, 4);
    assert_tensors_equal(y, ct_conv2d(x, ct_module_param(conv, "weight"), ct_module_param(conv, "bias"), &o), 0);
    cr_assert_null(ct_module_forward(conv, ct_randn((int64_t[]){2, 3, 6, 5}, 4, CT_F32, CT_CPU)));
    t_assert_error(CT_ERR_SHAPE, "Conv2d(1, 32)", "[2, 3, 6, 5]", "(N, 1, H, W)", NULL);
    ct_scope_end();
    ct_module_free(conv);

    /* grouped, strided, dilated, no bias: nn.Conv2d(8, 16, 3, stride=2, dilation=2, groups=4, bias=False) */
    o = CT_CONV2D_OPTS_DEFAULT;
    o.stride[0] = o.stride[1] = 2;
    o.dilation[0] = o.dilation[1] = 2;
    o.groups = 4;
    conv = ct_conv2d_layer(8, 16, 3, &o, false);
    assert_state(conv, 1, (const char *[]){"weight"}, (const char *[]){"[16, 2, 3, 3]"});
    assert_all_within(ct_module_param(conv, "weight"), 1 / sqrt(18.0));
    ct_scope_begin();
    x = ct_randn((int64_t[]){1, 8, 9, 9}, 4, CT_F32, CT_CPU);
    y = ct_module_forward(conv, x);
    t_assert_shape(y, (int64_t[]){1, 16, 3, 3}, 4);
    assert_tensors_equal(y, ct_conv2d(x, ct_module_param(conv, "weight"), NULL, &o), 0);
    ct_scope_end();
    ct_module_free(conv);
    LIVE_END();
}

Test(modules, conv_transpose2d_like_torch) {
    LIVE_BEGIN();
    ct_manual_seed(12);
    ct_conv_transpose2d_opts o = CT_CONV_TRANSPOSE2D_OPTS_DEFAULT;
    o.stride[0] = o.stride[1] = 2;
    o.padding[0] = o.padding[1] = 1;
    ct_module *up = ct_conv_transpose2d_layer(16, 8, 4, &o, true);
    cr_assert_not_null(up, "%s", ct_last_error_message());
    cr_assert_str_eq(ct_module_type(up), "ConvTranspose2d");
    assert_state(up, 2, (const char *[]){"weight", "bias"}, (const char *[]){"[16, 8, 4, 4]", "[8]"});
    /* PyTorch's fan_in of this weight is size(1) * 16 = 128 */
    assert_all_within(ct_module_param(up, "weight"), 1 / sqrt(128.0));
    assert_all_within(ct_module_param(up, "bias"), 1 / sqrt(128.0));
    ct_scope_begin();
    ct_tensor *x = ct_randn((int64_t[]){2, 16, 5, 4}, 4, CT_F32, CT_CPU);
    ct_tensor *y = ct_module_forward(up, x);
    t_assert_shape(y, (int64_t[]){2, 8, 10, 8}, 4);
    assert_tensors_equal(y, ct_conv_transpose2d(x, ct_module_param(up, "weight"), ct_module_param(up, "bias"), &o), 0);
    ct_scope_end();
    ct_module_free(up);
    o.output_padding[0] = 2;
    cr_assert_null(ct_conv_transpose2d_layer(16, 8, 4, &o, true));
    t_assert_error(CT_ERR_VALUE, "output_padding", NULL);
    LIVE_END();
}

/* ---- pooling -------------------------------------------------------------------------- */

Test(modules, pooling) {
    LIVE_BEGIN();
    ct_manual_seed(13);
    ct_module *maxp = ct_maxpool2d_layer(NULL);
    ct_pool2d_opts o = CT_POOL2D_OPTS_DEFAULT;
    o.kernel[0] = o.kernel[1] = 3;
    o.stride[0] = o.stride[1] = 1;
    o.padding[0] = o.padding[1] = 1;
    o.count_include_pad = false;
    ct_module *avgp = ct_avgpool2d_layer(&o);
    ct_module *gap = ct_global_avgpool2d_layer();
    cr_assert(maxp && avgp && gap, "%s", ct_last_error_message());
    cr_assert_str_eq(ct_module_type(maxp), "MaxPool2d");
    cr_assert_str_eq(ct_module_type(avgp), "AvgPool2d");
    cr_assert_str_eq(ct_module_type(gap), "GlobalAvgPool2d");
    ct_scope_begin();
    ct_tensor *x = ct_randn((int64_t[]){2, 3, 8, 7}, 4, CT_F32, CT_CPU);
    ct_tensor *y = ct_module_forward(maxp, x);
    t_assert_shape(y, (int64_t[]){2, 3, 4, 3}, 4);
    assert_tensors_equal(y, ct_max_pool2d(x, NULL, NULL), 0);
    y = ct_module_forward(avgp, x);
    t_assert_shape(y, (int64_t[]){2, 3, 8, 7}, 4);
    assert_tensors_equal(y, ct_avg_pool2d(x, &o), 0);
    y = ct_module_forward(gap, x);
    t_assert_shape(y, (int64_t[]){2, 3, 1, 1}, 4);
    assert_tensors_equal(y, ct_mean(x, (int[]){2, 3}, 2, true), 1e-6);
    ct_scope_end();
    ct_module_free(maxp);
    ct_module_free(avgp);
    ct_module_free(gap);

    ct_pool2d_opts bad = CT_POOL2D_OPTS_DEFAULT;
    bad.kernel[1] = 0;
    cr_assert_null(ct_maxpool2d_layer(&bad));
    t_assert_error(CT_ERR_VALUE, "ct_maxpool2d_layer", "kernel (2, 0)", NULL);
    bad = CT_POOL2D_OPTS_DEFAULT;
    bad.padding[0] = 2;
    cr_assert_null(ct_maxpool2d_layer(&bad));
    t_assert_error(CT_ERR_VALUE, "padding <= kernel / 2", NULL);
    bad = CT_POOL2D_OPTS_DEFAULT;
    bad.dilation[0] = 2;
    cr_assert_null(ct_avgpool2d_layer(&bad));
    t_assert_error(CT_ERR_VALUE, "dilation 1", NULL);
    LIVE_END();
}

/* Non-square geometry: a 3x5 kernel with a different stride, padding and dilation per axis,
 * in Conv2d, ConvTranspose2d, MaxPool2d and AvgPool2d, against the ops and PyTorch's shapes. */
Test(modules, non_square_kernels) {
    LIVE_BEGIN();
    ct_manual_seed(23);
    const int kernel[2] = {3, 5};
    ct_conv2d_opts o = CT_CONV2D_OPTS_DEFAULT;
    o.stride[0] = 1, o.stride[1] = 2;
    o.padding[0] = 2, o.padding[1] = 1;
    o.dilation[0] = 2, o.dilation[1] = 1;
    o.groups = 2;
    /* nn.Conv2d(4, 6, (3, 5), stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2) */
    ct_module *conv = ct_conv2d_layer_ex(4, 6, kernel, &o, true);
    cr_assert_not_null(conv, "%s", ct_last_error_message());
    assert_state(conv, 2, (const char *[]){"weight", "bias"}, (const char *[]){"[6, 2, 3, 5]", "[6]"});
    assert_all_within(ct_module_param(conv, "weight"), 1 / sqrt(2.0 * 3 * 5));
    ct_conv_transpose2d_opts to = CT_CONV_TRANSPOSE2D_OPTS_DEFAULT;
    to.stride[0] = 2, to.stride[1] = 1;
    to.padding[0] = 1, to.padding[1] = 2;
    to.output_padding[0] = 1;
    /* nn.ConvTranspose2d(4, 6, (3, 5), stride=(2, 1), padding=(1, 2), output_padding=(1, 0)) */
    ct_module *up = ct_conv_transpose2d_layer_ex(4, 6, kernel, &to, false);
    cr_assert_not_null(up, "%s", ct_last_error_message());
    assert_state(up, 1, (const char *[]){"weight"}, (const char *[]){"[4, 6, 3, 5]"});
    assert_all_within(ct_module_param(up, "weight"), 1 / sqrt(6.0 * 3 * 5));
    ct_pool2d_opts po = CT_POOL2D_OPTS_DEFAULT;
    po.kernel[0] = 3, po.kernel[1] = 5;
    po.stride[0] = 2, po.stride[1] = 1;
    po.padding[0] = 1, po.padding[1] = 2;
    ct_module *maxp = ct_maxpool2d_layer(&po), *avgp = ct_avgpool2d_layer(&po);
    cr_assert(maxp && avgp, "%s", ct_last_error_message());

    ct_scope_begin();
    ct_tensor *x = ct_randn((int64_t[]){2, 4, 9, 11}, 4, CT_F32, CT_CPU);
    /* oH = (9 + 4 - 2 * 2 - 1) / 1 + 1 = 9, oW = (11 + 2 - 4 - 1) / 2 + 1 = 5 */
    ct_tensor *y = ct_module_forward(conv, x);
    t_assert_shape(y, (int64_t[]){2, 6, 9, 5}, 4);
    assert_tensors_equal(y, ct_conv2d(x, ct_module_param(conv, "weight"), ct_module_param(conv, "bias"), &o), 0);
    /* oH = 8 * 2 - 2 + 2 + 1 + 1 = 18, oW = 10 - 4 + 4 + 1 = 11 */
    y = ct_module_forward(up, x);
    t_assert_shape(y, (int64_t[]){2, 6, 18, 11}, 4);
    assert_tensors_equal(y, ct_conv_transpose2d(x, ct_module_param(up, "weight"), NULL, &to), 0);
    /* oH = (9 + 2 - 3) / 2 + 1 = 5, oW = (11 + 4 - 5) / 1 + 1 = 11 */
    y = ct_module_forward(maxp, x);
    t_assert_shape(y, (int64_t[]){2, 4, 5, 11}, 4);
    assert_tensors_equal(y, ct_max_pool2d(x, &po, NULL), 0);
    y = ct_module_forward(avgp, x);
    t_assert_shape(y, (int64_t[]){2, 4, 5, 11}, 4);
    assert_tensors_equal(y, ct_avg_pool2d(x, &po), 0);
    ct_scope_end();

    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    ct_module *net = ct_sequential(2, (ct_module *[]){conv, maxp});
    cr_assert_eq(ct_module_summary(net, (int64_t[]){1, 4, 9, 11}, 4, CT_F32, out), CT_OK, "%s",
                 ct_last_error_message());
    fclose(out);
    cr_assert(
        strstr(text, "Conv2d(4, 6, kernel_size=(3, 5), stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2)"),
        "%s", text);
    cr_assert(strstr(text, "MaxPool2d(kernel_size=(3, 5), stride=(2, 1), padding=(1, 2))"), "%s", text);
    free(text);
    ct_module_free(net);
    ct_module_free(up);
    ct_module_free(avgp);
    LIVE_END();
}

/* ---- Dropout -------------------------------------------------------------------------- */

Test(modules, dropout_train_and_eval) {
    LIVE_BEGIN();
    ct_module *drop = ct_dropout_layer(0.25);
    cr_assert_not_null(drop);
    ct_scope_begin();
    ct_tensor *x = ct_ones((int64_t[]){200, 100}, 2, CT_F32, CT_CPU);
    ct_manual_seed(14);
    ct_tensor *y = ct_module_forward(drop, x);
    double *v = t_values(y);
    int zeros = 0;
    for (int i = 0; i < 20000; i++) {
        if (v[i] == 0)
            zeros++;
        else
            cr_assert_float_eq(v[i], 1 / 0.75, 1e-6, "kept elements are scaled by 1 / (1 - p)");
    }
    free(v);
    cr_assert(fabs(zeros / 20000.0 - 0.25) < 0.02, "dropped fraction %g", zeros / 20000.0);
    ct_manual_seed(14);
    assert_tensors_equal(y, ct_dropout(x, 0.25, true), 0);
    /* eval: the identity, no random numbers drawn */
    ct_module_train(drop, false);
    uint64_t offset = ct_random_offset();
    ct_tensor *r = ct_randn((int64_t[]){3, 4}, 2, CT_F32, CT_CPU);
    assert_tensors_equal(ct_module_forward(drop, r), r, 0);
    cr_assert_eq(ct_random_offset(), offset + 3, "only randn's 12 words were drawn");
    ct_scope_end();
    ct_module_free(drop);
    cr_assert_null(ct_dropout_layer(1.0));
    t_assert_error(CT_ERR_VALUE, "ct_dropout_layer", "[0, 1)", NULL);
    cr_assert_null(ct_dropout_layer(-0.1));
    t_assert_error(CT_ERR_VALUE, "[0, 1)", NULL);
    cr_assert_null(ct_dropout_layer(NAN));
    t_assert_error(CT_ERR_VALUE, "[0, 1)", NULL);
    LIVE_END();
}

/* ---- Embedding ------------------------------------------------------------------------- */

Test(modules, embedding) {
    LIVE_BEGIN();
    ct_manual_seed(15);
    ct_module *emb = ct_embedding_layer(400, 50, 3);
    cr_assert_not_null(emb, "%s", ct_last_error_message());
    cr_assert_str_eq(ct_module_type(emb), "Embedding");
    assert_state(emb, 1, (const char *[]){"weight"}, (const char *[]){"[400, 50]"});
    ct_tensor *w = ct_module_param(emb, "weight");
    double *wv = t_values(w);
    double mean = 0, var = 0;
    for (int i = 0; i < 400 * 50; i++)
        mean += wv[i] / (400 * 50);
    for (int i = 0; i < 400 * 50; i++)
        var += (wv[i] - mean) * (wv[i] - mean) / (400 * 50 - 1);
    cr_assert(fabs(mean) < 0.03 && fabs(sqrt(var) - 1) < 0.03, "N(0, 1): mean %g std %g", mean, sqrt(var));
    for (int j = 0; j < 50; j++)
        cr_assert_eq(wv[3 * 50 + j], 0.0, "the padding row is zero");
    ct_scope_begin();
    ct_tensor *idx = ct_from_host((int32_t[]){5, 3, 399, 5, 0, 3}, (int64_t[]){2, 3}, 2, CT_I32, CT_CPU);
    ct_tensor *y = ct_module_forward(emb, idx);
    t_assert_shape(y, (int64_t[]){2, 3, 50}, 3);
    double *yv = t_values(y);
    const int rows[6] = {5, 3, 399, 5, 0, 3};
    for (int r = 0; r < 6; r++)
        for (int j = 0; j < 50; j++)
            cr_assert_eq(yv[r * 50 + j], wv[rows[r] * 50 + j]);
    free(yv);
    cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_OK);
    double *g = t_values(ct_grad(w));
    cr_assert_eq(g[5 * 50], 2.0, "row 5 looked up twice");
    cr_assert_eq(g[3 * 50], 0.0, "no gradient for the padding row");
    cr_assert_eq(g[1 * 50], 0.0);
    free(g);
    ct_scope_end();
    free(wv);
    ct_module_free(emb);
    ct_module *plain = ct_embedding_layer(4, 2, -1);
    cr_assert_not_null(plain);
    ct_module_free(plain);
    cr_assert_null(ct_embedding_layer(10, 4, 10));
    t_assert_error(CT_ERR_VALUE, "ct_embedding_layer", "padding_idx 10", NULL);
    cr_assert_null(ct_embedding_layer(0, 4, -1));
    t_assert_error(CT_ERR_VALUE, "positive sizes", NULL);
    cr_assert_null(ct_embedding_layer(10, 4, -2));
    t_assert_error(CT_ERR_VALUE, "padding_idx -2", NULL);
    LIVE_END();
}

/* ---- the residual block ------------------------------------------------------------------ */

Test(modules, residual_block_names_like_torchvision) {
    LIVE_BEGIN();
    ct_module *same = ct_residual_block(8, 8, 1);
    cr_assert_not_null(same, "%s", ct_last_error_message());
    cr_assert_str_eq(ct_module_type(same), "BasicBlock");
    const char *bn_names[] = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"};
    const char *names[11], *shapes[11];
    char buf[11][48];
    int k = 0;
    names[k] = "conv1.weight", shapes[k++] = "[8, 8, 3, 3]";
    for (int i = 0; i < 5; i++) {
        snprintf(buf[k], sizeof buf[k], "bn1.%s", bn_names[i]);
        names[k] = buf[k], shapes[k++] = i == 4 ? "[]" : "[8]";
    }
    names[k] = "conv2.weight", shapes[k++] = "[8, 8, 3, 3]";
    for (int i = 0; i < 4; i++) {
        snprintf(buf[k], sizeof buf[k], "bn2.%s", bn_names[i]);
        names[k] = buf[k], shapes[k++] = "[8]";
    }
    ct_named_tensors *state = ct_module_state(same);
    cr_assert_eq(state->count, 12);
    for (int i = 0; i < 11; i++) {
        cr_assert_str_eq(state->names[i], names[i]);
        cr_assert_str_eq(ct_shape_str(state->tensors[i]), shapes[i]);
    }
    cr_assert_str_eq(state->names[11], "bn2.num_batches_tracked");
    ct_named_tensors_free(state);
    cr_assert_null(ct_module_child(same, "downsample"));
    ct_module_free(same);

    ct_module *down = ct_residual_block(8, 16, 2);
    cr_assert_not_null(down);
    cr_assert_str_eq(ct_shape_str(ct_module_find(down, "conv1.weight")), "[16, 8, 3, 3]");
    cr_assert_str_eq(ct_shape_str(ct_module_find(down, "conv2.weight")), "[16, 16, 3, 3]");
    cr_assert_str_eq(ct_shape_str(ct_module_find(down, "downsample.0.weight")), "[16, 8, 1, 1]");
    cr_assert_null(ct_module_find(down, "downsample.0.bias"), "torchvision's convs have no bias");
    cr_assert_not_null(ct_module_find(down, "downsample.1.running_var"));
    cr_assert_str_eq(ct_module_type(ct_module_child(ct_module_child(down, "downsample"), "1")), "BatchNorm2d");
    /* torchvision's BasicBlock(8, 16, stride=2, downsample=...): convs, BN affine pairs, 1x1 projection */
    int64_t expect = 16 * 8 * 9 + 2 * 16 + 16 * 16 * 9 + 2 * 16 + 16 * 8 + 2 * 16;
    cr_assert_eq(ct_module_num_parameters(down, false), expect);
    ct_module_free(down);
    /* channels differ at stride 1: a 1x1 projection too */
    ct_module *proj = ct_residual_block(4, 8, 1);
    cr_assert_not_null(ct_module_child(proj, "downsample"));
    ct_module_free(proj);
    LIVE_END();
}

static ct_tensor *bn_eval(ct_module *bn, ct_tensor *x) {
    return ct_batch_norm(x, ct_module_buffer(bn, "running_mean"), ct_module_buffer(bn, "running_var"),
                         ct_module_param(bn, "weight"), ct_module_param(bn, "bias"), false, 0.1, 1e-5);
}

Test(modules, residual_block_forward_shapes_and_gradients) {
    LIVE_BEGIN();
    ct_manual_seed(16);
    ct_module *same = ct_residual_block(4, 4, 1), *down = ct_residual_block(4, 8, 2);
    ct_scope_begin();
    ct_tensor *x = ct_randn((int64_t[]){2, 4, 7, 7}, 4, CT_F32, CT_CPU);
    t_assert_shape(ct_module_forward(same, x), (int64_t[]){2, 4, 7, 7}, 4);
    t_assert_shape(ct_module_forward(down, x), (int64_t[]){2, 8, 4, 4}, 4);
    /* eval mode against the composition of ops */
    ct_module_train(down, false);
    ct_conv2d_opts s2 = CT_CONV2D_OPTS_DEFAULT, p1 = CT_CONV2D_OPTS_DEFAULT;
    s2.stride[0] = s2.stride[1] = 2;
    s2.padding[0] = s2.padding[1] = 1;
    p1.padding[0] = p1.padding[1] = 1;
    ct_conv2d_opts proj = CT_CONV2D_OPTS_DEFAULT;
    proj.stride[0] = proj.stride[1] = 2;
    ct_tensor *h = ct_conv2d(x, ct_module_find(down, "conv1.weight"), NULL, &s2);
    h = ct_relu(bn_eval(ct_module_child(down, "bn1"), h));
    h = bn_eval(ct_module_child(down, "bn2"), ct_conv2d(h, ct_module_find(down, "conv2.weight"), NULL, &p1));
    ct_module *ds = ct_module_child(down, "downsample");
    ct_tensor *sc =
        bn_eval(ct_module_child(ds, "1"), ct_conv2d(x, ct_module_find(down, "downsample.0.weight"), NULL, &proj));
    assert_tensors_equal(ct_module_forward(down, x), ct_relu(ct_add(h, sc)), 1e-5);
    ct_module_train(down, true);
    /* train mode: every parameter receives a gradient */
    ct_module *both[2] = {same, down};
    for (int b = 0; b < 2; b++) {
        ct_tensor *y = ct_module_forward(both[b], x);
        cr_assert_eq(ct_backward(ct_sum(ct_mul(y, y), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        ct_named_tensors *params = ct_module_parameters(both[b]);
        cr_assert_eq(params->count, b == 0 ? 6 : 9);
        for (int i = 0; i < params->count; i++) {
            ct_tensor *g = ct_grad(params->tensors[i]);
            cr_assert_not_null(g, "%s has a gradient", params->names[i]);
            double *gv = t_values(g);
            double norm = 0;
            for (int64_t j = 0; j < ct_tensor_numel(g); j++)
                norm += gv[j] * gv[j];
            free(gv);
            cr_assert(norm > 0, "%s's gradient is not zero", params->names[i]);
        }
        ct_named_tensors_free(params);
    }
    cr_assert_eq(ct_item(ct_module_find(down, "downsample.1.num_batches_tracked")), 2);
    ct_scope_end();
    ct_module_free(same);
    ct_module_free(down);
    cr_assert_null(ct_residual_block(4, 8, 0));
    t_assert_error(CT_ERR_VALUE, "ct_residual_block", "stride 0", NULL);
    LIVE_END();
}

/* ---- a small CNN: summary and freezing -------------------------------------------------- */

static ct_module *conv_bn_relu_pool(int64_t in, int64_t out) {
    ct_conv2d_opts o = CT_CONV2D_OPTS_DEFAULT;
    o.padding[0] = o.padding[1] = 1;
    return ct_sequential(4, (ct_module *[]){ct_conv2d_layer(in, out, 3, &o, true), ct_batchnorm2d(out, 1e-5, 0.1),
                                            ct_relu_layer(), ct_maxpool2d_layer(NULL)});
}

/* features (conv-BN-ReLU-pool x2), then the head: flatten, dropout, linear */
static ct_module *small_cnn(void) {
    return ct_sequential(2, (ct_module *[]){
                                ct_sequential(2, (ct_module *[]){conv_bn_relu_pool(1, 32), conv_bn_relu_pool(32, 64)}),
                                ct_sequential(3, (ct_module *[]){ct_flatten_layer(1, -1), ct_dropout_layer(0.5),
                                                                 ct_linear(64 * 7 * 7, 10, true)}),
                            });
}

Test(modules, summary_of_a_small_cnn) {
    LIVE_BEGIN();
    ct_module *net = small_cnn();
    cr_assert_not_null(net, "%s", ct_last_error_message());
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    cr_assert_eq(ct_module_summary(net, (int64_t[]){2, 1, 28, 28}, 4, CT_F32, out), CT_OK, "%s",
                 ct_last_error_message());
    fclose(out);
    const char *expect[] = {
        "0.0.0",
        "Conv2d(1, 32, kernel_size=3",
        "[2, 32, 28, 28]",
        "320",
        "0.0.1",
        "BatchNorm2d(32, eps=1e-05, momentum=0.1)",
        "64",
        "0.0.2",
        "ReLU",
        "0.0.3",
        "MaxPool2d(kernel_size=2, stride=2",
        "[2, 32, 14, 14]",
        "0.1.0",
        "Conv2d(32, 64, kernel_size=3",
        "[2, 64, 14, 14]",
        "18496",
        "0.1.3",
        "[2, 64, 7, 7]",
        "1.0",
        "Flatten(start_dim=1, end_dim=-1)",
        "[2, 3136]",
        "1.1",
        "Dropout(p=0.5)",
        "1.2",
        "Linear(3136, 10)",
        "[2, 10]",
        "31370",
        "Total params: 50378",
        "Trainable params: 50378",
    };
    for (size_t i = 0; i < sizeof expect / sizeof expect[0]; i++)
        cr_assert(strstr(text, expect[i]), "the summary shows \"%s\":\n%s", expect[i], text);
    cr_assert_eq(ct_item(ct_module_find(net, "0.0.1.num_batches_tracked")), 0, "the summary runs in eval mode");
    cr_assert(ct_module_is_training(ct_module_child(net, "1")), "and restores train mode");
    free(text);
    ct_module_free(net);
    LIVE_END();
}

Test(modules, freezing_the_features_leaves_only_the_head_trainable) {
    LIVE_BEGIN();
    ct_manual_seed(17);
    ct_module *net = small_cnn();
    int64_t head = 64 * 7 * 7 * 10 + 10;
    cr_assert_eq(ct_module_freeze(net, "0.", true), 8, "2 x (conv weight, bias, bn weight, bias)");
    cr_assert_eq(ct_module_num_parameters(net, true), head);
    ct_named_tensors *trainable = ct_module_parameters(net);
    cr_assert_eq(trainable->count, 2);
    cr_assert_str_eq(trainable->names[0], "1.2.weight");
    cr_assert_str_eq(trainable->names[1], "1.2.bias");
    ct_named_tensors_free(trainable);
    ct_scope_begin();
    ct_tensor *x = ct_randn((int64_t[]){4, 1, 28, 28}, 4, CT_F32, CT_CPU);
    cr_assert_eq(ct_backward(ct_sum(ct_module_forward(net, x), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
    ct_scope_end();
    ct_named_tensors *all = ct_module_state(net);
    for (int i = 0; i < all->count; i++) {
        bool is_head = strncmp(all->names[i], "1.", 2) == 0;
        if (is_head)
            cr_assert_not_null(ct_grad(all->tensors[i]), "%s receives a gradient", all->names[i]);
        else
            cr_assert_null(ct_grad(all->tensors[i]), "%s is frozen", all->names[i]);
    }
    ct_named_tensors_free(all);
    cr_assert_eq(ct_module_freeze(net, "", false), 8);
    cr_assert_eq(ct_module_num_parameters(net, true), ct_module_num_parameters(net, false));
    ct_module_free(net);
    LIVE_END();
}

Test(modules, bad_conv_and_norm_arguments) {
    LIVE_BEGIN();
    ct_clear_error();
    cr_assert_null(ct_conv2d_layer(0, 4, 3, NULL, true));
    t_assert_error(CT_ERR_VALUE, "ct_conv2d_layer", "positive", NULL);
    cr_assert_null(ct_conv2d_layer(3, 4, 0, NULL, true));
    t_assert_error(CT_ERR_VALUE, "kernel 0", NULL);
    ct_conv2d_opts o = CT_CONV2D_OPTS_DEFAULT;
    o.groups = 2;
    cr_assert_null(ct_conv2d_layer(3, 4, 3, &o, true));
    t_assert_error(CT_ERR_VALUE, "groups 2 must divide in_channels 3", NULL);
    o = CT_CONV2D_OPTS_DEFAULT;
    o.stride[1] = 0;
    cr_assert_null(ct_conv2d_layer(3, 4, 3, &o, true));
    t_assert_error(CT_ERR_VALUE, "stride (1, 0)", NULL);
    o = CT_CONV2D_OPTS_DEFAULT;
    o.padding[0] = -1;
    cr_assert_null(ct_conv2d_layer(3, 4, 3, &o, true));
    t_assert_error(CT_ERR_VALUE, "padding (-1, 0)", NULL);
    cr_assert_null(ct_conv_transpose2d_layer(4, 0, 3, NULL, true));
    t_assert_error(CT_ERR_VALUE, "ct_conv_transpose2d_layer", NULL);
    cr_assert_null(ct_batchnorm2d(0, 1e-5, 0.1));
    t_assert_error(CT_ERR_VALUE, "ct_batchnorm2d", "num_features > 0", NULL);
    cr_assert_null(ct_batchnorm1d(4, -1, 0.1));
    t_assert_error(CT_ERR_VALUE, "ct_batchnorm1d", "eps -1", NULL);
    cr_assert_null(ct_batchnorm2d(4, 1e-5, 1.5));
    t_assert_error(CT_ERR_VALUE, "momentum 1.5", NULL);
    cr_assert_null(ct_batchnorm2d(4, NAN, 0.1));
    t_assert_error(CT_ERR_VALUE, "eps nan", NULL);
    ct_batchnorm_opts bo = CT_BATCHNORM_OPTS_DEFAULT;
    bo.momentum = -0.5;
    cr_assert_null(ct_batchnorm1d_ex(4, &bo));
    t_assert_error(CT_ERR_VALUE, "ct_batchnorm1d", "momentum -0.5", NULL);
    bo.eps = -1;
    bo.cumulative_average = true;
    cr_assert_null(ct_batchnorm2d_ex(4, &bo));
    t_assert_error(CT_ERR_VALUE, "ct_batchnorm2d", "eps -1", NULL);
    ct_module *bn = ct_batchnorm2d_ex(4, NULL);
    cr_assert_not_null(bn, "NULL options are the defaults: %s", ct_last_error_message());
    cr_assert_eq(ct_module_num_parameters(bn, false), 8);
    ct_module_free(bn);
    cr_assert_null(ct_conv2d_layer_ex(3, 4, NULL, NULL, true));
    t_assert_error(CT_ERR_NULL, "ct_conv2d_layer_ex", "kernel", NULL);
    cr_assert_null(ct_conv2d_layer_ex(3, 4, (const int[]){3, 0}, NULL, true));
    t_assert_error(CT_ERR_VALUE, "kernel (3, 0)", NULL);
    cr_assert_null(ct_conv_transpose2d_layer_ex(3, 4, NULL, NULL, true));
    t_assert_error(CT_ERR_NULL, "ct_conv_transpose2d_layer_ex", "kernel", NULL);
    cr_assert_null(ct_conv_transpose2d_layer_ex(3, 4, (const int[]){-1, 5}, NULL, true));
    t_assert_error(CT_ERR_VALUE, "ct_conv_transpose2d_layer", "kernel (-1, 5)", NULL);
    LIVE_END();
}
