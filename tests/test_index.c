/* ct_index_select, ct_gather, ct_scatter_add, ct_one_hot: naive references for every
 * dtype and strided operands, determinism of scatter-add, gradients, and bad indices. */
#include "tests/common.h"

#include <string.h>

/* Random I32 indices in [0, limit). */
static ct_tensor *rand_index(const int64_t *shape, int ndim, int64_t limit) {
    ct_tensor *t = ct_cast(t_rand(shape, ndim, CT_F64, 0, (double)limit), CT_I32);
    cr_assert_not_null(t, "%s", ct_last_error_message());
    return t;
}

static ct_tensor *i32(const int32_t *values, const int64_t *shape, int ndim) {
    ct_tensor *t = ct_from_host(values, shape, ndim, CT_I32, CT_CPU);
    cr_assert_not_null(t, "%s", ct_last_error_message());
    return t;
}

static int64_t ravel(const int64_t *coords, int ndim, const int64_t *shape) {
    int64_t lin = 0;
    for (int d = 0; d < ndim; d++)
        lin = lin * shape[d] + coords[d];
    return lin;
}

/* ---- index_select ----------------------------------------------------------------------- */

static void check_index_select(const ct_tensor *a, int dim, const ct_tensor *index) {
    int nd = ct_tensor_ndim(a), w = dim < 0 ? dim + nd : dim;
    int64_t shape[CT_MAX_DIMS], coords[CT_MAX_DIMS];
    memcpy(shape, ct_tensor_shape(a), sizeof(int64_t) * (size_t)nd);
    shape[w] = ct_tensor_numel(index);
    double *av = t_values(a), *iv = t_values(index);
    int64_t numel = ct_tensor_numel(a) / (ct_tensor_shape(a)[w] ? ct_tensor_shape(a)[w] : 1) * shape[w];
    double *ref = malloc(sizeof(double) * (size_t)(numel + 1));
    for (int64_t p = 0; p < numel; p++) {
        t_unravel(p, nd, shape, coords);
        coords[w] = (int64_t)iv[coords[w]];
        ref[p] = av[ravel(coords, nd, ct_tensor_shape(a))];
    }
    ct_tensor *out = ct_index_select(a, dim, index);
    if (ct_tensor_ndim(index) == 0)
        cr_assert_eq(ct_tensor_shape(out)[w], 1);
    t_assert_shape(out, shape, nd);
    t_assert_close(out, ref, 0, 0);
    free(av);
    free(iv);
    free(ref);
}

Test(index, index_select_values) {
    ct_manual_seed(1);
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16, CT_I32, CT_U8};
    for (int k = 0; k < 6; k++) {
        T_NO_LEAK({
            ct_tensor *a = ct_cast(t_rand((int64_t[]){4, 5, 6}, 3, CT_F64, 0, 100), dts[k]);
            for (int dim = -3; dim < 3; dim++) {
                int64_t size = ct_tensor_shape(a)[dim < 0 ? dim + 3 : dim];
                check_index_select(a, dim, rand_index((int64_t[]){7}, 1, size)); /* with repeats */
                check_index_select(a, dim, i32((int32_t[]){2}, NULL, 0));        /* 0-D index */
                check_index_select(a, dim, ct_zeros((int64_t[]){0}, 1, CT_I32, CT_CPU));
            }
            /* Strided index and strided input. */
            ct_tensor *idx = ct_slice(rand_index((int64_t[]){10}, 1, 4), 0, 1, 10, 3);
            check_index_select(ct_transpose(a, 0, 2), 2, idx);
        });
    }
    /* Large enough to run on several threads (embedding-like rows). */
    T_NO_LEAK(check_index_select(t_rand((int64_t[]){300, 64}, 2, CT_F32, -1, 1), 0,
                                 rand_index((int64_t[]){1000}, 1, 300)));
}

/* ---- gather ------------------------------------------------------------------------------ */

