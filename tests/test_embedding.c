/* Embedding (lookup, scatter-add gradient, padding row) and padding (constant, reflect,
 * replicate): forward against naive references, gradients in f64, half precision, errors. */
#include "tests/common.h"

#include <string.h>

/* ---- embedding ------------------------------------------------------------------------------ */

Test(embedding, lookup_and_gradient) {
    ct_manual_seed(1);
    for (int v = 0; v < 6; v++) {
        ct_dtype dt = v % 3 == 0 ? CT_F32 : v % 3 == 1 ? CT_F64 : CT_BF16;
        int padding_idx = v >= 3 ? 2 : -1;
        T_NO_LEAK({
            int64_t V = 7, D = 5;
            ct_tensor *w = ct_requires_grad(t_rand((int64_t[]){V, D}, 2, dt, -1, 1), true);
            int32_t iv[12] = {3, 2, 6, 0, 3, 3, 1, 2, 6, 5, 0, 3};
            ct_tensor *idx = ct_from_host(iv, (int64_t[]){2, 2, 3}, 3, CT_I32, CT_CPU);
            ct_tensor *y = ct_embedding(w, idx, padding_idx);
            t_assert_shape(y, (int64_t[]){2, 2, 3, 5}, 4);
            cr_assert_eq(ct_tensor_dtype(y), dt);
            double *wv = t_values(w), ref[60], gref[35] = {0};
            for (int i = 0; i < 12; i++)
                memcpy(ref + i * D, wv + iv[i] * D, sizeof(double) * (size_t)D);
            t_assert_close(y, ref, 0, 0); /* a copy: exact */
            ct_tensor *g = t_rand((int64_t[]){2, 2, 3, 5}, 4, dt, -1, 1);
            cr_assert_eq(ct_backward_ex(y, g, false), CT_OK, "%s", ct_last_error_message());
            double *gv = t_values(g);
            for (int i = 0; i < 12; i++)
                for (int d = 0; d < D; d++)
                    if (iv[i] != padding_idx)
                        gref[iv[i] * D + d] += gv[i * D + d];
            t_assert_close(ct_grad(w), gref, dt == CT_BF16 ? 2e-2 : 1e-6, dt == CT_BF16 ? 1e-2 : 1e-6);
            free(wv);
            free(gv);
        });
    }
}

/* Strided indices (a transposed view) and a strided weight (a column slice). */
Test(embedding, strided_operands) {
    ct_manual_seed(2);
    T_NO_LEAK({
        ct_tensor *big = t_rand((int64_t[]){6, 8}, 2, CT_F32, -1, 1);
        ct_tensor *w = ct_slice(big, 1, 1, 8, 2); /* (6, 4) with stride (8, 2) */
        int32_t iv[6] = {5, 0, 1, 1, 4, 2};
        ct_tensor *idx = ct_transpose(ct_from_host(iv, (int64_t[]){2, 3}, 2, CT_I32, CT_CPU), 0, 1); /* (3, 2) */
        ct_tensor *y = ct_embedding(w, idx, -1);
        t_assert_shape(y, (int64_t[]){3, 2, 4}, 3);
        double *wv = t_values(w), ref[24];
        const int order[6] = {5, 1, 0, 4, 1, 2}; /* idx[r][c] = iv[c][r] */
        for (int i = 0; i < 6; i++)
            memcpy(ref + i * 4, wv + order[i] * 4, sizeof(double) * 4);
        t_assert_close(y, ref, 0, 0);
        free(wv);
    });
}

static ct_tensor *f_embedding(ct_tensor **in, void *ctx) {
    return ct_embedding(in[0], ctx, -1);
}

