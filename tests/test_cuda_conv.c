/* CUDA parity for convolution and pooling: the same operands on the GPU (cuDNN for the
 * convolutions, ctensor's kernels for pooling) and on the CPU (the reference), forward and
 * every gradient, F32 within 1e-4, F16 within 1e-2 and BF16 within 1.6e-2 of max(1, |cpu|),
 * for the convolutions (conv2d and conv_transpose2d, the same cuDNN passes) of the largest
 * |cpu| of the tensor (see check_conv). bf16 keeps 8 significant
 * bits, so one unit in the last place is up to 0.78%; cuDNN's fastest backward-data
 * algorithm was seen 2 units from the CPU's once-rounded f32 sum on an H100 (1.09%), and
 * 1.6e-2 is PyTorch's own assert_close tolerance for bf16. Max-pool
 * indices exactly; deterministic mode repeating bit for bit. The allocator's cache is
 * poisoned with NaN blocks of each output's size before the GPU runs, so an element never
 * written reads as NaN and fails. Every test reports itself skipped where no GPU is usable. */
#include "tests/common.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GPU T_GPU

static const ct_dtype float_dtypes[] = {CT_F32, CT_F16, CT_BF16};
static const double float_tols[] = {1e-4, 1e-2, 1.6e-2};

/* ---- convolution ------------------------------------------------------------------------ */

typedef struct conv_case {
    int64_t N, C, H, W, O, kH, kW;
    ct_conv2d_opts o;
    bool bias;
} conv_case;

#define OPTS(sh, sw, ph, pw, dh, dw, g) ((ct_conv2d_opts){{sh, sw}, {ph, pw}, {dh, dw}, g})

static const conv_case conv_cases[] = {
    {2, 3, 8, 8, 4, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 1), true},
    {2, 3, 7, 10, 5, 3, 5, OPTS(2, 1, 0, 2, 1, 1, 1), true},
    {1, 2, 9, 9, 3, 3, 3, OPTS(2, 2, 1, 1, 1, 1, 1), false},
    {2, 2, 9, 8, 3, 3, 3, OPTS(1, 1, 2, 2, 2, 2, 1), true},
    {2, 4, 6, 6, 6, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 2), true},
    {2, 8, 7, 7, 8, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 8), true}, /* depthwise */
    {2, 6, 5, 7, 4, 1, 1, OPTS(1, 1, 0, 0, 1, 1, 1), true},
    {16, 1, 28, 28, 32, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 1), true},  /* the CNN's conv1 */
    {16, 32, 14, 14, 64, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 1), true}, /* the CNN's conv2 */
};

