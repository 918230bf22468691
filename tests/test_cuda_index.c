/* CUDA parity for indexing (ct_index_select, ct_gather, ct_scatter_add, ct_one_hot) and
 * joins (ct_cat, ct_stack, ct_split, ct_chunk): the same inputs on the GPU and on the CPU
 * (the reference), in every dtype the GPU has (F32, F16, BF16, I32, U8), compared exactly.
 * Atomic scatter-adds add in a varying order, so they are compared exactly on integer-valued
 * data (any order gives the same sums) and within 1e-5 on arbitrary F32 data; in
 * deterministic mode they must equal the CPU bit for bit on any data. Gradients of CUDA
 * graphs against the same CPU graphs; bad indices on CUDA are CT_ERR_DIM reported at the
 * next synchronization, with nothing written through them and the GPU still usable. Outputs are new tensors, so the allocator's cache is
 * poisoned before each op: an element the GPU never wrote fails. Every test reports
 * itself skipped where no GPU is usable. */
#include "tests/common.h"

#include <pthread.h>
#include <string.h>

#define GPU T_GPU

static const ct_dtype gpu_dtypes[] = {CT_F32, CT_F16, CT_BF16, CT_I32, CT_U8};
#define N_GPU_DTYPES 5

/* Integers in [lo, hi) of `dtype` on the CPU: exact in every dtype, and their sums too. */
static ct_tensor *rand_ints(const int64_t *shape, int ndim, ct_dtype dtype, double lo, double hi) {
    ct_tensor *t = ct_cast(ct_cast(t_rand(shape, ndim, CT_F64, lo, hi), CT_I32), dtype);
    cr_assert_not_null(t, "%s", ct_last_error_message());
    return t;
}

/* Arbitrary values in [lo, hi) of a floating `dtype` on the CPU. */
static ct_tensor *rand_floats(const int64_t *shape, int ndim, ct_dtype dtype, double lo, double hi) {
    ct_tensor *t = ct_cast(t_rand(shape, ndim, CT_F32, lo, hi), dtype);
    cr_assert_not_null(t, "%s", ct_last_error_message());
    return t;
}

/* Random I32 indices in [0, limit) on the CPU. */
static ct_tensor *rand_index(const int64_t *shape, int ndim, int64_t limit) {
    return rand_ints(shape, ndim, CT_I32, 0, (double)limit);
}

static ct_tensor *i32(const int32_t *values, const int64_t *shape, int ndim, ct_device device) {
    ct_tensor *t = ct_from_host(values, shape, ndim, CT_I32, device);
    cr_assert_not_null(t, "%s", ct_last_error_message());
    return t;
}

/* Leave free blocks of `numel` elements filled with `value` in the allocator's cache
 * (several, for the scratch the op allocates first), so a new output of that size starts
 * out poisoned. */
static void poison_cache(int64_t numel, ct_dtype dtype) {
    double value = ct_dtype_is_float(dtype) ? NAN : 77; /* above the integers gathered below */
    ct_tensor *blocks[4];
    for (int i = 0; i < 4; i++) {
        blocks[i] = ct_full((int64_t[]){numel > 0 ? numel : 1}, 1, value, dtype, GPU);
        cr_assert_not_null(blocks[i], "%s", ct_last_error_message());
    }
    for (int i = 0; i < 4; i++)
        ct_tensor_free(blocks[i]);
}

/* Bit-for-bit equality of two tensors of one dtype and shape (any devices). */
static void assert_same_bits(const ct_tensor *gpu, const ct_tensor *cpu, const char *what) {
    cr_assert_not_null(gpu, "%s: %s", what, ct_last_error_message());
    t_assert_shape(gpu, ct_tensor_shape(cpu), ct_tensor_ndim(cpu));
    size_t bytes = (size_t)ct_tensor_numel(cpu) * ct_dtype_size(ct_tensor_dtype(cpu));
    char *hg = malloc(bytes + 1), *hc = malloc(bytes + 1);
    ct_scope_begin();
    cr_assert_eq(ct_to_host(ct_contiguous((ct_tensor *)gpu), hg, bytes), CT_OK, "%s", ct_last_error_message());
    cr_assert_eq(ct_to_host(ct_contiguous((ct_tensor *)cpu), hc, bytes), CT_OK, "%s", ct_last_error_message());
    ct_scope_end();
    cr_assert(memcmp(hg, hc, bytes) == 0, "%s (%s): GPU and CPU bits differ", what,
              ct_dtype_name(ct_tensor_dtype(cpu)));
    free(hg);
    free(hc);
}