static void check_gather(const ct_tensor *a, int dim, const ct_tensor *index) {
    int nd = ct_tensor_ndim(a), w = dim < 0 ? dim + nd : dim;
    double *av = t_values(a), *iv = t_values(index);
    int64_t numel = ct_tensor_numel(index), coords[CT_MAX_DIMS];
    double *ref = malloc(sizeof(double) * (size_t)(numel + 1));
    for (int64_t p = 0; p < numel; p++) {
        t_unravel(p, nd, ct_tensor_shape(index), coords);
        coords[w] = (int64_t)iv[p];
        ref[p] = av[ravel(coords, nd, ct_tensor_shape(a))];
    }
    ct_tensor *out = ct_gather(a, dim, index);
    t_assert_shape(out, ct_tensor_shape(index), nd);
    t_assert_close(out, ref, 0, 0);
    free(av);
    free(iv);
    free(ref);
}

Test(index, gather_values) {
    ct_manual_seed(2);
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16, CT_I32, CT_U8};
    for (int k = 0; k < 6; k++) {
        T_NO_LEAK({
            ct_tensor *a = ct_cast(t_rand((int64_t[]){3, 4, 5}, 3, CT_F64, 0, 100), dts[k]);
            for (int dim = -3; dim < 3; dim++) {
                int w = dim < 0 ? dim + 3 : dim;
                int64_t ishape[3] = {2, 3, 4};
                ishape[w] = 7; /* longer than a along dim: indices repeat */
                check_gather(a, dim, rand_index(ishape, 3, ct_tensor_shape(a)[w]));
                check_gather(a, dim, rand_index((int64_t[]){3, 4, 5}, 3, ct_tensor_shape(a)[w]));
            }
            ct_tensor *idx = ct_transpose(rand_index((int64_t[]){5, 2, 3}, 3, 4), 0, 2); /* (3, 2, 5) */
            check_gather(a, 1, idx);
            check_gather(ct_transpose(a, 0, 1), 1, rand_index((int64_t[]){4, 2, 5}, 3, 3));
        });
    }
    /* Cross-entropy style: one column per row. */
    T_NO_LEAK(check_gather(t_rand((int64_t[]){5000, 10}, 2, CT_F32, -1, 1), 1,
                           rand_index((int64_t[]){5000, 1}, 2, 10)));
}

/* ---- scatter_add ------------------------------------------------------------------------- */

/* Reference in the order the kernel promises (row-major over index, i.e. increasing along
 * dim for any one destination), in `dtype` precision for F32 so the match is exact. */
static double *naive_scatter_add(const ct_tensor *a, int dim, const ct_tensor *index, const ct_tensor *src,
                                 bool in_f32) {
    int nd = ct_tensor_ndim(a), w = dim < 0 ? dim + nd : dim;
    double *ref = t_values(a), *iv = t_values(index), *sv = t_values(src);
    int64_t coords[CT_MAX_DIMS];
    for (int64_t p = 0; p < ct_tensor_numel(index); p++) {
        t_unravel(p, nd, ct_tensor_shape(index), coords);
        double v = sv[ravel(coords, nd, ct_tensor_shape(src))];
        coords[w] = (int64_t)iv[p];
        double *dst = &ref[ravel(coords, nd, ct_tensor_shape(a))];
        *dst = in_f32 ? (double)((float)*dst + (float)v) : *dst + v;
    }
    free(iv);
    free(sv);
    return ref;
}

static void check_scatter_add(const ct_tensor *a, int dim, const ct_tensor *index, const ct_tensor *src, double tol) {
    bool f32 = ct_tensor_dtype(a) == CT_F32;
    double *ref = naive_scatter_add(a, dim, index, src, f32);
    double *before = t_values(a);
    ct_tensor *out = ct_scatter_add(a, dim, index, src);
    t_assert_shape(out, ct_tensor_shape(a), ct_tensor_ndim(a));
    t_assert_close(out, ref, tol, tol);
    t_assert_close(a, before, 0, 0); /* a itself is untouched */
    free(ref);
    free(before);
}

