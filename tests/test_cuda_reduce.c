/* CUDA parity for reductions and softmax: every op and its backward on the GPU against the
 * CPU on the same inputs (contiguous, misaligned and strided views; odd, empty and size-1
 * dims; rows longer than a block; reductions split into partials), max/min indices exactly
 * equal, outputs poisoned first so that an element the kernel does not write fails, repeated
 * runs bit-identical, and an all-reduce over more than 2^31 bytes. Each test reports itself
 * skipped where no GPU is usable. */
#include "tests/common.h"

#include <stdio.h>
#include <string.h>

#define GPU CT_CUDA(0)
#define POISON (-3000.0) /* no result of these inputs comes near it */

enum layout { CONTIGUOUS, MISALIGNED, STRIDED, NUM_LAYOUTS };
enum values { RANDOM, TIES, TIES_AND_NANS };

static const ct_dtype float_dtypes[] = {CT_F32, CT_F16, CT_BF16};

static double tol_for(ct_dtype dt) { return dt == CT_F32 ? 1e-4 : 1e-2; }

/* The shape of the tensor that `layout` views as `shape`: one element wider for MISALIGNED,
 * dims reversed and the (new) first one doubled for STRIDED. */
static void base_shape(const int64_t *shape, int ndim, enum layout layout, int64_t *bshape) {
    for (int d = 0; d < ndim; d++)
        bshape[d] = layout == STRIDED ? shape[ndim - 1 - d] : shape[d];
    if (layout == MISALIGNED)
        bshape[ndim - 1] += 1;
    if (layout == STRIDED)
        bshape[0] *= 2;
}

/* The view of `base` (of base_shape) that has the shape asked for: a view one element into
 * the wider tensor (rows and data off 16-byte boundaries), or a permuted step-2 slice. */
static ct_tensor *layout_view(ct_tensor *base, int ndim, enum layout layout) {
    int perm[CT_MAX_DIMS];
    for (int d = 0; d < ndim; d++)
        perm[d] = ndim - 1 - d;
    ct_tensor *v = base;
    if (layout == MISALIGNED)
        v = ct_slice(v, ndim - 1, 1, ct_tensor_shape(base)[ndim - 1], 1);
    if (layout == STRIDED)
        v = ct_permute(ct_slice(v, 0, 0, ct_tensor_shape(base)[0], 2), perm, ndim);
    cr_assert_not_null(v, "%s", ct_last_error_message());
    return v;
}

/* The same values on the CPU and the GPU, laid out alike: contiguous, or one of the views
 * of layout_view. */
static void make_pair(const int64_t *shape, int ndim, ct_dtype dt, enum layout layout, enum values values,
                      ct_tensor **cpu, ct_tensor **gpu) {
    int64_t bshape[CT_MAX_DIMS];
    if (ndim == 0)
        layout = CONTIGUOUS;
    base_shape(shape, ndim, layout, bshape);
    ct_dtype gen = dt == CT_I32 ? CT_F32 : dt;
    ct_tensor *base = t_rand(bshape, ndim, gen, values == RANDOM ? -2 : -3, 3);
    if (values != RANDOM || dt == CT_I32)
        base = ct_cast(ct_cast(base, CT_I32), dt);
    if (values == TIES_AND_NANS && ndim > 0 && dt != CT_I32)
        cr_assert_eq(ct_fill_(ct_slice(base, ndim - 1, 1, bshape[ndim - 1], 5), NAN), CT_OK);
    ct_tensor *gbase = ct_to_device(base, GPU);
    cr_assert_not_null(gbase, "%s", ct_last_error_message());
    *cpu = layout_view(base, ndim, layout);
    *gpu = layout_view(gbase, ndim, layout);
}

/* Leave a freed block of `numel` elements of `dt` holding POISON in the GPU allocator's
 * cache, where the next output of that size is likely to be placed. */
static void poison(int64_t numel, ct_dtype dt) {
    if (numel == 0)
        return;
    ct_tensor *t = ct_full(&numel, 1, POISON, dt, GPU);
    cr_assert_not_null(t, "%s", ct_last_error_message());
    ct_tensor_free(t);
}

