/* CUDA parity for the runtime core: transfers, copy/cast/fill, creation, Philox. Each test
 * reports itself skipped where no GPU is usable. */
#include "tests/common.h"

#include <string.h>

static const ct_dtype all_dtypes[] = {CT_F32, CT_F16, CT_BF16, CT_I32, CT_U8};

Test(cuda_core, round_trip_and_strided_copies) {
    T_REQUIRE_GPU();
    ct_manual_seed(5);
    T_NO_LEAK({
        ct_tensor *host = t_rand((int64_t[]){33, 17}, 2, CT_F32, -100, 100);
        ct_tensor *dev = ct_to_device(host, CT_CUDA(0));
        cr_assert_not_null(dev, "%s", ct_last_error_message());
        double *ref = t_values(host);
        t_assert_close(dev, ref, 0, 0);
        /* a transposed CUDA view read back through ct_to_host */
        ct_tensor *tr = ct_transpose(dev, 0, 1);
        double *tref = t_values(ct_transpose(host, 0, 1));
        t_assert_close(tr, tref, 0, 0);
        /* strided CPU view into a CUDA tensor and back into a strided CPU view */
        ct_tensor *dst = ct_zeros((int64_t[]){17, 33}, 2, CT_F32, CT_CUDA(0));
        cr_assert_eq(ct_copy_(dst, ct_transpose(host, 0, 1)), CT_OK, "%s", ct_last_error_message());
        t_assert_close(dst, tref, 0, 0);
        ct_tensor *back = ct_zeros((int64_t[]){33, 17}, 2, CT_F32, CT_CPU);
        cr_assert_eq(ct_copy_(ct_transpose(back, 0, 1), dst), CT_OK, "%s", ct_last_error_message());
        t_assert_close(back, ref, 0, 0);
        free(ref);
        free(tref);
    });
}

Test(cuda_core, casts_match_the_cpu_bit_for_bit) {
    T_REQUIRE_GPU();
    ct_manual_seed(6);
    T_NO_LEAK({
        ct_tensor *src = t_rand((int64_t[]){1000}, 1, CT_F64, -300, 300);
        cr_assert_eq(ct_fill_(ct_slice(src, 0, 0, 10, 1), NAN), CT_OK);
        for (unsigned i = 0; i < sizeof all_dtypes / sizeof all_dtypes[0]; i++) {
            ct_tensor *cpu_from = ct_cast(src, all_dtypes[i]);
            ct_tensor *gpu_from = ct_to_device(cpu_from, CT_CUDA(0));
            for (unsigned j = 0; j < sizeof all_dtypes / sizeof all_dtypes[0]; j++) {
                ct_tensor *c = ct_cast(cpu_from, all_dtypes[j]);
                ct_tensor *g = ct_cast(gpu_from, all_dtypes[j]);
                cr_assert_not_null(g, "%s", ct_last_error_message());
                size_t bytes = 1000 * ct_dtype_size(all_dtypes[j]);
                char *hc = malloc(bytes), *hg = malloc(bytes);
                ct_to_host(c, hc, bytes);
                ct_to_host(g, hg, bytes);
                cr_assert(memcmp(hc, hg, bytes) == 0, "%s -> %s differs", ct_dtype_name(all_dtypes[i]),
                          ct_dtype_name(all_dtypes[j]));
                free(hc);
                free(hg);
            }
        }
    });
}

Test(cuda_core, fill_poisons_every_element) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        for (unsigned i = 0; i < sizeof all_dtypes / sizeof all_dtypes[0]; i++) {
            ct_tensor *t = ct_full((int64_t[]){3, 1000}, 2, 7.0, all_dtypes[i], CT_CUDA(0));
            cr_assert_eq(ct_fill_(ct_slice(t, 1, 1, 1000, 3), 2.0), CT_OK);
            double *v = t_values(t);
            for (int k = 0; k < 3000; k++)
                cr_assert_eq(v[k], (k % 1000) % 3 == 1 ? 2.0 : 7.0);
            free(v);
        }
    });
}

/* ---- creation ---------------------------------------------------------------------------- */

/* Leave blocks of `numel` elements of `dtype` in the GPU allocator's cache that no creation
 * below writes (NaN, 77 for the integer dtypes), so that a new tensor starts from them. */
