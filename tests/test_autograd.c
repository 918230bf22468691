/* The autograd engine: accumulation, shared nodes, retain_graph, no-grad, detach, version
 * checks, errors, and gradients of the view ops. */
#include "tests/common.h"

static ct_tensor *leaf(const double *v, const int64_t *shape, int ndim) {
    return ct_requires_grad(ct_from_host(v, shape, ndim, CT_F64, CT_CPU), true);
}

Test(autograd, simple_chain_and_accumulation) {
    T_NO_LEAK({
        ct_tensor *x = leaf((double[]){1, 2, 3}, (int64_t[]){3}, 1);
        /* y = sum(x * x + 3x) -> dy/dx = 2x + 3 */
        ct_tensor *y = ct_sum(ct_add(ct_mul(x, x), ct_mul_scalar(x, 3)), NULL, 0, false);
        cr_assert_eq(ct_backward(y), CT_OK, "%s", ct_last_error_message());
        t_assert_close(ct_grad(x), (double[]){5, 7, 9}, 1e-12, 0);
        /* a second graph accumulates into the same grad */
        ct_tensor *y2 = ct_sum(ct_mul_scalar(x, 10), NULL, 0, false);
        cr_assert_eq(ct_backward(y2), CT_OK);
        t_assert_close(ct_grad(x), (double[]){15, 17, 19}, 1e-12, 0);
        ct_zero_grad(x);
        cr_assert_null(ct_grad(x));
        cr_assert(ct_tensor_is_leaf(x) && !ct_tensor_is_leaf(y));
        cr_assert_str_eq(ct_grad_fn_name(y), "ct_sum");
    });
}

Test(autograd, shared_subexpression) {
    T_NO_LEAK({
        ct_tensor *x = leaf((double[]){0.5, -1.5}, (int64_t[]){2}, 1);
        ct_tensor *e = ct_exp(x);        /* used twice */
        ct_tensor *y = ct_sum(ct_mul(e, e), NULL, 0, false); /* d/dx exp(2x) = 2 exp(2x) */
        cr_assert_eq(ct_backward(y), CT_OK, "%s", ct_last_error_message());
        t_assert_close(ct_grad(x), (double[]){2 * exp(1.0), 2 * exp(-3.0)}, 1e-12, 1e-12);
        /* a diamond: z = a*b where a = x+1 and b = x*2 share x */
        ct_zero_grad(x);
        ct_tensor *z = ct_sum(ct_mul(ct_add_scalar(x, 1), ct_mul_scalar(x, 2)), NULL, 0, false);
        cr_assert_eq(ct_backward(z), CT_OK);
        t_assert_close(ct_grad(x), (double[]){4 * 0.5 + 2, 4 * -1.5 + 2}, 1e-12, 0);
    });
}

Test(autograd, retain_graph_and_backward_twice) {
    T_NO_LEAK({
        ct_tensor *x = leaf((double[]){2}, (int64_t[]){1}, 1);
        ct_tensor *y = ct_sum(ct_mul(x, ct_exp(x)), NULL, 0, false);
        cr_assert_eq(ct_backward_ex(y, NULL, true), CT_OK);
        double g1 = ct_item(ct_grad(x));
        cr_assert_eq(ct_backward_ex(y, NULL, false), CT_OK, "%s", ct_last_error_message());
        cr_assert_float_eq(ct_item(ct_grad(x)), 2 * g1, 1e-12);
        cr_assert_float_eq(g1, 3 * exp(2.0), 1e-9);
        /* the graph is now freed: a third backward is an error, not a silent wrong answer */
        cr_assert_eq(ct_backward(y), CT_ERR_AUTOGRAD);
        t_assert_error(CT_ERR_AUTOGRAD, "retain_graph", NULL);
    });
}