static int64_t numel_of(const int64_t *shape, int ndim) {
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

/* The GPU result against the CPU's: device, shape, dtype, then every element within
 * tol * max(1, |expected|); NaN and infinities must match exactly. */
static void expect_match_allowing(ct_tensor *gpu, ct_tensor *cpu, double tol, const double *allowance,
                                  const char *what);
static void expect_match(ct_tensor *gpu, ct_tensor *cpu, double tol, const char *what) {
    expect_match_allowing(gpu, cpu, tol, NULL, what);
}
/* expect_match with element i allowed allowance[i] more (NULL: nothing more). */
static void expect_match_allowing(ct_tensor *gpu, ct_tensor *cpu, double tol, const double *allowance,
                                  const char *what) {
    cr_assert_not_null(cpu, "%s on the CPU: %s", what, ct_last_error_message());
    cr_assert_not_null(gpu, "%s on the GPU: %s", what, ct_last_error_message());
    cr_assert_eq(ct_tensor_device(gpu).type, CT_DEVICE_CUDA, "%s: the result is not on the GPU", what);
    t_assert_shape(gpu, ct_tensor_shape(cpu), ct_tensor_ndim(cpu));
    cr_assert_eq(ct_tensor_dtype(gpu), ct_tensor_dtype(cpu), "%s: dtype", what);
    ct_no_grad_begin();
    ct_tensor *back = ct_to_device(gpu, CT_CPU);
    ct_no_grad_end();
    cr_assert_not_null(back, "%s: %s", what, ct_last_error_message());
    double *ref = t_values(cpu), *got = t_values(back);
    for (int64_t i = 0; i < ct_tensor_numel(cpu); i++) {
        if (isnan(ref[i]) || isinf(ref[i])) {
            cr_assert(isnan(ref[i]) ? isnan(got[i]) : got[i] == ref[i], "%s %s: element %lld is %.9g, expected %g",
                      what, ct_shape_str(cpu), (long long)i, got[i], ref[i]);
            continue;
        }
        cr_assert(fabs(got[i] - ref[i]) <= tol * fmax(1.0, fabs(ref[i])) + (allowance ? allowance[i] : 0),
                  "%s %s: element %lld is %.9g, expected %.9g", what, ct_shape_str(cpu), (long long)i, got[i], ref[i]);
    }
    free(ref);
    free(got);
}

/* ---- reductions over sets of dims ------------------------------------------------------- */

typedef struct red_case {
    int ndim;
    int64_t shape[4];
    int ndims; /* 0: all dims */
    int dims[4];
} red_case;

static const red_case red_cases[] = {
    {0, {0}, 0, {0}},
    {1, {1}, 0, {0}},
    {1, {31}, 1, {0}},
    {1, {33}, 1, {-1}},
    {1, {1025}, 0, {0}},
    {1, {65537}, 0, {0}},         /* all-reduce in slices */
    {2, {7, 33}, 1, {0}},         /* outer */
    {2, {7, 33}, 1, {1}},         /* inner, short rows */
    {2, {7, 33}, 2, {-1, 0}},
    {2, {2, 65537}, 1, {1}},      /* inner, rows longer than a block, in slices */
    {2, {2, 65537}, 1, {0}},      /* outer, wide */
    {2, {5000, 3}, 1, {0}},       /* outer, narrow: the walk in slices */
    {2, {1025, 8}, 1, {1}},       /* inner, sub-warp groups */
    {3, {3, 1, 1025}, 1, {2}},
    {3, {3, 1, 1025}, 2, {0, 2}},
    {3, {1, 5, 1}, 2, {0, 2}},
    {3, {64, 4, 32}, 2, {0, 2}},  /* reduced dims apart */
    {4, {4, 5, 6, 7}, 2, {1, 3}},
    {4, {4, 5, 6, 7}, 2, {-2, 0}},
    {4, {4, 5, 6, 7}, 1, {0}},
};

enum red_op { R_SUM, R_MEAN, R_VAR, R_STD, R_LSE, NUM_RED_OPS };
static const char *red_names[] = {"ct_sum", "ct_mean", "ct_var", "ct_std", "ct_logsumexp"};

static ct_tensor *reduce(enum red_op op, const ct_tensor *a, const int *dims, int ndims, bool keepdim) {
    switch (op) {
    case R_SUM: return ct_sum(a, dims, ndims, keepdim);
    case R_MEAN: return ct_mean(a, dims, ndims, keepdim);
    case R_VAR: return ct_var(a, dims, ndims, 1, keepdim);
    case R_STD: return ct_std(a, dims, ndims, 0, keepdim);
    default: return ct_logsumexp(a, dims, ndims, keepdim);
    }
}

/* The output's element count, for poisoning. */
static int64_t reduced_numel(const red_case *c) {
    if (c->ndims == 0)
        return 1;
    int64_t n = 1;
    for (int d = 0; d < c->ndim; d++) {
        bool reduced = false;
        for (int i = 0; i < c->ndims; i++)
            reduced = reduced || (c->dims[i] + c->ndim) % c->ndim == d;
        n *= reduced ? 1 : c->shape[d];
    }
    return n;
}

Test(cuda_reduce, reductions_match_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(11);
    for (unsigned ci = 0; ci < sizeof red_cases / sizeof red_cases[0]; ci++) {
        const red_case *c = &red_cases[ci];
        for (unsigned di = 0; di < 3; di++)
            for (int layout = 0; layout < NUM_LAYOUTS; layout++)
                T_NO_LEAK({
                    ct_dtype dt = float_dtypes[di];
                    bool keepdim = (ci + layout) % 2;
                    ct_tensor *cpu, *gpu;
                    make_pair(c->shape, c->ndim, dt, layout, RANDOM, &cpu, &gpu);
                    for (int op = 0; op < NUM_RED_OPS; op++) {
                        char what[96];
                        snprintf(what, sizeof what, "%s case %u %s layout %d", red_names[op], ci, ct_dtype_name(dt),
                                 layout);
                        poison(reduced_numel(c), dt);
                        ct_tensor *g = reduce(op, gpu, c->dims, c->ndims, keepdim);
                        expect_match(g, reduce(op, cpu, c->dims, c->ndims, keepdim), tol_for(dt), what);
                    }
                });
    }
}

Test(cuda_reduce, integer_sums_are_exact) {
    T_REQUIRE_GPU();
    ct_manual_seed(12);
    for (unsigned ci = 0; ci < sizeof red_cases / sizeof red_cases[0]; ci++)
        T_NO_LEAK({
            const red_case *c = &red_cases[ci];
            ct_tensor *cpu, *gpu;
            make_pair(c->shape, c->ndim, CT_I32, ci % NUM_LAYOUTS, RANDOM, &cpu, &gpu);
            poison(reduced_numel(c), CT_I32);
            expect_match(ct_sum(gpu, c->dims, c->ndims, false), ct_sum(cpu, c->dims, c->ndims, false), 0, "i32 sum");
        });
}

/* ---- max, min, argmax, argmin ----------------------------------------------------------- */

Test(cuda_reduce, extremes_and_their_indices_match_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(13);
    static const ct_dtype dtypes[] = {CT_F32, CT_F16, CT_BF16, CT_I32};
    for (unsigned ci = 0; ci < sizeof red_cases / sizeof red_cases[0]; ci++) {
        const red_case *c = &red_cases[ci];
        for (unsigned di = 0; di < 4; di++)
            for (int layout = 0; layout < NUM_LAYOUTS; layout++)
                T_NO_LEAK({
                    ct_dtype dt = dtypes[di];
                    ct_tensor *cpu, *gpu;
                    make_pair(c->shape, c->ndim, dt, layout, layout == STRIDED ? TIES_AND_NANS : TIES, &cpu, &gpu);
                    for (int dim = c->ndim ? -c->ndim : -1; dim < (c->ndim ? c->ndim : 1); dim++) {
                        bool keepdim = (dim + layout) % 2;
                        char what[96];
                        snprintf(what, sizeof what, "case %u %s layout %d dim %d", ci, ct_dtype_name(dt), layout, dim);
                        ct_tensor *ci_max, *gi_max, *ci_min, *gi_min;
                        ct_tensor *cmax = ct_max(cpu, dim, keepdim, &ci_max);
                        ct_tensor *cmin = ct_min(cpu, dim, keepdim, &ci_min);
                        int64_t n = ct_tensor_numel(cmax);
                        poison(n, dt);
                        poison(n, CT_I32);
                        ct_tensor *gmax = ct_max(gpu, dim, keepdim, &gi_max);
                        expect_match(gmax, cmax, 0, what);
                        expect_match(gi_max, ci_max, 0, what);
                        poison(n, dt);
                        poison(n, CT_I32);
                        ct_tensor *gmin = ct_min(gpu, dim, keepdim, &gi_min);
                        expect_match(gmin, cmin, 0, what);
                        expect_match(gi_min, ci_min, 0, what);
                        poison(n, CT_I32);
                        expect_match(ct_argmax(gpu, dim, keepdim), ct_argmax(cpu, dim, keepdim), 0, what);
                        poison(n, CT_I32);
                        expect_match(ct_argmin(gpu, dim, keepdim), ct_argmin(cpu, dim, keepdim), 0, what);
                    }
                    if (ct_tensor_numel(cpu) > 0) {
                        poison(1, dt);
                        expect_match(ct_max_all(gpu), ct_max_all(cpu), 0, "ct_max_all");
                        poison(1, dt);
                        expect_match(ct_min_all(gpu), ct_min_all(cpu), 0, "ct_min_all");
                    }
                });
    }
}

/* ---- special values and empty sets ------------------------------------------------------ */

Test(cuda_reduce, nan_and_infinity_follow_the_cpu) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        float data[] = {1, NAN, 3, NAN, -1, 2, 1000, 1000, -INFINITY, -INFINITY, INFINITY, 1, -INFINITY, 0, 1000, 1001,
                        -INFINITY, -INFINITY, -INFINITY, -INFINITY};
        ct_tensor *cpu = ct_from_host(data, (int64_t[]){5, 4}, 2, CT_F32, CT_CPU);
        ct_tensor *gpu = ct_to_device(cpu, GPU);
        for (int dim = -2; dim < 2; dim++) {
            expect_match(ct_sum(gpu, &dim, 1, false), ct_sum(cpu, &dim, 1, false), 1e-6, "sum");
            expect_match(ct_logsumexp(gpu, &dim, 1, false), ct_logsumexp(cpu, &dim, 1, false), 1e-6, "logsumexp");
            expect_match(ct_max(gpu, dim, false, NULL), ct_max(cpu, dim, false, NULL), 0, "max");
            expect_match(ct_min(gpu, dim, false, NULL), ct_min(cpu, dim, false, NULL), 0, "min");
            expect_match(ct_argmax(gpu, dim, false), ct_argmax(cpu, dim, false), 0, "argmax");
            expect_match(ct_argmin(gpu, dim, false), ct_argmin(cpu, dim, false), 0, "argmin");
            expect_match(ct_softmax(gpu, dim), ct_softmax(cpu, dim), 1e-6, "softmax");
            expect_match(ct_log_softmax(gpu, dim), ct_log_softmax(cpu, dim), 1e-6, "log_softmax");
        }
        expect_match(ct_max_all(gpu), ct_max_all(cpu), 0, "max_all");
        expect_match(ct_min_all(gpu), ct_min_all(cpu), 0, "min_all");
        expect_match(ct_logsumexp(gpu, NULL, 0, false), ct_logsumexp(cpu, NULL, 0, false), 0, "logsumexp all");
    });
}

