/* The module core: registration, dotted paths, traversal, freezing, modes, summary. */
#include "tests/common.h"
#include "ctensor/nn.h"

#include <string.h>

/* y = x @ w + b, written as a custom module. */
static ct_tensor *affine_forward(ct_module *m, ct_tensor *x) {
    return ct_add(ct_matmul(x, ct_module_param(m, "weight")), ct_module_param(m, "bias"));
}
static void affine_describe(const ct_module *m, char *buf, size_t n) {
    const int64_t *s = ct_tensor_shape(ct_module_param(m, "weight"));
    snprintf(buf, n, "%lld, %lld", (long long)s[0], (long long)s[1]);
}
static const ct_module_vtable affine_vt = {"Affine", affine_forward, affine_describe, NULL};

static ct_module *affine(int64_t in, int64_t out) {
    ct_module *m = ct_module_create(&affine_vt, NULL);
    cr_assert_not_null(m);
    cr_assert_eq(ct_module_add_parameter(m, "weight", ct_randn((int64_t[]){in, out}, 2, CT_F32, CT_CPU)), CT_OK);
    cr_assert_eq(ct_module_add_parameter(m, "bias", ct_zeros((int64_t[]){out}, 1, CT_F32, CT_CPU)), CT_OK);
    cr_assert_eq(ct_module_add_buffer(m, "calls", ct_zeros((int64_t[]){1}, 1, CT_I32, CT_CPU)), CT_OK);
    return m;
}

static ct_tensor *mlp_forward(ct_module *m, ct_tensor *x) {
    ct_tensor *h = ct_relu(ct_module_forward(ct_module_child(m, "fc1"), x));
    return ct_module_forward(ct_module_child(m, "fc2"), h);
}
static const ct_module_vtable mlp_vt = {"MLP", mlp_forward, NULL, NULL};

static ct_module *mlp(void) {
    ct_module *m = ct_module_create(&mlp_vt, NULL);
    cr_assert_eq(ct_module_add_child(m, "fc1", affine(4, 8)), CT_OK);
    cr_assert_eq(ct_module_add_child(m, "fc2", affine(8, 3)), CT_OK);
    return m;
}

Test(module, paths_traversal_and_state) {
    int64_t before = ct_live_tensors();
    ct_manual_seed(1);
    ct_module *m = mlp();
    ct_named_tensors *params = ct_module_parameters(m);
    cr_assert_eq(params->count, 4);
    const char *expect[] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(params->names[i], expect[i]);
        cr_assert(ct_tensor_requires_grad(params->tensors[i]));
    }
    ct_named_tensors_free(params);
    ct_named_tensors *state = ct_module_state(m);
    cr_assert_eq(state->count, 6, "parameters and buffers");
    cr_assert_str_eq(state->names[2], "fc1.calls");
    ct_named_tensors_free(state);
    cr_assert_eq(ct_module_find(m, "fc2.bias"), ct_module_param(ct_module_child(m, "fc2"), "bias"));
    cr_assert_null(ct_module_find(m, "fc3.bias"));
    cr_assert_null(ct_module_find(m, "fc1"));
    cr_assert_eq(ct_module_num_parameters(m, false), 4 * 8 + 8 + 8 * 3 + 3);
    cr_assert_eq(ct_module_num_children(m), 2);
    cr_assert_str_eq(ct_module_type(ct_module_child_at(m, 1)), "Affine");
    /* forward + backward reaches every parameter */
    ct_scope_begin();
    ct_tensor *y = ct_module_forward(m, ct_randn((int64_t[]){5, 4}, 2, CT_F32, CT_CPU));
    t_assert_shape(y, (int64_t[]){5, 3}, 2);
    cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_OK);
    ct_scope_end();
    cr_assert_not_null(ct_grad(ct_module_find(m, "fc1.weight")));
    ct_module_free(m);
    cr_assert_eq(ct_live_tensors(), before, "the module freed its tensors and their grads");
}