Test(autograd, no_grad_and_detach) {
    T_NO_LEAK({
        ct_tensor *x = leaf((double[]){1, 2}, (int64_t[]){2}, 1);
        ct_no_grad_begin();
        cr_assert(!ct_grad_enabled());
        ct_tensor *y = ct_mul(x, x);
        cr_assert(!ct_tensor_requires_grad(y));
        ct_no_grad_end();
        cr_assert(ct_grad_enabled());
        cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_ERR_AUTOGRAD);
        t_assert_error(CT_ERR_AUTOGRAD, "does not require grad", NULL);
        /* detach cuts the graph: only the attached path contributes */
        ct_tensor *d = ct_detach(x);
        cr_assert(ct_tensor_shares_storage(d, x) && !ct_tensor_requires_grad(d));
        ct_tensor *z = ct_sum(ct_mul(x, d), NULL, 0, false); /* dz/dx = d = x */
        cr_assert_eq(ct_backward(z), CT_OK);
        t_assert_close(ct_grad(x), (double[]){1, 2}, 0, 0);
    });
}

Test(autograd, modified_saved_tensor_is_an_error) {
    T_NO_LEAK({
        ct_tensor *w = leaf((double[]){1, 2}, (int64_t[]){2}, 1);
        ct_tensor *a = ct_from_host((double[]){3, 4}, (int64_t[]){2}, 1, CT_F64, CT_CPU);
        ct_tensor *y = ct_sum(ct_mul(a, w), NULL, 0, false); /* saves a */
        cr_assert_eq(ct_add_(a, a), CT_OK); /* a does not require grad: allowed, bumps version */
        cr_assert_eq(ct_backward(y), CT_ERR_AUTOGRAD);
        t_assert_error(CT_ERR_AUTOGRAD, "saved by ct_mul", "modified in place", NULL);
        /* modifying a view of a saved tensor is caught too (views share the version) */
        ct_tensor *b = ct_from_host((double[]){3, 4}, (int64_t[]){2}, 1, CT_F64, CT_CPU);
        ct_tensor *y2 = ct_sum(ct_mul(b, w), NULL, 0, false);
        cr_assert_eq(ct_fill_(ct_slice(b, 0, 0, 1, 1), 9), CT_OK);
        cr_assert_eq(ct_backward(y2), CT_ERR_AUTOGRAD);
        ct_clear_error();
    });
}

Test(autograd, inplace_on_leaf_requiring_grad_is_refused) {
    T_NO_LEAK({
        ct_tensor *w = leaf((double[]){1, 2}, (int64_t[]){2}, 1);
        cr_assert_eq(ct_mul_scalar_(w, 2), CT_ERR_AUTOGRAD);
        t_assert_error(CT_ERR_AUTOGRAD, "ct_mul_scalar_", "leaf", NULL);
        ct_no_grad_begin(); /* the optimizer's way */
        cr_assert_eq(ct_mul_scalar_(w, 2), CT_OK);
        ct_no_grad_end();
        t_assert_close(w, (double[]){2, 4}, 0, 0);
    });
}

/* An in-place update is not recorded: with grad mode on, a source that requires grad would
 * silently get no gradient, so it is refused; inside no-grad it is the optimizer's update. */
Test(autograd, inplace_from_a_source_requiring_grad_is_refused) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *w = leaf((double[]){1, 2}, (int64_t[]){2}, 1);
        ct_tensor *a = ct_from_host((double[]){10, 20}, (int64_t[]){2}, 1, CT_F64, CT_CPU);
        cr_assert_eq(ct_add_(a, w), CT_ERR_AUTOGRAD);
        t_assert_error(CT_ERR_AUTOGRAD, "ct_add_", "the source requires grad", "use ct_add,", "ct_no_grad_begin", NULL);
        cr_assert_eq(ct_add_scaled_(a, w, 2), CT_ERR_AUTOGRAD);
        t_assert_error(CT_ERR_AUTOGRAD, "ct_add_scaled_", "use ct_add_scaled,", NULL);
        cr_assert_eq(ct_mul_(a, w), CT_ERR_AUTOGRAD);
        t_assert_error(CT_ERR_AUTOGRAD, "ct_mul_", "use ct_mul,", NULL);
        cr_assert_eq(ct_copy_(a, w), CT_ERR_AUTOGRAD);
        t_assert_error(CT_ERR_AUTOGRAD, "ct_copy_", "the source requires grad", "ct_clone", NULL);
        /* a non-leaf source (made from w) too, broadcast or not */
        cr_assert_eq(ct_add_(a, ct_sum(ct_mul_scalar(w, 3), NULL, 0, false)), CT_ERR_AUTOGRAD);
        t_assert_error(CT_ERR_AUTOGRAD, "ct_add_", NULL);
        t_assert_close(a, (double[]){10, 20}, 0, 0); /* nothing was written */
        cr_assert(!ct_tensor_requires_grad(a));

        /* Allowed: a detached source, or the same calls under no-grad. */
        cr_assert_eq(ct_add_(a, ct_detach(w)), CT_OK, "%s", ct_last_error_message());
        t_assert_close(a, (double[]){11, 22}, 0, 0);
        ct_no_grad_begin();
        cr_assert_eq(ct_add_(a, w), CT_OK);
        cr_assert_eq(ct_add_scaled_(a, w, -1), CT_OK);
        cr_assert_eq(ct_mul_(a, w), CT_OK);
        ct_no_grad_end();
        t_assert_close(a, (double[]){11, 44}, 0, 0);
        ct_no_grad_begin();
        cr_assert_eq(ct_copy_(a, w), CT_OK);
        ct_no_grad_end();
        t_assert_close(a, (double[]){1, 2}, 0, 0);
    });
}