/* Forward and all gradients of one case in `dt`, GPU against CPU. */
static void check_conv(const conv_case *k, ct_dtype dt, double tol) {
    T_NO_LEAK({
        ct_tensor *xc = ct_requires_grad(t_rand_dtype((int64_t[]){k->N, k->C, k->H, k->W}, 4, dt, -1, 1), true);
        ct_tensor *wc =
            ct_requires_grad(t_rand_dtype((int64_t[]){k->O, k->C / k->o.groups, k->kH, k->kW}, 4, dt, -1, 1), true);
        ct_tensor *bc = k->bias ? ct_requires_grad(t_rand_dtype((int64_t[]){k->O}, 1, dt, -1, 1), true) : NULL;
        ct_tensor *xg = ct_requires_grad(t_to_gpu(xc), true), *wg = ct_requires_grad(t_to_gpu(wc), true);
        ct_tensor *bg = bc ? ct_requires_grad(t_to_gpu(bc), true) : NULL;
        ct_tensor *yc = ct_conv2d(xc, wc, bc, &k->o);
        cr_assert_not_null(yc, "%s", ct_last_error_message());
        t_poison_gpu_cache(ct_tensor_numel(yc), dt);
        ct_tensor *yg = ct_conv2d(xg, wg, bg, &k->o);
        t_assert_parity_normwise(yg, yc, tol, "conv2d forward");

        ct_tensor *gy = t_rand_dtype(ct_tensor_shape(yc), 4, dt, -1, 1);
        cr_assert_eq(ct_backward_ex(yc, gy, false), CT_OK, "%s", ct_last_error_message());
        t_poison_gpu_cache(ct_tensor_numel(xc), dt);
        cr_assert_eq(ct_backward_ex(yg, t_to_gpu(gy), false), CT_OK, "%s", ct_last_error_message());
        /* Normwise: each element is a sum of hundreds to thousands of products (grad w of the
         * CNN's conv2: 3136), and the error of cuDNN's fastest algorithms (Winograd, FFT, ones
         * PyTorch uses too) scales with the terms, not with an element that cancels to near
         * zero. Seen on an H100 in f32: grad x 1.5e-4 and grad w 1.2e-4 from the CPU relative
         * to one element, on elements far smaller than the tensor's largest. */
        t_assert_parity_normwise(ct_grad(xg), ct_grad(xc), tol, "conv2d grad x");
        t_assert_parity_normwise(ct_grad(wg), ct_grad(wc), tol, "conv2d grad w");
        if (bc)
            t_assert_parity_normwise(ct_grad(bg), ct_grad(bc), tol, "conv2d grad bias");
    });
}

Test(cuda_conv, conv2d_matches_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(1);
    for (int d = 0; d < 3; d++)
        for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
            check_conv(&conv_cases[i], float_dtypes[d], float_tols[d]);
}

void ct__conv_set_chunk_elems(int64_t elems); /* ops/conv.c, for tests (runtime/internal.h) */

/* Batches cut into chunks, as cuDNN's 2^31-element limit makes ctensor do for large
 * activations, here with chunks of a few images (the chunk limit lowered for the test):
 * a first geometry and a smaller last one, the forward and data passes written chunk by
 * chunk, the weight gradient summed over the chunks in F32; also a transposed convolution
 * (its passes swapped) and a depthwise one; every dtype, against the CPU. */
Test(cuda_conv, chunked_batches_match_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(12);
    const conv_case cases[] = {
        {7, 3, 9, 9, 4, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 1), true},  /* 4 x 81 outputs an image: 3, 3, 1 */
        {5, 4, 6, 6, 4, 3, 3, OPTS(1, 1, 1, 1, 1, 1, 4), false}, /* depthwise, 144 an image: 2, 2, 1 */
    };
    const int64_t chunk_elems[] = {3 * 4 * 81, 2 * 4 * 36};
    for (int d = 0; d < 3; d++)
        for (int i = 0; i < 2; i++) {
            ct__conv_set_chunk_elems(chunk_elems[i]);
            check_conv(&cases[i], float_dtypes[d], float_tols[d]);
            ct__conv_set_chunk_elems(0);
        }
    T_NO_LEAK({ /* conv_transpose2d: its forward is the data pass, its weight gradient the filter pass */
        ct_tensor *xc = ct_requires_grad(t_rand_dtype((int64_t[]){5, 4, 5, 5}, 4, CT_F32, -1, 1), true);
        ct_tensor *wc = ct_requires_grad(t_rand_dtype((int64_t[]){4, 3, 3, 3}, 4, CT_F32, -1, 1), true);
        ct_tensor *xg = ct_requires_grad(t_to_gpu(xc), true), *wg = ct_requires_grad(t_to_gpu(wc), true);
        ct_conv_transpose2d_opts o = CT_CONV_TRANSPOSE2D_OPTS_DEFAULT;
        ct_tensor *yc = ct_conv_transpose2d(xc, wc, NULL, &o);
        cr_assert_not_null(yc, "%s", ct_last_error_message());
        ct__conv_set_chunk_elems(2 * 3 * 7 * 7); /* two images of y (the larger side) a chunk: 2, 2, 1 */
        ct_tensor *yg = ct_conv_transpose2d(xg, wg, NULL, &o);
        t_assert_parity_normwise(yg, yc, 1e-4, "chunked conv_transpose2d forward");
        ct_tensor *gy = t_rand_dtype(ct_tensor_shape(yc), 4, CT_F32, -1, 1);
        cr_assert_eq(ct_backward_ex(yc, gy, false), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_backward_ex(yg, t_to_gpu(gy), false), CT_OK, "%s", ct_last_error_message());
        ct__conv_set_chunk_elems(0);
        t_assert_parity_normwise(ct_grad(xg), ct_grad(xc), 1e-4, "chunked conv_transpose2d grad x");
        t_assert_parity_normwise(ct_grad(wg), ct_grad(wc), 1e-4, "chunked conv_transpose2d grad w");
    });
}

