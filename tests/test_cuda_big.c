/* CUDA parity past 2^31 elements: each op family on tensors of more than 2^31 elements,
 * where an element offset kept in 32 bits would wrap (F16 and U8 tensors, so that each one
 * stays at 2-4 GiB; a test needs at most about 32 GiB of GPU memory). A GPU result is
 * compared with the CPU on windows of rows: the first, the two on each side of element 2^31
 * and the last (the CPU runs the op on copies of those rows); and every output lands on a
 * block poisoned with NaN (171 for U8) and is read back whole, so an element the kernel never
 * writes fails. Each test reports itself skipped where no GPU is usable or where the GPU
 * lacks the memory. */
#include "tests/common.h"
#include "kernels/cpu/conv.h"

#include <stdio.h>
#include <string.h>

#define GPU T_GPU
/* The element past which offsets no longer fit in 31 bits. A smaller BIG_SHIFT (a scratch
 * build with -DBIG_SHIFT=20, "the GPU" mapped to the CPU) runs the same checks in seconds. */
#ifndef BIG_SHIFT
#define BIG_SHIFT 31
#endif
#define P31 ((int64_t)1 << BIG_SHIFT)
#define U8_POISON 171

/* Reports the test skipped when the last error is the GPU running out of memory. */
static void skip_if_out_of_memory(const char *what) {
    if (ct_last_error() == CT_ERR_MEMORY) {
        static char why[1024];
        snprintf(why, sizeof why, "%s", ct_last_error_message());
        ct_clear_error();
        cr_skip_test("not enough GPU memory for %s: %s", what, why);
    }
}
/* t, or the test reports itself skipped when the GPU ran out of memory making it. */
static ct_tensor *big(ct_tensor *t, const char *what) {
    if (!t)
        skip_if_out_of_memory(what);
    cr_assert_not_null(t, "%s: %s", what, ct_last_error_message());
    return t;
}
#define BIG(expr) big((expr), #expr)
/* The same for a call that returns a status (a backward pass allocates its gradients). */
static void big_ok(ct_status s, const char *what) {
    if (s != CT_OK)
        skip_if_out_of_memory(what);
    cr_assert_eq(s, CT_OK, "%s: %s", what, ct_last_error_message());
}
#define BIG_OK(expr) big_ok((expr), #expr)

/* The next `count` allocations of `numel` elements of `dt` land on blocks full of NaN
 * (U8_POISON for U8): the cache is emptied first, so the poisoned blocks are the only ones of
 * their size, and a 256 MiB block is freed with them for the op's smaller temporaries to take
 * (best fit) instead of splitting a poisoned one. */
static void poison(int64_t numel, ct_dtype dt, int count) {
    ct_tensor *p[4];
    cr_assert(count >= 1 && count <= 3);
    ct_cuda_empty_cache();
    for (int i = 0; i < count; i++)
        p[i] = BIG(ct_full(&numel, 1, dt == CT_U8 ? U8_POISON : NAN, dt, GPU));
    p[count] = BIG(ct_empty((int64_t[]){(int64_t)1 << 28}, 1, CT_U8, GPU));
    for (int i = 0; i <= count; i++)
        ct_tensor_free(p[i]);
}

/* Reads the contiguous GPU tensor t back whole: no element may still hold the poison. */
static void assert_written(const ct_tensor *t, const char *what) {
    ct_dtype dt = ct_tensor_dtype(t);
    int64_t n = ct_tensor_numel(t);
    size_t bytes = (size_t)n * ct_dtype_size(dt);
    void *h = malloc(bytes);
    cr_assert_not_null(h, "%s: no host memory for %zu bytes", what, bytes);
    cr_assert_eq(ct_to_host(t, h, bytes), CT_OK, "%s: %s", what, ct_last_error_message());
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++) {
        switch (dt) {
        case CT_F16: bad = (((const uint16_t *)h)[i] & 0x7fff) > 0x7c00 ? i : -1; break;
        case CT_BF16: bad = (((const uint16_t *)h)[i] & 0x7fff) > 0x7f80 ? i : -1; break;
        case CT_F32: bad = isnan(((const float *)h)[i]) ? i : -1; break;
        case CT_U8: bad = ((const uint8_t *)h)[i] == U8_POISON ? i : -1; break;
        default: cr_assert_fail("%s: assert_written takes F16, BF16, F32 or U8", what);
        }
    }
    free(h);
    cr_assert(bad < 0, "%s: element %lld of %s still holds the poison (never written?)", what, (long long)bad,
              ct_shape_str(t));
}

/* Starts of the windows of `width` rows checked in a tensor of `rows` rows of `row_elems`
 * elements: the first rows, the rows just before and from the one holding element 2^31,
 * and the last rows (clamped, so windows may repeat). */
static int window_starts(int64_t rows, int64_t row_elems, int64_t width, int64_t *starts) {
    int64_t b = P31 / row_elems, s[] = {0, b - width, b, rows - width};
    for (int i = 0; i < 4; i++)
        starts[i] = s[i] < 0 ? 0 : s[i] > rows - width ? rows - width : s[i];
    return 4;
}

/* The op under test, on the CPU, applied to rows [start, start + count) of the inputs. */
typedef ct_tensor *(*rows_fn)(ct_tensor *x, int64_t start, int64_t count, void *ctx);

/* GPU result `out` against `fn` on the CPU on rows [start, start + width) of `in` (dim 0 of
 * both indexes rows): elementwise within atol + rtol * |cpu|. */
static void check_window(ct_tensor *in, ct_tensor *out, int64_t start, int64_t width, rows_fn fn, void *ctx,
                         double atol, double rtol, const char *what) {
    int64_t s = start;
    ct_scope_begin();
    ct_tensor *x = ct_to_device(ct_slice(in, 0, s, s + width, 1), CT_CPU);
    cr_assert_not_null(x, "%s: %s", what, ct_last_error_message());
    ct_tensor *ref = fn(x, s, width, ctx);
    cr_assert_not_null(ref, "%s (CPU): %s", what, ct_last_error_message());
    ct_tensor *got = ct_slice(out, 0, s, s + width, 1);
    cr_assert_not_null(got, "%s: %s", what, ct_last_error_message());
    cr_assert_eq(ct_tensor_dtype(got), ct_tensor_dtype(ref), "%s: dtype differs", what);
    t_assert_shape(got, ct_tensor_shape(ref), ct_tensor_ndim(ref));
    double *r = t_values(ref), *g = t_values(got);
    for (int64_t i = 0; i < ct_tensor_numel(ref); i++) {
        double err = fabs(g[i] - r[i]);
        cr_assert(err <= atol + rtol * fabs(r[i]) || (isnan(g[i]) && isnan(r[i])),
                  "%s, rows %lld..%lld: element %lld: gpu %.9g, cpu %.9g", what, (long long)s,
                  (long long)(s + width - 1), (long long)i, g[i], r[i]);
    }
    free(r);
    free(g);
    ct_scope_end();
}

