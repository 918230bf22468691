/* ct_cat, ct_stack, ct_split, ct_chunk: values against a naive reference, every dtype,
 * strided inputs, gradients (also through more inputs than one autograd node holds),
 * torch.chunk's piece counts, and errors. */
#include "tests/common.h"

#include <string.h>

/* Naive cat of n tensors along dim (all in f64, row-major). */
static double *naive_cat(ct_tensor *const *ts, int n, int dim, int64_t *out_shape) {
    int nd = ct_tensor_ndim(ts[0]);
    memcpy(out_shape, ct_tensor_shape(ts[0]), sizeof(int64_t) * (size_t)nd);
    out_shape[dim] = 0;
    for (int i = 0; i < n; i++)
        out_shape[dim] += ct_tensor_shape(ts[i])[dim];
    int64_t numel = 1;
    for (int d = 0; d < nd; d++)
        numel *= out_shape[d];
    double *ref = malloc(sizeof(double) * (size_t)(numel + 1));
    double **vals = malloc(sizeof(double *) * (size_t)n);
    for (int i = 0; i < n; i++)
        vals[i] = t_values(ts[i]);
    int64_t coords[CT_MAX_DIMS];
    for (int64_t p = 0; p < numel; p++) {
        t_unravel(p, nd, out_shape, coords);
        int i = 0;
        while (coords[dim] >= ct_tensor_shape(ts[i])[dim]) {
            coords[dim] -= ct_tensor_shape(ts[i])[dim];
            i++;
        }
        int64_t lin = 0;
        for (int d = 0; d < nd; d++)
            lin = lin * ct_tensor_shape(ts[i])[d] + coords[d];
        ref[p] = vals[i][lin];
    }
    for (int i = 0; i < n; i++)
        free(vals[i]);
    free(vals);
    return ref;
}

static void check_cat(ct_tensor *const *ts, int n, int dim) {
    int nd = ct_tensor_ndim(ts[0]);
    int wrapped = dim < 0 ? dim + nd : dim;
    int64_t shape[CT_MAX_DIMS];
    double *ref = naive_cat(ts, n, wrapped, shape);
    ct_tensor *out = ct_cat(ts, n, dim);
    t_assert_shape(out, shape, nd);
    cr_assert_eq(ct_tensor_dtype(out), ct_tensor_dtype(ts[0]));
    t_assert_close(out, ref, 0, 0);
    free(ref);
}

Test(join, cat_every_dim_and_dtype) {
    ct_manual_seed(1);
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16, CT_I32, CT_U8};
    for (int k = 0; k < 6; k++) {
        T_NO_LEAK({
            for (int dim = -3; dim < 3; dim++) {
                int w = dim < 0 ? dim + 3 : dim;
                int64_t s0[3] = {2, 3, 4}, s1[3] = {2, 3, 4}, s2[3] = {2, 3, 4};
                s1[w] = 1;
                s2[w] = 0; /* an empty piece is allowed */
                ct_tensor *ts[4] = {ct_cast(t_rand(s0, 3, CT_F64, 0, 100), dts[k]),
                                    ct_cast(t_rand(s1, 3, CT_F64, 0, 100), dts[k]),
                                    ct_cast(t_rand(s2, 3, CT_F64, 0, 100), dts[k]),
                                    ct_cast(t_rand(s0, 3, CT_F64, 0, 100), dts[k])};
                check_cat(ts, 4, dim);
                check_cat(ts, 1, dim);
            }
        });
    }
}

Test(join, cat_strided_inputs) {
    ct_manual_seed(2);
    T_NO_LEAK({
        ct_tensor *a = ct_transpose(t_rand((int64_t[]){5, 3}, 2, CT_F32, -1, 1), 0, 1); /* (3, 5) */
        ct_tensor *b = ct_slice(t_rand((int64_t[]){3, 10}, 2, CT_F32, -1, 1), 1, 0, 10, 3); /* (3, 4) */
        ct_tensor *c = ct_expand(t_rand((int64_t[]){3, 1}, 2, CT_F32, -1, 1), (int64_t[]){3, 2}, 2);
        ct_tensor *ts[3] = {a, b, c};
        check_cat(ts, 3, 1);
        ct_tensor *rows[2] = {ct_transpose(a, 0, 1), ct_transpose(c, 0, 1)};
        check_cat(rows, 2, 0);
    });
}

