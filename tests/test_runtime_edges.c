/* Edge cases of the runtime found in review: overflowing shapes, long shape strings, deep
 * and wide graphs, errors that must not be stale, extreme slice steps. */
#include "tests/common.h"
#include "runtime/internal.h"

#include <string.h>

Test(edges, shapes_whose_size_overflows_are_errors) {
    ct_clear_error();
    T_NO_LEAK({
        cr_assert_null(ct_ones((int64_t[]){(int64_t)1 << 62, 4}, 2, CT_F32, CT_CPU));
        t_assert_error(CT_ERR_SHAPE, "ct_ones", "64 bits", NULL);
        cr_assert_null(ct_empty((int64_t[]){3037000500, 3037000500}, 2, CT_U8, CT_CPU));
        t_assert_error(CT_ERR_SHAPE, "ct_empty", NULL);
        ct_tensor *a = ct_zeros((int64_t[]){4, 1}, 2, CT_F32, CT_CPU);
        cr_assert_null(ct_expand(a, (int64_t[]){4, (int64_t)1 << 62}, 2));
        t_assert_error(CT_ERR_SHAPE, "ct_expand", NULL);
        cr_assert_null(ct_reshape(a, (int64_t[]){(int64_t)1 << 62, 8, -1}, 3));
        t_assert_error(CT_ERR_SHAPE, "ct_reshape", NULL);
        cr_assert_null(ct_arange(0, 1, 1e-300, CT_F32, CT_CPU));
        t_assert_error(CT_ERR_VALUE, "ct_arange", "too many", NULL);
    });
}

Test(edges, long_shape_strings_stay_in_bounds) {
    int64_t shape[8];
    for (int i = 0; i < 8; i++)
        shape[i] = INT64_MIN;
    for (int k = 0; k < 10; k++) { /* cycle through every rotating buffer */
        ct_clear_error();
        cr_assert_null(ct_empty(shape, 8, CT_F32, CT_CPU));
        cr_assert(strlen(ct_last_error_message()) < 1024);
    }
    ct_clear_error();
}

Test(edges, slices_with_huge_steps) {
    T_NO_LEAK({
        ct_tensor *a = ct_arange(0, 10, 1, CT_F32, CT_CPU);
        ct_tensor *s = ct_slice(a, 0, 3, 10, INT64_MAX);
        t_assert_shape(s, (int64_t[]){1}, 1);
        cr_assert_eq(ct_item(s), 3);
        t_assert_shape(ct_slice(a, 0, 7, 2, 1), (int64_t[]){0}, 1);
    });
}

Test(edges, deep_graph_with_fan_in_frees_without_recursion) {
    int64_t before = ct_live_tensors();
    ct_tensor *x = ct_requires_grad(ct_ones((int64_t[]){1}, 1, CT_F32, CT_CPU), true);
    ct_tensor *h = ct_mul_scalar(x, 1.0);
    for (int i = 0; i < 300000; i++) { /* each node's second input is the long chain */
        ct_tensor *m = ct_mul_scalar(x, 1.0);
        ct_tensor *next = ct_add(m, h);
        ct_tensor_free(m);
        ct_tensor_free(h);
        h = next;
    }
    ct_tensor_free(h); /* the whole chain goes at once */
    ct_tensor_free(x);
    cr_assert_eq(ct_live_tensors(), before);
}

Test(edges, backward_errors_are_not_stale) {
    T_NO_LEAK({
        ct_tensor *a = ct_zeros((int64_t[]){2, 3}, 2, CT_F32, CT_CPU);
        cr_assert_null(ct_matmul(a, a)); /* leaves a matmul error behind */
        ct_tensor *w = ct_requires_grad(ct_ones((int64_t[]){2}, 1, CT_F32, CT_CPU), true);
        ct_tensor *y = ct_mul_scalar(w, 2);
        ct_tensor *bad = ct_ones((int64_t[]){3}, 1, CT_F32, CT_CPU);
        cr_assert_eq(ct_backward_ex(y, bad, false), CT_ERR_SHAPE);
        t_assert_error(CT_ERR_SHAPE, "ct_backward", "grad_output is [3]", NULL);
    });
}

Test(edges, failed_scope_begin_keeps_scopes_balanced) {
    /* simulated by nesting: the depth always matches begin/end pairs */
    ct_scope_begin();
    ct_scope_begin();
    cr_assert_eq(ct_scope_depth(), 2);
    ct_scope_end();
    ct_scope_end();
    cr_assert_eq(ct_scope_depth(), 0);
}

/* The error count behind CUDA graph capture: every error raised after the mark counts (a NULL
 * argument too, even when an earlier error's message stands), and the first one's message is
 * kept while later ones replace the last message. */
Test(errors, counted_since_a_mark_with_the_first_message) {
    ct_clear_error();
    ct__set_error(CT_ERR_VALUE, "before the mark");
    ct__error_mark();
    const char *first = NULL;
    cr_assert_eq(ct__errors_since_mark(&first), 0);
    cr_assert_str_empty(first);
    cr_assert_null(ct_add(NULL, NULL)); /* an earlier error stands: the message is not replaced */
    cr_assert_str_eq(ct_last_error_message(), "before the mark");
    cr_assert_eq(ct__errors_since_mark(&first), 1);
    cr_assert(strstr(first, "ct_add") && strstr(first, "NULL"), "first: %s", first);
    ct_clear_error();
    ct__set_error(CT_ERR_SHAPE, "second");
    ct__set_error(CT_ERR_DIM, "third");
    cr_assert_eq(ct__errors_since_mark(&first), 3);
    cr_assert(strstr(first, "ct_add"), "the first message is kept: %s", first);
    cr_assert_str_eq(ct_last_error_message(), "third");
    ct__error_mark();
    cr_assert_eq(ct__errors_since_mark(NULL), 0);
    ct_clear_error();
}
