/* Reductions: sum, mean, var, std, logsumexp, max/min (over one dim and over all),
 * argmax/argmin — forward against a naive f64 reference, gradients, edge cases, errors. */
#include "tests/common.h"

#include <omp.h>
#include <string.h>

typedef enum kind { K_SUM, K_MEAN, K_VAR, K_STD, K_LSE, K_MAX, K_MIN } kind;
static const char *const kind_names[] = {"sum", "mean", "var", "std", "logsumexp", "max", "min"};

/* ---- test-side randomness (shapes and dims; values come from ct_uniform) ------------- */

static uint64_t rng_state = 12345;
static int rnd(int n) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (int)((rng_state >> 33) % (uint64_t)n);
}

typedef struct red_case {
    int ndim;
    int64_t shape[4];
    int dims[4], ndims;
    bool keepdim;
} red_case;

/* Up to 4 dims of sizes 1..7 (0 sometimes); a random subset of dims, some negative;
 * ndims = 0 now and then (all dims). */
static void random_case(red_case *c, bool allow_empty) {
    static const int64_t sizes[] = {1, 2, 3, 4, 5, 7, 1, 0};
    c->ndim = rnd(5);
    for (int d = 0; d < c->ndim; d++)
        c->shape[d] = sizes[rnd(allow_empty ? 8 : 7)];
    c->ndims = 0;
    for (int d = 0; d < c->ndim; d++)
        if (rnd(2))
            c->dims[c->ndims++] = rnd(2) ? d : d - c->ndim;
    c->keepdim = rnd(2);
}

/* A tensor of `shape` with values in [lo, hi); when `strided`, a non-contiguous view (a
 * permuted, step-2 slice of a larger tensor). */
static ct_tensor *make_input(const int64_t *shape, int ndim, ct_dtype dt, double lo, double hi, bool strided) {
    if (!strided || ndim == 0)
        return t_rand(shape, ndim, dt, lo, hi);
    int64_t bshape[CT_MAX_DIMS];
    int perm[CT_MAX_DIMS];
    for (int d = 0; d < ndim; d++) {
        bshape[d] = shape[ndim - 1 - d];
        perm[d] = ndim - 1 - d;
    }
    bshape[0] *= 2;
    ct_tensor *base = t_rand(bshape, ndim, dt, lo, hi);
    ct_tensor *t = ct_permute(ct_slice(base, 0, 0, bshape[0], 2), perm, ndim);
    cr_assert_not_null(t, "%s", ct_last_error_message());
    return t;
}

/* Mask of reduced dims from a dims list (ndims = 0: all). */
static void dims_mask(int ndim, const int *dims, int ndims, bool *mask) {
    for (int d = 0; d < CT_MAX_DIMS; d++)
        mask[d] = ndims == 0;
    for (int i = 0; i < ndims; i++)
        mask[dims[i] < 0 ? dims[i] + ndim : dims[i]] = true;
}

static void expected_shape(const ct_tensor *a, const bool *mask, bool keepdim, int64_t *shape, int *ndim) {
    *ndim = 0;
    for (int d = 0; d < ct_tensor_ndim(a); d++) {
        if (!mask[d])
            shape[(*ndim)++] = ct_tensor_shape(a)[d];
        else if (keepdim)
            shape[(*ndim)++] = 1;
    }
}

/* Naive f64 reduction of a's values over `mask`, one output per kept index in row-major
 * order. For K_MAX/K_MIN, `first` (when not NULL) gets the first position along `dim`. */
