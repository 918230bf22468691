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
