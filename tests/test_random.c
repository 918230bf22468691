/* The Philox generator: known-answer vectors, reproducibility, distributions. */
#include "tests/common.h"

#include <string.h>

Test(random, philox_known_answers) {
    /* Known-answer vectors of Philox4x32-10 from the Random123 distribution. */
    struct { uint32_t ctr[4], key[2], out[4]; } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (int k = 0; k < 3; k++) {
        uint32_t out[4];
        ct_philox4x32_10(kat[k].ctr, kat[k].key, out);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(out[i], kat[k].out[i], "vector %d word %d: %08x, expected %08x", k, i, out[i], kat[k].out[i]);
    }
}

Test(random, uniform_follows_the_documented_scheme) {
    ct_manual_seed(0x123456789abcdefull);
    ct_random_set_offset(5);
    T_NO_LEAK({
        ct_tensor *u = ct_rand((int64_t[]){6}, 1, CT_F32, CT_CPU);
        float v[6];
        ct_to_host(u, v, sizeof v);
        for (int i = 0; i < 6; i++) {
            uint32_t out[4], block = 5 + (uint32_t)i / 4;
            ct_philox4x32_10((uint32_t[]){block, 0, 0, 0}, (uint32_t[]){0x89abcdef, 0x01234567}, out);
            float expect = (float)(out[i % 4] >> 8) * 0x1p-24f;
            cr_assert_eq(v[i], expect, "element %d", i);
        }
        cr_assert_eq(ct_random_offset(), 7, "6 words use 2 blocks");
    });
}

Test(random, reproducible_and_replayable) {
    T_NO_LEAK({
        ct_manual_seed(42);
        ct_tensor *a = ct_randn((int64_t[]){100}, 1, CT_F32, CT_CPU);
        uint64_t off = ct_random_offset();
        ct_tensor *b = ct_rand((int64_t[]){100}, 1, CT_F32, CT_CPU);
        ct_manual_seed(42);
        ct_tensor *a2 = ct_randn((int64_t[]){100}, 1, CT_F32, CT_CPU);
        double *av = t_values(a);
        t_assert_close(a2, av, 0, 0);
        ct_random_set_offset(off);
        double *bv = t_values(b);
        t_assert_close(ct_rand((int64_t[]){100}, 1, CT_F32, CT_CPU), bv, 0, 0);
        cr_assert(memcmp(av, bv, 100 * sizeof(double)) != 0);
        free(av);
        free(bv);
    });
}

static void moments(const ct_tensor *t, double *mean, double *var) {
    double *v = t_values(t);
    int64_t n = ct_tensor_numel(t);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++)
        s += v[i];
    *mean = s / n;
    for (int64_t i = 0; i < n; i++)
        s2 += (v[i] - *mean) * (v[i] - *mean);
    *var = s2 / n;
    free(v);
}

Test(random, distributions) {
    ct_manual_seed(7);
    T_NO_LEAK({
        double m, v;
        int64_t n = 200000;
        ct_tensor *u = ct_uniform(&n, 1, -2, 6, CT_F64, CT_CPU);
        moments(u, &m, &v);
        cr_assert(fabs(m - 2) < 0.03 && fabs(v - 64.0 / 12) < 0.05, "uniform mean %g var %g", m, v);
        cr_assert_geq(ct_item(ct_min_all(u)), -2);
        cr_assert_lt(ct_item(ct_max_all(u)), 6);
        ct_tensor *z = ct_normal(&n, 1, 1.5, 2.0, CT_F32, CT_CPU);
        moments(z, &m, &v);
        cr_assert(fabs(m - 1.5) < 0.03 && fabs(v - 4) < 0.06, "normal mean %g var %g", m, v);
        ct_tensor *odd = ct_randn((int64_t[]){3}, 1, CT_BF16, CT_CPU);
        cr_assert_not_null(odd);
        ct_tensor *b = ct_bernoulli(&n, 1, 0.3, CT_U8, CT_CPU);
        moments(b, &m, &v);
        cr_assert(fabs(m - 0.3) < 0.01, "bernoulli mean %g", m);
        ct_tensor *p = ct_randperm(1000, CT_CPU);
        int32_t idx[1000];
        ct_to_host(p, idx, sizeof idx);
        char seen[1000] = {0};
        int in_place = 0;
        for (int i = 0; i < 1000; i++) {
            cr_assert(idx[i] >= 0 && idx[i] < 1000 && !seen[idx[i]]);
            seen[idx[i]] = 1;
            in_place += idx[i] == i;
        }
        cr_assert_lt(in_place, 10, "a shuffled permutation");
        cr_assert_eq(ct_tensor_numel(ct_randperm(0, CT_CPU)), 0);
    });
}

Test(random, errors) {
    ct_clear_error();
    cr_assert_null(ct_uniform((int64_t[]){2}, 1, 1, 0, CT_F32, CT_CPU));
    t_assert_error(CT_ERR_VALUE, "ct_uniform", NULL);
    cr_assert_null(ct_bernoulli((int64_t[]){2}, 1, 1.5, CT_F32, CT_CPU));
    t_assert_error(CT_ERR_VALUE, "ct_bernoulli", "1.5", NULL);
    cr_assert_null(ct_randn((int64_t[]){2}, 1, CT_I32, CT_CPU));
    t_assert_error(CT_ERR_DTYPE, "ct_randn", "i32", NULL);
    cr_assert_null(ct_normal((int64_t[]){2}, 1, 0, -1, CT_F32, CT_CPU));
    t_assert_error(CT_ERR_VALUE, "ct_normal", NULL);
    cr_assert_null(ct_randperm(-1, CT_CPU));
    t_assert_error(CT_ERR_VALUE, "ct_randperm", NULL);
}