/* check_window on each of the windows of rows of `in` (window_starts). */
static void check_rows(ct_tensor *in, ct_tensor *out, int64_t width, rows_fn fn, void *ctx, double atol, double rtol,
                       const char *what) {
    int64_t rows = ct_tensor_shape(in)[0], starts[4];
    int nw = window_starts(rows, ct_tensor_numel(in) / rows, width, starts);
    for (int w = 0; w < nw; w++)
        check_window(in, out, starts[w], width, fn, ctx, atol, rtol, what);
}

/* ---- random numbers ------------------------------------------------------------------------ */

enum draw { UNIFORM, NORMAL, BERNOULLI };

static ct_tensor *draw(enum draw kind, int64_t n, ct_device dev) {
    return kind == UNIFORM ? ct_uniform(&n, 1, -2.0, 3.0, CT_F16, dev)
           : kind == NORMAL ? ct_normal(&n, 1, 0.5, 2.0, CT_F16, dev)
                            : ct_bernoulli(&n, 1, 0.3, CT_U8, dev);
}

/* 2^31 + 4099 numbers from an offset 2^28 blocks below 2^32, so that the Philox counter
 * carries into its high word halfway through: windows at the start, on both sides of the
 * carry and of element 2^31, and the odd tail (normal drops the last pair's sine) equal the
 * CPU's numbers drawn from the same block (bit for bit; normal within one unit in the last
 * place of F16, as in test_cuda_core). */
Test(cuda_big, random_numbers_past_2_pow_31) {
    T_REQUIRE_GPU();
    const int64_t n = P31 + 4099, carry = P31 / 2; /* where the counter carries */
    const int64_t starts[] = {0, carry - 32, P31 - 32, P31 + 4096 - 60};
    const uint64_t offset = ((uint64_t)1 << 32) - (uint64_t)(P31 / 8);
    const char *names[] = {"uniform", "normal", "bernoulli"};
    for (int kind = UNIFORM; kind <= BERNOULLI; kind++) {
        ct_dtype dt = kind == BERNOULLI ? CT_U8 : CT_F16;
        ct_manual_seed(2026);
        ct_random_set_offset(offset);
        poison(n, dt, 1);
        ct_tensor *g = BIG(draw(kind, n, GPU));
        for (int w = 0; w < 4; w++) {
            int64_t s = starts[w], k = w == 3 ? n - s : 64; /* s is a multiple of 4: a block start */
            ct_scope_begin();
            ct_random_set_offset(offset + (uint64_t)s / 4);
            ct_tensor *c = draw(kind, k, CT_CPU);
            cr_assert_not_null(c, "%s", ct_last_error_message());
            double *ref = t_values(c);
            ct_tensor *got = ct_slice(g, 0, s, s + k, 1);
            char what[96];
            snprintf(what, sizeof what, "%s, elements %lld..%lld", names[kind], (long long)s, (long long)(s + k - 1));
            cr_assert_not_null(got, "%s: %s", what, ct_last_error_message());
            double *v = t_values(got);
            for (int64_t i = 0; i < k; i++)
                cr_assert(kind == NORMAL ? fabs(v[i] - ref[i]) <= 0x1p-10 * fmax(1.0, fabs(ref[i])) : v[i] == ref[i],
                          "%s: element %lld: gpu %.9g, cpu %.9g", what, (long long)(s + i), v[i], ref[i]);
            free(ref);
            free(v);
            ct_scope_end();
        }
        assert_written(g, names[kind]);
        ct_tensor_free(g);
    }
}

/* ---- casts ------------------------------------------------------------------------------- */

static ct_tensor *cast_rows(ct_tensor *x, int64_t start, int64_t count, void *ctx) {
    (void)start;
    (void)count;
    return ct_cast(x, *(const ct_dtype *)ctx);
}

/* F16 -> F32 of 2^31 + 4099 contiguous elements, and F16 -> BF16 of a step-2 view whose
 * elements reach past 2^31: bit for bit. */
Test(cuda_big, casts_past_2_pow_31) {
    T_REQUIRE_GPU();
    const int64_t n = P31 + 4099;
    ct_manual_seed(1);
    ct_tensor *x = BIG(ct_uniform(&n, 1, -100, 100, CT_F16, GPU));
    ct_dtype to = CT_F32;
    poison(n, to, 1);
    ct_tensor *y = BIG(ct_cast(x, to));
    check_rows(x, y, 64, cast_rows, &to, 0, 0, "cast f16 -> f32");
    assert_written(y, "cast f16 -> f32");
    ct_tensor_free(y);

    ct_tensor *v = ct_slice(x, 0, 1, n, 2);
    cr_assert_not_null(v, "%s", ct_last_error_message());
    to = CT_BF16;
    poison(ct_tensor_numel(v), to, 1);
    y = BIG(ct_cast(v, to));
    check_rows(v, y, 64, cast_rows, &to, 0, 0, "cast of a step-2 view, f16 -> bf16");
    assert_written(y, "cast of a step-2 view, f16 -> bf16");
    ct_tensor_free(y);
    ct_tensor_free(v);
    ct_tensor_free(x);
}

/* ---- softmax, log_softmax, logsumexp and the softmax gradient ------------------------------ */

static ct_tensor *softmax_rows(ct_tensor *x, int64_t start, int64_t count, void *ctx) {
    (void)start;
    (void)count;
    int which = *(const int *)ctx;
    return which == 0 ? ct_softmax(x, 1) : which == 1 ? ct_log_softmax(x, 1) : ct_logsumexp(x, (int[]){1}, 1, false);
}