static double *reference(const ct_tensor *a, const bool *mask, kind k, int correction, int dim, int32_t *first) {
    int nd = ct_tensor_ndim(a);
    const int64_t *shape = ct_tensor_shape(a);
    int64_t numel = ct_tensor_numel(a), K = 1;
    for (int d = 0; d < nd; d++)
        if (!mask[d])
            K *= shape[d];
    double *v = t_values(a);
    double *out = calloc((size_t)K + 1, sizeof(double)), *aux = calloc((size_t)K + 1, sizeof(double));
    int64_t *count = calloc((size_t)K + 1, sizeof(int64_t));
    int64_t *kidx = malloc(sizeof(int64_t) * (size_t)(numel + 1));
    int64_t coords[CT_MAX_DIMS];
    for (int64_t i = 0; i < numel; i++) {
        t_unravel(i, nd, shape, coords);
        int64_t k = 0;
        for (int d = 0; d < nd; d++)
            if (!mask[d])
                k = k * shape[d] + coords[d];
        kidx[i] = k;
    }
    switch (k) {
    case K_SUM:
    case K_MEAN:
        for (int64_t i = 0; i < numel; i++) {
            out[kidx[i]] += v[i];
            count[kidx[i]]++;
        }
        if (k == K_MEAN)
            for (int64_t j = 0; j < K; j++)
                out[j] = count[j] ? out[j] / (double)count[j] : NAN;
        break;
    case K_VAR:
    case K_STD: { /* two passes in long double, so the mean's rounding does not show */
        long double *mean = calloc((size_t)K + 1, sizeof(long double));
        long double *m2 = calloc((size_t)K + 1, sizeof(long double));
        for (int64_t i = 0; i < numel; i++) {
            mean[kidx[i]] += v[i];
            count[kidx[i]]++;
        }
        for (int64_t j = 0; j < K; j++)
            mean[j] /= (long double)count[j];
        for (int64_t i = 0; i < numel; i++)
            m2[kidx[i]] += (v[i] - mean[kidx[i]]) * (v[i] - mean[kidx[i]]);
        for (int64_t j = 0; j < K; j++) {
            double divisor = fmax(0.0, (double)(count[j] - correction));
            out[j] = (double)m2[j] / divisor;
            if (k == K_STD)
                out[j] = sqrt(out[j]);
        }
        free(mean);
        free(m2);
        break;
    }
    case K_LSE:
        for (int64_t j = 0; j < K; j++)
            aux[j] = -INFINITY;
        for (int64_t i = 0; i < numel; i++)
            if (isnan(v[i]) || v[i] > aux[kidx[i]])
                aux[kidx[i]] = isnan(aux[kidx[i]]) ? aux[kidx[i]] : v[i];
        for (int64_t i = 0; i < numel; i++)
            if (isfinite(aux[kidx[i]]))
                out[kidx[i]] += exp(v[i] - aux[kidx[i]]);
        for (int64_t j = 0; j < K; j++)
            out[j] = isfinite(aux[j]) ? aux[j] + log(out[j]) : aux[j];
        break;
    case K_MAX:
    case K_MIN:
        for (int64_t i = 0; i < numel; i++) {
            int64_t j = kidx[i];
            bool better = count[j] == 0 ||
                          (!isnan(out[j]) && (isnan(v[i]) || (k == K_MAX ? v[i] > out[j] : v[i] < out[j])));
            if (better) {
                out[j] = v[i];
                if (first) {
                    t_unravel(i, nd, shape, coords);
                    first[j] = (int32_t)(nd ? coords[dim] : 0);
                }
            }
            count[j]++;
        }
        for (int64_t j = 0; j < K; j++)
            if (!count[j])
                out[j] = NAN;
        break;
    }
    free(v);
    free(aux);
    free(count);
    free(kidx);
    return out;
}

/* Reduction k of `a` (K_MAX / K_MIN reduce dims[0] and return the values). */
static ct_tensor *run(kind k, const ct_tensor *a, const int *dims, int ndims, int correction, bool keepdim) {
    switch (k) {
    case K_SUM: return ct_sum(a, dims, ndims, keepdim);
    case K_MEAN: return ct_mean(a, dims, ndims, keepdim);
    case K_VAR: return ct_var(a, dims, ndims, correction, keepdim);
    case K_STD: return ct_std(a, dims, ndims, correction, keepdim);
    case K_LSE: return ct_logsumexp(a, dims, ndims, keepdim);
    case K_MAX: return ct_max(a, dims[0], keepdim, NULL);
    default: return ct_min(a, dims[0], keepdim, NULL);
    }
}

/* Run reduction k and compare shape, dtype and values with the reference. */
static void check(kind k, const ct_tensor *a, const int *dims, int ndims, bool keepdim, int correction, double tol) {
    ct_tensor *out = run(k, a, dims, ndims, correction, keepdim);
    cr_assert_not_null(out, "%s of %s: %s", kind_names[k], ct_shape_str(a), ct_last_error_message());
    bool mask[CT_MAX_DIMS];
    dims_mask(ct_tensor_ndim(a), dims, ct_tensor_ndim(a) ? ndims : 0, mask);
    int64_t shape[CT_MAX_DIMS];
    int nd;
    expected_shape(a, mask, keepdim, shape, &nd);
    t_assert_shape(out, shape, nd);
    cr_assert_eq(ct_tensor_dtype(out), ct_tensor_dtype(a));
    double *ref = reference(a, mask, k, correction, 0, NULL);
    t_assert_close(out, ref, tol, tol);
    free(ref);
}

/* ---- forward ------------------------------------------------------------------------ */