/* The engine accumulates gradients with ct_add_ / ct_copy_ and an SGD step updates the
 * parameter in place from its gradient: both keep working. */
Test(autograd, accumulation_and_manual_sgd_step_still_work) {
    T_NO_LEAK({
        ct_tensor *w = leaf((double[]){1, -2, 3}, (int64_t[]){3}, 1);
        ct_tensor *x = ct_from_host((double[]){2, 2, 2}, (int64_t[]){3}, 1, CT_F64, CT_CPU);
        for (int step = 0; step < 2; step++) {
            /* w is used twice: its gradient is accumulated from two paths, then over two backwards */
            ct_tensor *loss = ct_sum(ct_add(ct_mul(w, x), ct_mul(w, w)), NULL, 0, false);
            cr_assert_eq(ct_backward(loss), CT_OK, "%s", ct_last_error_message());
        }
        t_assert_close(ct_grad(w), (double[]){2 * (2 + 2), 2 * (2 - 4), 2 * (2 + 6)}, 1e-12, 0);
        ct_no_grad_begin();
        cr_assert_eq(ct_add_scaled_(w, ct_grad(w), -0.25), CT_OK, "%s", ct_last_error_message());
        ct_no_grad_end();
        t_assert_close(w, (double[]){-1, -1, -1}, 1e-12, 0);
        /* the updated leaf still takes part in a new graph */
        ct_zero_grad(w);
        cr_assert_eq(ct_backward(ct_sum(ct_mul(w, x), NULL, 0, false)), CT_OK);
        t_assert_close(ct_grad(w), (double[]){2, 2, 2}, 0, 0);
    });
}

Test(autograd, non_scalar_backward_needs_a_gradient) {
    T_NO_LEAK({
        ct_tensor *x = leaf((double[]){1, 2, 3, 4}, (int64_t[]){2, 2}, 2);
        ct_tensor *y = ct_mul_scalar(x, 3);
        cr_assert_eq(ct_backward(y), CT_ERR_SHAPE);
        t_assert_error(CT_ERR_SHAPE, "ct_backward", "[2, 2]", "not a scalar", NULL);
        ct_tensor *g = ct_from_host((double[]){1, 0, -1, 2}, (int64_t[]){2, 2}, 2, CT_F64, CT_CPU);
        cr_assert_eq(ct_backward_ex(y, g, false), CT_OK);
        t_assert_close(ct_grad(x), (double[]){3, 0, -3, 6}, 0, 0);
        ct_tensor *bad = ct_zeros((int64_t[]){4}, 1, CT_F64, CT_CPU);
        ct_tensor *y3 = ct_mul_scalar(x, 3);
        cr_assert_neq(ct_backward_ex(y3, bad, false), CT_OK);
        ct_clear_error();
        cr_assert_eq(ct_backward(NULL), CT_ERR_NULL);
        ct_clear_error();
        cr_assert_null(ct_requires_grad(ct_zeros((int64_t[]){1}, 1, CT_I32, CT_CPU), true));
        t_assert_error(CT_ERR_DTYPE, "ct_requires_grad", "i32", NULL);
        cr_assert_null(ct_requires_grad(y, false));
        t_assert_error(CT_ERR_AUTOGRAD, "leaf", NULL);
    });
}