/* The kernel keeps positions in 32 bits, values-only included: a dim over INT32_MAX on a GPU
 * is refused (a stride-0 view, no memory), where the CPU computes the values. */
Test(cuda_reduce, values_over_int32_positions_are_refused) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_tensor *huge = ct_expand(ct_zeros((int64_t[]){1}, 1, CT_F32, GPU), (int64_t[]){(int64_t)1 << 31}, 1);
        cr_assert_not_null(huge, "%s", ct_last_error_message());
        cr_assert_null(ct_max(huge, 0, false, NULL));
        t_assert_error(CT_ERR_SHAPE, "ct_max", "2147483648", "I32", NULL);
        cr_assert_null(ct_min(huge, 0, false, NULL));
        t_assert_error(CT_ERR_SHAPE, "ct_min", "I32", NULL);
    });
}

Test(cuda_reduce, empty_sets_follow_the_cpu) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        static const int64_t shapes[][2] = {{3, 0}, {0, 4}};
        for (int s = 0; s < 2; s++) {
            ct_tensor *cpu = ct_zeros(shapes[s], 2, CT_F32, CT_CPU), *gpu = ct_zeros(shapes[s], 2, CT_F32, GPU);
            for (int dim = -1; dim < 2; dim++) {
                int nd = dim < 0 ? 0 : 1;
                for (int op = 0; op < NUM_RED_OPS; op++) {
                    poison(dim < 0 ? 1 : shapes[s][1 - dim], CT_F32);
                    expect_match(reduce(op, gpu, &dim, nd, true), reduce(op, cpu, &dim, nd, true), 0, red_names[op]);
                }
                if (dim >= 0 && shapes[s][dim] == 0) {
                    cr_assert_null(ct_max(gpu, dim, false, NULL));
                    t_assert_error(CT_ERR_SHAPE, "size 0", NULL);
                } else if (dim >= 0) {
                    expect_match(ct_argmax(gpu, dim, false), ct_argmax(cpu, dim, false), 0, "argmax");
                }
                expect_match(ct_softmax(gpu, dim), ct_softmax(cpu, dim), 0, "softmax");
            }
            cr_assert_null(ct_max_all(gpu));
            t_assert_error(CT_ERR_SHAPE, "empty", NULL);
        }
    });
}