/* ---- index_select ------------------------------------------------------------------------ */

static void check_index_select(ct_tensor *a, int dim, ct_tensor *index, const char *what) {
    ct_tensor *ref = ct_index_select(a, dim, index);
    cr_assert_not_null(ref, "%s (CPU): %s", what, ct_last_error_message());
    poison_cache(ct_tensor_numel(ref), ct_tensor_dtype(ref));
    t_assert_parity(ct_index_select(t_to_gpu(a), dim, t_to_gpu(index)), ref, 0, what);
}

Test(cuda_index, index_select) {
    T_REQUIRE_GPU();
    ct_manual_seed(1);
    for (int k = 0; k < N_GPU_DTYPES; k++) {
        T_NO_LEAK({
            ct_tensor *a = rand_ints((int64_t[]){4, 5, 6}, 3, gpu_dtypes[k], 0, 70);
            for (int dim = -3; dim < 3; dim++) {
                int64_t size = ct_tensor_shape(a)[dim < 0 ? dim + 3 : dim];
                check_index_select(a, dim, rand_index((int64_t[]){7}, 1, size), "1-D index with repeats");
                check_index_select(a, dim, rand_index(NULL, 0, size), "0-D index");
                check_index_select(a, dim, rand_index((int64_t[]){0}, 1, size), "empty index");
            }
            /* Strided operands, as views of GPU tensors: a transposed, a stepped index. */
            ct_tensor *base_index = rand_index((int64_t[]){10}, 1, 4);
            ct_tensor *at = ct_transpose(a, 0, 2), *index = ct_slice(base_index, 0, 0, 10, 3); /* (6, 5, 4), (4) */
            ct_tensor *gat = ct_transpose(t_to_gpu(a), 0, 2), *gindex = ct_slice(t_to_gpu(base_index), 0, 0, 10, 3);
            cr_assert_eq(ct_tensor_strides(gindex)[0], 3);
            ct_tensor *ref = ct_index_select(at, 2, index);
            poison_cache(ct_tensor_numel(ref), gpu_dtypes[k]);
            t_assert_parity(ct_index_select(gat, 2, gindex), ref, 0, "transposed a, stepped index");
        });
    }
}

/* ---- gather --------------------------------------------------------------------------------- */

static void check_gather(ct_tensor *a, int dim, ct_tensor *index, const char *what) {
    ct_tensor *ref = ct_gather(a, dim, index);
    cr_assert_not_null(ref, "%s (CPU): %s", what, ct_last_error_message());
    poison_cache(ct_tensor_numel(ref), ct_tensor_dtype(ref));
    t_assert_parity(ct_gather(t_to_gpu(a), dim, t_to_gpu(index)), ref, 0, what);
}

Test(cuda_index, gather) {
    T_REQUIRE_GPU();
    ct_manual_seed(2);
    for (int k = 0; k < N_GPU_DTYPES; k++) {
        T_NO_LEAK({
            ct_tensor *a = rand_ints((int64_t[]){4, 5, 6}, 3, gpu_dtypes[k], 0, 70);
            for (int dim = -3; dim < 3; dim++) {
                int w = dim < 0 ? dim + 3 : dim;
                int64_t ishape[3] = {3, 2, 5};
                ishape[w] = 9; /* longer than a along dim: repeats */
                check_gather(a, dim, rand_index(ishape, 3, ct_tensor_shape(a)[w]), "gather");
                ishape[w] = 0;
                check_gather(a, dim, rand_index(ishape, 3, ct_tensor_shape(a)[w]), "empty index");
            }
            /* Transposed a and index; one odd size. */
            ct_tensor *index = ct_transpose(rand_index((int64_t[]){4, 7, 3}, 3, 5), 0, 2); /* (3, 7, 4) */
            check_gather(ct_transpose(a, 0, 2), 1, index, "transposed");
            check_gather(rand_ints((int64_t[]){1, 1000}, 2, gpu_dtypes[k], 0, 70), 1,
                         rand_index((int64_t[]){1, 1537}, 2, 1000), "long row");
        });
    }
}

/* ---- scatter_add -------------------------------------------------------------------------- */

static void check_scatter_add(ct_tensor *a, int dim, ct_tensor *index, ct_tensor *src, double tol, const char *what) {
    ct_tensor *ref = ct_scatter_add(a, dim, index, src);
    cr_assert_not_null(ref, "%s (CPU): %s", what, ct_last_error_message());
    poison_cache(ct_tensor_numel(ref), ct_tensor_dtype(ref));
    ct_tensor *out = ct_scatter_add(t_to_gpu(a), dim, t_to_gpu(index), t_to_gpu(src));
    if (tol < 0)
        assert_same_bits(out, ref, what);
    else
        t_assert_parity(out, ref, tol, what);
}