/* The gradient of sum(softmax(x) * w) on CPU rows: w's rows are copied from the GPU. */
struct softmax_grad_ctx {
    ct_tensor *w;
};
static ct_tensor *softmax_grad_rows(ct_tensor *x, int64_t start, int64_t count, void *ctx) {
    struct softmax_grad_ctx *c = ctx;
    ct_tensor *w = ct_to_device(ct_slice(c->w, 0, start, start + count, 1), CT_CPU);
    x = ct_requires_grad(ct_detach(x), true);
    if (ct_backward(ct_sum(ct_mul(ct_softmax(x, 1), w), NULL, 0, false)) != CT_OK)
        return NULL;
    return ct_grad(x);
}

/* Rows of 1024 F16 values, 2^21 + 3 of them (2^31 + 3072 elements). */
Test(cuda_big, softmax_past_2_pow_31) {
    T_REQUIRE_GPU();
    const int64_t shape[2] = {P31 / 1024 + 3, 1024}, n = shape[0] * shape[1];
    const char *names[] = {"softmax", "log_softmax", "logsumexp"};
    ct_manual_seed(3);
    ct_tensor *x = BIG(ct_uniform(shape, 2, -4, 4, CT_F16, GPU));
    for (int which = 0; which < 3; which++) {
        poison(which == 2 ? shape[0] : n, CT_F16, 1);
        ct_tensor *y = BIG(softmax_rows(x, 0, shape[0], &which));
        /* f32 inside, one F16 rounding at the end on both devices: a unit or two apart */
        check_rows(x, y, 2, softmax_rows, &which, 1e-6, 4e-3, names[which]);
        assert_written(y, names[which]);
        ct_tensor_free(y);
    }
    struct softmax_grad_ctx ctx = {.w = BIG(ct_uniform(shape, 2, -1, 1, CT_F16, GPU))};
    ct_requires_grad(x, true);
    ct_scope_begin();
    ct_tensor *loss = BIG(ct_sum(ct_mul(BIG(ct_softmax(x, 1)), ctx.w), NULL, 0, false));
    poison(n, CT_F16, 2); /* for the gradients of softmax(x) and of x */
    BIG_OK(ct_backward(loss));
    ct_scope_end();
    ct_tensor *g = ct_grad(x);
    cr_assert_not_null(g, "%s", ct_last_error_message());
    check_rows(x, g, 2, softmax_grad_rows, &ctx, 1e-5, 1e-2, "softmax gradient");
    assert_written(g, "softmax gradient");
    ct_tensor_free(ctx.w);
    ct_tensor_free(x);
}

/* ---- pooling and dropout ------------------------------------------------------------------- */

struct pool_ctx {
    int which;            /* 0 max pool values, 1 max pool indices, 2 avg pool, 3/4 their gradients, 5 dropout */
    ct_tensor *w;         /* GPU, the pooled shape: the upstream gradient */
    uint64_t seed, offset; /* dropout's generator state before the GPU draw */
};

static ct_tensor *pool_rows(ct_tensor *x, int64_t start, int64_t count, void *ctx) {
    struct pool_ctx *c = ctx;
    ct_tensor *indices = NULL;
    switch (c->which) {
    case 0: return ct_max_pool2d(x, NULL, NULL);
    case 1: return ct_max_pool2d(x, NULL, &indices) ? indices : NULL;
    case 2: return ct_avg_pool2d(x, NULL);
    case 5: /* element 4k of the tensor draws from Philox block offset + k: start at the window's */
        ct_manual_seed(c->seed);
        ct_random_set_offset(c->offset + (uint64_t)(start * ct_tensor_numel(x) / count) / 4);
        return ct_dropout(x, 0.3, true);
    default: {
        ct_tensor *w = ct_to_device(ct_slice(c->w, 0, start, start + count, 1), CT_CPU);
        x = ct_requires_grad(ct_detach(x), true);
        ct_tensor *y = c->which == 3 ? ct_max_pool2d(x, NULL, NULL) : ct_avg_pool2d(x, NULL);
        if (ct_backward(ct_sum(ct_mul(y, w), NULL, 0, false)) != CT_OK)
            return NULL;
        return ct_grad(x);
    }
    }
}

/* x (N, 4, 256, 256) F16, N = 2^31 / 2^18 + 1 images: 2x2 max pooling (values, indices and
 * the gradient, each exact: the CPU and the GPU pick the same element of a tie), 2x2 average
 * pooling and its gradient, and dropout (the CPU's mask from the same Philox blocks), on
 * windows of images. */
Test(cuda_big, pooling_and_dropout_past_2_pow_31) {
    T_REQUIRE_GPU();
    const int64_t N = P31 / (4 * 65536) + 1, shape[4] = {N, 4, 256, 256}, pooled[4] = {N, 4, 128, 128};
    const char *names[] = {"max_pool2d", "max_pool2d indices", "avg_pool2d", "max_pool2d gradient",
                           "avg_pool2d gradient", "dropout"};
    const double rtol[] = {0, 0, 4e-3, 0, 4e-3, 0}; /* avg: a sum of four in f32, one F16 rounding */
    ct_manual_seed(9);
    ct_tensor *x = BIG(ct_uniform(shape, 4, -1, 1, CT_F16, GPU));
    struct pool_ctx ctx = {.w = BIG(ct_uniform(pooled, 4, -1, 1, CT_F16, GPU))};
    for (ctx.which = 0; ctx.which < 6; ctx.which++) {
        ct_scope_begin();
        ct_tensor *y;
        if (ctx.which <= 2) {
            if (ctx.which != 1) /* the indices (I32) are compared on the windows only */
                poison(N * 4 * 128 * 128, CT_F16, 1);
            ct_tensor *indices = NULL;
            y = BIG(ctx.which == 2 ? ct_avg_pool2d(x, NULL) : ct_max_pool2d(x, NULL, ctx.which == 1 ? &indices : NULL));
            if (ctx.which == 1)
                y = indices;
        } else if (ctx.which <= 4) {
            ct_requires_grad(x, true);
            ct_tensor *p = BIG(ctx.which == 3 ? ct_max_pool2d(x, NULL, NULL) : ct_avg_pool2d(x, NULL));
            ct_tensor *loss = BIG(ct_sum(ct_mul(p, ctx.w), NULL, 0, false));
            poison(N * 4 * 65536, CT_F16, 2);
            BIG_OK(ct_backward(loss));
            y = ct_grad(x);
            cr_assert_not_null(y, "%s", ct_last_error_message());
        } else {
            ct_requires_grad(x, false);
            ctx.seed = ct_random_seed();
            ctx.offset = ct_random_offset();
            poison(N * 4 * 65536, CT_F16, 1);
            y = BIG(ct_dropout(x, 0.3, true));
        }
        check_rows(x, y, 2, pool_rows, &ctx, rtol[ctx.which] ? 1e-5 : 0, rtol[ctx.which], names[ctx.which]);
        if (ct_tensor_dtype(y) != CT_I32)
            assert_written(y, names[ctx.which]);
        if (ctx.which == 3 || ctx.which == 4)
            ct_zero_grad(x);
        ct_scope_end();
    }
    ct_tensor_free(ctx.w);
    ct_tensor_free(x);
}