/* ---- softmax and log-softmax ------------------------------------------------------------ */

typedef struct sm_case {
    int ndim;
    int64_t shape[3];
} sm_case;

static const sm_case sm_cases[] = {
    {0, {0}},       {1, {1}},       {1, {31}},        {1, {33}},      {1, {1025}}, {2, {3, 65537}},
    {2, {16, 8}},   {2, {5, 12}},   {2, {8, 1000}},   {2, {4, 1024}}, {2, {3, 4096}}, {3, {5, 7, 9}},
    {3, {2, 1, 33}}, {2, {0, 5}},   {2, {2048, 3}},
};

Test(cuda_reduce, softmax_matches_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(14);
    for (unsigned ci = 0; ci < sizeof sm_cases / sizeof sm_cases[0]; ci++) {
        const sm_case *c = &sm_cases[ci];
        for (unsigned di = 0; di < 3; di++)
            for (int layout = 0; layout < NUM_LAYOUTS; layout++)
                T_NO_LEAK({
                    ct_dtype dt = float_dtypes[di];
                    ct_tensor *cpu, *gpu;
                    make_pair(c->shape, c->ndim, dt, layout, RANDOM, &cpu, &gpu);
                    for (int dim = c->ndim ? -c->ndim : -1; dim < (c->ndim ? c->ndim : 1); dim++) {
                        char what[96];
                        snprintf(what, sizeof what, "case %u %s layout %d dim %d", ci, ct_dtype_name(dt), layout, dim);
                        poison(numel_of(c->shape, c->ndim), dt);
                        expect_match(ct_softmax(gpu, dim), ct_softmax(cpu, dim), tol_for(dt), what);
                        poison(numel_of(c->shape, c->ndim), dt);
                        expect_match(ct_log_softmax(gpu, dim), ct_log_softmax(cpu, dim), tol_for(dt), what);
                    }
                });
    }
}

