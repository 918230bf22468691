/* Built-in modules: forward against op compositions, PyTorch's names and shapes, modes,
 * initialization, containers, freezing, summary, bad arguments. Every test frees its modules
 * and checks that no tensor outlives it. */
#include "tests/common.h"
#include "ctensor/init.h"
#include "ctensor/modules.h"

#include <string.h>

/* Start / end of a leak-checked test. */
#define LIVE_BEGIN() int64_t live_at_start_ = ct_live_tensors()
#define LIVE_END()                                                                                                 \
    cr_assert_eq(ct_live_tensors(), live_at_start_, "leaked %lld tensors",                                         \
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
    return ct_sequential(4, (ct_module *[]){ct_flatten_layer(1, -1), ct_linear(12, 8, true), ct_relu_layer(),
                                            ct_linear(8, 3, true)});
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