/* Every dim, more index entries than a has along dim (repeats accumulate), a src larger
 * than the index, and transposed operands. tol < 0: bit for bit. */
static void scatter_cases(ct_tensor *a, ct_tensor *src, double tol) {
    for (int dim = -3; dim < 3; dim++) {
        int w = dim < 0 ? dim + 3 : dim;
        int64_t ishape[3] = {2, 3, 4};
        ishape[w] = 6;
        check_scatter_add(a, dim, rand_index(ishape, 3, ct_tensor_shape(a)[w]), src, tol, "scatter_add");
    }
    ct_tensor *idx = ct_transpose(rand_index((int64_t[]){3, 6, 5}, 3, 4), 0, 2); /* (5, 6, 3) */
    check_scatter_add(ct_transpose(a, 0, 2), 1, idx, ct_transpose(src, 0, 2), tol, "transposed");
    check_scatter_add(a, 0, rand_index((int64_t[]){0, 3, 4}, 3, 3), src, tol, "empty index");
}

Test(cuda_index, scatter_add_atomic) {
    T_REQUIRE_GPU();
    ct_manual_seed(3);
    cr_assert(!ct_deterministic(), "deterministic mode must be off by default");
    for (int k = 0; k < N_GPU_DTYPES; k++) {
        T_NO_LEAK({
            /* Integer data: every order of additions gives the same sums (U8 and I32 wrap
             * the same way on both devices: sums above 255 occur). */
            bool is_u8 = gpu_dtypes[k] == CT_U8;
            ct_tensor *a = rand_ints((int64_t[]){3, 4, 5}, 3, gpu_dtypes[k], is_u8 ? 0 : -20, is_u8 ? 250 : 20);
            ct_tensor *src = rand_ints((int64_t[]){6, 8, 6}, 3, gpu_dtypes[k], is_u8 ? 0 : -20, is_u8 ? 250 : 20);
            scatter_cases(a, src, 0);
        });
    }
    /* Arbitrary F32 data: the order changes the last bits only. */
    T_NO_LEAK({
        ct_tensor *a = rand_floats((int64_t[]){3, 4, 5}, 3, CT_F32, -1, 1);
        scatter_cases(a, rand_floats((int64_t[]){6, 8, 6}, 3, CT_F32, -1, 1), 1e-5);
        /* Many repeats per destination. */
        ct_tensor *b = rand_floats((int64_t[]){64, 256}, 2, CT_F32, -1, 1);
        check_scatter_add(b, 0, rand_index((int64_t[]){400, 256}, 2, 64),
                          rand_floats((int64_t[]){400, 256}, 2, CT_F32, -1, 1), 1e-5, "many repeats");
    });
}

Test(cuda_index, scatter_add_deterministic) {
    T_REQUIRE_GPU();
    ct_manual_seed(4);
    ct_set_deterministic(true);
    cr_assert(ct_deterministic());
    for (int k = 0; k < N_GPU_DTYPES; k++) {
        T_NO_LEAK({
            bool is_float = ct_dtype_is_float(gpu_dtypes[k]);
            ct_tensor *a = is_float ? rand_floats((int64_t[]){3, 4, 5}, 3, gpu_dtypes[k], -1, 1)
                                    : rand_ints((int64_t[]){3, 4, 5}, 3, gpu_dtypes[k], 0, 250);
            ct_tensor *src = is_float ? rand_floats((int64_t[]){6, 8, 6}, 3, gpu_dtypes[k], -1, 1)
                                      : rand_ints((int64_t[]){6, 8, 6}, 3, gpu_dtypes[k], 0, 250);
            scatter_cases(a, src, -1);
        });
    }
    T_NO_LEAK({
        /* Many repeats per destination, arbitrary values: still the CPU's bits, every run. */
        ct_tensor *b = rand_floats((int64_t[]){64, 256}, 2, CT_F32, -1, 1);
        ct_tensor *index = rand_index((int64_t[]){400, 256}, 2, 64);
        ct_tensor *src = rand_floats((int64_t[]){400, 256}, 2, CT_F32, -1e3, 1e3);
        for (int run = 0; run < 3; run++)
            check_scatter_add(b, 0, index, src, -1, "many repeats");
        check_scatter_add(ct_transpose(b, 0, 1), 1, ct_transpose(index, 0, 1), ct_transpose(src, 0, 1), -1,
                          "many repeats, transposed");
    });
    ct_set_deterministic(false);
    cr_assert(!ct_deterministic());
}