/* Rows holding +inf are NaN throughout on every kernel, as on the CPU (include/ctensor/ops.h):
 * rows of 10 and 1025 (no 16-byte loads: the scalar rows kernels), of 12 (F32: the warp
 * kernel; F16/BF16: scalar), views one element into a wider tensor and strided views, and
 * dim 0 (the lanes kernel). Row 0 has +inf second, row 1 last, row 2 first and in the middle
 * beside a -inf, row 3 only a -inf. */
Test(cuda_reduce, plus_infinity_makes_the_row_nan_on_every_kernel) {
    T_REQUIRE_GPU();
    ct_manual_seed(15);
    static const int64_t lengths[] = {10, 12, 1025};
    for (unsigned li = 0; li < 3; li++)
        for (unsigned di = 0; di < 3; di++)
            for (int layout = 0; layout < NUM_LAYOUTS; layout++)
                T_NO_LEAK({
                    int64_t n = lengths[li], shape[2] = {4, n}, bshape[2];
                    const int64_t at[][2] = {{0, 1}, {1, n - 1}, {2, 0}, {2, n / 2}, {2, 3}, {3, 2}};
                    ct_dtype dt = float_dtypes[di];
                    base_shape(shape, 2, layout, bshape);
                    ct_tensor *base = t_rand(bshape, 2, dt, -2, 3), *cpu = layout_view(base, 2, layout);
                    for (int k = 0; k < 6; k++) {
                        ct_tensor *e =
                            ct_slice(ct_slice(cpu, 0, at[k][0], at[k][0] + 1, 1), 1, at[k][1], at[k][1] + 1, 1);
                        cr_assert_eq(ct_fill_(e, k < 4 ? INFINITY : -INFINITY), CT_OK, "%s", ct_last_error_message());
                    }
                    ct_tensor *gbase = ct_to_device(base, GPU);
                    cr_assert_not_null(gbase, "%s", ct_last_error_message());
                    ct_tensor *gpu = layout_view(gbase, 2, layout);
                    for (int dim = 0; dim < 2; dim++) {
                        char what[96];
                        snprintf(what, sizeof what, "n %lld %s layout %d dim %d", (long long)n, ct_dtype_name(dt),
                                 layout, dim);
                        poison(4 * n, dt);
                        expect_match(ct_softmax(gpu, dim), ct_softmax(cpu, dim), tol_for(dt), what);
                        poison(4 * n, dt);
                        expect_match(ct_log_softmax(gpu, dim), ct_log_softmax(cpu, dim), tol_for(dt), what);
                    }
                });
}