Test(reduce, sum_mean_random_shapes) {
    ct_manual_seed(1);
    for (int i = 0; i < 80; i++) {
        red_case c;
        random_case(&c, true);
        for (int v = 0; v < 4; v++) {
            ct_dtype dt = v % 2 ? CT_F64 : CT_F32;
            T_NO_LEAK({
                ct_tensor *a = make_input(c.shape, c.ndim, dt, -2, 2, v >= 2);
                check(K_SUM, a, c.dims, c.ndims, c.keepdim, 0, dt == CT_F64 ? 1e-12 : 1e-5);
                check(K_MEAN, a, c.dims, c.ndims, c.keepdim, 0, dt == CT_F64 ? 1e-12 : 1e-5);
            });
        }
    }
}

Test(reduce, var_std_logsumexp_random_shapes) {
    ct_manual_seed(2);
    for (int i = 0; i < 80; i++) {
        red_case c;
        random_case(&c, true);
        int correction = rnd(3);
        for (int v = 0; v < 4; v++) {
            ct_dtype dt = v % 2 ? CT_F64 : CT_F32;
            double tol = dt == CT_F64 ? 1e-12 : 1e-5;
            T_NO_LEAK({
                ct_tensor *a = make_input(c.shape, c.ndim, dt, -3, 3, v >= 2);
                check(K_VAR, a, c.dims, c.ndims, c.keepdim, correction, tol);
                check(K_STD, a, c.dims, c.ndims, c.keepdim, correction, tol);
                check(K_LSE, a, c.dims, c.ndims, c.keepdim, 0, tol);
            });
        }
    }
}

Test(reduce, half_precision_against_reference) {
    ct_manual_seed(3);
    for (int i = 0; i < 30; i++) {
        red_case c;
        random_case(&c, false);
        for (int v = 0; v < 2; v++) {
            ct_dtype dt = v ? CT_BF16 : CT_F16;
            double tol = dt == CT_BF16 ? 2e-2 : 1e-2;
            T_NO_LEAK({
                ct_tensor *a = make_input(c.shape, c.ndim, dt, -2, 2, i % 2);
                for (kind k = K_SUM; k <= K_LSE; k++)
                    check(k, a, c.dims, c.ndims, c.keepdim, 1, tol);
                if (c.ndim > 0) {
                    int dim = rnd(c.ndim);
                    check(K_MAX, a, &dim, 1, c.keepdim, 0, 0);
                    check(K_MIN, a, &dim, 1, c.keepdim, 0, 0);
                }
            });
        }
    }
}

/* Reductions that leave the innermost memory dim: over dim 0 of [N, C], the middle dim of
 * a 3-D tensor, leading dims; more than one block of lanes, large enough to run threaded. */
Test(reduce, outer_paths) {
    ct_manual_seed(4);
    struct {
        int64_t shape[3];
        int ndim, dims[2], ndims;
    } cases[] = {
        {{300, 257}, 2, {0}, 1},        {{7, 50, 130}, 3, {1}, 1}, {{7, 50, 130}, 3, {0, 1}, 2},
        {{7, 50, 130}, 3, {0, 2}, 2},   {{4, 3, 5}, 3, {-2}, 1},   {{3, 600}, 2, {0}, 1},
        {{1000, 3}, 2, {0}, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int v = 0; v < 4; v++) {
            ct_dtype dt = v % 2 ? CT_F64 : CT_F32;
            double tol = dt == CT_F64 ? 1e-11 : 1e-5;
            T_NO_LEAK({
                ct_tensor *a = make_input(cases[i].shape, cases[i].ndim, dt, -2, 2, v >= 2);
                for (kind k = K_SUM; k <= K_LSE; k++)
                    for (int keep = 0; keep < 2; keep++)
                        check(k, a, cases[i].dims, cases[i].ndims, keep, 1, tol);
                for (int j = 0; j < cases[i].ndims; j++) {
                    check(K_MAX, a, &cases[i].dims[j], 1, false, 0, 0);
                    check(K_MIN, a, &cases[i].dims[j], 1, true, 0, 0);
                }
            });
        }
    }
}

/* One output from more than 2^16 elements: the work is split between threads, in chunks
 * that do not depend on the thread count. */