Test(cuda_conv, strided_input_and_empty_batch) {
    T_REQUIRE_GPU();
    ct_manual_seed(2);
    T_NO_LEAK({
        ct_tensor *base = t_rand_dtype((int64_t[]){2, 3, 9, 8}, 4, CT_F32, -1, 1);
        ct_tensor *xc = ct_transpose(base, 2, 3), *w = t_rand_dtype((int64_t[]){4, 3, 3, 3}, 4, CT_F32, -1, 1);
        ct_conv2d_opts o = OPTS(1, 2, 1, 0, 1, 1, 1);
        ct_tensor *yc = ct_conv2d(xc, w, NULL, &o);
        t_poison_gpu_cache(ct_tensor_numel(yc), CT_F32);
        t_assert_parity(ct_conv2d(ct_transpose(t_to_gpu(base), 2, 3), t_to_gpu(w), NULL, &o), yc, 1e-4, "strided x");
        ct_tensor *empty = ct_zeros((int64_t[]){0, 3, 8, 8}, 4, CT_F32, GPU);
        t_assert_shape(ct_conv2d(empty, t_to_gpu(w), NULL, NULL), (int64_t[]){0, 4, 6, 6}, 4);
    });
}

Test(cuda_conv, deterministic_mode_repeats_bit_for_bit) {
    T_REQUIRE_GPU();
    ct_manual_seed(3);
    bool was = ct_deterministic();
    ct_set_deterministic(true);
    T_NO_LEAK({
        const conv_case *k = &conv_cases[8];
        ct_tensor *x = ct_requires_grad(t_to_gpu(t_rand_dtype((int64_t[]){k->N, k->C, k->H, k->W}, 4, CT_F32, -1, 1)), true);
        ct_tensor *w =
            ct_requires_grad(t_to_gpu(t_rand_dtype((int64_t[]){k->O, k->C, k->kH, k->kW}, 4, CT_F32, -1, 1)), true);
        ct_tensor *gy = t_to_gpu(t_rand_dtype((int64_t[]){k->N, k->O, k->H, k->W}, 4, CT_F32, -1, 1));
        double *first[3] = {NULL, NULL, NULL};
        for (int run = 0; run < 2; run++) {
            ct_zero_grad(x);
            ct_zero_grad(w);
            ct_tensor *y = ct_conv2d(x, w, NULL, &k->o);
            cr_assert_eq(ct_backward_ex(y, gy, false), CT_OK, "%s", ct_last_error_message());
            double *now[3] = {t_values(y), t_values(ct_grad(x)), t_values(ct_grad(w))};
            int64_t counts[3] = {ct_tensor_numel(gy), ct_tensor_numel(x), ct_tensor_numel(w)};
            for (int t = 0; t < 3; t++) {
                if (run == 0) {
                    first[t] = now[t];
                    continue;
                }
                cr_assert(memcmp(first[t], now[t], (size_t)counts[t] * sizeof(double)) == 0,
                          "deterministic run %d differs in output %d", run, t);
                free(now[t]);
            }
        }
        for (int t = 0; t < 3; t++)
            free(first[t]);
    });
    ct_set_deterministic(was);
}

