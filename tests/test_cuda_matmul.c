/* CUDA parity for ct_matmul / ct_bmm: the same operands on the GPU and on the CPU (the
 * reference), F32 within 1e-4 (1e-2 with TF32), F16 / BF16 within 1e-2, the error of each
 * element taken relative to max(1, |cpu|). Shapes with broadcast batch dims; transposed,
 * sliced (unaligned), stepped, expanded and permuted operands; odd and empty sizes; K = 0;
 * gradients of ct_matmul and ct_bmm. Every output is a new tensor, so the allocator's cache
 * is poisoned with NaN blocks of the output's size before each product (of the operands'
 * sizes before each backward): an element the GPU never wrote reads as NaN and fails. Every
 * test reports itself skipped where no GPU is usable. */
#include "tests/common.h"

#include <string.h>

#define GPU T_GPU

static const ct_dtype float_dtypes[] = {CT_F32, CT_F16, CT_BF16};
static const double float_tols[] = {1e-4, 1e-2, 1e-2};

/* The product on both devices; the GPU output poisoned first. */
static void check_pair(const ct_tensor *a_cpu, const ct_tensor *b_cpu, const ct_tensor *a_gpu, const ct_tensor *b_gpu,
                       double tol, const char *what) {
    ct_tensor *ref = ct_matmul(a_cpu, b_cpu);
    cr_assert_not_null(ref, "%s (CPU): %s", what, ct_last_error_message());
    t_poison_gpu_cache(ct_tensor_numel(ref), ct_tensor_dtype(ref));
    t_assert_parity(ct_matmul(a_gpu, b_gpu), ref, tol, what);
}

static void check_shapes(const int64_t *as, int an, const int64_t *bs, int bn) {
    for (int i = 0; i < 3; i++) {
        T_NO_LEAK({
            ct_tensor *a = t_rand_dtype(as, an, float_dtypes[i], -1, 1), *b = t_rand_dtype(bs, bn, float_dtypes[i], -1, 1);
            char what[128];
            snprintf(what, sizeof what, "matmul %s x %s", ct_shape_str(a), ct_shape_str(b));
            check_pair(a, b, t_to_gpu(a), t_to_gpu(b), float_tols[i], what);
        });
    }
}

Test(cuda_matmul, numpy_shapes_and_broadcast_batches) {
    T_REQUIRE_GPU();
    ct_manual_seed(1);
    check_shapes((int64_t[]){3, 4}, 2, (int64_t[]){4, 5}, 2);
    check_shapes((int64_t[]){4}, 1, (int64_t[]){4, 5}, 2);
    check_shapes((int64_t[]){3, 4}, 2, (int64_t[]){4}, 1);
    check_shapes((int64_t[]){4}, 1, (int64_t[]){4}, 1);
    check_shapes((int64_t[]){2, 3, 4}, 3, (int64_t[]){4, 5}, 2);
    check_shapes((int64_t[]){3, 4}, 2, (int64_t[]){2, 4, 5}, 3);
    check_shapes((int64_t[]){2, 1, 3, 4}, 4, (int64_t[]){5, 4, 6}, 3);
    check_shapes((int64_t[]){1, 3, 4}, 3, (int64_t[]){2, 4, 5}, 3);
    check_shapes((int64_t[]){4}, 1, (int64_t[]){2, 4, 5}, 3);
    check_shapes((int64_t[]){2, 3, 4}, 3, (int64_t[]){4}, 1);
    check_shapes((int64_t[]){2, 1, 4}, 3, (int64_t[]){4, 3}, 2);
    check_shapes((int64_t[]){3, 1, 2, 5}, 4, (int64_t[]){1, 4, 5, 3}, 4);
    check_shapes((int64_t[]){67, 129}, 2, (int64_t[]){129, 65}, 2);
    check_shapes((int64_t[]){600, 8, 9}, 3, (int64_t[]){600, 9, 7}, 3);
    check_shapes((int64_t[]){8, 80, 8, 9}, 4, (int64_t[]){80, 9, 7}, 3);
}

Test(cuda_matmul, odd_empty_and_k_zero) {
    T_REQUIRE_GPU();
    ct_manual_seed(2);
    check_shapes((int64_t[]){1, 1}, 2, (int64_t[]){1, 1}, 2);
    check_shapes((int64_t[]){1, 5}, 2, (int64_t[]){5, 1}, 2);
    check_shapes((int64_t[]){6, 1}, 2, (int64_t[]){1, 7}, 2);
    check_shapes((int64_t[]){7, 13}, 2, (int64_t[]){13, 3}, 2);
    check_shapes((int64_t[]){0, 4}, 2, (int64_t[]){4, 5}, 2);
    check_shapes((int64_t[]){3, 4}, 2, (int64_t[]){4, 0}, 2);
    check_shapes((int64_t[]){0, 3, 4}, 3, (int64_t[]){4, 2}, 2);
    check_shapes((int64_t[]){2, 0, 4}, 3, (int64_t[]){2, 4, 3}, 3);
    /* K = 0: zeros, which the poisoned output must show. */
    check_shapes((int64_t[]){2, 3, 0}, 3, (int64_t[]){0, 4}, 2);
    check_shapes((int64_t[]){0}, 1, (int64_t[]){0}, 1);
    check_shapes((int64_t[]){3, 2, 0}, 3, (int64_t[]){3, 0, 5}, 3);
}