Test(module, freeze_and_modes) {
    ct_module *m = mlp();
    cr_assert(ct_module_is_training(ct_module_child(m, "fc2")));
    ct_module_train(m, false);
    cr_assert(!ct_module_is_training(ct_module_child(m, "fc2")));
    cr_assert_eq(ct_module_freeze(m, "fc1", true), 2);
    cr_assert_eq(ct_module_num_parameters(m, true), 8 * 3 + 3);
    ct_named_tensors *p = ct_module_parameters(m);
    cr_assert_eq(p->count, 2);
    cr_assert_str_eq(p->names[0], "fc2.weight");
    ct_named_tensors_free(p);
    cr_assert_eq(ct_module_freeze(m, "", false), 2);
    cr_assert_eq(ct_module_freeze(m, "fc", true), 0, "a prefix matches whole path parts only");
    cr_assert_eq(ct_module_freeze(m, "fc2.bias", true), 1);
    cr_assert_eq(ct_module_freeze(m, "", false), 1);
    cr_assert_eq(ct_module_num_parameters(m, true), ct_module_num_parameters(m, false));
    ct_module_free(m);
}

Test(module, registration_errors) {
    ct_clear_error();
    ct_module *m = affine(2, 2);
    ct_tensor *t = ct_zeros((int64_t[]){2}, 1, CT_F32, CT_CPU);
    cr_assert_eq(ct_module_add_parameter(m, "weight", t), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "already has a tensor named \"weight\"", NULL);
    cr_assert_eq(ct_module_add_parameter(m, "a.b", t), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "no dots", NULL);
    ct_tensor *ints = ct_zeros((int64_t[]){2}, 1, CT_I32, CT_CPU);
    cr_assert_eq(ct_module_add_parameter(m, "ints", ints), CT_ERR_DTYPE);
    t_assert_error(CT_ERR_DTYPE, "floating", NULL);
    cr_assert_eq(ct_module_add_child(m, "x", NULL), CT_ERR_NULL);
    ct_clear_error();
    ct_module *child = affine(2, 2);
    cr_assert_eq(ct_module_add_child(m, "c", child), CT_OK);
    cr_assert_eq(ct_module_add_child(m, "d", child), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "already belongs", NULL);
    cr_assert_null(ct_module_forward(m, NULL));
    t_assert_error(CT_ERR_NULL, "ct_module_forward", NULL);
    cr_assert_null(ct_module_create(NULL, NULL));
    ct_clear_error();
    ct_tensor_free(t);
    ct_tensor_free(ints);
    ct_module_free(m);
}

Test(module, replace_a_child) {
    int64_t before = ct_live_tensors();
    ct_module *m = mlp();
    cr_assert_eq(ct_module_set_child(m, "fc2", affine(8, 5)), CT_OK);
    ct_scope_begin();
    t_assert_shape(ct_module_forward(m, ct_zeros((int64_t[]){2, 4}, 2, CT_F32, CT_CPU)), (int64_t[]){2, 5}, 2);
    ct_scope_end();
    cr_assert_eq(ct_module_num_children(m), 2);
    cr_assert_eq(ct_module_set_child(m, "extra", affine(5, 1)), CT_OK, "adds when absent");
    cr_assert_eq(ct_module_num_children(m), 3);
    cr_assert_eq(ct_module_set_child(m, "fc1", ct_module_child(m, "extra")), CT_ERR_VALUE);
    ct_clear_error();
    ct_module_free(m);
    cr_assert_eq(ct_live_tensors(), before);
}

Test(module, summary_lists_layers_shapes_and_counts) {
    ct_module *m = mlp();
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    cr_assert_eq(ct_module_summary(m, (int64_t[]){16, 4}, 2, CT_F32, out), CT_OK, "%s", ct_last_error_message());
    fclose(out);
    cr_assert(strstr(text, "fc1") && strstr(text, "Affine(4, 8)") && strstr(text, "[16, 8]"), "%s", text);
    cr_assert(strstr(text, "fc2") && strstr(text, "[16, 3]") && strstr(text, "27"), "%s", text);
    cr_assert(strstr(text, "Total params: 67"), "%s", text);
    cr_assert(ct_module_is_training(m), "summary restores the mode");
    free(text);
    ct_module_free(m);
}