/* ---- one_hot ------------------------------------------------------------------------------- */

Test(cuda_index, one_hot) {
    T_REQUIRE_GPU();
    ct_manual_seed(5);
    for (int k = 0; k < N_GPU_DTYPES; k++) {
        T_NO_LEAK({
            ct_tensor *labels = rand_index((int64_t[]){5, 7}, 2, 9);
            const char *what[] = {"one_hot", "transposed labels", "0-D label", "empty labels"};
            ct_tensor *cases[] = {labels, ct_transpose(labels, 0, 1), rand_index(NULL, 0, 9),
                                  rand_index((int64_t[]){0, 3}, 2, 9)};
            for (int c = 0; c < 4; c++) {
                ct_tensor *ref = ct_one_hot(cases[c], 9, gpu_dtypes[k]);
                cr_assert_not_null(ref, "%s", ct_last_error_message());
                poison_cache(ct_tensor_numel(ref), gpu_dtypes[k]);
                t_assert_parity(ct_one_hot(t_to_gpu(cases[c]), 9, gpu_dtypes[k]), ref, 0, what[c]);
            }
        });
    }
}

/* ---- joins --------------------------------------------------------------------------------- */

Test(cuda_join, cat_stack_split_chunk) {
    T_REQUIRE_GPU();
    ct_manual_seed(6);
    for (int k = 0; k < N_GPU_DTYPES; k++) {
        T_NO_LEAK({
            ct_dtype dt = gpu_dtypes[k];
            /* Parts along dim 1: contiguous, transposed, empty, stepped. */
            ct_tensor *p0 = rand_ints((int64_t[]){3, 2, 4}, 3, dt, 0, 70);
            ct_tensor *p1 = ct_transpose(rand_ints((int64_t[]){3, 4, 5}, 3, dt, 0, 70), 1, 2); /* (3, 5, 4) */
            ct_tensor *p2 = rand_ints((int64_t[]){3, 0, 4}, 3, dt, 0, 70);
            ct_tensor *p3 = ct_slice(rand_ints((int64_t[]){3, 7, 4}, 3, dt, 0, 70), 1, 0, 7, 2); /* (3, 4, 4) */
            ct_tensor *cpu[4] = {p0, p1, p2, p3};
            ct_tensor *gpu[4] = {t_to_gpu(p0), t_to_gpu(p1), t_to_gpu(p2), t_to_gpu(p3)};
            for (int dim = -2; dim <= 1; dim += 3) {
                ct_tensor *ref = ct_cat(cpu, 4, dim);
                poison_cache(ct_tensor_numel(ref), dt);
                t_assert_parity(ct_cat(gpu, 4, dim), ref, 0, "cat");
            }
            /* Equal shapes: cat on every dim and stack on every new dim. */
            ct_tensor *q[3], *gq[3];
            for (int i = 0; i < 3; i++) {
                q[i] = i == 1 ? ct_transpose(rand_ints((int64_t[]){5, 3}, 2, dt, 0, 70), 0, 1)
                              : rand_ints((int64_t[]){3, 5}, 2, dt, 0, 70);
                gq[i] = t_to_gpu(q[i]);
            }
            for (int dim = -2; dim < 2; dim++) {
                ct_tensor *ref = ct_cat(q, 3, dim);
                poison_cache(ct_tensor_numel(ref), dt);
                t_assert_parity(ct_cat(gq, 3, dim), ref, 0, "cat equal shapes");
            }
            for (int dim = -3; dim < 3; dim++) {
                ct_tensor *ref = ct_stack(q, 3, dim);
                poison_cache(ct_tensor_numel(ref), dt);
                t_assert_parity(ct_stack(gq, 3, dim), ref, 0, "stack");
            }
            /* A long list: more inputs than one autograd node takes. */
            ct_tensor *many[20], *gmany[20];
            for (int i = 0; i < 20; i++) {
                many[i] = rand_ints((int64_t[]){i % 3, 2}, 2, dt, 0, 70);
                gmany[i] = t_to_gpu(many[i]);
            }
            ct_tensor *ref = ct_cat(many, 20, 0);
            poison_cache(ct_tensor_numel(ref), dt);
            t_assert_parity(ct_cat(gmany, 20, 0), ref, 0, "cat of 20");
            /* split / chunk are views: each piece equals the CPU's. */
            ct_tensor *whole = rand_ints((int64_t[]){7, 4}, 2, dt, 0, 70), *gwhole = t_to_gpu(whole);
            ct_tensor *pieces[8], *gpieces[8];
            int n = ct_split(whole, 3, 0, pieces, 8);
            cr_assert_eq(ct_split(gwhole, 3, 0, gpieces, 8), n);
            for (int i = 0; i < n; i++)
                t_assert_parity(gpieces[i], pieces[i], 0, "split");
            n = ct_chunk(whole, 3, 1, pieces, 8);
            cr_assert_eq(ct_chunk(gwhole, 3, 1, gpieces, 8), n);
            for (int i = 0; i < n; i++)
                t_assert_parity(gpieces[i], pieces[i], 0, "chunk");
        });
    }
}