Test(reduce, large_all_reduce) {
    ct_manual_seed(5);
    T_NO_LEAK({
        ct_tensor *flat = t_rand((int64_t[]){100003}, 1, CT_F32, -1, 1);
        ct_tensor *wide = ct_transpose(t_rand((int64_t[]){300, 401}, 2, CT_F32, -1, 1), 0, 1);
        ct_tensor *inputs[] = {flat, wide};
        for (int i = 0; i < 2; i++) {
            for (kind k = K_SUM; k <= K_LSE; k++)
                check(k, inputs[i], NULL, 0, false, 1, 1e-5);
            bool all[CT_MAX_DIMS] = {true, true};
            double *ref = reference(inputs[i], all, K_MAX, 0, 0, NULL);
            t_assert_close(ct_max_all(inputs[i]), ref, 0, 0);
            free(ref);
            ref = reference(inputs[i], all, K_MIN, 0, 0, NULL);
            t_assert_close(ct_min_all(inputs[i]), ref, 0, 0);
            free(ref);
        }
        /* Same bits with one thread and with two. */
        int threads = omp_get_max_threads();
        double results[2][4];
        for (int t = 0; t < 2; t++) {
            omp_set_num_threads(t ? 2 : 1);
            results[t][0] = ct_item(ct_sum(flat, NULL, 0, false));
            results[t][1] = ct_item(ct_var(flat, NULL, 0, 1, false));
            results[t][2] = ct_item(ct_logsumexp(flat, NULL, 0, false));
            results[t][3] = ct_item(ct_sum(wide, NULL, 0, false));
        }
        omp_set_num_threads(threads);
        for (int j = 0; j < 4; j++)
            cr_assert_eq(results[0][j], results[1][j], "result %d depends on the thread count: %.17g vs %.17g", j,
                         results[0][j], results[1][j]);
    });
}

/* Large offsets: a one-pass sum of squares would cancel catastrophically. */
Test(reduce, variance_is_stable) {
    ct_manual_seed(6);
    T_NO_LEAK({
        ct_tensor *a = ct_add_scalar(t_rand((int64_t[]){100003}, 1, CT_F64, -1, 1), 1e9);
        ct_tensor *b = ct_add_scalar(t_rand((int64_t[]){1000, 40}, 2, CT_F64, -1, 1), 1e8);
        ct_tensor *c = ct_add_scalar(t_rand((int64_t[]){64, 2000}, 2, CT_F32, 0, 1), 1e4);
        bool all[CT_MAX_DIMS] = {true, true}, dim0[CT_MAX_DIMS] = {true}, dim1[CT_MAX_DIMS] = {false, true};
        double *ref = reference(a, all, K_VAR, 1, 0, NULL);
        cr_assert(fabs(ref[0] - 1.0 / 3.0) < 1e-2);
        t_assert_close(ct_var(a, NULL, 0, 1, false), ref, 0, 1e-9);
        free(ref);
        ref = reference(b, dim0, K_VAR, 0, 0, NULL);
        t_assert_close(ct_var(b, (int[]){0}, 1, 0, false), ref, 0, 1e-7);
        free(ref);
        ref = reference(c, dim1, K_STD, 1, 0, NULL);
        t_assert_close(ct_std(c, (int[]){1}, 1, 1, false), ref, 0, 1e-5);
        free(ref);
    });
}

Test(reduce, empty_tensors) {
    T_NO_LEAK({
        ct_tensor *a = ct_zeros((int64_t[]){0, 3}, 2, CT_F32, CT_CPU);
        int d0 = 0, d1 = 1;
        t_assert_close(ct_sum(a, &d0, 1, false), (double[]){0, 0, 0}, 0, 0);
        t_assert_close(ct_mean(a, &d0, 1, true), (double[]){NAN, NAN, NAN}, 0, 0);
        t_assert_close(ct_var(a, &d0, 1, 1, false), (double[]){NAN, NAN, NAN}, 0, 0);
        t_assert_close(ct_std(a, &d0, 1, 0, false), (double[]){NAN, NAN, NAN}, 0, 0);
        t_assert_close(ct_logsumexp(a, &d0, 1, false), (double[]){-INFINITY, -INFINITY, -INFINITY}, 0, 0);
        t_assert_shape(ct_sum(a, &d1, 1, false), (int64_t[]){0}, 1);
        t_assert_shape(ct_sum(a, &d1, 1, true), (int64_t[]){0, 1}, 2);
        cr_assert_eq(ct_item(ct_sum(a, NULL, 0, false)), 0.0);
        cr_assert(isnan(ct_item(ct_mean(a, NULL, 0, false))));
        ct_tensor *idx = NULL;
        t_assert_shape(ct_max(a, 1, false, &idx), (int64_t[]){0}, 1);
        t_assert_shape(idx, (int64_t[]){0}, 1);
        t_assert_shape(ct_argmin(a, -1, true), (int64_t[]){0, 1}, 2);
    });
}