Test(index, scatter_add_values) {
    ct_manual_seed(3);
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16, CT_I32, CT_U8};
    double tols[] = {0, 1e-12, 1e-2, 2e-2, 0, 0};
    for (int k = 0; k < 6; k++) {
        T_NO_LEAK({
            bool is_int = dts[k] == CT_I32 || dts[k] == CT_U8;
            ct_tensor *a = ct_cast(t_rand((int64_t[]){3, 4, 5}, 3, CT_F64, 0, is_int ? 10 : 1), dts[k]);
            ct_tensor *src = ct_cast(t_rand((int64_t[]){6, 8, 6}, 3, CT_F64, 0, is_int ? 10 : 1), dts[k]);
            for (int dim = -3; dim < 3; dim++) {
                int w = dim < 0 ? dim + 3 : dim;
                int64_t ishape[3] = {2, 3, 4};
                ishape[w] = 6; /* more entries than a has along dim: duplicates accumulate */
                check_scatter_add(a, dim, rand_index(ishape, 3, ct_tensor_shape(a)[w]), src, tols[k]);
            }
            /* Strided operands. */
            ct_tensor *at = ct_transpose(a, 0, 2); /* (5, 4, 3) */
            ct_tensor *idx = ct_transpose(rand_index((int64_t[]){3, 6, 5}, 3, 4), 0, 2); /* (5, 6, 3) */
            check_scatter_add(at, 1, idx, ct_transpose(src, 0, 2), tols[k]);
        });
    }
}

Test(index, scatter_add_is_deterministic) {
    ct_manual_seed(4);
    /* Big enough for several threads; many duplicates per destination; F32 sums compared
     * exactly with the sequential order. */
    T_NO_LEAK({
        ct_tensor *a = t_rand((int64_t[]){64, 256}, 2, CT_F32, -1, 1);
        ct_tensor *src = t_rand((int64_t[]){400, 256}, 2, CT_F32, -1e3, 1e3);
        check_scatter_add(a, 0, rand_index((int64_t[]){400, 256}, 2, 64), src, 0);
        ct_tensor *b = t_rand((int64_t[]){256, 64}, 2, CT_F32, -1, 1);
        check_scatter_add(b, 1, rand_index((int64_t[]){256, 400}, 2, 64), ct_transpose(src, 0, 1), 0);
    });
}

/* ---- one_hot ------------------------------------------------------------------------------ */

Test(index, one_hot_values) {
    ct_dtype dts[] = {CT_F32, CT_F64, CT_F16, CT_BF16, CT_I32, CT_U8};
    for (int k = 0; k < 6; k++) {
        T_NO_LEAK({
            int32_t lv[6] = {0, 3, 1, 3, 2, 0};
            ct_tensor *labels = i32(lv, (int64_t[]){2, 3}, 2);
            ct_tensor *out = ct_one_hot(labels, 4, dts[k]);
            t_assert_shape(out, (int64_t[]){2, 3, 4}, 3);
            cr_assert_eq(ct_tensor_dtype(out), dts[k]);
            double ref[24] = {0};
            for (int i = 0; i < 6; i++)
                ref[i * 4 + lv[i]] = 1;
            t_assert_close(out, ref, 0, 0);
            /* Transposed labels: (3, 2). */
            out = ct_one_hot(ct_transpose(labels, 0, 1), 4, dts[k]);
            double reft[24] = {0};
            for (int r = 0; r < 3; r++)
                for (int c = 0; c < 2; c++)
                    reft[(r * 2 + c) * 4 + lv[c * 3 + r]] = 1;
            t_assert_close(out, reft, 0, 0);
            /* 0-D label. */
            out = ct_one_hot(i32((int32_t[]){2}, NULL, 0), 3, dts[k]);
            t_assert_shape(out, (int64_t[]){3}, 1);
            t_assert_close(out, (double[]){0, 0, 1}, 0, 0);
        });
    }
}

/* ---- gradients ---------------------------------------------------------------------------- */

typedef struct index_ctx {
    int dim;
    ct_tensor *index;
} index_ctx;

static ct_tensor *f_index_select(ct_tensor **x, void *ctx) {
    index_ctx *c = ctx;
    return ct_index_select(x[0], c->dim, c->index);
}
static ct_tensor *f_gather(ct_tensor **x, void *ctx) {
    index_ctx *c = ctx;
    return ct_gather(x[0], c->dim, c->index);
}
static ct_tensor *f_scatter_add(ct_tensor **x, void *ctx) {
    index_ctx *c = ctx;
    return ct_scatter_add(x[0], c->dim, c->index, x[1]);
}