Test(cuda_join, errors) {
    T_REQUIRE_GPU();
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *parts[2] = {ct_zeros((int64_t[]){2, 3}, 2, CT_F32, GPU),
                               ct_zeros((int64_t[]){2, 3}, 2, CT_F32, CT_CPU)};
        cr_assert_null(ct_cat(parts, 2, 0));
        t_assert_error(CT_ERR_DEVICE, "ct_cat: tensors[1] is on cpu", NULL);
        parts[1] = ct_zeros((int64_t[]){2, 4}, 2, CT_F32, GPU);
        cr_assert_null(ct_cat(parts, 2, 0));
        t_assert_error(CT_ERR_SHAPE, "ct_cat", "sizes must match except in dim 0", NULL);
    });
}

/* ---- gradients ------------------------------------------------------------------------------
 * The same graph on both devices from the same leaves and output gradient. Atomic scatter-
 * adds in backward are compared on integer-valued gradients (exact in any order); in
 * deterministic mode on arbitrary ones. */

typedef ct_tensor *(*graph_fn)(ct_tensor **leaves, ct_tensor *index);

static ct_tensor *g_index_select(ct_tensor **x, ct_tensor *index) {
    return ct_index_select(x[0], 0, index);
}
static ct_tensor *g_index_select_last(ct_tensor **x, ct_tensor *index) {
    return ct_index_select(x[0], -1, index);
}
static ct_tensor *g_gather(ct_tensor **x, ct_tensor *index) {
    return ct_gather(x[0], 1, index);
}
static ct_tensor *g_scatter_add(ct_tensor **x, ct_tensor *index) {
    return ct_scatter_add(x[0], 0, index, x[1]);
}
static ct_tensor *g_cat(ct_tensor **x, ct_tensor *index) {
    return ct_cat((ct_tensor *[]){x[0], ct_transpose(x[1], 0, 1)}, 2, 0);
}
static ct_tensor *g_stack(ct_tensor **x, ct_tensor *index) {
    return ct_stack((ct_tensor *[]){x[0], ct_transpose(x[1], 0, 1)}, 2, 1);
}
/* Pieces of split and chunk (views) joined again, the middle ones left out (their gradient
 * is zero): x (5, 9) -> rows 4, 0, 1 (3, 9) -> columns 6..8 and 0..2 (3, 6). */
static ct_tensor *g_split_chunk(ct_tensor **x, ct_tensor *index) {
    ct_tensor *rows[4], *columns[4];
    cr_assert_eq(ct_split(x[0], 2, 0, rows, 4), 3, "%s", ct_last_error_message());
    ct_tensor *kept = ct_cat((ct_tensor *[]){rows[2], rows[0]}, 2, 0);
    cr_assert_eq(ct_chunk(kept, 3, 1, columns, 4), 3, "%s", ct_last_error_message());
    return ct_cat((ct_tensor *[]){columns[2], columns[0]}, 2, 1);
}

/* leaves of shapes (shapes[i], ndims[i]) of `dtype` on both devices, `fn` applied, backward
 * from one gradient, the leaves' gradients compared. */