/* ---- gradient clipping and an optimizer step ------------------------------------------------ */

/* One F32 parameter of 2^31 + 5 elements (8 GiB, an LLM's embedding table; with its gradient
 * and SGD's momentum 24 GiB): the gradient of sum(p) is all ones, clip_grad_norm returns
 * sqrt(n) and scales every element alike to 0.5, and an SGD step with momentum and weight
 * decay moves every element as the CPU's formula does (within 1e-6: the GPU may fuse a
 * multiply-add). Both are read back whole. */
Test(cuda_big, clipping_and_sgd_past_2_pow_31) {
    T_REQUIRE_GPU();
    const int64_t n = P31 + 5;
    ct_manual_seed(10);
    ct_tensor *p = BIG(ct_uniform(&n, 1, -1, 1, CT_F32, GPU));
    ct_requires_grad(p, true);
    ct_scope_begin();
    BIG_OK(ct_backward(BIG(ct_sum(p, NULL, 0, false))));
    ct_scope_end();
    ct_tensor *g = ct_grad(p);
    cr_assert_not_null(g, "%s", ct_last_error_message());
    double norm = ct_clip_grad_norm(&p, 1, 0.5 * sqrt((double)n), 2.0);
    cr_assert(fabs(norm - sqrt((double)n)) <= 1e-6 * sqrt((double)n), "clip_grad_norm returned %.9g, want %.9g: %s",
              norm, sqrt((double)n), ct_last_error_message());
    float *old = malloc((size_t)n * sizeof(float)), *now = malloc((size_t)n * sizeof(float));
    cr_assert(old && now, "no host memory for 2 x %lld floats", (long long)n);
    cr_assert_eq(ct_to_host(g, now, (size_t)n * sizeof(float)), CT_OK, "%s", ct_last_error_message());
    const float v = now[0];
    cr_assert(fabs(v - 0.5) <= 1e-6, "the clipped gradient is %.9g, want 0.5", v);
    for (int64_t i = 0; i < n; i++)
        if (now[i] != v)
            cr_assert_fail("clipped gradient element %lld: %.9g, element 0: %.9g", (long long)i, now[i], v);
    cr_assert_eq(ct_to_host(p, old, (size_t)n * sizeof(float)), CT_OK, "%s", ct_last_error_message());
    ct_sgd_opts o = CT_SGD_OPTS_DEFAULT;
    o.lr = 0.1;
    o.momentum = 0.9;
    o.weight_decay = 0.01;
    ct_optim *opt = ct_optim_sgd_from_tensors(&p, (const char *[]){"p"}, 1, &o);
    cr_assert_not_null(opt, "%s", ct_last_error_message());
    if (ct_optim_step(opt) != CT_OK) {
        cr_assert_eq(ct_last_error(), CT_ERR_MEMORY, "%s", ct_last_error_message());
        cr_skip_test("not enough GPU memory for SGD's momentum buffer: %s", ct_last_error_message());
    }
    cr_assert_eq(ct_to_host(p, now, (size_t)n * sizeof(float)), CT_OK, "%s", ct_last_error_message());
    for (int64_t i = 0; i < n; i++) {
        float d = v + 0.01f * old[i], want = old[i] + -0.1f * d; /* optim_cpu.c, first step: buf = d */
        if (!(fabsf(now[i] - want) <= 1e-6f * (1.0f + fabsf(want))))
            cr_assert_fail("SGD step, element %lld: %.9g, want %.9g (before: %.9g)", (long long)i, now[i], want,
                           old[i]);
    }
    free(old);
    free(now);
    ct_optim_free(opt);
    ct_tensor_free(p);
}

/* ---- reductions ---------------------------------------------------------------------------- */

enum red { SUM, MEAN, VAR, MAX_VALUES, MAX_INDICES, ARGMAX, NUM_RED };

static ct_tensor *reduce(ct_tensor *x, int dim, int which) {
    ct_tensor *indices = NULL, *values;
    switch (which) {
    case SUM: return ct_sum(x, &dim, 1, false);
    case MEAN: return ct_mean(x, &dim, 1, false);
    case VAR: return ct_var(x, &dim, 1, 1, false);
    case MAX_VALUES: return ct_max(x, dim, false, NULL);
    case MAX_INDICES:
        values = ct_max(x, dim, false, &indices);
        return values ? indices : NULL;
    default: return ct_argmax(x, dim, false);
    }
}

static ct_tensor *reduce_rows(ct_tensor *x, int64_t start, int64_t count, void *ctx) {
    (void)start;
    (void)count;
    return reduce(x, 1, *(const int *)ctx);
}

/* Over rows of 256 F16 values (2^23 + 5 rows, the last five past element 2^31) and over the
 * 2^23 + 5 rows of each column; max and argmax exactly, first index on ties. Then the
 * whole-tensor max and min of values planted past element 2^31. */