/* The input's gradient of (log-)softmax along dim on x's device, for output gradient gout. */
static ct_tensor *softmax_grad(ct_tensor *x, int dim, bool take_log, ct_tensor *gout) {
    ct_tensor *leaf = ct_requires_grad(ct_clone(x), true);
    cr_assert_not_null(leaf, "%s", ct_last_error_message());
    ct_tensor *y = take_log ? ct_log_softmax(leaf, dim) : ct_softmax(leaf, dim);
    cr_assert_eq(ct_backward_ex(y, gout, false), CT_OK, "%s", ct_last_error_message());
    return ct_grad(leaf);
}

Test(cuda_reduce, softmax_backward_matches_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(15);
    for (unsigned ci = 0; ci < sizeof sm_cases / sizeof sm_cases[0]; ci++) {
        const sm_case *c = &sm_cases[ci];
        for (unsigned di = 0; di < 3; di++)
            for (int strided = 0; strided < 2; strided++)
                T_NO_LEAK({
                    ct_dtype dt = float_dtypes[di];
                    ct_tensor *xc, *xg, *gc, *gg;
                    make_pair(c->shape, c->ndim, dt, CONTIGUOUS, RANDOM, &xc, &xg);
                    make_pair(c->shape, c->ndim, dt, strided ? STRIDED : MISALIGNED, RANDOM, &gc, &gg);
                    for (int dim = c->ndim ? -c->ndim : -1; dim < (c->ndim ? c->ndim : 1); dim++)
                        for (int take_log = 0; take_log < 2; take_log++) {
                            char what[96];
                            snprintf(what, sizeof what, "backward case %u %s dim %d log %d", ci, ct_dtype_name(dt),
                                     dim, take_log);
                            poison(numel_of(c->shape, c->ndim), dt);
                            expect_match(softmax_grad(xg, dim, take_log, gg), softmax_grad(xc, dim, take_log, gc),
                                         tol_for(dt), what);
                        }
                });
    }
}

/* ---- gradients of the reductions -------------------------------------------------------- */

enum grad_op { G_SUM, G_MEAN, G_VAR, G_STD, G_LSE, G_MAX, G_MIN, G_MAX_ALL, G_MIN_ALL, NUM_GRAD_OPS };

/* The output gradient reduction_grad draws for a result shaped like y: U(-1, 1) in dt, on the
 * CPU, from `seed`. */
static ct_tensor *output_gradient(const ct_tensor *y, ct_dtype dt, uint64_t seed) {
    ct_manual_seed(seed);
    return t_rand(ct_tensor_shape(y), ct_tensor_ndim(y), dt, -1, 1);
}

/* The gradient of op, on `device`, with respect to a leaf holding base's values, the op
 * reading the leaf through layout_view (so the gradient lands in a slice or permutation of
 * the leaf's, and is zero where the view does not reach), for a random output gradient of
 * the same seed. On the GPU the allocator's cache is poisoned with NaN blocks of the leaf's
 * size between the forward and the backward, so that a gradient element that no kernel
 * writes fails. */