Test(cuda_conv, conv_transpose2d_matches_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(4);
    const struct {
        int64_t N, C, H, W, O, kH, kW;
        ct_conv_transpose2d_opts o;
    } cases[] = {
        {2, 3, 4, 5, 4, 3, 3, {{2, 2}, {1, 1}, {1, 0}, {1, 1}, 1}},
        {1, 4, 3, 3, 6, 2, 3, {{2, 3}, {0, 1}, {1, 2}, {1, 1}, 2}},
        {2, 4, 3, 3, 4, 3, 3, {{2, 2}, {1, 1}, {0, 0}, {1, 1}, 4}},
    };
    for (int d = 0; d < 3; d++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            T_NO_LEAK({
                ct_dtype dt = float_dtypes[d];
                ct_tensor *xc = ct_requires_grad(
                    t_rand_dtype((int64_t[]){cases[i].N, cases[i].C, cases[i].H, cases[i].W}, 4, dt, -1, 1), true);
                ct_tensor *wc = ct_requires_grad(
                    t_rand_dtype((int64_t[]){cases[i].C, cases[i].O / cases[i].o.groups, cases[i].kH, cases[i].kW}, 4, dt,
                             -1, 1),
                    true);
                ct_tensor *bc = ct_requires_grad(t_rand_dtype((int64_t[]){cases[i].O}, 1, dt, -1, 1), true);
                ct_tensor *xg = ct_requires_grad(t_to_gpu(xc), true), *wg = ct_requires_grad(t_to_gpu(wc), true);
                ct_tensor *bg = ct_requires_grad(t_to_gpu(bc), true);
                ct_tensor *yc = ct_conv_transpose2d(xc, wc, bc, &cases[i].o);
                cr_assert_not_null(yc, "%s", ct_last_error_message());
                t_poison_gpu_cache(ct_tensor_numel(yc), dt);
                t_assert_parity_normwise(ct_conv_transpose2d(xg, wg, bg, &cases[i].o), yc, float_tols[d],
                                         "conv_transpose2d");
                ct_tensor *gy = t_rand_dtype(ct_tensor_shape(yc), 4, dt, -1, 1);
                cr_assert_eq(ct_backward_ex(yc, gy, false), CT_OK, "%s", ct_last_error_message());
                ct_tensor *yg = ct_conv_transpose2d(xg, wg, bg, &cases[i].o);
                t_poison_gpu_cache(ct_tensor_numel(xc), dt);
                cr_assert_eq(ct_backward_ex(yg, t_to_gpu(gy), false), CT_OK, "%s", ct_last_error_message());
                t_assert_parity_normwise(ct_grad(xg), ct_grad(xc), float_tols[d], "conv_transpose2d grad x");
                t_assert_parity_normwise(ct_grad(wg), ct_grad(wc), float_tols[d], "conv_transpose2d grad w");
                t_assert_parity_normwise(ct_grad(bg), ct_grad(bc), float_tols[d], "conv_transpose2d grad bias");
            });
        }
}

/* ---- the algorithm cache ------------------------------------------------------------------- */

/* A 3x3 convolution of 1 x 1 x H x W into 2 channels. */
static conv_case small_case(int64_t H, int64_t W) {
    return (conv_case){1, 1, H, W, 2, 3, 3, OPTS(1, 1, 0, 0, 1, 1, 1), true};
}

/* More geometries than the algorithm cache's 256 slots (kernels/cuda/conv_cache.h), then the
 * first ones again with their gradients: a full table evicts, and every pass still runs the
 * algorithm its workspace was sized for. */