Test(cuda_big, reductions_past_2_pow_31) {
    T_REQUIRE_GPU();
    const int64_t shape[2] = {P31 / 256 + 5, 256};
    const char *names[] = {"sum", "mean", "var", "max values", "max indices", "argmax"};
    const double atol[] = {1e-3, 1e-4, 1e-4, 0, 0, 0}, rtol[] = {1e-2, 1e-2, 1e-2, 0, 0, 0};
    ct_manual_seed(4);
    ct_tensor *x = BIG(ct_uniform(shape, 2, -1, 1, CT_F16, GPU));
    for (int which = 0; which < NUM_RED; which++) {
        char what[64];
        snprintf(what, sizeof what, "%s over rows", names[which]);
        ct_scope_begin();
        ct_tensor *y = BIG(reduce(x, 1, which));
        check_rows(x, y, 2, reduce_rows, &which, atol[which], rtol[which], what);
        /* over dim 0: columns c, c + 1 of every row, on the CPU */
        snprintf(what, sizeof what, "%s over columns", names[which]);
        y = BIG(reduce(x, 0, which));
        for (int64_t c = 0; c < 256; c += 254) {
            ct_tensor *cols = ct_to_device(ct_slice(x, 1, c, c + 2, 1), CT_CPU);
            cr_assert_not_null(cols, "%s", ct_last_error_message());
            ct_tensor *ref = reduce(cols, 0, which);
            cr_assert_not_null(ref, "%s (CPU): %s", what, ct_last_error_message());
            double *r = t_values(ref);
            t_assert_close(ct_slice(y, 0, c, c + 2, 1), r, atol[which] * 30, rtol[which]);
            free(r);
        }
        ct_scope_end();
    }
    ct_scope_begin();
    cr_assert_eq(ct_fill_(ct_slice(x, 0, shape[0] - 3, shape[0] - 2, 1), 7.0), CT_OK, "%s", ct_last_error_message());
    cr_assert_eq(ct_fill_(ct_slice(ct_slice(x, 0, shape[0] - 1, shape[0], 1), 1, 255, 256, 1), -7.0), CT_OK, "%s",
                 ct_last_error_message());
    cr_assert_eq(ct_item(BIG(ct_max_all(x))), 7.0);
    cr_assert_eq(ct_item(BIG(ct_min_all(x))), -7.0);
    ct_scope_end();
    ct_tensor_free(x);
}

/* ---- indexing ------------------------------------------------------------------------------ */

struct gather_ctx {
    ct_tensor *index, *src; /* GPU (rows, 3) */
    int scatter;
};
static ct_tensor *gather_rows(ct_tensor *x, int64_t start, int64_t count, void *ctx) {
    struct gather_ctx *c = ctx;
    ct_tensor *index = ct_to_device(ct_slice(c->index, 0, start, start + count, 1), CT_CPU);
    if (!c->scatter)
        return ct_gather(x, 1, index);
    return ct_scatter_add(x, 1, index, ct_to_device(ct_slice(c->src, 0, start, start + count, 1), CT_CPU));
}

/* index_select and embedding of rows on both sides of element 2^31 of a (2^23 + 5, 256) F16
 * table, bit for bit; embedding's gradient (each picked row once: exact) is that row's
 * upstream gradient and zero elsewhere, read back whole; gather and scatter_add along dim 1
 * with indices in every row. */
Test(cuda_big, indexing_past_2_pow_31) {
    T_REQUIRE_GPU();
    const int64_t rows = P31 / 256 + 5, shape[2] = {rows, 256}, b = P31 / 256;
    const int32_t pick[] = {(int32_t)(rows - 1), 0, (int32_t)b, (int32_t)(b - 1), (int32_t)(rows - 2), 17};
    const int64_t npick = sizeof pick / sizeof pick[0];
    ct_manual_seed(5);
    ct_tensor *table = BIG(ct_uniform(shape, 2, -1, 1, CT_F16, GPU));
    ct_tensor *idx = BIG(ct_from_host(pick, &npick, 1, CT_I32, GPU));
    for (int op = 0; op < 2; op++) {
        ct_scope_begin();
        ct_tensor *y = BIG(op == 0 ? ct_index_select(table, 0, idx) : ct_embedding(table, idx, -1));
        for (int64_t i = 0; i < npick; i++) {
            ct_tensor *want = ct_to_device(ct_slice(table, 0, pick[i], pick[i] + 1, 1), CT_CPU);
            cr_assert_not_null(want, "%s", ct_last_error_message());
            double *r = t_values(want);
            t_assert_close(ct_slice(y, 0, i, i + 1, 1), r, 0, 0);
            free(r);
        }
        ct_scope_end();
    }

    /* embedding's gradient into a 4 GiB table */
    ct_requires_grad(table, true);
    ct_tensor *up = BIG(ct_uniform((int64_t[]){npick, 256}, 2, -1, 1, CT_F16, GPU));
    ct_scope_begin();
    ct_tensor *loss = BIG(ct_sum(ct_mul(BIG(ct_embedding(table, idx, -1)), up), NULL, 0, false));
    poison(rows * 256, CT_F16, 1);
    BIG_OK(ct_backward(loss));
    ct_scope_end();
    ct_tensor *grad = ct_grad(table);
    cr_assert_not_null(grad, "%s", ct_last_error_message());
    uint16_t *h = malloc((size_t)rows * 256 * 2), uph[6 * 256];
    cr_assert_not_null(h);
    cr_assert_eq(ct_to_host(grad, h, (size_t)rows * 256 * 2), CT_OK, "%s", ct_last_error_message());
    cr_assert_eq(ct_to_host(up, uph, sizeof uph), CT_OK, "%s", ct_last_error_message());
    for (int64_t r = 0; r < rows; r++) {
        int64_t which = -1;
        for (int64_t i = 0; i < npick; i++)
            which = pick[i] == r ? i : which;
        for (int64_t j = 0; j < 256; j++) {
            uint16_t want = which < 0 ? 0 : uph[which * 256 + j], got = h[r * 256 + j];
            if (got != want)
                cr_assert_fail("embedding gradient, row %lld, column %lld: gpu 0x%04x, expected 0x%04x", (long long)r,
                               (long long)j, got, want);
        }
    }
    free(h);
    ct_tensor_free(up);
    ct_zero_grad(table);
    ct_requires_grad(table, false);

    /* gather and scatter_add along dim 1, three indices per row */
    int32_t *ih = malloc((size_t)rows * 3 * sizeof(int32_t));
    cr_assert_not_null(ih);
    for (int64_t r = 0; r < rows; r++)
        for (int j = 0; j < 3; j++)
            ih[r * 3 + j] = (int32_t)((r * 7 + j * 101) % 256);
    struct gather_ctx ctx = {.index = BIG(ct_from_host(ih, (int64_t[]){rows, 3}, 2, CT_I32, GPU)),
                             .src = BIG(ct_uniform((int64_t[]){rows, 3}, 2, -1, 1, CT_F16, GPU))};
    free(ih);
    for (ctx.scatter = 0; ctx.scatter < 2; ctx.scatter++) {
        const char *what = ctx.scatter ? "scatter_add" : "gather";
        poison(ctx.scatter ? rows * 256 : rows * 3, CT_F16, 1);
        ct_tensor *y = BIG(ctx.scatter ? ct_scatter_add(table, 1, ctx.index, ctx.src) : ct_gather(table, 1, ctx.index));
        check_rows(table, y, 2, gather_rows, &ctx, 0, 0, what);
        assert_written(y, what);
        ct_tensor_free(y);
    }
    ct_tensor_free(ctx.index);
    ct_tensor_free(ctx.src);
    ct_tensor_free(idx);
    ct_tensor_free(table);
}