static ct_tensor *f_cat(ct_tensor **x, void *ctx) { return ct_cat(x, *(int *)ctx, 1); }
static ct_tensor *f_stack(ct_tensor **x, void *ctx) { return ct_stack(x, *(int *)ctx, -1); }

Test(join, cat_and_stack_gradients) {
    ct_manual_seed(3);
    int n = 3;
    T_NO_LEAK({
        ct_tensor *x[3] = {ct_requires_grad(t_rand((int64_t[]){2, 3}, 2, CT_F64, -1, 1), true),
                           t_rand((int64_t[]){2, 1}, 2, CT_F64, -1, 1), /* no grad wanted */
                           ct_requires_grad(t_rand((int64_t[]){2, 2}, 2, CT_F64, -1, 1), true)};
        t_gradcheck(f_cat, x, n, &n, 1e-6, 1e-8, 1e-6);
        cr_assert_null(ct_grad(x[1]));
        ct_tensor *y[3] = {ct_requires_grad(t_rand((int64_t[]){2, 3}, 2, CT_F64, -1, 1), true),
                           ct_requires_grad(t_rand((int64_t[]){2, 3}, 2, CT_F64, -1, 1), true),
                           ct_requires_grad(t_rand((int64_t[]){2, 3}, 2, CT_F64, -1, 1), true)};
        t_gradcheck(f_stack, y, n, &n, 1e-6, 1e-8, 1e-6);
    });
}