Test(index, gradients) {
    ct_manual_seed(5);
    T_NO_LEAK({
        ct_tensor *x[2] = {ct_requires_grad(t_rand((int64_t[]){4, 3}, 2, CT_F64, -1, 1), true), NULL};
        /* Repeated rows: their gradients add up. */
        index_ctx c = {0, i32((int32_t[]){1, 3, 1, 1, 0}, (int64_t[]){5}, 1)};
        t_gradcheck(f_index_select, x, 1, &c, 1e-6, 1e-8, 1e-6);
        c = (index_ctx){-1, i32((int32_t[]){2, 2}, (int64_t[]){2}, 1)};
        t_gradcheck(f_index_select, x, 1, &c, 1e-6, 1e-8, 1e-6);

        c = (index_ctx){1, rand_index((int64_t[]){3, 5}, 2, 3)};
        t_gradcheck(f_gather, x, 1, &c, 1e-6, 1e-8, 1e-6);
        c = (index_ctx){0, rand_index((int64_t[]){6, 2}, 2, 4)};
        t_gradcheck(f_gather, x, 1, &c, 1e-6, 1e-8, 1e-6);

        /* src larger than index: its unused elements get a zero gradient. */
        ct_tensor *y[2] = {ct_requires_grad(t_rand((int64_t[]){4, 3}, 2, CT_F64, -1, 1), true),
                           ct_requires_grad(t_rand((int64_t[]){6, 4}, 2, CT_F64, -1, 1), true)};
        c = (index_ctx){0, rand_index((int64_t[]){5, 3}, 2, 4)};
        t_gradcheck(f_scatter_add, y, 2, &c, 1e-6, 1e-8, 1e-6);
        c = (index_ctx){1, rand_index((int64_t[]){4, 2}, 2, 3)};
        t_gradcheck(f_scatter_add, y, 2, &c, 1e-6, 1e-8, 1e-6);
    });
}

Test(index, half_precision_gradient_accumulates) {
    T_NO_LEAK({
        ct_tensor *a = ct_requires_grad(ct_zeros((int64_t[]){3, 2}, 2, CT_BF16, CT_CPU), true);
        ct_tensor *out = ct_index_select(a, 0, i32((int32_t[]){2, 0, 2, 2}, (int64_t[]){4}, 1));
        cr_assert_eq(ct_backward(ct_sum(out, NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_tensor_dtype(ct_grad(a)), CT_BF16);
        t_assert_close(ct_grad(a), (double[]){1, 1, 0, 0, 3, 3}, 0, 0);
    });
}

/* ---- errors ------------------------------------------------------------------------------ */

Test(index, out_of_range_indices) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *a = ct_requires_grad(ct_zeros((int64_t[]){4, 5}, 2, CT_F32, CT_CPU), true);
        int64_t live = ct_live_tensors();
        cr_assert_null(ct_index_select(a, 1, i32((int32_t[]){0, 4, 5, 1}, (int64_t[]){4}, 1)));
        t_assert_error(CT_ERR_DIM, "ct_index_select: index 5 out of range for dim 1 of size 5", NULL);
        cr_assert_null(ct_index_select(a, -2, i32((int32_t[]){-1}, (int64_t[]){1}, 1)));
        t_assert_error(CT_ERR_DIM, "ct_index_select: index -1 out of range for dim 0 of size 4", NULL);
        cr_assert_null(ct_gather(a, 0, i32((int32_t[]){0, 1, 9, 2}, (int64_t[]){2, 2}, 2)));
        t_assert_error(CT_ERR_DIM, "ct_gather: index 9 out of range for dim 0 of size 4", NULL);
        ct_tensor *src = ct_ones((int64_t[]){2, 2}, 2, CT_F32, CT_CPU);
        cr_assert_null(ct_scatter_add(a, 1, i32((int32_t[]){0, 1, 2, 7}, (int64_t[]){2, 2}, 2), src));
        t_assert_error(CT_ERR_DIM, "ct_scatter_add: index 7 out of range for dim 1 of size 5", NULL);
        cr_assert_null(ct_one_hot(i32((int32_t[]){0, 3}, (int64_t[]){2}, 1), 3, CT_F32));
        t_assert_error(CT_ERR_DIM, "ct_one_hot: index 3 out of range for dim 1 of size 3", NULL);
        /* Only the index tensors made above (5, plus src) were created: no output leaked. */
        cr_assert_eq(ct_live_tensors(), live + 6);
    });
}