static void check_backward(graph_fn fn, int n, const int64_t shapes[][3], const int *ndims, ct_tensor *index,
                           ct_dtype dtype, bool integer_grad, const char *what) {
    T_NO_LEAK({
        ct_tensor *cpu[2], *gpu[2];
        for (int i = 0; i < n; i++) {
            cpu[i] = rand_floats(shapes[i], ndims[i], dtype, -1, 1);
            gpu[i] = t_to_gpu(cpu[i]);
            cr_assert(ct_requires_grad(cpu[i], true) && ct_requires_grad(gpu[i], true), "%s", ct_last_error_message());
        }
        ct_tensor *out = fn(cpu, index), *out_gpu = fn(gpu, index ? t_to_gpu(index) : NULL);
        cr_assert(out && out_gpu, "%s: %s", what, ct_last_error_message());
        ct_tensor *g = integer_grad ? rand_ints(ct_tensor_shape(out), ct_tensor_ndim(out), dtype, -8, 8)
                                    : rand_floats(ct_tensor_shape(out), ct_tensor_ndim(out), dtype, -1, 1);
        cr_assert_eq(ct_backward_ex(out, g, false), CT_OK, "%s: %s", what, ct_last_error_message());
        cr_assert_eq(ct_backward_ex(out_gpu, t_to_gpu(g), false), CT_OK, "%s: %s", what, ct_last_error_message());
        for (int i = 0; i < n; i++)
            assert_same_bits(ct_grad(gpu[i]), ct_grad(cpu[i]), what);
    });
}

static void backward_cases(bool integer_grad) {
    const ct_dtype dts[] = {CT_F32, CT_F16, CT_BF16};
    for (int k = 0; k < 3; k++) {
        ct_dtype dt = dts[k];
        ct_scope_begin();
        /* Repeated rows: their gradients add up. */
        ct_tensor *rows = i32((int32_t[]){1, 3, 1, 1, 0, 3, 1}, (int64_t[]){7}, 1, CT_CPU);
        check_backward(g_index_select, 1, (const int64_t[][3]){{4, 6}}, (int[]){2}, rows, dt, integer_grad,
                       "index_select");
        check_backward(g_index_select_last, 1, (const int64_t[][3]){{6, 4}}, (int[]){2}, rows, dt, integer_grad,
                       "index_select last dim");
        check_backward(g_gather, 1, (const int64_t[][3]){{4, 3}}, (int[]){2}, rand_index((int64_t[]){3, 8}, 2, 3), dt,
                       integer_grad, "gather");
        check_backward(g_scatter_add, 2, (const int64_t[][3]){{4, 3}, {6, 4}}, (int[]){2, 2},
                       rand_index((int64_t[]){5, 3}, 2, 4), dt, integer_grad, "scatter_add");
        check_backward(g_cat, 2, (const int64_t[][3]){{2, 3}, {3, 4}}, (int[]){2, 2}, NULL, dt, integer_grad, "cat");
        check_backward(g_stack, 2, (const int64_t[][3]){{3, 4}, {4, 3}}, (int[]){2, 2}, NULL, dt, integer_grad,
                       "stack");
        check_backward(g_split_chunk, 1, (const int64_t[][3]){{5, 9}}, (int[]){2}, NULL, dt, integer_grad,
                       "split and chunk");
        ct_scope_end();
    }
}

Test(cuda_index, gradients_atomic) {
    T_REQUIRE_GPU();
    ct_manual_seed(7);
    backward_cases(true);
}

Test(cuda_index, gradients_deterministic) {
    T_REQUIRE_GPU();
    ct_manual_seed(8);
    ct_set_deterministic(true);
    backward_cases(false);
    ct_set_deterministic(false);
}

/* ---- errors ------------------------------------------------------------------------------ */

/* The op that ran on `t` met a bad index: the op returned a tensor, and the next
 * synchronization (here ct_to_host) reports the error with the fragments; after it, the
 * device is clean and the values (returned, caller frees) readable. */
static double *deferred_error(const ct_tensor *t, const char *what, const char *range) {
    int64_t n = ct_tensor_numel(t);
    double *v = calloc((size_t)n + 1, sizeof *v);
    cr_assert_not_null(t, "the op failed at once: %s", ct_last_error_message());
    cr_assert_eq(ct_to_host(t, v, (size_t)n * ct_dtype_size(ct_tensor_dtype(t))), CT_ERR_DIM);
    t_assert_error(CT_ERR_DIM, what, range, "reported by cuda:0 at this synchronization", NULL);
    cr_assert_eq(ct_device_synchronize(0), CT_OK, "reported twice: %s", ct_last_error_message());
    free(v);
    return t_values(t);
}