static void poison_any(int64_t numel, ct_dtype dtype) {
    if (ct_dtype_is_float(dtype)) {
        t_poison_gpu_cache(numel, dtype);
        return;
    }
    ct_tensor *blocks[4];
    for (int i = 0; i < 4; i++) {
        blocks[i] = ct_full((int64_t[]){numel > 0 ? numel : 1}, 1, 77, dtype, T_GPU);
        cr_assert_not_null(blocks[i], "%s", ct_last_error_message());
    }
    for (int i = 0; i < 4; i++)
        ct_tensor_free(blocks[i]);
}

/* gpu holds cpu's bytes exactly, on the GPU, with its dtype and shape. */
static void assert_same_bytes(const ct_tensor *gpu, const ct_tensor *cpu, const char *what) {
    cr_assert_not_null(cpu, "%s (CPU): %s", what, ct_last_error_message());
    cr_assert_not_null(gpu, "%s: %s", what, ct_last_error_message());
    cr_assert(ct_device_equal(ct_tensor_device(gpu), T_GPU), "%s: the result is on %s", what,
              ct_device_name(ct_tensor_device(gpu)));
    cr_assert_eq(ct_tensor_dtype(gpu), ct_tensor_dtype(cpu), "%s: dtype %s", what, ct_dtype_name(ct_tensor_dtype(gpu)));
    t_assert_shape(gpu, ct_tensor_shape(cpu), ct_tensor_ndim(cpu));
    size_t bytes = (size_t)ct_tensor_numel(cpu) * ct_dtype_size(ct_tensor_dtype(cpu));
    char *hc = malloc(bytes + 1), *hg = malloc(bytes + 1);
    cr_assert(hc && hg);
    cr_assert_eq(ct_to_host(cpu, hc, bytes), CT_OK, "%s", ct_last_error_message());
    cr_assert_eq(ct_to_host(gpu, hg, bytes), CT_OK, "%s", ct_last_error_message());
    for (size_t i = 0; i < bytes; i++)
        cr_assert_eq(hg[i], hc[i], "%s (%s %s): byte %zu differs", what, ct_dtype_name(ct_tensor_dtype(cpu)),
                     ct_shape_str(cpu), i);
    free(hc);
    free(hg);
}

/* ct_zeros, ct_ones, ct_full, ct_scalar, the _like functions and ct_arange make on the GPU
 * the bytes they make on the CPU, in every dtype: odd, empty and 0-D shapes; values that
 * round, overflow the half types, saturate the integers, and NaN, infinity and -0 (the
 * value is rounded once on the host by the CPU's rules). Every result starts from a
 * poisoned block. F64 is refused on the GPU with a clear error. */