static ct_tensor *reduction_grad(enum grad_op op, ct_tensor *base, enum layout layout, ct_device device,
                                 const red_case *c, uint64_t seed) {
    ct_tensor *leaf = ct_requires_grad(ct_to_device(ct_clone(base), device), true);
    cr_assert_not_null(leaf, "%s", ct_last_error_message());
    ct_tensor *x = layout_view(leaf, c->ndim, layout);
    int dim = c->ndims ? c->dims[0] : 0;
    ct_tensor *y;
    switch (op) {
    case G_MAX: y = ct_max(x, dim, false, NULL); break;
    case G_MIN: y = ct_min(x, dim, true, NULL); break;
    case G_MAX_ALL: y = ct_max_all(x); break;
    case G_MIN_ALL: y = ct_min_all(x); break;
    default: y = reduce((enum red_op)op, x, c->dims, c->ndims, op % 2);
    }
    cr_assert_not_null(y, "%s", ct_last_error_message());
    ct_tensor *gout = ct_to_device(output_gradient(y, ct_tensor_dtype(y), seed), device);
    cr_assert_not_null(gout, "%s", ct_last_error_message());
    if (device.type == CT_DEVICE_CUDA)
        t_poison_gpu_cache(ct_tensor_numel(leaf), ct_tensor_dtype(leaf));
    cr_assert_eq(ct_backward_ex(y, gout, false), CT_OK, "%s", ct_last_error_message());
    return ct_grad(leaf);
}

/* ct_std's gradient divides x - mean by n std (n the group's size, no correction here).
 * Where a group's values nearly tie (two close values: std about half their distance), the
 * rounding of x - mean in the input's dtype is amplified by 1 / (n std) on either device,
 * and the two devices round differently (their reductions are not the same sums). This is
 * each gradient element's allowance for that, from the exact values (F64 on the CPU):
 * 4 eps (|x| + |mean|) |gout| / (n std), in the leaf's shape (0 where the view does not
 * reach). Seen on [2, 65537] reduced over dim 0: one pair 4e-4 apart in relative terms. */
static double *std_grad_allowance(ct_tensor *base, enum layout layout, const red_case *c, uint64_t seed) {
    ct_dtype dt = ct_tensor_dtype(base);
    double eps = dt == CT_F32 ? 0x1p-24 : dt == CT_F16 ? 0x1p-11 : 0x1p-8;
    ct_tensor *b64 = ct_cast(base, CT_F64);
    ct_tensor *x = layout_view(b64, c->ndim, layout);
    ct_tensor *mean = ct_mean(x, c->dims, c->ndims, true), *std = ct_std(x, c->dims, c->ndims, 0, true);
    cr_assert(mean && std, "%s", ct_last_error_message());
    ct_tensor *gout = ct_cast(output_gradient(std, dt, seed), CT_F64);
    double n = (double)ct_tensor_numel(x) / (double)ct_tensor_numel(std);
    ct_tensor *a = ct_div(ct_mul(ct_add(ct_abs(x), ct_abs(mean)), ct_abs(gout)), ct_mul_scalar(std, n));
    cr_assert_not_null(a, "%s", ct_last_error_message());
    ct_tensor *whole = ct_zeros(ct_tensor_shape(base), ct_tensor_ndim(base), CT_F64, CT_CPU);
    cr_assert_eq(ct_copy_(layout_view(whole, c->ndim, layout), ct_mul_scalar(a, 4 * eps)), CT_OK, "%s",
                 ct_last_error_message());
    return t_values(whole);
}

/* Every reduction's gradient, of contiguous inputs, of views one element in and of permuted
 * step-2 slices. */
Test(cuda_reduce, reduction_gradients_match_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(16);
    for (unsigned ci = 1; ci < sizeof red_cases / sizeof red_cases[0]; ci++) {
        const red_case *c = &red_cases[ci];
        for (unsigned di = 0; di < 3; di++)
            for (int layout = 0; layout < NUM_LAYOUTS; layout++)
                T_NO_LEAK({
                    ct_dtype dt = float_dtypes[di];
                    int64_t bshape[CT_MAX_DIMS];
                    base_shape(c->shape, c->ndim, layout, bshape);
                    ct_tensor *base = t_rand(bshape, c->ndim, dt, -2, 3);
                    for (int op = 0; op < NUM_GRAD_OPS; op++) {
                        char what[96];
                        snprintf(what, sizeof what, "gradient %d case %u %s layout %d", op, ci, ct_dtype_name(dt),
                                 layout);
                        uint64_t seed = 100 + ci;
                        double *allowance = op == G_STD ? std_grad_allowance(base, layout, c, seed) : NULL;
                        expect_match_allowing(reduction_grad(op, base, layout, GPU, c, seed),
                                              reduction_grad(op, base, layout, CT_CPU, c, seed), tol_for(dt),
                                              allowance, what);
                        free(allowance);
                    }
                });
    }
}

/* ---- determinism ------------------------------------------------------------------------ */