/* ---- joining ------------------------------------------------------------------------------- */

static ct_tensor *small_u8(const int64_t *shape, int ndim) { /* values 0..99, never the poison */
    ct_scope_begin();
    ct_tensor *t = ct_cast(BIG(ct_uniform(shape, ndim, 0, 100, CT_F16, GPU)), CT_U8);
    ct_keep(t);
    ct_scope_end();
    return BIG(t);
}

static ct_tensor *cat_rows(ct_tensor *x, int64_t start, int64_t count, void *ctx) {
    ct_tensor *other = ct_to_device(ct_slice((ct_tensor *)ctx, 0, start, start + count, 1), CT_CPU);
    return ct_cat((ct_tensor *[]){x, other}, 2, 1);
}

/* Two 1-D U8 tensors whose concatenation has 2^31 + 12 elements, and two (2^20 + 1, 1024)
 * ones joined along dim 1 into 2^31 + 2048 elements: bit for bit. */
Test(cuda_big, cat_past_2_pow_31) {
    T_REQUIRE_GPU();
    const int64_t la = P31 / 2 + 5, lb = P31 / 2 + 7, n = la + lb;
    ct_manual_seed(6);
    ct_tensor *a = small_u8(&la, 1), *b = small_u8(&lb, 1);
    poison(n, CT_U8, 1);
    ct_tensor *c = BIG(ct_cat((ct_tensor *[]){a, b}, 2, 0));
    const int64_t starts[] = {0, la - 32, P31 - 32, n - 64};
    for (int w = 0; w < 4; w++) {
        ct_scope_begin();
        int64_t s = starts[w];
        uint8_t got[64], want[64];
        cr_assert_eq(ct_to_host(ct_slice(c, 0, s, s + 64, 1), got, 64), CT_OK, "%s", ct_last_error_message());
        for (int64_t i = 0; i < 64; i++) {
            int64_t e = s + i;
            ct_tensor *src = e < la ? ct_slice(a, 0, e, e + 1, 1) : ct_slice(b, 0, e - la, e - la + 1, 1);
            cr_assert_eq(ct_to_host(src, &want[i], 1), CT_OK, "%s", ct_last_error_message());
        }
        cr_assert_arr_eq(got, want, 64, "cat along dim 0: elements %lld..%lld differ", (long long)s,
                         (long long)(s + 63));
        ct_scope_end();
    }
    assert_written(c, "cat along dim 0");
    ct_tensor_free(c);
    ct_tensor_free(a);
    ct_tensor_free(b);

    const int64_t shape[2] = {P31 / 2048 + 1, 1024};
    a = small_u8(shape, 2);
    b = small_u8(shape, 2);
    poison(2 * shape[0] * shape[1], CT_U8, 1);
    c = BIG(ct_cat((ct_tensor *[]){a, b}, 2, 1));
    check_rows(a, c, 2, cat_rows, b, 0, 0, "cat along dim 1");
    assert_written(c, "cat along dim 1");
    ct_tensor_free(c);
    ct_tensor_free(a);
    ct_tensor_free(b);
}

/* ---- elementwise with broadcasting, transposed copies, where ------------------------------- */

struct ew_ctx {
    ct_tensor *bias_cpu;
    int which;
};
static ct_tensor *ew_rows(ct_tensor *x, int64_t start, int64_t count, void *ctx) {
    (void)start;
    (void)count;
    struct ew_ctx *c = ctx;
    if (c->which == 0)
        return ct_add(x, c->bias_cpu);
    return ct_where(ct_gt(x, c->bias_cpu), x, c->bias_cpu);
}

/* x (2^23 + 5, 256) F16: x + bias (broadcast rows), where(x > bias, x, bias), and the
 * transpose of x made contiguous (a strided read of every element): bit for bit. */
Test(cuda_big, elementwise_past_2_pow_31) {
    T_REQUIRE_GPU();
    const int64_t rows = P31 / 256 + 5, shape[2] = {rows, 256};
    ct_manual_seed(7);
    ct_tensor *x = BIG(ct_uniform(shape, 2, -1, 1, CT_F16, GPU));
    ct_tensor *bias = BIG(ct_uniform(&shape[1], 1, -1, 1, CT_F16, GPU));
    struct ew_ctx ctx = {.bias_cpu = ct_to_device(bias, CT_CPU)};
    cr_assert_not_null(ctx.bias_cpu, "%s", ct_last_error_message());
    const char *names[] = {"x + bias", "where(x > bias, x, bias)"};
    for (ctx.which = 0; ctx.which < 2; ctx.which++) {
        ct_scope_begin();
        ct_tensor *cond = ctx.which == 0 ? NULL : BIG(ct_gt(x, bias)); /* before the poison: 2 GiB */
        poison(rows * 256, CT_F16, 1);
        ct_tensor *y = BIG(ctx.which == 0 ? ct_add(x, bias) : ct_where(cond, x, bias));
        check_rows(x, y, 2, ew_rows, &ctx, 0, 0, names[ctx.which]);
        assert_written(y, names[ctx.which]);
        ct_scope_end();
    }
    poison(rows * 256, CT_F16, 1);
    ct_tensor *t = BIG(ct_contiguous(ct_transpose(x, 0, 1)));
    for (int64_t c = 0; c < 256; c += 254) { /* rows c, c + 1 of the transpose: columns of x */
        ct_scope_begin();
        ct_tensor *cols = ct_to_device(ct_slice(x, 1, c, c + 2, 1), CT_CPU);
        cr_assert_not_null(cols, "%s", ct_last_error_message());
        double *r = t_values(ct_contiguous(ct_transpose(cols, 0, 1)));
        t_assert_close(ct_slice(t, 0, c, c + 2, 1), r, 0, 0);
        free(r);
        ct_scope_end();
    }
    assert_written(t, "contiguous transpose");
    ct_tensor_free(t);
    ct_tensor_free(ctx.bias_cpu);
    ct_tensor_free(bias);
    ct_tensor_free(x);
}