Test(cuda_conv, more_geometries_than_the_cache_holds) {
    T_REQUIRE_GPU();
    ct_manual_seed(7);
    T_NO_LEAK({
        ct_tensor *w = t_to_gpu(t_rand_dtype((int64_t[]){2, 1, 3, 3}, 4, CT_F32, -1, 1));
        for (int i = 0; i < 300; i++) {
            ct_scope_begin();
            ct_tensor *x = ct_zeros((int64_t[]){1, 1, 3 + i / 20, 3 + i % 20}, 4, CT_F32, GPU);
            cr_assert_not_null(ct_conv2d(x, w, NULL, NULL), "geometry %d: %s", i, ct_last_error_message());
            ct_scope_end();
        }
    });
    for (int i = 0; i < 10; i++) {
        conv_case k = small_case(3 + i / 20, 3 + i % 20);
        check_conv(&k, CT_F32, float_tols[0]);
    }
}

/* Two threads run the same new geometry at once (both miss the cache and time it); each
 * copies its inputs to the GPU, runs forward and backward, and reads the results back. */
typedef struct conv_thread {
    const conv_case *k;
    const ct_tensor *x, *w, *gy; /* on the CPU, read only */
    pthread_barrier_t *start;
    float *y, *gx, *gw;
    char why[512];
} conv_thread;

static void *conv_on_thread(void *arg) {
    conv_thread *t = arg;
    bool ok = true;
    ct_scope_begin();
    ct_tensor *x = ct_requires_grad(ct_to_device(t->x, GPU), true);
    ct_tensor *w = ct_requires_grad(ct_to_device(t->w, GPU), true);
    ct_tensor *gy = ct_to_device(t->gy, GPU);
    pthread_barrier_wait(t->start);
    ct_tensor *y = x && w && gy ? ct_conv2d(x, w, NULL, &t->k->o) : NULL;
    ok = y && ct_backward_ex(y, gy, false) == CT_OK;
    ok = ok && ct_to_host(y, t->y, (size_t)ct_tensor_numel(y) * sizeof(float)) == CT_OK;
    ok = ok && ct_to_host(ct_grad(x), t->gx, (size_t)ct_tensor_numel(x) * sizeof(float)) == CT_OK;
    ok = ok && ct_to_host(ct_grad(w), t->gw, (size_t)ct_tensor_numel(w) * sizeof(float)) == CT_OK;
    if (!ok)
        snprintf(t->why, sizeof t->why, "%s", ct_last_error_message());
    ct_scope_end();
    return (void *)(intptr_t)ok;
}

Test(cuda_conv, two_threads_time_the_same_geometry) {
    T_REQUIRE_GPU();
    ct_manual_seed(8);
    const conv_case *k = &conv_cases[8];
    T_NO_LEAK({
        ct_tensor *x = t_rand_dtype((int64_t[]){k->N, k->C, k->H, k->W}, 4, CT_F32, -1, 1);
        ct_tensor *w = t_rand_dtype((int64_t[]){k->O, k->C, k->kH, k->kW}, 4, CT_F32, -1, 1);
        ct_tensor *gy = t_rand_dtype((int64_t[]){k->N, k->O, k->H, k->W}, 4, CT_F32, -1, 1);
        ct_tensor *xc = ct_requires_grad(ct_clone(x), true), *wc = ct_requires_grad(ct_clone(w), true);
        ct_tensor *yc = ct_conv2d(xc, wc, NULL, &k->o);
        cr_assert_not_null(yc, "%s", ct_last_error_message());
        cr_assert_eq(ct_backward_ex(yc, gy, false), CT_OK, "%s", ct_last_error_message());
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        conv_thread threads[2];
        pthread_t ids[2];
        for (int i = 0; i < 2; i++) {
            threads[i] = (conv_thread){.k = k, .x = x, .w = w, .gy = gy, .start = &start};
            threads[i].y = malloc((size_t)ct_tensor_numel(yc) * sizeof(float));
            threads[i].gx = malloc((size_t)ct_tensor_numel(x) * sizeof(float));
            threads[i].gw = malloc((size_t)ct_tensor_numel(w) * sizeof(float));
            cr_assert(threads[i].y && threads[i].gx && threads[i].gw);
            cr_assert_eq(pthread_create(&ids[i], NULL, conv_on_thread, &threads[i]), 0);
        }
        for (int i = 0; i < 2; i++) {
            void *ok = NULL;
            pthread_join(ids[i], &ok);
            cr_assert(ok, "thread %d: %s", i, threads[i].why);
        }
        pthread_barrier_destroy(&start);
        for (int i = 0; i < 2; i++) {
            t_assert_parity_normwise(ct_from_host(threads[i].y, ct_tensor_shape(yc), 4, CT_F32, GPU), yc, float_tols[0],
                                     "forward on a thread");
            t_assert_parity_normwise(ct_from_host(threads[i].gx, ct_tensor_shape(x), 4, CT_F32, GPU), ct_grad(xc),
                                     float_tols[0], "grad x on a thread");
            t_assert_parity_normwise(ct_from_host(threads[i].gw, ct_tensor_shape(w), 4, CT_F32, GPU), ct_grad(wc),
                                     float_tols[0], "grad w on a thread");
            free(threads[i].y);
            free(threads[i].gx);
            free(threads[i].gw);
        }
    });
}