/* More inputs than CT_NODE_MAX_INPUTS (8), and more than 8 * 8: a tree of nodes. */
Test(join, cat_of_many_tensors_is_differentiable) {
    ct_manual_seed(4);
    int counts[] = {9, 20, 70};
    for (int c = 0; c < 3; c++) {
        int n = counts[c];
        T_NO_LEAK({
            ct_tensor **x = malloc(sizeof(ct_tensor *) * (size_t)n);
            for (int i = 0; i < n; i++) {
                x[i] = t_rand((int64_t[]){2, 1 + i % 3}, 2, CT_F64, -1, 1);
                if (i % 5 != 3)
                    ct_requires_grad(x[i], true);
            }
            check_cat(x, n, 1);
            t_gradcheck(f_cat, x, n, &n, 1e-6, 1e-8, 1e-6);
            cr_assert_null(ct_grad(x[3]));
            free(x);
        });
    }
    /* 70 stacked tensors, with grads. */
    T_NO_LEAK({
        ct_tensor *x[70];
        for (int i = 0; i < 70; i++)
            x[i] = ct_requires_grad(ct_full((int64_t[]){2}, 1, i, CT_F32, CT_CPU), true);
        ct_tensor *s = ct_stack(x, 70, 0);
        t_assert_shape(s, (int64_t[]){70, 2}, 2);
        cr_assert_eq(ct_backward(ct_sum(ct_mul(s, s), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        for (int i = 0; i < 70; i++)
            t_assert_close(ct_grad(x[i]), (double[]){2.0 * i, 2.0 * i}, 0, 0);
    });
}

Test(join, stack_values) {
    ct_manual_seed(5);
    T_NO_LEAK({
        ct_tensor *a = t_rand((int64_t[]){2, 3}, 2, CT_F64, -1, 1), *b = t_rand((int64_t[]){2, 3}, 2, CT_F64, -1, 1);
        double *av = t_values(a), *bv = t_values(b);
        ct_tensor *ts[2] = {a, b};
        for (int dim = -3; dim < 3; dim++) {
            int w = dim < 0 ? dim + 3 : dim;
            ct_tensor *out = ct_stack(ts, 2, dim);
            int64_t shape[3], coords[3], base[2] = {2, 3};
            for (int d = 0; d < 3; d++)
                shape[d] = d == w ? 2 : base[d < w ? d : d - 1];
            t_assert_shape(out, shape, 3);
            double ref[12];
            for (int p = 0; p < 12; p++) {
                t_unravel(p, 3, shape, coords);
                int64_t which = coords[w], rest[2], k = 0;
                for (int d = 0; d < 3; d++)
                    if (d != w)
                        rest[k++] = coords[d];
                ref[p] = (which ? bv : av)[rest[0] * 3 + rest[1]];
            }
            t_assert_close(out, ref, 0, 0);
        }
        free(av);
        free(bv);
    });
}

/* ---- split / chunk -------------------------------------------------------------------- */

static void assert_pieces(ct_tensor *a, ct_tensor **pieces, int n, int dim, const int64_t *sizes) {
    int64_t start = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_not_null(pieces[i]);
        cr_assert_eq(ct_tensor_size(pieces[i], dim), sizes[i], "piece %d has size %lld, expected %lld", i,
                     (long long)ct_tensor_size(pieces[i], dim), (long long)sizes[i]);
        cr_assert(ct_tensor_shares_storage(pieces[i], a), "piece %d is not a view", i);
        ct_tensor *ref = ct_slice(a, dim, start, start + sizes[i], 1);
        double *rv = t_values(ref);
        t_assert_close(pieces[i], rv, 0, 0);
        free(rv);
        start += sizes[i];
    }
}

Test(join, split_pieces) {
    ct_manual_seed(6);
    T_NO_LEAK({
        ct_tensor *a = t_rand((int64_t[]){3, 10}, 2, CT_F32, -1, 1), *out[8];
        cr_assert_eq(ct_split(a, 3, 1, out, 8), 4);
        assert_pieces(a, out, 4, 1, (int64_t[]){3, 3, 3, 1});
        cr_assert_eq(ct_split(a, 5, -1, out, 8), 2);
        assert_pieces(a, out, 2, 1, (int64_t[]){5, 5});
        cr_assert_eq(ct_split(a, 20, 1, out, 8), 1);
        assert_pieces(a, out, 1, 1, (int64_t[]){10});
        cr_assert_eq(ct_split(a, 1, 0, out, 8), 3);
        assert_pieces(a, out, 3, 0, (int64_t[]){1, 1, 1});
        /* Fewer slots than pieces: the count, and only max_out written. */
        out[2] = NULL;
        cr_assert_eq(ct_split(a, 3, 1, out, 2), 4);
        cr_assert_null(out[2]);
        cr_assert_eq(ct_split(a, 3, 1, NULL, 0), 4);
        /* An empty dim gives one empty piece, as in torch.split. */
        ct_tensor *e = ct_zeros((int64_t[]){0, 2}, 2, CT_F32, CT_CPU);
        cr_assert_eq(ct_split(e, 2, 0, out, 8), 1);
        t_assert_shape(out[0], (int64_t[]){0, 2}, 2);
    });
}

Test(join, chunk_follows_torch) {
    struct {
        int64_t size;
        int chunks, n;
        int64_t sizes[6];
    } cases[] = {
        {10, 3, 3, {4, 4, 2}}, {10, 4, 4, {3, 3, 3, 1}}, {5, 4, 3, {2, 2, 1}}, {6, 4, 3, {2, 2, 2}},
        {2, 5, 2, {1, 1}},     {7, 1, 1, {7}},           {0, 3, 3, {0, 0, 0}}, {6, 6, 6, {1, 1, 1, 1, 1, 1}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        T_NO_LEAK({
            ct_tensor *a = ct_arange(0, (double)cases[c].size, 1, CT_F64, CT_CPU), *out[8];
            int got = ct_chunk(a, cases[c].chunks, 0, out, 8);
            cr_assert_eq(got, cases[c].n, "size %lld in %d chunks: %d pieces, expected %d", (long long)cases[c].size,
                         cases[c].chunks, got, cases[c].n);
            assert_pieces(a, out, got, 0, cases[c].sizes);
        });
    }
}

static ct_tensor *f_split(ct_tensor **x, void *ctx) {
    ct_tensor *p[3];
    cr_assert_eq(ct_split(x[0], 2, 0, p, 3), 3);
    return ct_add(ct_mul(p[0], p[1]), p[2]);
}
static ct_tensor *f_chunk(ct_tensor **x, void *ctx) {
    ct_tensor *p[2];
    cr_assert_eq(ct_chunk(x[0], 2, -1, p, 2), 2);
    return ct_mul(p[0], p[1]);
}

Test(join, split_and_chunk_gradients) {
    ct_manual_seed(7);
    T_NO_LEAK({
        ct_tensor *x[1] = {ct_requires_grad(t_rand((int64_t[]){6, 3}, 2, CT_F64, -1, 1), true)};
        t_gradcheck(f_split, x, 1, NULL, 1e-6, 1e-8, 1e-6);
        ct_tensor *y[1] = {ct_requires_grad(t_rand((int64_t[]){3, 8}, 2, CT_F64, -1, 1), true)};
        t_gradcheck(f_chunk, y, 1, NULL, 1e-6, 1e-8, 1e-6);
    });
}

/* ---- errors ---------------------------------------------------------------------------- */

Test(join, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *a = ct_zeros((int64_t[]){2, 3}, 2, CT_F32, CT_CPU);
        ct_tensor *b = ct_zeros((int64_t[]){4, 3}, 2, CT_F32, CT_CPU);
        ct_tensor *ts[2] = {a, b};
        cr_assert_null(ct_cat(ts, 2, 1));
        t_assert_error(CT_ERR_SHAPE, "ct_cat", "tensors[1] has shape [4, 3]", "tensors[0] has shape [2, 3]",
                       "except in dim 1", NULL);
        cr_assert_null(ct_cat(ts, 2, 2));
        t_assert_error(CT_ERR_DIM, "ct_cat", "dim 2", NULL);
        cr_assert_null(ct_cat(ts, 0, 0));
        t_assert_error(CT_ERR_VALUE, "ct_cat", "at least one tensor", NULL);
        cr_assert_null(ct_cat(NULL, 2, 0));
        t_assert_error(CT_ERR_NULL, "ct_cat", "tensors", NULL);
        ct_tensor *with_null[2] = {a, NULL};
        cr_assert_null(ct_cat(with_null, 2, 0));
        t_assert_error(CT_ERR_NULL, "ct_cat", "tensors[1] is NULL", NULL);
        ct_tensor *mixed[2] = {a, ct_zeros((int64_t[]){2, 3}, 2, CT_F64, CT_CPU)};
        cr_assert_null(ct_cat(mixed, 2, 0));
        t_assert_error(CT_ERR_DTYPE, "ct_cat", "tensors[1] is f64", "f32", NULL);
        ct_tensor *scalars[2] = {ct_scalar(1, CT_F32, CT_CPU), ct_scalar(2, CT_F32, CT_CPU)};
        cr_assert_null(ct_cat(scalars, 2, 0));
        t_assert_error(CT_ERR_DIM, "ct_cat", "0-dimensional", NULL);
        t_assert_shape(ct_stack(scalars, 2, 0), (int64_t[]){2}, 1);

        cr_assert_null(ct_stack(ts, 2, 0));
        t_assert_error(CT_ERR_SHAPE, "ct_stack", "tensors[1] has shape [4, 3]", NULL);
        ct_tensor *same[2] = {a, a};
        cr_assert_null(ct_stack(same, 2, 3));
        t_assert_error(CT_ERR_DIM, "ct_stack", "dim 3", NULL);
        cr_assert_null(ct_stack(mixed, 2, 0));
        t_assert_error(CT_ERR_DTYPE, "ct_stack", NULL);

        ct_tensor *out[4];
        cr_assert_eq(ct_split(a, 0, 1, out, 4), -1);
        t_assert_error(CT_ERR_VALUE, "ct_split", "split_size", NULL);
        cr_assert_eq(ct_split(a, 1, 5, out, 4), -1);
        t_assert_error(CT_ERR_DIM, "ct_split", "dim 5", NULL);
        cr_assert_eq(ct_split(scalars[0], 1, 0, out, 4), -1);
        t_assert_error(CT_ERR_DIM, "ct_split", "0-dimensional", NULL);
        cr_assert_eq(ct_split(a, 1, 0, NULL, 4), -1);
        t_assert_error(CT_ERR_NULL, "ct_split", "out", NULL);
        cr_assert_eq(ct_split(NULL, 1, 0, out, 4), -1);
        t_assert_error(CT_ERR_NULL, "ct_split", "argument a is NULL", NULL);
        cr_assert_eq(ct_chunk(a, 0, 0, out, 4), -1);
        t_assert_error(CT_ERR_VALUE, "ct_chunk", "chunks", NULL);
        cr_assert_eq(ct_chunk(a, 2, -3, out, 4), -1);
        t_assert_error(CT_ERR_DIM, "ct_chunk", NULL);
        cr_assert_eq(ct_chunk(a, 2, 0, out, -1), -1);
        t_assert_error(CT_ERR_VALUE, "ct_chunk", "max_out", NULL);
    });
}