Test(cuda_core, creation_matches_the_cpu) {
    T_REQUIRE_GPU();
    static const int64_t shapes[][2] = {{3, 1001}, {0, 5}, {1, 1}};
    static const double values[] = {0.1, -2.5, 1e-5, 65519.0, 1e20, 300.0, -3e9, NAN, -INFINITY, -0.0};
    static const struct {
        double start, end, step;
    } ranges[] = {{0, 1027, 1}, {-3, 2.5, 0.25}, {10, -1, -0.7}, {5, 5, 1}, {0.5, 3000.5, 1}, {7, 1, 1}, {0, 1, 0.1}};
    for (unsigned k = 0; k < sizeof all_dtypes / sizeof all_dtypes[0]; k++)
        T_NO_LEAK({
            ct_dtype dt = all_dtypes[k];
            char what[96];
            for (unsigned s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
                const int64_t *shape = shapes[s], n = shape[0] * shape[1];
                poison_any(n, dt);
                assert_same_bytes(ct_zeros(shape, 2, dt, T_GPU), ct_zeros(shape, 2, dt, CT_CPU), "ct_zeros");
                poison_any(n, dt);
                assert_same_bytes(ct_ones(shape, 2, dt, T_GPU), ct_ones(shape, 2, dt, CT_CPU), "ct_ones");
                for (unsigned v = 0; v < sizeof values / sizeof values[0]; v++) {
                    snprintf(what, sizeof what, "ct_full(%g)", values[v]);
                    poison_any(n, dt);
                    assert_same_bytes(ct_full(shape, 2, values[v], dt, T_GPU), ct_full(shape, 2, values[v], dt, CT_CPU),
                                      what);
                }
                /* The _like functions take the GPU tensor's shape, dtype and device. */
                ct_tensor *like = ct_full(shape, 2, 3.0, dt, T_GPU), *like_cpu = ct_full(shape, 2, 3.0, dt, CT_CPU);
                poison_any(n, dt);
                assert_same_bytes(ct_zeros_like(like), ct_zeros_like(like_cpu), "ct_zeros_like");
                poison_any(n, dt);
                assert_same_bytes(ct_ones_like(like), ct_ones_like(like_cpu), "ct_ones_like");
                ct_tensor *empty = ct_empty_like(ct_transpose(like, 0, 1));
                cr_assert_not_null(empty, "%s", ct_last_error_message());
                cr_assert(ct_device_equal(ct_tensor_device(empty), T_GPU), "ct_empty_like left the GPU");
                cr_assert_eq(ct_tensor_dtype(empty), dt);
                t_assert_shape(empty, (int64_t[]){shape[1], shape[0]}, 2);
            }
            for (unsigned v = 0; v < sizeof values / sizeof values[0]; v++) {
                poison_any(1, dt);
                assert_same_bytes(ct_scalar(values[v], dt, T_GPU), ct_scalar(values[v], dt, CT_CPU), "ct_scalar");
            }
            for (unsigned r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
                snprintf(what, sizeof what, "ct_arange(%g, %g, %g)", ranges[r].start, ranges[r].end, ranges[r].step);
                ct_tensor *c = ct_arange(ranges[r].start, ranges[r].end, ranges[r].step, dt, CT_CPU);
                cr_assert_not_null(c, "%s: %s", what, ct_last_error_message());
                poison_any(ct_tensor_numel(c), dt);
                assert_same_bytes(ct_arange(ranges[r].start, ranges[r].end, ranges[r].step, dt, T_GPU), c, what);
            }
        });
    T_NO_LEAK({
        cr_assert_null(ct_zeros((int64_t[]){2, 3}, 2, CT_F64, T_GPU));
        t_assert_error(CT_ERR_DTYPE, "ct_zeros", "f64 tensors are CPU only", NULL);
        cr_assert_null(ct_full((int64_t[]){2}, 1, 1.5, CT_F64, T_GPU));
        t_assert_error(CT_ERR_DTYPE, "ct_full", "f64", NULL);
        cr_assert_null(ct_arange(0, 10, 1, CT_F64, T_GPU));
        t_assert_error(CT_ERR_DTYPE, "ct_arange", "f64", NULL);
        cr_assert_null(ct_arange(0, 10, 0, CT_F32, T_GPU));
        t_assert_error(CT_ERR_VALUE, "ct_arange", NULL);
    });
}

Test(cuda_core, philox_streams_are_identical) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_dtype dts[] = {CT_F32, CT_F16, CT_BF16};
        for (int k = 0; k < 3; k++) {
            ct_manual_seed(99);
            ct_tensor *cpu_u = ct_rand((int64_t[]){4097}, 1, dts[k], CT_CPU);
            ct_tensor *cpu_b = ct_bernoulli((int64_t[]){4097}, 1, 0.3, CT_U8, CT_CPU);
            ct_tensor *cpu_n = ct_randn((int64_t[]){4097}, 1, CT_F32, CT_CPU);
            ct_manual_seed(99);
            ct_tensor *gpu_u = ct_rand((int64_t[]){4097}, 1, dts[k], CT_CUDA(0));
            ct_tensor *gpu_b = ct_bernoulli((int64_t[]){4097}, 1, 0.3, CT_U8, CT_CUDA(0));
            ct_tensor *gpu_n = ct_randn((int64_t[]){4097}, 1, CT_F32, CT_CUDA(0));
            double *u = t_values(cpu_u), *b = t_values(cpu_b), *n = t_values(cpu_n);
            t_assert_close(gpu_u, u, 0, 0);
            t_assert_close(gpu_b, b, 0, 0);
            /* normal goes through log/cos, whose last double bit may differ: 1 ulp of f32 */
            t_assert_close(gpu_n, n, 0, 2.4e-7);
            free(u);
            free(b);
            free(n);
        }
    });
}