/* ---- pooling ------------------------------------------------------------------------------ */

static const ct_pool2d_opts pool_cases[] = {
    {{2, 2}, {0, 0}, {0, 0}, {1, 1}, false, true}, /* the CNN's 2x2 */
    {{2, 2}, {0, 0}, {0, 0}, {1, 1}, true, true},  /* odd sizes kept by ceil_mode */
    {{3, 3}, {2, 2}, {1, 1}, {1, 1}, false, true}, /* overlapping, padded */
    {{3, 2}, {2, 3}, {1, 1}, {1, 1}, true, true},
    {{3, 3}, {2, 2}, {1, 1}, {1, 1}, true, false}, /* avg: exclude padding */
    {{3, 3}, {1, 2}, {1, 0}, {2, 3}, false, true}, /* dilation (max only) */
};

Test(cuda_conv, pooling_matches_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(5);
    for (int d = 0; d < 3; d++)
        for (size_t i = 0; i < sizeof pool_cases / sizeof pool_cases[0]; i++) {
            T_NO_LEAK({
                ct_dtype dt = float_dtypes[d];
                /* Distinct values: a shuffled range, exact in every dtype at this size. */
                ct_tensor *perm = ct_cast(ct_randperm(2 * 3 * 9 * 11, CT_CPU), dt);
                ct_tensor *xc = ct_requires_grad(
                    ct_contiguous(ct_reshape(ct_add_scalar(perm, -100), (int64_t[]){2, 3, 9, 11}, 4)), true);
                ct_tensor *xg = ct_requires_grad(t_to_gpu(xc), true);
                ct_tensor *ic, *ig;
                ct_tensor *yc = ct_max_pool2d(xc, &pool_cases[i], &ic);
                cr_assert_not_null(yc, "%s", ct_last_error_message());
                t_poison_gpu_cache(ct_tensor_numel(yc), dt);
                ct_tensor *yg = ct_max_pool2d(xg, &pool_cases[i], &ig);
                t_assert_parity(yg, yc, 0, "max_pool2d");
                t_assert_parity(ig, ic, 0, "max_pool2d indices");
                ct_tensor *gy = t_rand_dtype(ct_tensor_shape(yc), 4, dt, -1, 1);
                cr_assert_eq(ct_backward_ex(yc, gy, false), CT_OK, "%s", ct_last_error_message());
                t_poison_gpu_cache(ct_tensor_numel(xc), dt);
                cr_assert_eq(ct_backward_ex(yg, t_to_gpu(gy), false), CT_OK, "%s", ct_last_error_message());
                t_assert_parity(ct_grad(xg), ct_grad(xc), float_tols[d], "max_pool2d grad");

                if (pool_cases[i].dilation[0] == 1 && pool_cases[i].dilation[1] == 1) {
                    ct_zero_grad(xc);
                    ct_zero_grad(xg);
                    ct_tensor *ac = ct_avg_pool2d(xc, &pool_cases[i]);
                    t_poison_gpu_cache(ct_tensor_numel(ac), dt);
                    ct_tensor *ag = ct_avg_pool2d(xg, &pool_cases[i]);
                    t_assert_parity(ag, ac, float_tols[d], "avg_pool2d");
                    cr_assert_eq(ct_backward_ex(ac, gy, false), CT_OK, "%s", ct_last_error_message());
                    t_poison_gpu_cache(ct_tensor_numel(xc), dt);
                    cr_assert_eq(ct_backward_ex(ag, t_to_gpu(gy), false), CT_OK, "%s", ct_last_error_message());
                    t_assert_parity(ct_grad(xg), ct_grad(xc), float_tols[d], "avg_pool2d grad");
                }
            });
        }
}