Test(reduce, zero_dim_inputs) {
    T_NO_LEAK({
        ct_tensor *s = ct_scalar(2.5, CT_F64, CT_CPU);
        int d0 = 0, dm = -1;
        cr_assert_eq(ct_item(ct_sum(s, NULL, 0, false)), 2.5);
        cr_assert_eq(ct_item(ct_sum(s, &dm, 1, true)), 2.5);
        cr_assert_eq(ct_item(ct_mean(s, &d0, 1, false)), 2.5);
        cr_assert_eq(ct_item(ct_var(s, NULL, 0, 0, false)), 0.0);
        cr_assert(isnan(ct_item(ct_var(s, NULL, 0, 1, false))));
        cr_assert_eq(ct_item(ct_logsumexp(s, NULL, 0, false)), 2.5);
        ct_tensor *idx;
        ct_tensor *m = ct_max(s, 0, true, &idx);
        cr_assert_eq(ct_tensor_ndim(m), 0);
        cr_assert_eq(ct_item(m), 2.5);
        cr_assert_eq(ct_item(idx), 0.0);
        cr_assert_eq(ct_item(ct_argmin(s, -1, false)), 0.0);
        cr_assert_eq(ct_item(ct_max_all(s)), 2.5);
    });
}

/* Values and first indices of max/min over one dim, with many ties (integer values). */
Test(reduce, max_min_indices_random) {
    ct_manual_seed(7);
    ct_dtype dtypes[] = {CT_F32, CT_F64, CT_F16, CT_BF16, CT_I32};
    for (int i = 0; i < 60; i++) {
        red_case c;
        random_case(&c, false);
        if (c.ndim == 0)
            continue;
        int dim = rnd(c.ndim);
        for (int v = 0; v < 5; v++) {
            T_NO_LEAK({
                ct_tensor *raw = make_input(c.shape, c.ndim, CT_F64, -3, 3, i % 2);
                ct_tensor *a = ct_cast(ct_cast(raw, CT_I32), dtypes[v]);
                for (int k = 0; k < 2; k++) {
                    int signed_dim = rnd(2) ? dim : dim - c.ndim;
                    ct_tensor *idx = NULL;
                    ct_tensor *val =
                        k ? ct_min(a, signed_dim, c.keepdim, &idx) : ct_max(a, signed_dim, c.keepdim, &idx);
                    ct_tensor *arg = k ? ct_argmin(a, signed_dim, c.keepdim) : ct_argmax(a, signed_dim, c.keepdim);
                    cr_assert_not_null(val, "%s", ct_last_error_message());
                    cr_assert_eq(ct_tensor_dtype(idx), CT_I32);
                    cr_assert_eq(ct_tensor_dtype(arg), CT_I32);
                    cr_assert_eq(ct_tensor_dtype(val), dtypes[v]);
                    bool mask[CT_MAX_DIMS] = {false};
                    mask[dim] = true;
                    int64_t shape[CT_MAX_DIMS];
                    int nd;
                    expected_shape(a, mask, c.keepdim, shape, &nd);
                    t_assert_shape(val, shape, nd);
                    t_assert_shape(idx, shape, nd);
                    int32_t *first = calloc((size_t)ct_tensor_numel(val) + 1, sizeof(int32_t));
                    double *ref = reference(a, mask, k ? K_MIN : K_MAX, 0, dim, first);
                    t_assert_close(val, ref, 0, 0);
                    double *firstd = malloc(sizeof(double) * ((size_t)ct_tensor_numel(val) + 1));
                    for (int64_t j = 0; j < ct_tensor_numel(val); j++)
                        firstd[j] = first[j];
                    t_assert_close(idx, firstd, 0, 0);
                    t_assert_close(arg, firstd, 0, 0);
                    free(first);
                    free(firstd);
                    free(ref);
                }
            });
        }
    }
}

Test(reduce, nan_propagates) {
    T_NO_LEAK({
        ct_tensor *a = ct_from_host((float[]){1, NAN, 3, NAN, -1, 2}, (int64_t[]){2, 3}, 2, CT_F32, CT_CPU);
        ct_tensor *flat = ct_reshape(a, (int64_t[]){6}, 1);
        ct_tensor *idx;
        t_assert_close(ct_max(flat, 0, false, &idx), (double[]){NAN}, 0, 0);
        cr_assert_eq(ct_item(idx), 1.0);
        t_assert_close(ct_min(a, 1, false, &idx), (double[]){NAN, NAN}, 0, 0);
        t_assert_close(idx, (double[]){1, 0}, 0, 0);
        t_assert_close(ct_argmax(a, 0, false), (double[]){1, 0, 0}, 0, 0);
        t_assert_close(ct_argmax(a, 1, false), (double[]){1, 0}, 0, 0);
        cr_assert(isnan(ct_item(ct_max_all(a))));
        cr_assert(isnan(ct_item(ct_min_all(a))));
        t_assert_close(ct_logsumexp(a, (int[]){1}, 1, false), (double[]){NAN, NAN}, 0, 0);
        t_assert_close(ct_sum(a, (int[]){0}, 1, false), (double[]){NAN, NAN, 5}, 0, 0);
    });
}