Test(cuda_index, bad_indices) {
    T_REQUIRE_GPU();
    ct_clear_error();
    T_NO_LEAK({
        /* a = 1 .. 20 in a (4, 5), so that a zero stands for "not read". */
        ct_tensor *a = ct_requires_grad(ct_to_device(ct_reshape(ct_arange(1, 21, 1, CT_F32, CT_CPU),
                                                                (int64_t[]){4, 5}, 2), GPU), true);
        ct_tensor *src = ct_ones((int64_t[]){2, 2}, 2, CT_F32, GPU);
        ct_tensor *bad5 = i32((int32_t[]){0, 4, 5, 1}, (int64_t[]){4}, 1, GPU);
        ct_tensor *negative = i32((int32_t[]){-1}, (int64_t[]){1}, 1, GPU);
        ct_tensor *bad9 = i32((int32_t[]){0, 1, 9, -3}, (int64_t[]){2, 2}, 2, GPU);
        ct_tensor *bad7 = i32((int32_t[]){0, 1, 2, 7}, (int64_t[]){2, 2}, 2, GPU);
        ct_tensor *bad3 = i32((int32_t[]){0, 3}, (int64_t[]){2}, 1, GPU);

        /* index_select: the bad column reads as zeros, the others as a's. */
        double *v = deferred_error(ct_index_select(a, 1, bad5), "ct_index_select: index 5 out of range [0, 5)",
                                   "for dim 1");
        for (int r = 0; r < 4; r++) {
            cr_assert_eq(v[r * 4 + 0], 1 + r * 5);
            cr_assert_eq(v[r * 4 + 1], 5 + r * 5);
            cr_assert_eq(v[r * 4 + 2], 0.0);
            cr_assert_eq(v[r * 4 + 3], 2 + r * 5);
        }
        free(v);
        v = deferred_error(ct_index_select(a, -2, negative), "ct_index_select: index -1 out of range [0, 4)",
                           "for dim 0");
        for (int c = 0; c < 5; c++)
            cr_assert_eq(v[c], 0.0);
        free(v);
        /* gather: 9 and -3 (either may be the one reported) read nothing. */
        v = deferred_error(ct_gather(a, 0, bad9), "ct_gather: index ", "out of range [0, 4)");
        cr_assert_eq(v[0], 1.0);
        cr_assert_eq(v[1], 7.0);
        cr_assert_eq(v[2], 0.0);
        cr_assert_eq(v[3], 0.0);
        free(v);
        /* scatter_add: index 7 in row 1 of a (4, 5) would land on a[2][2] if it were used:
         * every element but the three good targets keeps a's value. */
        v = deferred_error(ct_scatter_add(a, 1, bad7, src), "ct_scatter_add: index 7 out of range [0, 5)",
                           "for dim 1");
        for (int i = 0; i < 20; i++)
            cr_assert_eq(v[i], 1 + i + (i == 0 || i == 1 || i == 7 ? 1 : 0), "element %d", i);
        free(v);
        /* one_hot: the bad label's row is all zeros. */
        v = deferred_error(ct_one_hot(bad3, 3, CT_F32), "ct_one_hot: index 3 out of range [0, 3)", "for dim 1");
        cr_assert_eq(v[0], 1.0);
        for (int i = 1; i < 6; i++)
            cr_assert_eq(v[i], 0.0);
        free(v);

        /* Reported by every synchronizing call, once: ct_item, ct_stream_synchronize, ct_device_synchronize. */
        ct_tensor *s = ct_sum(ct_index_select(a, 1, bad5), NULL, 0, false);
        cr_assert_not_null(s, "%s", ct_last_error_message());
        cr_assert(isnan(ct_item(s)));
        t_assert_error(CT_ERR_DIM, "ct_index_select: index 5", "reported by cuda:0", NULL);
        cr_assert_not_null(ct_index_select(a, 1, bad5));
        cr_assert_eq(ct_stream_synchronize(ct_stream_current(0)), CT_ERR_DIM);
        t_assert_error(CT_ERR_DIM, "ct_index_select: index 5", NULL);
        cr_assert_not_null(ct_index_select(a, 1, bad5));
        cr_assert_eq(ct_device_synchronize(0), CT_ERR_DIM);
        t_assert_error(CT_ERR_DIM, "ct_index_select: index 5", NULL);
        cr_assert_eq(ct_device_synchronize(0), CT_OK);

        /* The backward of a bad gather skips the bad index too (a's gradient is exact at the
         * good ones) and reports it again. */
        ct_tensor *g = ct_gather(a, 0, bad9);
        cr_assert_eq(ct_backward(ct_sum(g, NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        v = deferred_error(ct_grad(a), "ct_gather: index ", "out of range [0, 4)");
        for (int i = 0; i < 20; i++)
            cr_assert_eq(v[i], i == 0 || i == 6 ? 1.0 : 0.0, "grad element %d", i);
        free(v);

        /* The GPU is still usable. */
        ct_tensor *ok = ct_index_select(a, 0, i32((int32_t[]){3, 0}, (int64_t[]){2}, 1, GPU));
        cr_assert_not_null(ok, "%s", ct_last_error_message());
        v = t_values(ok);
        for (int i = 0; i < 10; i++)
            cr_assert_eq(v[i], i < 5 ? 16 + i : 1 + i - 5);
        free(v);
    });
}

static void *synchronize_device_0(void *status) {
    *(ct_status *)status = ct_device_synchronize(0);
    ct_clear_error();
    return NULL;
}

/* A bad index found on the GPU reaches every thread that synchronizes, the thread whose op
 * failed included, even when another thread's synchronization took it from the device. */
Test(cuda_index, a_deferred_error_reaches_every_thread) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_tensor *a = ct_ones((int64_t[]){4, 5}, 2, CT_F32, GPU);
        ct_tensor *bad = i32((int32_t[]){0, 5}, (int64_t[]){2}, 1, GPU);
        cr_assert_not_null(ct_index_select(a, 1, bad), "%s", ct_last_error_message());
        ct_status other = CT_OK;
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, synchronize_device_0, &other), 0);
        cr_assert_eq(pthread_join(t, NULL), 0);
        cr_assert_eq(other, CT_ERR_DIM, "the other thread's synchronization: %s", ct_status_name(other));
        cr_assert_eq(ct_device_synchronize(0), CT_ERR_DIM, "the failing op's thread was not told");
        t_assert_error(CT_ERR_DIM, "ct_index_select: index 5", "reported by cuda:0", NULL);
        cr_assert_eq(ct_device_synchronize(0), CT_OK, "told once");
    });
}