Test(cuda_conv, global_avg_pool_matches_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(6);
    for (int d = 0; d < 3; d++) {
        T_NO_LEAK({
            ct_tensor *xc = ct_requires_grad(t_rand_dtype((int64_t[]){4, 5, 7, 6}, 4, float_dtypes[d], -1, 1), true);
            ct_tensor *xg = ct_requires_grad(t_to_gpu(xc), true);
            ct_tensor *yc = ct_global_avg_pool2d(xc);
            t_poison_gpu_cache(ct_tensor_numel(yc), float_dtypes[d]);
            ct_tensor *yg = ct_global_avg_pool2d(xg);
            t_assert_parity(yg, yc, float_tols[d], "global_avg_pool2d");
            ct_tensor *gy = t_rand_dtype((int64_t[]){4, 5, 1, 1}, 4, float_dtypes[d], -1, 1);
            cr_assert_eq(ct_backward_ex(yc, gy, false), CT_OK, "%s", ct_last_error_message());
            t_poison_gpu_cache(ct_tensor_numel(xc), float_dtypes[d]);
            cr_assert_eq(ct_backward_ex(yg, t_to_gpu(gy), false), CT_OK, "%s", ct_last_error_message());
            t_assert_parity(ct_grad(xg), ct_grad(xc), float_tols[d], "global_avg_pool2d grad");
        });
    }
}

/* Convolution and pooling of a transposed view (H and W swapped in memory), forward and
 * gradients, in every dtype: the gradient of x goes back through the view. */