static void *bytes_of(const ct_tensor *t, size_t *nbytes) {
    *nbytes = (size_t)ct_tensor_numel(t) * ct_dtype_size(ct_tensor_dtype(t));
    void *buf = malloc(*nbytes ? *nbytes : 1);
    cr_assert_eq(ct_to_host(t, buf, *nbytes), CT_OK, "%s", ct_last_error_message());
    return buf;
}

enum det_op {
    D_SUM_ALL,
    D_VAR_ALL,
    D_LSE_ALL,
    D_SUM_ROWS,
    D_SUM_COLUMNS,
    D_ARGMAX,
    D_SOFTMAX_ROWS,
    D_SOFTMAX_COLUMNS,
    NUM_DET
};

static ct_tensor *det_run(enum det_op op, ct_tensor *flat, ct_tensor *wide, ct_tensor *tall) {
    int one = 1, zero = 0;
    switch (op) {
    case D_SUM_ALL: return ct_sum(flat, NULL, 0, false);
    case D_VAR_ALL: return ct_var(flat, NULL, 0, 1, false);
    case D_LSE_ALL: return ct_logsumexp(flat, NULL, 0, false);
    case D_SUM_ROWS: return ct_sum(wide, &one, 1, false);
    case D_SUM_COLUMNS: return ct_sum(tall, &zero, 1, false);
    case D_ARGMAX: return ct_argmax(flat, 0, false);
    case D_SOFTMAX_ROWS: return ct_softmax(wide, 1);
    default: return ct_log_softmax(tall, 0);
    }
}

Test(cuda_reduce, repeated_runs_are_bit_identical) {
    T_REQUIRE_GPU();
    ct_manual_seed(17);
    T_NO_LEAK({
        ct_tensor *flat = ct_uniform((int64_t[]){(1 << 22) + 3}, 1, -2, 3, CT_F32, GPU);
        ct_tensor *wide = ct_uniform((int64_t[]){3, 200000}, 2, -2, 3, CT_F32, GPU);
        ct_tensor *tall = ct_uniform((int64_t[]){4096, 64}, 2, -2, 3, CT_F32, GPU);
        cr_assert(flat && wide && tall, "%s", ct_last_error_message());
        for (int op = 0; op < NUM_DET; op++) {
            size_t n0, n1;
            void *first = bytes_of(det_run(op, flat, wide, tall), &n0);
            for (int run = 0; run < 3; run++) {
                void *again = bytes_of(det_run(op, flat, wide, tall), &n1);
                cr_assert(n0 == n1 && memcmp(first, again, n0) == 0, "case %d differs between runs", op);
                free(again);
            }
            free(first);
        }
    });
}

/* ---- over 2^31 bytes -------------------------------------------------------------------- */

Test(cuda_reduce, all_reduce_over_two_gib) {
    T_REQUIRE_GPU();
    const int64_t n = (1LL << 29) + 5, low = 1LL << 29, high = n - 2; /* 2 GiB + 20 bytes of F32 */
    ct_tensor *probe = ct_empty(&n, 1, CT_F32, GPU);
    if (!probe) {
        cr_assert_eq(ct_last_error(), CT_ERR_MEMORY, "%s", ct_last_error_message());
        ct_clear_error();
        cr_skip_test("not enough GPU memory for a 2 GiB tensor");
    }
    ct_tensor_free(probe);
    T_NO_LEAK({
        ct_tensor *t = ct_empty(&n, 1, CT_F32, GPU);
        cr_assert_not_null(t, "%s", ct_last_error_message());
        cr_assert_eq(ct_fill_(t, 1.0), CT_OK);
        cr_assert_eq(ct_fill_(ct_slice(t, 0, high, high + 1, 1), 7.0), CT_OK);
        cr_assert_eq(ct_fill_(ct_slice(t, 0, low, low + 1, 1), -3.0), CT_OK); /* past 2^31 bytes */
        double sum = (double)n + 2.0;
        cr_assert_float_eq(ct_item(ct_sum(t, NULL, 0, false)), sum, sum * 1e-6);
        cr_assert_float_eq(ct_item(ct_mean(t, NULL, 0, false)), sum / (double)n, 1e-6);
        cr_assert_eq(ct_item(ct_max_all(t)), 7.0);
        cr_assert_eq(ct_item(ct_min_all(t)), -3.0);
        cr_assert_eq(ct_item(ct_argmax(t, 0, false)), (double)high);
        cr_assert_eq(ct_item(ct_argmin(t, 0, false)), (double)low);
    });
}