/* A thread that starts using the device after an error was reported (here, to the thread
 * whose op failed) is not told of it: its first synchronization and its first ct_item pass. */
static void *fresh_thread(void *statuses) {
    ct_status *st = statuses;
    st[0] = ct_device_synchronize(0);
    ct_clear_error();
    ct_scope_begin();
    ct_tensor *x = ct_ones((int64_t[]){3}, 1, CT_F32, GPU);
    double v = x ? ct_item(ct_sum(x, NULL, 0, false)) : NAN;
    st[1] = v == 3.0 ? CT_OK : ct_last_error() != CT_OK ? ct_last_error() : CT_ERR_INTERNAL;
    ct_clear_error();
    ct_scope_end();
    return NULL;
}

Test(cuda_index, a_thread_started_after_an_error_is_not_told_of_it) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_tensor *a = ct_ones((int64_t[]){4, 5}, 2, CT_F32, GPU);
        ct_tensor *bad = i32((int32_t[]){0, 5}, (int64_t[]){2}, 1, GPU);
        cr_assert_not_null(ct_index_select(a, 1, bad), "%s", ct_last_error_message());
        cr_assert_eq(ct_device_synchronize(0), CT_ERR_DIM, "the failing op's thread was not told");
        ct_clear_error();
        ct_status st[2] = {CT_ERR_INTERNAL, CT_ERR_INTERNAL};
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, fresh_thread, st), 0);
        cr_assert_eq(pthread_join(t, NULL), 0);
        cr_assert_eq(st[0], CT_OK, "a new thread's first synchronization: %s", ct_status_name(st[0]));
        cr_assert_eq(st[1], CT_OK, "a new thread's first ct_item: %s", ct_status_name(st[1]));
    });
}

Test(cuda_index, bad_inputs) {
    T_REQUIRE_GPU();
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *a = ct_zeros((int64_t[]){4, 5}, 2, CT_F32, GPU);
        cr_assert_null(ct_index_select(a, 0, i32((int32_t[]){0}, (int64_t[]){1}, 1, CT_CPU)));
        t_assert_error(CT_ERR_DEVICE, "ct_index_select: index is on cpu", NULL);
        cr_assert_null(ct_one_hot(i32((int32_t[]){0}, (int64_t[]){1}, 1, GPU), 3, CT_F64));
        t_assert_error(CT_ERR_DTYPE, "ct_one_hot: f64 tensors are CPU only", NULL);
        ct_tensor *src = ct_ones((int64_t[]){1, 5}, 2, CT_F16, GPU);
        cr_assert_null(ct_scatter_add(a, 0, i32((int32_t[]){0}, (int64_t[]){1, 1}, 2, GPU), src));
        t_assert_error(CT_ERR_DTYPE, "ct_scatter_add", NULL);
    });
}