/* A view of `base` that the product reads as it lies or through a packed copy. */
typedef ct_tensor *(*view_fn)(ct_tensor *base);
static ct_tensor *transposed(ct_tensor *t) {
    return ct_transpose(t, -1, -2);
}
static ct_tensor *column_slice(ct_tensor *t) {
    return ct_slice(t, -1, 1, ct_tensor_shape(t)[ct_tensor_ndim(t) - 1], 1);
}
static ct_tensor *column_step(ct_tensor *t) {
    return ct_slice(t, -1, 0, ct_tensor_shape(t)[ct_tensor_ndim(t) - 1], 2);
}
static ct_tensor *row_step_transposed(ct_tensor *t) {
    return ct_transpose(ct_slice(t, -2, 0, INT64_MAX, 2), -1, -2);
}
static ct_tensor *rows_expanded(ct_tensor *t) { /* (1, n) -> (5, n): row stride 0 */
    return ct_expand(t, (int64_t[]){5, ct_tensor_shape(t)[1]}, 2);
}
static ct_tensor *batch_expanded(ct_tensor *t) { /* (m, n) -> (3, m, n): batch stride 0 */
    return ct_expand(t, (int64_t[]){3, ct_tensor_shape(t)[0], ct_tensor_shape(t)[1]}, 3);
}
static ct_tensor *batch_permuted(ct_tensor *t) {
    return ct_permute(t, (int[]){1, 0, 2}, 3);
}
static ct_tensor *identity(ct_tensor *t) {
    return t;
}

/* a = fa(base of shape as), b = fb(base of shape bs), on both devices. */
static void check_views(const int64_t *as, int an, view_fn fa, const int64_t *bs, int bn, view_fn fb,
                        const char *what) {
    for (int i = 0; i < 3; i++) {
        T_NO_LEAK({
            ct_tensor *a = t_rand_dtype(as, an, float_dtypes[i], -1, 1), *b = t_rand_dtype(bs, bn, float_dtypes[i], -1, 1);
            ct_tensor *va = fa(a), *vb = fb(b), *ga = fa(t_to_gpu(a)), *gb = fb(t_to_gpu(b));
            cr_assert(va && vb && ga && gb, "%s: %s", what, ct_last_error_message());
            check_pair(va, vb, ga, gb, float_tols[i], what);
        });
    }
}

Test(cuda_matmul, strided_operands) {
    T_REQUIRE_GPU();
    ct_manual_seed(3);
    check_views((int64_t[]){9, 6}, 2, transposed, (int64_t[]){5, 9}, 2, transposed, "both transposed");
    check_views((int64_t[]){9, 6}, 2, transposed, (int64_t[]){9, 5}, 2, identity, "a transposed");
    check_views((int64_t[]){4, 6, 9}, 3, identity, (int64_t[]){4, 5, 9}, 3, transposed, "batched b transposed");
    /* Starting one element in: a leading dimension larger than the width, and a pointer
     * that is not 16-byte aligned. */
    check_views((int64_t[]){6, 10}, 2, column_slice, (int64_t[]){9, 7}, 2, identity, "a column slice");
    check_views((int64_t[]){6, 9}, 2, identity, (int64_t[]){9, 8}, 2, column_slice, "b column slice");
    check_views((int64_t[]){3, 6, 10}, 3, column_slice, (int64_t[]){3, 9, 4}, 3, identity, "batched slice");
    /* Column-major with a leading dimension of 12 for 6 rows. */
    check_views((int64_t[]){18, 6}, 2, row_step_transposed, (int64_t[]){9, 7}, 2, identity, "a row step");
    /* Layouts cuBLASLt cannot read as they lie: copied first. */
    check_views((int64_t[]){6, 18}, 2, column_step, (int64_t[]){9, 7}, 2, identity, "a column step");
    check_views((int64_t[]){6, 9}, 2, identity, (int64_t[]){9, 14}, 2, column_step, "b column step");
    check_views((int64_t[]){1, 9}, 2, rows_expanded, (int64_t[]){9, 7}, 2, identity, "a rows expanded");
    check_views((int64_t[]){4}, 1, identity, (int64_t[]){4, 3}, 2, identity, "vector");
    /* Batch strides: 0 (expanded), and batches that interleave (permuted). */
    check_views((int64_t[]){6, 9}, 2, batch_expanded, (int64_t[]){3, 9, 4}, 3, identity, "a batch expanded");
    check_views((int64_t[]){3, 6, 9}, 3, identity, (int64_t[]){9, 4}, 2, batch_expanded, "b batch expanded");
    check_views((int64_t[]){6, 3, 9}, 3, batch_permuted, (int64_t[]){9, 3, 4}, 3, batch_permuted, "permuted");
}