Test(embedding, gradcheck) {
    ct_manual_seed(3);
    T_NO_LEAK({
        ct_tensor *idx = ct_from_host((int32_t[]){1, 0, 3, 3, 1, 2}, (int64_t[]){3, 2}, 2, CT_I32, CT_CPU);
        ct_tensor *in[1] = {ct_requires_grad(t_rand((int64_t[]){4, 3}, 2, CT_F64, -1, 1), true)};
        t_gradcheck(f_embedding, in, 1, idx, 1e-6, 1e-7, 1e-6);
    });
}

Test(embedding, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *w = ct_zeros((int64_t[]){4, 3}, 2, CT_F32, CT_CPU);
        ct_tensor *idx = ct_from_host((int32_t[]){0, 4, 1}, (int64_t[]){3}, 1, CT_I32, CT_CPU);
        cr_assert_null(ct_embedding(w, idx, -1));
        t_assert_error(CT_ERR_DIM, "ct_embedding", "index 4", "4 rows", NULL);
        cr_assert_null(ct_embedding(w, ct_from_host((int32_t[]){-2}, (int64_t[]){1}, 1, CT_I32, CT_CPU), -1));
        t_assert_error(CT_ERR_DIM, "ct_embedding", "index -2", NULL);
        cr_assert_null(ct_embedding(w, ct_zeros((int64_t[]){3}, 1, CT_F32, CT_CPU), -1));
        t_assert_error(CT_ERR_DTYPE, "ct_embedding", "indices must be i32", NULL);
        cr_assert_null(ct_embedding(ct_zeros((int64_t[]){4}, 1, CT_F32, CT_CPU), idx, -1));
        t_assert_error(CT_ERR_SHAPE, "ct_embedding", "(V, D)", "[4]", NULL);
        ct_tensor *ok = ct_from_host((int32_t[]){0, 3}, (int64_t[]){2}, 1, CT_I32, CT_CPU);
        cr_assert_null(ct_embedding(w, ok, 4));
        t_assert_error(CT_ERR_VALUE, "ct_embedding", "padding_idx", NULL);
        cr_assert_null(ct_embedding(w, ok, -2));
        t_assert_error(CT_ERR_VALUE, "ct_embedding", "padding_idx", NULL);
        cr_assert_null(ct_embedding(NULL, ok, -1));
        t_assert_error(CT_ERR_NULL, "ct_embedding", "weight", NULL);
        cr_assert_null(ct_embedding(w, NULL, -1));
        t_assert_error(CT_ERR_NULL, "ct_embedding", "indices", NULL);
        /* empty index lists and 0-dim indices */
        t_assert_shape(ct_embedding(w, ct_zeros((int64_t[]){0}, 1, CT_I32, CT_CPU), -1), (int64_t[]){0, 3}, 2);
        t_assert_shape(ct_embedding(w, ct_scalar(2, CT_I32, CT_CPU), -1), (int64_t[]){3}, 1);
    });
}

/* ---- pad ------------------------------------------------------------------------------------ */

/* Naive padding: the source coordinate of every output coordinate, dim by dim. */
static double *pad_ref(const ct_tensor *x, const int64_t *pads, int npads, ct_pad_mode mode, double value,
                       int64_t *out_shape) {
    int nd = ct_tensor_ndim(x);
    const int64_t *shape = ct_tensor_shape(x);
    int64_t left[8] = {0}, n_out = 1;
    for (int d = 0; d < nd; d++) {
        int k = nd - 1 - d;
        int64_t l = 2 * k < npads ? pads[2 * k] : 0, r = 2 * k < npads ? pads[2 * k + 1] : 0;
        left[d] = l;
        out_shape[d] = shape[d] + l + r;
        n_out *= out_shape[d];
    }
    double *xv = t_values(x), *out = malloc(sizeof(double) * (size_t)(n_out + 1));
    for (int64_t o = 0; o < n_out; o++) {
        int64_t c[8], src = 0;
        bool outside = false;
        t_unravel(o, nd, out_shape, c);
        for (int d = 0; d < nd; d++) {
            int64_t i = c[d] - left[d], n = shape[d];
            if (mode == CT_PAD_REFLECT)
                i = i < 0 ? -i : (i >= n ? 2 * (n - 1) - i : i);
            else if (mode == CT_PAD_REPLICATE)
                i = i < 0 ? 0 : (i >= n ? n - 1 : i);
            else if (i < 0 || i >= n)
                outside = true;
            src = src * n + i;
        }
        out[o] = outside ? value : xv[src];
    }
    free(xv);
    return out;
}