Test(reduce, logsumexp_extremes) {
    T_NO_LEAK({
        ct_tensor *a = ct_from_host((double[]){1000, 1000, -INFINITY, -INFINITY, INFINITY, 1, -INFINITY, 0, 1000, 1001},
                                    (int64_t[]){5, 2}, 2, CT_F64, CT_CPU);
        double ref[] = {1000 + log(2.0), -INFINITY, INFINITY, 0, 1001 + log1p(exp(-1.0))};
        t_assert_close(ct_logsumexp(a, (int[]){1}, 1, false), ref, 1e-12, 1e-12);
        t_assert_close(ct_logsumexp(ct_cast(a, CT_F32), (int[]){-1}, 1, false), ref, 1e-4, 1e-6);
        /* The outer path (reducing dim 0 of the transpose) gives the same. */
        ct_tensor *t = ct_contiguous(ct_transpose(a, 0, 1));
        t_assert_close(ct_logsumexp(t, (int[]){0}, 1, false), ref, 1e-12, 1e-12);
    });
}

Test(reduce, int32_sums_and_extremes) {
    T_NO_LEAK({
        int32_t data[] = {5, -7, 100000, 3, 3, -2};
        ct_tensor *a = ct_from_host(data, (int64_t[]){2, 3}, 2, CT_I32, CT_CPU);
        ct_tensor *s = ct_sum(a, (int[]){1}, 1, false);
        cr_assert_eq(ct_tensor_dtype(s), CT_I32);
        t_assert_close(s, (double[]){99998, 4}, 0, 0);
        cr_assert_eq(ct_item(ct_sum(a, NULL, 0, false)), 100002.0);
        ct_tensor *idx;
        t_assert_close(ct_max(a, 0, false, &idx), (double[]){5, 3, 100000}, 0, 0);
        t_assert_close(idx, (double[]){0, 1, 0}, 0, 0);
        t_assert_close(ct_min(a, 1, true, &idx), (double[]){-7, -2}, 0, 0);
        t_assert_close(idx, (double[]){1, 2}, 0, 0);
        cr_assert_eq(ct_item(ct_max_all(a)), 100000.0);
        cr_assert_eq(ct_item(ct_min_all(a)), -7.0);
        t_assert_close(ct_argmax(a, 1, false), (double[]){2, 0}, 0, 0);
    });
}

/* ---- gradients --------------------------------------------------------------------- */

typedef struct grad_ctx {
    kind k;
    int dims[4], ndims;
    bool keepdim;
    int correction;
} grad_ctx;

static ct_tensor *f_reduce(ct_tensor **x, void *ctx) {
    grad_ctx *c = ctx;
    return run(c->k, x[0], c->dims, c->ndims, c->correction, c->keepdim);
}

static void gradcheck_reduce(kind k, const int64_t *shape, int ndim, const int *dims, int ndims, bool keepdim,
                             int correction) {
    grad_ctx c = {.k = k, .ndims = ndims, .keepdim = keepdim, .correction = correction};
    memcpy(c.dims, dims, sizeof(int) * (size_t)ndims);
    T_NO_LEAK({
        ct_tensor *x[1] = {ct_requires_grad(t_rand(shape, ndim, CT_F64, -2, 2), true)};
        t_gradcheck(f_reduce, x, 1, &c, 1e-6, 1e-7, 1e-6);
    });
}

Test(reduce, gradients_of_sets_of_dims) {
    ct_manual_seed(8);
    const int64_t s3[] = {2, 3, 4};
    struct {
        int dims[3], ndims;
    } dsets[] = {{{1}, 1}, {{0, 2}, 2}, {{-1, 0}, 2}, {{0}, 0}, {{2, 1, 0}, 3}};
    for (size_t i = 0; i < sizeof dsets / sizeof dsets[0]; i++)
        for (int keep = 0; keep < 2; keep++)
            for (kind k = K_SUM; k <= K_LSE; k++)
                gradcheck_reduce(k, s3, 3, dsets[i].dims, dsets[i].ndims, keep, (int)(i % 3));
    /* Scalars and size-1 dims. */
    for (kind k = K_SUM; k <= K_LSE; k++) {
        gradcheck_reduce(k, (int64_t[]){1, 5}, 2, (int[]){0}, 1, false, 0);
        gradcheck_reduce(k, (int64_t[]){}, 0, (int[]){0}, 0, false, 0);
    }
}