Test(cuda_matmul, bmm) {
    T_REQUIRE_GPU();
    ct_manual_seed(4);
    for (int i = 0; i < 3; i++) {
        T_NO_LEAK({
            ct_tensor *a = t_rand_dtype((int64_t[]){4, 5, 6}, 3, float_dtypes[i], -1, 1);
            ct_tensor *b = t_rand_dtype((int64_t[]){4, 6, 3}, 3, float_dtypes[i], -1, 1);
            ct_tensor *ref = ct_bmm(a, b);
            t_poison_gpu_cache(ct_tensor_numel(ref), float_dtypes[i]);
            t_assert_parity(ct_bmm(t_to_gpu(a), t_to_gpu(b)), ref, float_tols[i], "bmm");
            ct_tensor *bt = t_rand_dtype((int64_t[]){4, 3, 6}, 3, float_dtypes[i], -1, 1);
            ref = ct_bmm(a, ct_transpose(bt, 1, 2));
            t_poison_gpu_cache(ct_tensor_numel(ref), float_dtypes[i]);
            t_assert_parity(ct_bmm(t_to_gpu(a), ct_transpose(t_to_gpu(bt), 1, 2)), ref, float_tols[i], "bmm transposed");
        });
    }
}

Test(cuda_matmul, tf32_switch) {
    T_REQUIRE_GPU();
    ct_manual_seed(5);
    cr_assert(!ct_matmul_allow_tf32(), "TF32 must be off by default");
    T_NO_LEAK({
        ct_tensor *a = t_rand_dtype((int64_t[]){2, 70, 40}, 3, CT_F32, -1, 1);
        ct_tensor *b = t_rand_dtype((int64_t[]){40, 90}, 2, CT_F32, -1, 1);
        ct_tensor *ga = t_to_gpu(a), *gb = t_to_gpu(b);
        ct_tensor *ref = ct_matmul(a, b);
        t_assert_parity(ct_matmul(ga, gb), ref, 1e-4, "tf32 off");
        ct_matmul_set_allow_tf32(true);
        cr_assert(ct_matmul_allow_tf32());
        t_poison_gpu_cache(ct_tensor_numel(ref), CT_F32);
        t_assert_parity(ct_matmul(ga, gb), ref, 1e-2, "tf32 on");
        /* Half types ignore the switch. */
        ct_tensor *ha = ct_cast(a, CT_BF16), *hb = ct_cast(b, CT_BF16);
        t_assert_parity(ct_matmul(t_to_gpu(ha), t_to_gpu(hb)), ct_matmul(ha, hb), 1e-2, "bf16 with tf32 on");
        ct_matmul_set_allow_tf32(false);
        cr_assert(!ct_matmul_allow_tf32());
        t_assert_parity(ct_matmul(ga, gb), ref, 1e-4, "tf32 off again");
    });
}

/* ---- gradients ---------------------------------------------------------------------------- */

typedef ct_tensor *(*product_fn)(const ct_tensor *a, const ct_tensor *b);

/* a = fa(leaf of shape as), b = fb(leaf of shape bs): grads of both leaves after
 * backward through `product` from the same output gradient, GPU against CPU. The GPU's
 * backward starts from a cache poisoned with NaN blocks of both leaves' sizes. */
static void check_backward_of(product_fn product, const int64_t *as, int an, view_fn fa, const int64_t *bs, int bn,
                              view_fn fb, const char *what) {
    for (int i = 0; i < 3; i++) {
        T_NO_LEAK({
            ct_tensor *a = t_rand_dtype(as, an, float_dtypes[i], -1, 1), *b = t_rand_dtype(bs, bn, float_dtypes[i], -1, 1);
            ct_tensor *ga = t_to_gpu(a), *gb = t_to_gpu(b);
            ct_tensor *leaves[4] = {a, b, ga, gb};
            for (int k = 0; k < 4; k++)
                cr_assert_not_null(ct_requires_grad(leaves[k], true), "%s", ct_last_error_message());
            ct_tensor *out = product(fa(a), fb(b)), *out_gpu = product(fa(ga), fb(gb));
            cr_assert(out && out_gpu, "%s: %s", what, ct_last_error_message());
            ct_tensor *g = t_rand_dtype(ct_tensor_shape(out), ct_tensor_ndim(out), float_dtypes[i], -1, 1);
            cr_assert_eq(ct_backward_ex(out, g, false), CT_OK, "%s: %s", what, ct_last_error_message());
            ct_tensor *g_gpu = t_to_gpu(g);
            t_poison_gpu_cache(ct_tensor_numel(a), float_dtypes[i]);
            t_poison_gpu_cache(ct_tensor_numel(b), float_dtypes[i]);
            cr_assert_eq(ct_backward_ex(out_gpu, g_gpu, false), CT_OK, "%s: %s", what, ct_last_error_message());
            t_assert_parity(ct_grad(ga), ct_grad(a), float_tols[i], what);
            t_assert_parity(ct_grad(gb), ct_grad(b), float_tols[i], what);
        });
    }
}