/* The other distributions from the same (seed, offset), after an earlier draw has moved the
 * offset and at an odd size (normal draws words in pairs): uniform on [low, high) and
 * bernoulli bit for bit in every dtype they take (the GPU rounds low + (high - low) * u
 * twice, as the CPU does, not as one fused multiply-add); normal within one unit in the
 * last place of the dtype, as randn above (log/cos/sin may differ in their last double bit,
 * which moves a value across a rounding boundary now and then). Both devices advance the
 * offset alike. Outputs land on poisoned blocks. */
Test(cuda_core, random_distributions_match_the_cpu) {
    T_REQUIRE_GPU();
    const ct_dtype float_dts[] = {CT_F32, CT_F16, CT_BF16};
    const double ulp[] = {2.4e-7, 0x1p-10, 0x1p-7}; /* relative spacing of F32, F16, BF16 */
    const int64_t n = 1027;
    T_NO_LEAK({
        for (int k = 0; k < 3; k++) {
            ct_dtype dt = float_dts[k];
            ct_tensor *cpu[3], *gpu[3];
            uint64_t after_cpu, after_gpu;
            ct_manual_seed(7 + k);
            ct_random_set_offset(12345);
            cpu[0] = ct_uniform(&n, 1, -2.0, 3.0, dt, CT_CPU);
            cpu[1] = ct_normal(&n, 1, 0.5, 2.0, dt, CT_CPU);
            cpu[2] = ct_randn(&n, 1, dt, CT_CPU);
            after_cpu = ct_random_offset();
            ct_manual_seed(7 + k);
            ct_random_set_offset(12345);
            for (int i = 0; i < 3; i++) {
                t_poison_gpu_cache(n, dt);
                gpu[i] = i == 0   ? ct_uniform(&n, 1, -2.0, 3.0, dt, T_GPU)
                         : i == 1 ? ct_normal(&n, 1, 0.5, 2.0, dt, T_GPU)
                                  : ct_randn(&n, 1, dt, T_GPU);
                cr_assert_not_null(gpu[i], "%s", ct_last_error_message());
            }
            after_gpu = ct_random_offset();
            cr_assert_eq(after_gpu, after_cpu, "%s: offset %llu after the GPU draws, %llu after the CPU's",
                         ct_dtype_name(dt), (unsigned long long)after_gpu, (unsigned long long)after_cpu);
            double *u = t_values(cpu[0]), *nv = t_values(cpu[1]), *z = t_values(cpu[2]);
            t_assert_close(gpu[0], u, 0, 0);
            t_assert_close(gpu[1], nv, 1e-7, ulp[k]);
            t_assert_close(gpu[2], z, 1e-7, ulp[k]);
            free(u);
            free(nv);
            free(z);
        }
        for (unsigned k = 0; k < sizeof all_dtypes / sizeof all_dtypes[0]; k++) {
            ct_manual_seed(17);
            ct_random_set_offset(999);
            ct_tensor *c = ct_bernoulli((int64_t[]){7, 151}, 2, 0.7, all_dtypes[k], CT_CPU);
            ct_manual_seed(17);
            ct_random_set_offset(999);
            t_poison_gpu_cache(7 * 151, all_dtypes[k]);
            ct_tensor *g = ct_bernoulli((int64_t[]){7, 151}, 2, 0.7, all_dtypes[k], T_GPU);
            cr_assert_not_null(g, "%s", ct_last_error_message());
            double *b = t_values(c);
            t_assert_close(g, b, 0, 0);
            free(b);
        }
    });
}

/* ct_randperm on a GPU sorts the same Philox words as the CPU, stably (CUB's radix sort):
 * the same permutation bit for bit, from sizes under one block to several sort passes, and
 * the offset moves alike. The output lands on a poisoned block. */