Test(autograd, graph_is_freed_after_backward) {
    int64_t before = ct_live_tensors();
    ct_tensor *x = leaf((double[]){1, 2, 3}, (int64_t[]){3}, 1);
    ct_scope_begin();
    ct_tensor *h = x;
    for (int i = 0; i < 50; i++)
        h = ct_mul_scalar(ct_exp(ct_mul_scalar(h, 0.01)), 1.0);
    cr_assert_eq(ct_backward(ct_sum(h, NULL, 0, false)), CT_OK);
    ct_scope_end();
    cr_assert_eq(ct_live_tensors(), before + 2, "x and its grad remain"); /* x, x.grad */
    ct_tensor_free(x);
    cr_assert_eq(ct_live_tensors(), before);
}

Test(autograd, long_chain_does_not_overflow_the_stack) {
    T_NO_LEAK({
        ct_tensor *x = leaf((double[]){1}, (int64_t[]){1}, 1);
        ct_tensor *h = x;
        for (int i = 0; i < 20000; i++)
            h = ct_add_scalar(h, 0.0);
        cr_assert_eq(ct_backward(ct_sum(h, NULL, 0, false)), CT_OK);
        cr_assert_eq(ct_item(ct_grad(x)), 1);
    });
}

Test(autograd, leaf_as_output_and_backward_of_a_leaf) {
    T_NO_LEAK({
        ct_tensor *x = leaf((double[]){5}, (int64_t[]){}, 0);
        cr_assert_eq(ct_backward(x), CT_OK);
        cr_assert_eq(ct_item(ct_grad(x)), 1);
    });
}

/* ---- gradients of views and copies ---------------------------------------------------- */

static ct_tensor *f_permute(ct_tensor **x, void *c) { return ct_permute(x[0], (int[]){2, 0, 1}, 3); }
static ct_tensor *f_transpose(ct_tensor **x, void *c) { return ct_mul(ct_transpose(x[0], 0, 2), ct_transpose(x[0], 0, 2)); }
static ct_tensor *f_slice(ct_tensor **x, void *c) { return ct_slice(x[0], 1, 0, 3, 2); }
static ct_tensor *f_select(ct_tensor **x, void *c) { return ct_select(x[0], 2, -1); }
static ct_tensor *f_expand(ct_tensor **x, void *c) {
    return ct_expand(ct_select(x[0], 1, 0), (int64_t[]){5, 2, 4}, 3);
}
static ct_tensor *f_reshape(ct_tensor **x, void *c) {
    return ct_reshape(ct_transpose(x[0], 0, 1), (int64_t[]){-1, 2}, 2); /* copies */
}
static ct_tensor *f_squeeze(ct_tensor **x, void *c) {
    return ct_unsqueeze(ct_squeeze(ct_unsqueeze(x[0], 1), 1), 0);
}
static ct_tensor *f_flatten(ct_tensor **x, void *c) { return ct_flatten(x[0], 0, 1); }
static ct_tensor *f_clone(ct_tensor **x, void *c) { return ct_mul(ct_clone(x[0]), ct_contiguous(ct_transpose(x[0], 1, 2))); }
static ct_tensor *f_cast(ct_tensor **x, void *c) { return ct_cast(ct_mul_scalar(ct_cast(x[0], CT_F32), 3), CT_F64); }

Test(autograd, view_gradients) {
    ct_manual_seed(11);
    t_grad_fn fns[] = {f_permute, f_transpose, f_slice, f_select, f_expand, f_reshape, f_squeeze, f_flatten};
    for (unsigned k = 0; k < sizeof fns / sizeof fns[0]; k++) {
        T_NO_LEAK({
            ct_tensor *x[1] = {ct_requires_grad(t_rand((int64_t[]){2, 3, 4}, 3, CT_F64, -1, 1), true)};
            t_gradcheck(fns[k], x, 1, NULL, 1e-6, 1e-8, 1e-7);
        });
    }
    T_NO_LEAK({
        ct_tensor *x[1] = {ct_requires_grad(t_rand((int64_t[]){2, 3, 3}, 3, CT_F64, -1, 1), true)};
        t_gradcheck(f_clone, x, 1, NULL, 1e-6, 1e-8, 1e-7);
        /* through an f32 cast the numeric gradient is only f32-accurate */
        t_gradcheck(f_cast, x, 1, NULL, 1e-3, 1e-3, 1e-3);
    });
}