Test(index, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *a = ct_zeros((int64_t[]){4, 5}, 2, CT_F32, CT_CPU);
        ct_tensor *fidx = ct_zeros((int64_t[]){2}, 1, CT_F32, CT_CPU);
        cr_assert_null(ct_index_select(a, 0, fidx));
        t_assert_error(CT_ERR_DTYPE, "ct_index_select", "index must be i32", "f32", NULL);
        cr_assert_null(ct_index_select(a, 0, ct_zeros((int64_t[]){2, 2}, 2, CT_I32, CT_CPU)));
        t_assert_error(CT_ERR_SHAPE, "ct_index_select", "0-D or 1-D", NULL);
        cr_assert_null(ct_index_select(a, 2, ct_zeros((int64_t[]){2}, 1, CT_I32, CT_CPU)));
        t_assert_error(CT_ERR_DIM, "ct_index_select", "dim 2", NULL);
        cr_assert_null(ct_index_select(ct_scalar(1, CT_F32, CT_CPU), 0, ct_zeros((int64_t[]){1}, 1, CT_I32, CT_CPU)));
        t_assert_error(CT_ERR_DIM, "0-dimensional", NULL);
        cr_assert_null(ct_index_select(a, 0, NULL));
        t_assert_error(CT_ERR_NULL, "ct_index_select", "argument index is NULL", NULL);

        cr_assert_null(ct_gather(a, 0, ct_zeros((int64_t[]){2}, 1, CT_I32, CT_CPU)));
        t_assert_error(CT_ERR_SHAPE, "ct_gather", "index has 1 dims", NULL);
        cr_assert_null(ct_gather(a, 0, ct_zeros((int64_t[]){2, 6}, 2, CT_I32, CT_CPU)));
        t_assert_error(CT_ERR_SHAPE, "ct_gather", "[2, 6]", "[4, 5]", "dim 1", NULL);

        ct_tensor *idx = ct_zeros((int64_t[]){2, 2}, 2, CT_I32, CT_CPU);
        cr_assert_null(ct_scatter_add(a, 0, idx, ct_zeros((int64_t[]){2, 2}, 2, CT_F64, CT_CPU)));
        t_assert_error(CT_ERR_DTYPE, "ct_scatter_add", "f32", "f64", NULL);
        cr_assert_null(ct_scatter_add(a, 0, idx, ct_zeros((int64_t[]){2, 1}, 2, CT_F32, CT_CPU)));
        t_assert_error(CT_ERR_SHAPE, "ct_scatter_add", "larger than src", NULL);
        cr_assert_null(ct_scatter_add(a, 0, ct_zeros((int64_t[]){2, 6}, 2, CT_I32, CT_CPU),
                                      ct_zeros((int64_t[]){2, 6}, 2, CT_F32, CT_CPU)));
        t_assert_error(CT_ERR_SHAPE, "ct_scatter_add", "larger than a", NULL);
        cr_assert_null(ct_scatter_add(a, 0, idx, NULL));
        t_assert_error(CT_ERR_NULL, "ct_scatter_add", "argument src is NULL", NULL);

        cr_assert_null(ct_one_hot(fidx, 3, CT_F32));
        t_assert_error(CT_ERR_DTYPE, "ct_one_hot", "labels must be i32", NULL);
        cr_assert_null(ct_one_hot(idx, 0, CT_F32));
        t_assert_error(CT_ERR_VALUE, "ct_one_hot", "num_classes", NULL);
        cr_assert_null(ct_one_hot(idx, 3, (ct_dtype)42));
        t_assert_error(CT_ERR_DTYPE, "ct_one_hot", "invalid dtype", NULL);
        /* The first error survives a chain. */
        cr_assert_null(ct_gather(ct_index_select(a, 0, fidx), 0, idx));
        t_assert_error(CT_ERR_DTYPE, "ct_index_select", NULL);
    });
}