/* ---- layer norm, matmul, cross-entropy, padding -------------------------------------------- */

struct nn_ctx {
    ct_tensor *weight, *bias, *w, *targets; /* CPU copies, except targets (GPU) */
    int which;
};
static ct_tensor *nn_rows(ct_tensor *x, int64_t start, int64_t count, void *ctx) {
    struct nn_ctx *c = ctx;
    ct_cross_entropy_opts opts = CT_CROSS_ENTROPY_OPTS_DEFAULT;
    opts.reduction = CT_REDUCTION_NONE;
    switch (c->which) {
    case 0: return ct_layer_norm(x, 1, c->weight, c->bias, 1e-5);
    case 1: return ct_matmul(x, c->w);
    case 2:
        return ct_cross_entropy(x, ct_to_device(ct_slice(c->targets, 0, start, start + count, 1), CT_CPU), &opts);
    default: return ct_pad(x, (int64_t[]){3, 2}, 2, CT_PAD_REFLECT, 0);
    }
}

/* Rows of 1024 F16 values, 2^21 + 3 of them: layer_norm, x @ w (cuBLASLt with more than 2^31
 * elements in A), per-row cross-entropy, and reflect padding of each row. */
Test(cuda_big, nn_ops_past_2_pow_31) {
    T_REQUIRE_GPU();
    const int64_t rows = P31 / 1024 + 3, shape[2] = {rows, 1024};
    ct_manual_seed(8);
    ct_tensor *x = BIG(ct_uniform(shape, 2, -4, 4, CT_F16, GPU));
    ct_tensor *weight = BIG(ct_uniform(&shape[1], 1, 0.5, 1.5, CT_F16, GPU));
    ct_tensor *bias = BIG(ct_uniform(&shape[1], 1, -1, 1, CT_F16, GPU));
    ct_tensor *w = BIG(ct_uniform((int64_t[]){1024, 16}, 2, -1, 1, CT_F16, GPU));
    int32_t *th = malloc((size_t)rows * sizeof(int32_t));
    cr_assert_not_null(th);
    for (int64_t r = 0; r < rows; r++)
        th[r] = (int32_t)((r * 13) % 1024);
    struct nn_ctx ctx = {.weight = ct_to_device(weight, CT_CPU),
                         .bias = ct_to_device(bias, CT_CPU),
                         .w = ct_to_device(w, CT_CPU),
                         .targets = BIG(ct_from_host(th, &rows, 1, CT_I32, GPU))};
    free(th);
    cr_assert(ctx.weight && ctx.bias && ctx.w, "%s", ct_last_error_message());
    const char *names[] = {"layer_norm", "matmul", "cross_entropy (none)", "reflect pad"};
    const double atol[] = {1e-2, 0.1, 1e-2, 0}, rtol[] = {1e-2, 1e-2, 1e-2, 0};
    ct_cross_entropy_opts opts = CT_CROSS_ENTROPY_OPTS_DEFAULT;
    opts.reduction = CT_REDUCTION_NONE;
    for (ctx.which = 0; ctx.which < 4; ctx.which++) {
        ct_scope_begin();
        int64_t out_numel = ctx.which == 0 ? rows * 1024 : ctx.which == 1 ? rows * 16 : ctx.which == 2 ? rows : rows * 1029;
        poison(out_numel, CT_F16, 1);
        ct_tensor *y = BIG(ctx.which == 0   ? ct_layer_norm(x, 1, weight, bias, 1e-5)
                           : ctx.which == 1 ? ct_matmul(x, w)
                           : ctx.which == 2 ? ct_cross_entropy(x, ctx.targets, &opts)
                                            : ct_pad(x, (int64_t[]){3, 2}, 2, CT_PAD_REFLECT, 0));
        check_rows(x, y, 2, nn_rows, &ctx, atol[ctx.which], rtol[ctx.which], names[ctx.which]);
        assert_written(y, names[ctx.which]);
        ct_scope_end();
    }
    ct_tensor_free(ctx.weight);
    ct_tensor_free(ctx.bias);
    ct_tensor_free(ctx.w);
    ct_tensor_free(ctx.targets);
    ct_tensor_free(w);
    ct_tensor_free(bias);
    ct_tensor_free(weight);
    ct_tensor_free(x);
}

/* ---- convolution, batch norm ---------------------------------------------------------------- */

static const ct_conv2d_opts conv_opts = {{1, 1}, {2, 2}, {1, 1}, 1}; /* padding 2: y's images are larger */

/* The convolution on CPU images: y, or with gy (GPU) the input gradient from gy's images. */
struct conv_ctx {
    ct_tensor *w, *gy; /* w: a CPU copy */
};
static ct_tensor *conv_rows(ct_tensor *x, int64_t start, int64_t count, void *ctx) {
    struct conv_ctx *c = ctx;
    if (!c->gy)
        return ct_conv2d(x, c->w, NULL, &conv_opts);
    ct_tensor *gy = ct_to_device(ct_slice(c->gy, 0, start, start + count, 1), CT_CPU);
    x = ct_requires_grad(ct_detach(x), true);
    if (ct_backward_ex(ct_conv2d(x, c->w, NULL, &conv_opts), gy, false) != CT_OK)
        return NULL;
    return ct_grad(x);
}

/* Starts of the windows of `width` images checked in a batch of n images of in_image input and
 * out_image output elements: window_starts' for x and for y, and those on both sides of the
 * end of the first chunk of the batch that cuDNN takes (CT_CUDNN_CHUNK_ELEMS elements a
 * tensor, kernels/cpu/conv.h). */
static int conv_windows(int64_t n, int64_t in_image, int64_t out_image, int64_t width, int64_t *starts) {
    int64_t chunk = CT_CUDNN_CHUNK_ELEMS / (in_image > out_image ? in_image : out_image);
    int k = window_starts(n, in_image, width, starts);
    k += window_starts(n, out_image, width, starts + k);
    starts[k++] = chunk - width < 0 ? 0 : chunk - width;
    starts[k++] = chunk > n - width ? n - width : chunk;
    return k;
}