Test(reduce, gradients_of_max_min) {
    ct_manual_seed(9);
    for (int dim = -3; dim < 3; dim++)
        for (int keep = 0; keep < 2; keep++) {
            gradcheck_reduce(K_MAX, (int64_t[]){3, 4, 2}, 3, &dim, 1, keep, 0);
            gradcheck_reduce(K_MIN, (int64_t[]){3, 4, 2}, 3, &dim, 1, keep, 0);
        }
    gradcheck_reduce(K_MAX, (int64_t[]){}, 0, (int[]){0}, 1, false, 0);
}

static ct_tensor *f_max_all(ct_tensor **x, void *ctx) { return ct_max_all(x[0]); }
static ct_tensor *f_min_all(ct_tensor **x, void *ctx) { return ct_min_all(ct_transpose(x[0], 0, 1)); }

Test(reduce, gradients_of_max_all) {
    ct_manual_seed(10);
    T_NO_LEAK({
        ct_tensor *x[1] = {ct_requires_grad(t_rand((int64_t[]){4, 5}, 2, CT_F64, -2, 2), true)};
        t_gradcheck(f_max_all, x, 1, NULL, 1e-6, 1e-7, 1e-6);
        t_gradcheck(f_min_all, x, 1, NULL, 1e-6, 1e-7, 1e-6);
    });
}

/* The gradient of ct_max/ct_min goes to the first extreme; ct_max_all shares it evenly
 * between ties, like PyTorch's amax; std at a constant slice has gradient 0, not NaN. */
Test(reduce, gradients_at_ties) {
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(
            ct_from_host((double[]){1, 3, 3, 2, 2, 0}, (int64_t[]){2, 3}, 2, CT_F64, CT_CPU), true);
        cr_assert_eq(ct_backward(ct_sum(ct_max(x, 1, false, NULL), NULL, 0, false)), CT_OK, "%s",
                     ct_last_error_message());
        t_assert_close(ct_grad(x), (double[]){0, 1, 0, 1, 0, 0}, 0, 0);
        ct_zero_grad(x);
        cr_assert_eq(ct_backward(ct_sum(ct_min(x, 0, true, NULL), NULL, 0, false)), CT_OK);
        t_assert_close(ct_grad(x), (double[]){1, 0, 0, 0, 1, 1}, 0, 0);
        ct_zero_grad(x);
        cr_assert_eq(ct_backward(ct_mul_scalar(ct_max_all(x), 2.0)), CT_OK);
        t_assert_close(ct_grad(x), (double[]){0, 1, 1, 0, 0, 0}, 0, 0);
        ct_zero_grad(x);
        cr_assert_eq(ct_backward(ct_min_all(x)), CT_OK);
        t_assert_close(ct_grad(x), (double[]){0, 0, 0, 0, 0, 1}, 0, 0);

        ct_tensor *y = ct_requires_grad(
            ct_from_host((double[]){1, 1, 1, 1, 2, 3}, (int64_t[]){2, 3}, 2, CT_F64, CT_CPU), true);
        cr_assert_eq(ct_backward(ct_sum(ct_std(y, (int[]){1}, 1, 1, false), NULL, 0, false)), CT_OK);
        t_assert_close(ct_grad(y), (double[]){0, 0, 0, -0.5, 0, 0.5}, 1e-12, 0);
    });
}

/* Half-precision inputs get half-precision gradients, formed in F32. */
Test(reduce, gradients_in_half_precision) {
    ct_manual_seed(11);
    for (int v = 0; v < 2; v++) {
        ct_dtype dt = v ? CT_BF16 : CT_F16;
        T_NO_LEAK({
            ct_tensor *x = ct_requires_grad(t_rand((int64_t[]){4, 6}, 2, dt, 10, 12), true);
            cr_assert_eq(ct_backward(ct_sum(ct_var(x, (int[]){1}, 1, 1, false), NULL, 0, false)), CT_OK, "%s",
                         ct_last_error_message());
            cr_assert_eq(ct_tensor_dtype(ct_grad(x)), dt);
            double *xv = t_values(x), ref[24];
            for (int r = 0; r < 4; r++) {
                double mean = 0;
                for (int j = 0; j < 6; j++)
                    mean += xv[r * 6 + j] / 6;
                for (int j = 0; j < 6; j++)
                    ref[r * 6 + j] = 2 * (xv[r * 6 + j] - mean) / 5;
            }
            t_assert_close(ct_grad(x), ref, 1e-2, 1e-2);
            free(xv);
        });
    }
}

/* ---- errors ------------------------------------------------------------------------- */

