/* The table of conv.cu's cuDNN algorithm cache (kernels/cuda/conv_cache.h), on the host: a
 * stored plan is found again; the first plan stored for a key stays, and a later insert gets
 * it back (two threads that timed the same pass run the same algorithm); a full table still
 * caches every new key, evicting another, and never answers a key with another key's plan.
 * The GPU side (the plan carried from the workspace query to the run) is test_cuda_conv's. */
#include "tests/common.h"
#include "kernels/cuda/conv_cache.h"

#include <stdlib.h>

static ct_conv2d_geom geom_of(int64_t i) {
    /* N, C, H, W, O, oH, oW, kH, kW, stride, pad, dilation (h, w), groups */
    return (ct_conv2d_geom){1 + i, 3, 8, 8, 4, 6, 6, 3, 3, 1, 1, 0, 0, 1, 1, 1};
}

static ct_conv_cache_key key_of(int64_t i) {
    ct_conv2d_geom g = geom_of(i);
    return ct_conv_cache_key_of(0, CT_F32, false, 0, &g);
}

static ct_cuda_conv_plan plan_of(int64_t i) {
    return (ct_cuda_conv_plan){(int)(i % 7), (int)(i % 3), (size_t)i * 512};
}

static bool same_plan(ct_cuda_conv_plan a, ct_cuda_conv_plan b) {
    return a.algo == b.algo && a.math == b.math && a.workspace == b.workspace;
}

Test(conv_cache, stores_and_finds) {
    ct_conv_cache *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    ct_conv_cache_key k = key_of(1);
    ct_cuda_conv_plan p = {0, 0, 0}, stored = plan_of(5);
    cr_assert_not(ct_conv_cache_find(c, &k, &p), "an empty table has no plan");
    ct_cuda_conv_plan in = stored;
    ct_conv_cache_insert(c, &k, &in);
    cr_assert(same_plan(in, stored), "a first insert keeps the caller's plan");
    cr_assert(ct_conv_cache_find(c, &k, &p));
    cr_assert(same_plan(p, stored));
    free(c);
}

Test(conv_cache, every_field_of_the_key_counts) {
    ct_conv_cache *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    ct_conv2d_geom g = geom_of(0), other = g;
    other.dilation_w = 2;
    ct_conv_cache_key keys[] = {
        ct_conv_cache_key_of(0, CT_F32, false, 0, &g), ct_conv_cache_key_of(1, CT_F32, false, 0, &g),
        ct_conv_cache_key_of(0, CT_F16, false, 0, &g), ct_conv_cache_key_of(0, CT_F32, true, 0, &g),
        ct_conv_cache_key_of(0, CT_F32, false, 1, &g), ct_conv_cache_key_of(0, CT_F32, false, 0, &other),
    };
    int n = (int)(sizeof keys / sizeof keys[0]);
    for (int i = 0; i < n; i++) {
        ct_cuda_conv_plan p = plan_of(i + 1);
        ct_conv_cache_insert(c, &keys[i], &p);
        cr_assert(same_plan(p, plan_of(i + 1)), "key %d was taken for an earlier one", i);
    }
    for (int i = 0; i < n; i++) {
        ct_cuda_conv_plan p = {0, 0, 0};
        cr_assert(ct_conv_cache_find(c, &keys[i], &p) && same_plan(p, plan_of(i + 1)), "key %d", i);
    }
    free(c);
}

Test(conv_cache, the_first_insert_wins) {
    ct_conv_cache *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    ct_conv_cache_key k = key_of(2);
    ct_cuda_conv_plan first = plan_of(3), second = plan_of(4), p = {0, 0, 0};
    ct_conv_cache_insert(c, &k, &first);
    ct_conv_cache_insert(c, &k, &second);
    cr_assert(same_plan(second, plan_of(3)), "the second insert gets the stored plan back");
    cr_assert(ct_conv_cache_find(c, &k, &p) && same_plan(p, plan_of(3)));
    free(c);
}

/* The cached keys among 0..n-1 (each checked to hold its own plan). */
static int count_cached(const ct_conv_cache *c, int n) {
    int cached = 0;
    for (int i = 0; i < n; i++) {
        ct_conv_cache_key k = key_of(i);
        ct_cuda_conv_plan p = {0, 0, 0};
        if (ct_conv_cache_find(c, &k, &p)) {
            cr_assert(same_plan(p, plan_of(i)), "key %d answered with another key's plan", i);
            cached++;
        }
    }
    return cached;
}

Test(conv_cache, a_full_table_evicts) {
    ct_conv_cache *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    const int n = 3 * CT_CONV_CACHE_SLOTS;
    for (int i = 0; i < n; i++) {
        ct_conv_cache_key k = key_of(i);
        ct_cuda_conv_plan p = plan_of(i);
        ct_conv_cache_insert(c, &k, &p);
        cr_assert(same_plan(p, plan_of(i)), "insert %d", i);
        cr_assert(ct_conv_cache_find(c, &k, &p) && same_plan(p, plan_of(i)), "key %d is cached once inserted", i);
        cr_assert_eq(count_cached(c, i + 1), i < CT_CONV_CACHE_SLOTS ? i + 1 : CT_CONV_CACHE_SLOTS, "after %d", i);
    }
    /* A key still cached keeps its plan when inserted again, and evicts nothing. */
    int kept = -1;
    for (int i = 0; i < n && kept < 0; i++) {
        ct_conv_cache_key k = key_of(i);
        ct_cuda_conv_plan p = {0, 0, 0};
        if (ct_conv_cache_find(c, &k, &p))
            kept = i;
    }
    cr_assert_geq(kept, 0);
    ct_conv_cache_key k = key_of(kept);
    ct_cuda_conv_plan p = plan_of(kept + 1);
    ct_conv_cache_insert(c, &k, &p);
    cr_assert(same_plan(p, plan_of(kept)), "the stored plan wins in a full table too");
    cr_assert_eq(count_cached(c, n), CT_CONV_CACHE_SLOTS);
    /* An evicted key is cached again. */
    int evicted = -1;
    for (int i = 0; i < n && evicted < 0; i++) {
        ct_conv_cache_key e = key_of(i);
        if (!ct_conv_cache_find(c, &e, &p))
            evicted = i;
    }
    cr_assert_geq(evicted, 0);
    k = key_of(evicted);
    p = plan_of(evicted);
    ct_conv_cache_insert(c, &k, &p);
    cr_assert(ct_conv_cache_find(c, &k, &p) && same_plan(p, plan_of(evicted)));
    cr_assert_eq(count_cached(c, n), CT_CONV_CACHE_SLOTS);
    free(c);
}
