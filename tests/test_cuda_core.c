/* CUDA parity for the runtime core: transfers, copy/cast/fill, Philox. Each test reports
 * itself skipped where no GPU is usable. */
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