Test(cuda_core, randperm_matches_the_cpu) {
    T_REQUIRE_GPU();
    const int64_t sizes[] = {0, 1, 2, 7, 1000, 65537, (1 << 20) + 3};
    T_NO_LEAK({
        for (unsigned k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            int64_t n = sizes[k];
            ct_manual_seed(3 + k);
            ct_random_set_offset(77);
            ct_tensor *c = ct_randperm(n, CT_CPU);
            uint64_t after_cpu = ct_random_offset();
            ct_manual_seed(3 + k);
            ct_random_set_offset(77);
            t_poison_gpu_cache(n, CT_I32);
            ct_tensor *g = ct_randperm(n, T_GPU);
            cr_assert_not_null(g, "n = %lld: %s", (long long)n, ct_last_error_message());
            cr_assert_eq(ct_random_offset(), after_cpu, "n = %lld: the offsets differ", (long long)n);
            cr_assert_eq(ct_tensor_numel(g), n);
            size_t bytes = (size_t)(n ? n : 1) * sizeof(int32_t);
            int32_t *want = malloc(bytes), *got = malloc(bytes);
            cr_assert(want && got);
            cr_assert_eq(ct_to_host(c, want, bytes), CT_OK, "%s", ct_last_error_message());
            cr_assert_eq(ct_to_host(g, got, bytes), CT_OK, "%s", ct_last_error_message());
            for (int64_t i = 0; i < n; i++)
                cr_assert_eq(got[i], want[i], "n = %lld: element %lld is %d on the GPU, %d on the CPU", (long long)n,
                             (long long)i, got[i], want[i]);
            free(want);
            free(got);
        }
        cr_assert_null(ct_randperm(-1, T_GPU));
        t_assert_error(CT_ERR_VALUE, "ct_randperm", NULL);
    });
}

/* ---- gradients of casts, copies and views --------------------------------------------- */

/* A leaf of `dtype` with the same values on both devices (requiring grad). */
static void grad_leaves(const int64_t *shape, int ndim, ct_dtype dtype, ct_tensor **cpu, ct_tensor **gpu) {
    *cpu = ct_requires_grad(t_rand_dtype(shape, ndim, dtype, -2, 2), true);
    *gpu = ct_requires_grad(t_to_gpu(*cpu), true);
    cr_assert(*cpu && *gpu, "%s", ct_last_error_message());
}

/* Backward from y (CPU) and yg (GPU) with one random output gradient; the outputs and the
 * leaves' gradients must match within tol (the GPU output poisoned before it was made by
 * the caller; the gradient's blocks here). */
static void backward_parity(ct_tensor *y, ct_tensor *yg, ct_tensor *x, ct_tensor *xg, double tol, const char *what) {
    t_assert_parity(yg, y, tol, what);
    ct_tensor *w = t_rand_dtype(ct_tensor_shape(y), ct_tensor_ndim(y), ct_tensor_dtype(y), -1, 1);
    cr_assert_eq(ct_backward_ex(y, w, false), CT_OK, "%s: %s", what, ct_last_error_message());
    t_poison_gpu_cache(ct_tensor_numel(x), ct_tensor_dtype(x));
    cr_assert_eq(ct_backward_ex(yg, t_to_gpu(w), false), CT_OK, "%s: %s", what, ct_last_error_message());
    t_assert_parity(ct_grad(xg), ct_grad(x), tol, what);
}

/* ct_cast between the floating dtypes (of a transposed view) is differentiable: its gradient
 * is the output's, cast back. Casts are exact on both devices (see above), so the values and
 * gradients must be equal. */
Test(cuda_core, cast_gradients_match_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(8);
    const ct_dtype dts[] = {CT_F32, CT_F16, CT_BF16};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            T_NO_LEAK({
                ct_tensor *x, *xg;
                grad_leaves((int64_t[]){33, 17}, 2, dts[i], &x, &xg);
                ct_tensor *y = ct_cast(ct_transpose(x, 0, 1), dts[j]);
                cr_assert_not_null(y, "%s", ct_last_error_message());
                t_poison_gpu_cache(33 * 17, dts[j]);
                ct_tensor *yg = ct_cast(ct_transpose(xg, 0, 1), dts[j]);
                char what[64];
                snprintf(what, sizeof what, "cast %s -> %s", ct_dtype_name(dts[i]), ct_dtype_name(dts[j]));
                backward_parity(y, yg, x, xg, 0, what);
            });
}