Test(pad, modes_against_reference) {
    ct_manual_seed(4);
    static const struct {
        int64_t shape[4];
        int ndim, npads;
        int64_t pads[8];
    } cases[] = {
        {{5}, 1, 2, {2, 3}},
        {{2, 3, 4, 5}, 4, 4, {1, 2, 3, 0}},
        {{3, 4, 6}, 3, 6, {0, 1, 2, 2, 1, 0}},
        {{2, 6, 7}, 3, 4, {3, 3, 0, 5}},
        {{4, 8, 8}, 3, 2, {0, 0}},
        {{1, 2, 40, 50}, 4, 4, {2, 2, 2, 2}},
    };
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int m = 0; m < 3; m++)
            for (int dv = 0; dv < 2; dv++)
                T_NO_LEAK({
                    ct_dtype dt = dv ? CT_F16 : CT_F32;
                    ct_tensor *x = t_rand(cases[i].shape, cases[i].ndim, dt, -5, 5);
                    if (i % 2) /* a strided view with the same values */
                        x = ct_transpose(ct_contiguous(ct_transpose(x, 0, -1)), 0, -1);
                    int64_t oshape[8];
                    double *ref = pad_ref(x, cases[i].pads, cases[i].npads, (ct_pad_mode)m, -7.5, oshape);
                    ct_tensor *y = ct_pad(x, cases[i].pads, cases[i].npads, (ct_pad_mode)m, -7.5);
                    t_assert_shape(y, oshape, cases[i].ndim);
                    t_assert_close(y, ref, 0, 0);
                    free(ref);
                });
}

/* Negative constant pads crop; pads that meet in the middle leave an empty dim. */
Test(pad, negative_constant_pads) {
    ct_manual_seed(5);
    T_NO_LEAK({
        ct_tensor *x = t_rand((int64_t[]){3, 6}, 2, CT_F64, -1, 1);
        int64_t pads[4] = {-2, 1, 1, -1}, oshape[2];
        double *ref = pad_ref(x, pads, 4, CT_PAD_CONSTANT, 0.5, oshape);
        /* the reference with a negative left pad reads inside x: check the kept block */
        ct_tensor *y = ct_pad(x, pads, 4, CT_PAD_CONSTANT, 0.5);
        t_assert_shape(y, (int64_t[]){3, 5}, 2);
        t_assert_close(y, ref, 0, 0);
        free(ref);
        t_assert_shape(ct_pad(x, (int64_t[]){-3, -3}, 2, CT_PAD_CONSTANT, 0), (int64_t[]){3, 0}, 2);
    });
}

typedef struct pad_ctx {
    const int64_t *pads;
    int npads;
    ct_pad_mode mode;
} pad_ctx;

static ct_tensor *f_pad(ct_tensor **in, void *ctx) {
    pad_ctx *c = ctx;
    return ct_pad(in[0], c->pads, c->npads, c->mode, 1.5);
}