Test(cuda_conv, views_and_their_gradients) {
    T_REQUIRE_GPU();
    ct_manual_seed(7);
    for (int d = 0; d < 3; d++)
        T_NO_LEAK({
            ct_dtype dt = float_dtypes[d];
            ct_conv2d_opts o = OPTS(1, 2, 1, 0, 1, 1, 1);
            ct_tensor *base = ct_requires_grad(t_rand_dtype((int64_t[]){2, 3, 11, 9}, 4, dt, -1, 1), true);
            ct_tensor *w = ct_requires_grad(t_rand_dtype((int64_t[]){4, 3, 3, 3}, 4, dt, -1, 1), true);
            ct_tensor *gbase = ct_requires_grad(t_to_gpu(base), true), *gw = ct_requires_grad(t_to_gpu(w), true);
            ct_tensor *yc = ct_conv2d(ct_transpose(base, 2, 3), w, NULL, &o);
            cr_assert_not_null(yc, "%s", ct_last_error_message());
            t_poison_gpu_cache(ct_tensor_numel(yc), dt);
            ct_tensor *yg = ct_conv2d(ct_transpose(gbase, 2, 3), gw, NULL, &o);
            t_assert_parity_normwise(yg, yc, float_tols[d], "conv2d of a view");
            ct_tensor *gy = t_rand_dtype(ct_tensor_shape(yc), 4, dt, -1, 1);
            cr_assert_eq(ct_backward_ex(yc, gy, false), CT_OK, "%s", ct_last_error_message());
            t_poison_gpu_cache(ct_tensor_numel(base), dt);
            cr_assert_eq(ct_backward_ex(yg, t_to_gpu(gy), false), CT_OK, "%s", ct_last_error_message());
            t_assert_parity_normwise(ct_grad(gbase), ct_grad(base), float_tols[d], "conv2d of a view: grad x");
            t_assert_parity_normwise(ct_grad(gw), ct_grad(w), float_tols[d], "conv2d of a view: grad w");

            /* Pooling: distinct values, so the maxima and their indices are unique. */
            ct_tensor *perm = ct_cast(ct_randperm(2 * 3 * 11 * 9, CT_CPU), dt);
            ct_tensor *pbase = ct_requires_grad(
                ct_contiguous(ct_reshape(ct_add_scalar(perm, -100), (int64_t[]){2, 3, 11, 9}, 4)), true);
            ct_tensor *gpbase = ct_requires_grad(t_to_gpu(pbase), true);
            const ct_pool2d_opts *po = &pool_cases[2]; /* 3x3, stride 2, padding 1 */
            ct_tensor *ic, *ig;
            ct_tensor *mc = ct_max_pool2d(ct_transpose(pbase, 2, 3), po, &ic);
            cr_assert_not_null(mc, "%s", ct_last_error_message());
            t_poison_gpu_cache(ct_tensor_numel(mc), dt);
            ct_tensor *mg = ct_max_pool2d(ct_transpose(gpbase, 2, 3), po, &ig);
            t_assert_parity(mg, mc, 0, "max_pool2d of a view");
            t_assert_parity(ig, ic, 0, "max_pool2d of a view: indices");
            ct_tensor *ac = ct_avg_pool2d(ct_transpose(pbase, 2, 3), po);
            cr_assert_not_null(ac, "%s", ct_last_error_message());
            t_poison_gpu_cache(ct_tensor_numel(ac), dt);
            ct_tensor *ag = ct_avg_pool2d(ct_transpose(gpbase, 2, 3), po);
            t_assert_parity(ag, ac, float_tols[d], "avg_pool2d of a view");
            /* one backward through both pools */
            ct_tensor *both = ct_add(mc, ac), *gboth = ct_add(mg, ag);
            ct_tensor *gp = t_rand_dtype(ct_tensor_shape(both), 4, dt, -1, 1);
            cr_assert_eq(ct_backward_ex(both, gp, false), CT_OK, "%s", ct_last_error_message());
            t_poison_gpu_cache(ct_tensor_numel(pbase), dt);
            cr_assert_eq(ct_backward_ex(gboth, t_to_gpu(gp), false), CT_OK, "%s", ct_last_error_message());
            t_assert_parity(ct_grad(gpbase), ct_grad(pbase), float_tols[d], "pooling of a view: grad x");
        });
}

Test(cuda_conv, bad_inputs) {
    T_REQUIRE_GPU();
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *x = ct_zeros((int64_t[]){1, 2, 5, 5}, 4, CT_F32, GPU);
        cr_assert_null(ct_conv2d(x, ct_zeros((int64_t[]){3, 2, 3, 3}, 4, CT_F32, CT_CPU), NULL, NULL));
        t_assert_error(CT_ERR_DEVICE, "ct_conv2d", NULL);
        cr_assert_null(ct_conv2d(ct_zeros((int64_t[]){1, 2, 5, 5}, 4, CT_F64, CT_CPU), NULL, NULL, NULL));
        t_assert_error(CT_ERR_NULL, "ct_conv2d", "argument w is NULL", NULL);
        cr_assert_null(ct_conv2d(x, ct_zeros((int64_t[]){3, 2, 6, 6}, 4, CT_F32, GPU), NULL, NULL));
        t_assert_error(CT_ERR_SHAPE, "kernel larger than the padded input", NULL);
    });
}