/* The gradients of the views and copies on the GPU: slice and select scatter into zeros,
 * expand sums over the broadcast dims, permute/reshape/squeeze/flatten only move, clone and
 * contiguous pass the gradient through; a leaf used twice adds both parts. F32 within 1e-5
 * (1e-4 where expand sums), F16/BF16 within 1e-2. */
Test(cuda_core, view_and_copy_gradients_match_the_cpu) {
    T_REQUIRE_GPU();
    ct_manual_seed(9);
    const ct_dtype dts[] = {CT_F32, CT_F16, CT_BF16};
    for (int k = 0; k < 3; k++)
        T_NO_LEAK({
            ct_dtype dt = dts[k];
            double tol = dt == CT_F32 ? 1e-5 : 1e-2, sum_tol = dt == CT_F32 ? 1e-4 : 1e-2;
            ct_tensor *x, *xg, *y, *yg;
            ct_tensor *in[2];

            grad_leaves((int64_t[]){9, 1025}, 2, dt, &x, &xg);
            in[0] = x;
            in[1] = xg;
            ct_tensor *out[2];
            for (int d = 0; d < 2; d++) { /* a stepped slice of a transpose, made contiguous */
                if (d == 1)
                    t_poison_gpu_cache(342 * 9, dt);
                out[d] = ct_contiguous(ct_slice(ct_transpose(in[d], 0, 1), 0, 1, 1025, 3));
            }
            backward_parity(out[0], out[1], x, xg, tol, "contiguous(slice(transpose))");

            grad_leaves((int64_t[]){5, 7, 3}, 3, dt, &x, &xg);
            y = ct_clone(ct_select(x, 1, 4));
            t_poison_gpu_cache(15, dt);
            yg = ct_clone(ct_select(xg, 1, 4));
            backward_parity(y, yg, x, xg, tol, "clone(select)");

            grad_leaves((int64_t[]){1, 1, 33}, 3, dt, &x, &xg);
            y = ct_expand(ct_squeeze(x, 0), (int64_t[]){6, 5, 33}, 3);
            yg = ct_expand(ct_squeeze(xg, 0), (int64_t[]){6, 5, 33}, 3);
            backward_parity(y, yg, x, xg, sum_tol, "expand(squeeze)");

            grad_leaves((int64_t[]){4, 6, 5}, 3, dt, &x, &xg);
            in[0] = x;
            in[1] = xg;
            for (int d = 0; d < 2; d++) { /* two views of one leaf, added: their gradients add up */
                ct_tensor *v = in[d];
                ct_tensor *a = ct_flatten(ct_permute(v, (int[]){2, 0, 1}, 3), 1, 2); /* (5, 24) */
                ct_tensor *b = ct_reshape(ct_unsqueeze(ct_slice(v, 2, 0, 5, 1), 0), (int64_t[]){5, 24}, 2);
                if (d == 1)
                    t_poison_gpu_cache(5 * 24, dt);
                out[d] = ct_add(a, b);
            }
            backward_parity(out[0], out[1], x, xg, tol, "permute + reshape of one leaf");
        });
}

/* ---- asynchronous host-to-device copies ------------------------------------------------- */

/* Keep the current stream of cuda:0 busy for a while (some tens of milliseconds of
 * matmuls), so that copies queued now are still waiting when the host looks at them. */
static void keep_gpu_busy(void) {
    ct_tensor *m = ct_ones((int64_t[]){4096, 4096}, 2, CT_F32, CT_CUDA(0));
    cr_assert_not_null(m, "%s", ct_last_error_message());
    for (int i = 0; i < 8; i++)
        cr_assert_not_null(ct_matmul(m, m), "%s", ct_last_error_message());
}