Test(pad, gradients) {
    ct_manual_seed(6);
    static const int64_t p1[4] = {2, 1, 1, 2}, p2[2] = {3, 3}, p3[4] = {-1, 2, 0, -1};
    for (int m = 0; m < 3; m++)
        T_NO_LEAK({
            pad_ctx c = {p1, 4, (ct_pad_mode)m};
            ct_tensor *in[1] = {ct_requires_grad(t_rand((int64_t[]){2, 3, 4}, 3, CT_F64, -1, 1), true)};
            t_gradcheck(f_pad, in, 1, &c, 1e-6, 1e-7, 1e-6);
            pad_ctx c2 = {p2, 2, (ct_pad_mode)m};
            ct_tensor *in2[1] = {ct_requires_grad(t_rand((int64_t[]){5}, 1, CT_F64, -1, 1), true)};
            t_gradcheck(f_pad, in2, 1, &c2, 1e-6, 1e-7, 1e-6);
        });
    T_NO_LEAK({
        pad_ctx c = {p3, 4, CT_PAD_CONSTANT};
        ct_tensor *in[1] = {ct_requires_grad(t_rand((int64_t[]){3, 4}, 2, CT_F64, -1, 1), true)};
        t_gradcheck(f_pad, in, 1, &c, 1e-6, 1e-7, 1e-6);
    });
    /* half precision: the reflected gradient is accumulated in f32 and rounded once */
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(ct_zeros((int64_t[]){4}, 1, CT_BF16, CT_CPU), true);
        ct_tensor *y = ct_pad(x, (int64_t[]){3, 3}, 2, CT_PAD_REFLECT, 0);
        cr_assert_eq(ct_backward(ct_sum(y, NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        t_assert_close(ct_grad(x), (double[]){2, 3, 3, 2}, 0, 0);
    });
}

Test(pad, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *x = ct_zeros((int64_t[]){2, 3}, 2, CT_F32, CT_CPU);
        cr_assert_null(ct_pad(x, (int64_t[]){1, 1, 1}, 3, CT_PAD_CONSTANT, 0));
        t_assert_error(CT_ERR_VALUE, "ct_pad", "even number", NULL);
        cr_assert_null(ct_pad(x, (int64_t[]){1, 1, 1, 1, 1, 1}, 6, CT_PAD_CONSTANT, 0));
        t_assert_error(CT_ERR_VALUE, "ct_pad", "at most 2 per dim", NULL);
        cr_assert_null(ct_pad(x, (int64_t[]){3, 0}, 2, CT_PAD_REFLECT, 0));
        t_assert_error(CT_ERR_VALUE, "ct_pad", "reflect", "dim 1 has size 3", NULL);
        cr_assert_null(ct_pad(x, (int64_t[]){-1, 0}, 2, CT_PAD_REPLICATE, 0));
        t_assert_error(CT_ERR_VALUE, "ct_pad", "replicate", NULL);
        cr_assert_null(
            ct_pad(ct_zeros((int64_t[]){2, 0}, 2, CT_F32, CT_CPU), (int64_t[]){1, 0}, 2, CT_PAD_REPLICATE, 0));
        t_assert_error(CT_ERR_VALUE, "ct_pad", "non-empty", NULL);
        cr_assert_null(ct_pad(x, (int64_t[]){-2, -2}, 2, CT_PAD_CONSTANT, 0));
        t_assert_error(CT_ERR_SHAPE, "ct_pad", "negative", NULL);
        cr_assert_null(ct_pad(x, (int64_t[]){1, 1}, 2, (ct_pad_mode)7, 0));
        t_assert_error(CT_ERR_VALUE, "ct_pad", "mode 7", NULL);
        cr_assert_null(ct_pad(NULL, (int64_t[]){1, 1}, 2, CT_PAD_CONSTANT, 0));
        t_assert_error(CT_ERR_NULL, "ct_pad", NULL);
        /* integer tensors pad too (not differentiable) */
        ct_tensor *ints = ct_pad(ct_ones((int64_t[]){2}, 1, CT_I32, CT_CPU), (int64_t[]){1, 0}, 2, CT_PAD_CONSTANT, 5);
        t_assert_close(ints, (double[]){5, 1, 1}, 0, 0);
        ct_tensor *same = ct_pad(x, NULL, 0, CT_PAD_REFLECT, 0);
        t_assert_shape(same, (int64_t[]){2, 3}, 2);
    });
}