Test(reduce, bad_inputs) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *a = ct_zeros((int64_t[]){2, 3}, 2, CT_F32, CT_CPU);
        ct_tensor *ints = ct_zeros((int64_t[]){2, 3}, 2, CT_I32, CT_CPU);
        ct_tensor *empty = ct_zeros((int64_t[]){2, 0}, 2, CT_F32, CT_CPU);
        ct_tensor *idx = a;

        cr_assert_null(ct_sum(a, (int[]){2}, 1, false));
        t_assert_error(CT_ERR_DIM, "ct_sum", "dim 2", "2-dimensional", NULL);
        cr_assert_null(ct_var(a, (int[]){-3}, 1, 1, false));
        t_assert_error(CT_ERR_DIM, "ct_var", "dim -3", "2-dimensional", NULL);
        cr_assert_null(ct_logsumexp(a, (int[]){0, -2}, 2, false));
        t_assert_error(CT_ERR_DIM, "ct_logsumexp", "appears twice", NULL);
        cr_assert_null(ct_max(a, 5, false, &idx));
        t_assert_error(CT_ERR_DIM, "ct_max", "dim 5", NULL);
        cr_assert_null(idx, "indices must be NULL after an error");
        cr_assert_null(ct_argmin(a, -3, false));
        t_assert_error(CT_ERR_DIM, "ct_argmin", "dim -3", NULL);
        cr_assert_null(ct_mean(a, (int[]){0}, -1, false));
        t_assert_error(CT_ERR_VALUE, "ct_mean", NULL);

        cr_assert_null(ct_var(ints, NULL, 0, 1, false));
        t_assert_error(CT_ERR_DTYPE, "ct_var", "i32", NULL);
        cr_assert_null(ct_std(ints, NULL, 0, 1, false));
        t_assert_error(CT_ERR_DTYPE, "ct_std", "i32", NULL);
        cr_assert_null(ct_logsumexp(ints, NULL, 0, false));
        t_assert_error(CT_ERR_DTYPE, "ct_logsumexp", NULL);
        cr_assert_null(ct_mean(ints, NULL, 0, false));
        t_assert_error(CT_ERR_DTYPE, "ct_mean", "i32", NULL);
        cr_assert_null(ct_max(ct_zeros((int64_t[]){3}, 1, CT_U8, CT_CPU), 0, false, NULL));
        t_assert_error(CT_ERR_DTYPE, "ct_max", "u8", NULL);

        cr_assert_null(ct_max(empty, 1, false, &idx));
        t_assert_error(CT_ERR_SHAPE, "ct_max", "dim 1", "size 0", NULL);
        cr_assert_null(ct_argmax(empty, -1, true));
        t_assert_error(CT_ERR_SHAPE, "ct_argmax", NULL);
        cr_assert_null(ct_min_all(empty));
        t_assert_error(CT_ERR_SHAPE, "ct_min_all", "empty", NULL);
        /* Indices are I32: a longer dim (a stride-0 view, no memory) is refused, not wrapped. */
        ct_tensor *huge = ct_expand(ct_zeros((int64_t[]){1}, 1, CT_F32, CT_CPU), (int64_t[]){(int64_t)1 << 31}, 1);
        cr_assert_not_null(huge, "%s", ct_last_error_message());
        cr_assert_null(ct_argmax(huge, 0, false));
        t_assert_error(CT_ERR_SHAPE, "ct_argmax", "[2147483648]", "2147483648 elements", "I32", NULL);
        /* Values alone need no positions on the CPU: computed, not refused. */
        ct_tensor *top = ct_max(huge, 0, false, NULL);
        cr_assert_not_null(top, "%s", ct_last_error_message());
        cr_assert_eq(ct_item(top), 0.0);
        cr_assert_null(ct_max(huge, 0, false, &idx));
        t_assert_error(CT_ERR_SHAPE, "ct_max", "I32", NULL);

        cr_assert_null(ct_std(NULL, NULL, 0, 1, false));
        t_assert_error(CT_ERR_NULL, "ct_std", "argument a is NULL", NULL);
        cr_assert_null(ct_max_all(NULL));
        t_assert_error(CT_ERR_NULL, "ct_max_all", NULL);
        /* The first error survives a chain. */
        cr_assert_null(ct_sum(ct_logsumexp(ct_var(ints, NULL, 0, 1, false), NULL, 0, false), NULL, 0, false));
        t_assert_error(CT_ERR_DTYPE, "ct_var", NULL);
    });
}

Test(reduce, variance_of_nan_is_nan) {
    T_NO_LEAK({
        ct_tensor *x = ct_from_host((double[]){1, NAN, 3, 4}, (int64_t[]){4}, 1, CT_F64, CT_CPU);
        cr_assert(isnan(ct_item(ct_var(x, NULL, 0, 1, false))));
        cr_assert(isnan(ct_item(ct_std(x, NULL, 0, 1, false))));
        cr_assert(isnan(ct_item(ct_var(ct_cast(x, CT_F32), NULL, 0, 0, false))));
    });
}