Test(cuda_core, copies_from_pinned_memory_are_asynchronous) {
    T_REQUIRE_GPU();
    ct_manual_seed(11);
    T_NO_LEAK({
        ct_tensor *host = t_rand((int64_t[]){1 << 20}, 1, CT_F32, -1000, 1000); /* 4 MiB */
        double *ref = t_values(host);
        ct_tensor *pinned = ct_pin_memory(host);
        cr_assert_not_null(pinned, "%s", ct_last_error_message());
        cr_assert(ct_is_pinned(pinned));
        cr_assert(!ct_is_pinned(host));
        ct_memory_stats before, after;
        cr_assert_eq(ct_device_synchronize(0), CT_OK);
        ct_cuda_empty_cache(); /* settles the blocks of earlier copies: pending is 0 now */
        keep_gpu_busy();
        cr_assert_eq(ct_pinned_memory_stats(&before), CT_OK);
        ct_tensor *dev = ct_to_device(pinned, CT_CUDA(0));
        cr_assert_not_null(dev, "%s", ct_last_error_message());
        /* Freed at once: the block waits for the copy instead of being reused. */
        ct_tensor_free(pinned);
        cr_assert_eq(ct_pinned_memory_stats(&after), CT_OK);
        cr_assert_geq(after.pending_free_bytes, before.pending_free_bytes + ((size_t)4 << 20),
                      "the pinned block was not held for the copy in flight (pending %zu -> %zu)",
                      before.pending_free_bytes, after.pending_free_bytes);
        /* New pinned tensors of that size must not get the block while the copy waits:
         * if one did, these values would be what arrives. */
        for (int i = 0; i < 4; i++)
            cr_assert_not_null(ct_pin_memory(ct_full((int64_t[]){1 << 20}, 1, -7.0, CT_F32, CT_CPU)));
        t_assert_close(dev, ref, 0, 0); /* synchronizes */
        free(ref);
    });
}

Test(cuda_core, copies_from_pageable_memory_are_staged_and_exact) {
    T_REQUIRE_GPU();
    ct_manual_seed(12);
    /* Large (through a pinned staging block), small (the driver stages it), and strided or
     * converted sources (the CPU side is assembled in a pinned buffer). */
    const int64_t sizes[] = {(int64_t)3 << 20, 1000, 16384, 16385};
    for (int k = 0; k < 4; k++)
        T_NO_LEAK({
            ct_tensor *host = t_rand(&sizes[k], 1, CT_F32, -1000, 1000);
            double *ref = t_values(host);
            cr_assert_eq(ct_device_synchronize(0), CT_OK);
            ct_cuda_empty_cache(); /* settles the blocks of earlier copies: pending is 0 now */
            keep_gpu_busy();
            ct_memory_stats before, after;
            cr_assert_eq(ct_pinned_memory_stats(&before), CT_OK);
            ct_tensor *dev = ct_to_device(host, CT_CUDA(0));
            cr_assert_not_null(dev, "%s", ct_last_error_message());
            cr_assert_eq(ct_pinned_memory_stats(&after), CT_OK);
            size_t bytes = (size_t)sizes[k] * 4;
            if (bytes > 64 << 10)
                cr_assert_geq(after.pending_free_bytes, before.pending_free_bytes + bytes,
                              "no staging block waits for the copy of %zu bytes", bytes);
            /* The source may change at once: the GPU reads the staged copy. */
            cr_assert_eq(ct_fill_(host, 5.0), CT_OK);
            /* ct_from_host from a user buffer that is overwritten and freed right after. */
            float *buf = malloc(bytes);
            for (int64_t i = 0; i < sizes[k]; i++)
                buf[i] = (float)(i % 1000);
            ct_tensor *from_ptr = ct_from_host(buf, &sizes[k], 1, CT_F32, CT_CUDA(0));
            memset(buf, 0xff, bytes);
            free(buf);
            cr_assert_not_null(from_ptr, "%s", ct_last_error_message());
            double *fv = t_values(from_ptr);
            for (int64_t i = 0; i < sizes[k]; i++)
                cr_assert_eq(fv[i], (double)(i % 1000), "ct_from_host element %lld", (long long)i);
            free(fv);
            t_assert_close(dev, ref, 0, 0);
            free(ref);
        });
    T_NO_LEAK({
        ct_tensor *host = t_rand((int64_t[]){300, 200}, 2, CT_F32, -10, 10);
        ct_tensor *tr = ct_transpose(host, 0, 1);
        double *ref = t_values(tr);
        ct_tensor *dev = ct_to_device(tr, CT_CUDA(0));
        cr_assert_not_null(dev, "%s", ct_last_error_message());
        t_assert_close(dev, ref, 0, 0);
        ct_tensor *half = ct_zeros((int64_t[]){200, 300}, 2, CT_F16, CT_CUDA(0));
        cr_assert_eq(ct_copy_(half, tr), CT_OK, "%s", ct_last_error_message());
        double *hv = t_values(half);
        for (int i = 0; i < 60000; i++)
            cr_assert_float_eq(hv[i], ref[i], 1e-2 * fabs(ref[i]) + 1e-3, "element %d", i);
        free(hv);
        free(ref);
    });
    ct_memory_stats s;
    cr_assert_eq(ct_device_synchronize(0), CT_OK);
    ct_cuda_empty_cache();
    cr_assert_eq(ct_pinned_memory_stats(&s), CT_OK);
    cr_assert_eq(s.allocations, s.frees, "pinned blocks leaked");
    cr_assert_eq(s.pending_free_bytes, 0, "blocks still pending after the device went idle");
}