/* x (33287, 1, 254, 254) F16 and a 3x3 kernel with padding 2: y (33287, 1, 256, 256). Both
 * hold more than 2^31 elements; cuDNN runs on chunks of the batch (CT_CUDNN_CHUNK_ELEMS: eight
 * of 4096 images and one of 519; two geometries, two algorithm choices, one workspace). The
 * images of x and y differ in size, so an offset taken from the wrong tensor fails. y and the
 * input gradient against the CPU on windows of images (the first, around element 2^31 of x
 * and of y, on both sides of the first chunk boundary, the last), each read back whole from a
 * poisoned block. The weight gradient, the sum over all images (accumulated over the chunks
 * by cuDNN), against the sum of the GPU's weight gradients over three slices of the batch
 * (chunked differently), normwise within 1e-2. */
Test(cuda_big, conv2d_past_2_pow_31) {
    T_REQUIRE_GPU();
    const int64_t H = 254, oH = 256, in = H * H, out = oH * oH, n = P31 / in + 1;
    const int64_t xshape[4] = {n, 1, H, H}, yshape[4] = {n, 1, oH, oH}, width = 2;
    int64_t starts[10];
    int nw = conv_windows(n, in, out, width, starts);
    ct_manual_seed(9);
    ct_tensor *x = BIG(ct_uniform(xshape, 4, -1, 1, CT_F16, GPU));
    ct_tensor *w = BIG(ct_uniform((int64_t[]){1, 1, 3, 3}, 4, -1, 1, CT_F16, GPU));
    struct conv_ctx ctx = {.w = ct_to_device(w, CT_CPU)};
    cr_assert_not_null(ctx.w, "%s", ct_last_error_message());

    poison(n * out, CT_F16, 1);
    ct_tensor *y = BIG(ct_conv2d(x, w, NULL, &conv_opts));
    for (int i = 0; i < nw; i++)
        check_window(x, y, starts[i], width, conv_rows, &ctx, 1e-2, 1e-2, "conv2d");
    assert_written(y, "conv2d");
    ct_tensor_free(y);

    /* gy small enough that the weight gradient (about 2^31 products) stays well inside F16 */
    ctx.gy = BIG(ct_uniform(yshape, 4, -0.25, 0.25, CT_F16, GPU));
    ct_requires_grad(x, true);
    ct_requires_grad(w, true);
    ct_scope_begin();
    y = BIG(ct_conv2d(x, w, NULL, &conv_opts));
    poison(n * in, CT_F16, 1);
    ct_tensor_free(BIG(ct_full((int64_t[]){9}, 1, NAN, CT_F16, GPU))); /* for the weight gradient */
    BIG_OK(ct_backward_ex(y, ctx.gy, false));
    ct_scope_end();
    ct_tensor *gx = ct_grad(x), *gw = ct_grad(w);
    cr_assert(gx && gw, "%s", ct_last_error_message());
    for (int i = 0; i < nw; i++)
        check_window(x, gx, starts[i], width, conv_rows, &ctx, 1e-2, 1e-2, "conv2d input gradient");
    assert_written(gx, "conv2d input gradient");
    assert_written(gw, "conv2d weight gradient");

    ct_scope_begin();
    ct_tensor *xd = ct_detach(x), *wd = ct_requires_grad(ct_detach(w), true);
    const int64_t bounds[] = {0, n / 3, 2 * n / 3, n};
    for (int i = 0; i < 3; i++) {
        ct_tensor *yi = BIG(ct_conv2d(ct_slice(xd, 0, bounds[i], bounds[i + 1], 1), wd, NULL, &conv_opts));
        BIG_OK(ct_backward_ex(yi, ct_slice(ctx.gy, 0, bounds[i], bounds[i + 1], 1), false));
    }
    cr_assert_not_null(ct_grad(wd), "%s", ct_last_error_message());
    double *r = t_values(ct_grad(wd)), *g = t_values(gw), scale = 1;
    for (int i = 0; i < 9; i++)
        scale = fmax(scale, fabs(r[i]));
    for (int i = 0; i < 9; i++)
        cr_assert(fabs(g[i] - r[i]) <= 1e-2 * scale, "conv2d weight gradient: element %d: %.9g, over slices %.9g", i,
                  g[i], r[i]);
    free(r);
    free(g);
    ct_scope_end();
    ct_tensor_free(ctx.gy);
    ct_tensor_free(ctx.w);
    ct_tensor_free(w);
    ct_tensor_free(x);
}

/* What cuDNN cannot take is refused with the limit named: batch norm over (2^15 + 1, 16, 64,
 * 64) F16 (2^31 + 2^16 elements; training statistics span the batch, so no split), and a
 * convolution whose one image holds 2^31 elements (a stride-0 view: nothing is allocated). */
Test(cuda_big, batch_norm_and_one_huge_image_refused) {
    T_REQUIRE_GPU();
    ct_tensor *one = BIG(ct_zeros((int64_t[]){1, 1, 1, 1}, 4, CT_F16, GPU));
    ct_tensor *image = ct_expand(one, (int64_t[]){1, 2, 32768, 32768}, 4);
    ct_tensor *w = BIG(ct_zeros((int64_t[]){1, 2, 1, 1}, 4, CT_F16, GPU));
    cr_assert_not_null(image, "%s", ct_last_error_message());
    cr_assert_null(ct_conv2d(image, w, NULL, NULL));
    t_assert_error(CT_ERR_UNSUPPORTED, "ct_conv2d: x is [1, 2, 32768, 32768]",
                   "one image of x or of the result holds 2147483648 elements", "cuDNN's limit per tensor", NULL);
    ct_tensor_free(image);
    ct_tensor_free(w);
    ct_tensor_free(one);

    ct_tensor *x = BIG(ct_empty((int64_t[]){32769, 16, 64, 64}, 4, CT_F16, GPU));
    cr_assert_null(ct_batch_norm(x, NULL, NULL, NULL, NULL, true, 0.1, 1e-5));
    t_assert_error(CT_ERR_UNSUPPORTED, "(32769, 16, 4096) holds 2147549184 elements",
                   "cuDNN's batch norm takes at most 2147483647", NULL);
    ct_tensor_free(x);
}