static void check_backward(const int64_t *as, int an, view_fn fa, const int64_t *bs, int bn, view_fn fb,
                           const char *what) {
    check_backward_of(ct_matmul, as, an, fa, bs, bn, fb, what);
}

Test(cuda_matmul, gradients) {
    T_REQUIRE_GPU();
    ct_manual_seed(6);
    check_backward((int64_t[]){3, 4}, 2, identity, (int64_t[]){4, 5}, 2, identity, "2-D");
    check_backward((int64_t[]){4}, 1, identity, (int64_t[]){4, 5}, 2, identity, "vector @ matrix");
    check_backward((int64_t[]){3, 4}, 2, identity, (int64_t[]){4}, 1, identity, "matrix @ vector");
    check_backward((int64_t[]){4}, 1, identity, (int64_t[]){4}, 1, identity, "dot");
    check_backward((int64_t[]){2, 3, 4}, 3, identity, (int64_t[]){4, 5}, 2, identity, "shared b");
    check_backward((int64_t[]){4, 7}, 2, transposed, (int64_t[]){5, 4}, 2, transposed, "transposed");
    check_backward((int64_t[]){2, 6, 4}, 3, identity, (int64_t[]){2, 4, 33}, 3, identity, "3-D matmul");
    /* Broadcast batch dims: the gradient is summed over them. */
    check_backward((int64_t[]){2, 1, 3, 4}, 4, identity, (int64_t[]){5, 4, 6}, 3, identity, "broadcast");
    check_backward((int64_t[]){3, 4}, 2, identity, (int64_t[]){2, 4, 5}, 3, identity, "shared a");
    /* ct_bmm itself: plain, a transposed b, interleaved batches, a stepped b, odd sizes. */
    check_backward_of(ct_bmm, (int64_t[]){4, 5, 6}, 3, identity, (int64_t[]){4, 6, 3}, 3, identity, "bmm");
    check_backward_of(ct_bmm, (int64_t[]){3, 7, 9}, 3, identity, (int64_t[]){3, 5, 9}, 3, transposed,
                      "bmm b transposed");
    check_backward_of(ct_bmm, (int64_t[]){6, 3, 9}, 3, batch_permuted, (int64_t[]){9, 3, 4}, 3, batch_permuted,
                      "bmm permuted");
    check_backward_of(ct_bmm, (int64_t[]){2, 1, 13}, 3, identity, (int64_t[]){2, 13, 22}, 3, column_step,
                      "bmm b column step");
}

/* ---- errors ------------------------------------------------------------------------------- */

Test(cuda_matmul, bad_inputs) {
    T_REQUIRE_GPU();
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *ia = ct_zeros((int64_t[]){2, 3}, 2, CT_I32, GPU), *ib = ct_zeros((int64_t[]){3, 2}, 2, CT_I32, GPU);
        cr_assert_null(ct_matmul(ia, ib));
        t_assert_error(CT_ERR_DTYPE, "ct_matmul", "i32", NULL);
        ct_tensor *a = ct_zeros((int64_t[]){2, 3}, 2, CT_F32, GPU), *b = ct_zeros((int64_t[]){4, 2}, 2, CT_F32, GPU);
        cr_assert_null(ct_matmul(a, b));
        t_assert_error(CT_ERR_SHAPE, "ct_matmul: inner dimensions differ: a is [2, 3], b is [4, 2]", NULL);
        cr_assert_null(ct_matmul(a, ct_zeros((int64_t[]){3, 2}, 2, CT_F32, CT_CPU)));
        t_assert_error(CT_ERR_DEVICE, "ct_matmul: tensors are on different devices", NULL);
        cr_assert_null(ct_matmul(a, ct_zeros((int64_t[]){3, 2}, 2, CT_F16, GPU)));
        t_assert_error(CT_ERR_DTYPE, "ct_matmul: dtypes differ", NULL);
    });
}