/* A small ct_from_host from page-locked memory (ct_pinned_alloc, as the data loader's
 * batches are): the driver would read it asynchronously, so ctensor must have taken its
 * copy by the time the call returns and the caller refills the buffer. */
Test(cuda_core, small_copies_from_page_locked_buffers_are_taken_at_once) {
    T_REQUIRE_GPU();
    const int64_t n = 4096; /* 16 KiB: below the size that is always staged */
    T_NO_LEAK({
        float *buf = ct_pinned_alloc((size_t)n * sizeof(float));
        cr_assert_not_null(buf, "%s", ct_last_error_message());
        for (int round = 0; round < 3; round++) {
            for (int64_t i = 0; i < n; i++)
                buf[i] = (float)(round * 10000 + i);
            keep_gpu_busy(); /* the copy waits behind the matmuls */
            ct_tensor *dev = ct_from_host(buf, &n, 1, CT_F32, CT_CUDA(0));
            cr_assert_not_null(dev, "%s", ct_last_error_message());
            for (int64_t i = 0; i < n; i++)
                buf[i] = -1.0f;
            double *v = t_values(dev);
            for (int64_t i = 0; i < n; i++)
                cr_assert_eq(v[i], (double)(round * 10000 + i), "round %d element %lld is %g", round,
                             (long long)i, v[i]);
            free(v);
        }
        ct_pinned_free(buf);
    });
}

/* ct_to_device is differentiable and its gradient goes back to the source's device. */
Test(cuda_core, to_device_gradient_returns_to_the_source_device) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        ct_tensor *leaf = ct_requires_grad(ct_full((int64_t[]){3, 5}, 2, 1.5, CT_F32, CT_CPU), true);
        ct_tensor *on_gpu = ct_to_device(leaf, CT_CUDA(0));
        cr_assert_not_null(on_gpu, "%s", ct_last_error_message());
        ct_tensor *loss = ct_sum(ct_mul_scalar(on_gpu, 3.0), NULL, 0, false);
        cr_assert_eq(ct_backward(loss), CT_OK, "%s", ct_last_error_message());
        ct_tensor *g = ct_grad(leaf);
        cr_assert_not_null(g, "no gradient on the CPU leaf");
        cr_assert_eq(ct_tensor_device(g).type, CT_DEVICE_CPU, "the gradient is on %s",
                     ct_device_name(ct_tensor_device(g)));
        double want[15];
        for (int i = 0; i < 15; i++)
            want[i] = 3.0;
        t_assert_close(g, want, 0, 0);
        /* and the other way: a GPU leaf used on the CPU */
        ct_tensor *gleaf = ct_requires_grad(ct_full((int64_t[]){4}, 1, 2.0, CT_F32, CT_CUDA(0)), true);
        ct_tensor *back = ct_to_device(gleaf, CT_CPU);
        cr_assert_eq(ct_backward(ct_sum(ct_mul(back, back), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        ct_tensor *gg = ct_grad(gleaf);
        cr_assert_not_null(gg);
        cr_assert_eq(ct_tensor_device(gg).type, CT_DEVICE_CUDA);
        t_assert_close(gg, (double[]){4, 4, 4, 4}, 0, 0);
    });
}
