/* The caching allocator engine on the CPU: a malloc-backed segment provider that records
 * its calls, simulates events (the test decides when they complete) and can run out of
 * memory (a budget). Also the public memory API as this build and machine provide it. */
#include "tests/common.h"
#include "runtime/allocator.h"
#include "runtime/internal.h"

#include <pthread.h>
#include <string.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* ---- the test provider --------------------------------------------------------------- */

typedef struct test_event {
    uintptr_t stream;
    bool done, freed;
} test_event;

typedef struct test_provider {
    size_t budget; /* 0: unlimited */
    size_t in_use;
    int allocs, frees, failures, queries;
    bool fail_records; /* event_record fails (a CUDA error) */
    size_t sizes[64]; /* sizes of the first segment allocations, in order */
    test_event *events;
    int n_events, cap_events, events_freed;
} test_provider;

static ct_status tp_alloc(void *ctx, size_t bytes, void **ptr) {
    test_provider *p = ctx;
    if (p->budget && p->in_use + bytes > p->budget) {
        p->failures++;
        return CT_ERR_MEMORY;
    }
    cr_assert_eq(bytes % (2 * MiB), 0, "segment of %zu bytes", bytes);
    *ptr = aligned_alloc(512, bytes);
    cr_assert_not_null(*ptr);
    if (p->allocs < 64)
        p->sizes[p->allocs] = bytes;
    p->allocs++;
    p->in_use += bytes;
    return CT_OK;
}

static void tp_free(void *ctx, void *ptr, size_t bytes) {
    test_provider *p = ctx;
    cr_assert(p->in_use >= bytes);
    p->in_use -= bytes;
    p->frees++;
    free(ptr);
}

/* Events are indices + 1 into p->events. */
static ct_status tp_event_record(void *ctx, uintptr_t stream, void **event) {
    test_provider *p = ctx;
    if (p->fail_records)
        return ct__set_error(CT_ERR_CUDA, "test memory: cannot record an event on stream %ju", (uintmax_t)stream);
    if (p->n_events == p->cap_events) {
        p->cap_events = p->cap_events ? 2 * p->cap_events : 64;
        p->events = realloc(p->events, (size_t)p->cap_events * sizeof *p->events);
        cr_assert_not_null(p->events);
    }
    p->events[p->n_events++] = (test_event){stream, false, false};
    *event = (void *)(uintptr_t)p->n_events;
    return CT_OK;
}

static test_event *tp_event(test_provider *p, void *event) {
    uintptr_t i = (uintptr_t)event;
    cr_assert(i >= 1 && i <= (uintptr_t)p->n_events, "unknown event %p", event);
    cr_assert(!p->events[i - 1].freed, "event %p used after its free", event);
    return &p->events[i - 1];
}

static bool tp_event_query(void *ctx, void *event) {
    ((test_provider *)ctx)->queries++;
    return tp_event(ctx, event)->done;
}

static void tp_event_free(void *ctx, void *event) {
    test_provider *p = ctx;
    tp_event(p, event)->freed = true;
    p->events_freed++;
}

static bool tp_mem_info(void *ctx, size_t *free_bytes, size_t *total_bytes) {
    test_provider *p = ctx;
    if (!p->budget)
        return false;
    *free_bytes = p->budget - p->in_use;
    *total_bytes = p->budget;
    return true;
}

/* The work queued on `stream` so far has finished. */
static void tp_complete(test_provider *p, uintptr_t stream) {
    for (int i = 0; i < p->n_events; i++)
        if (p->events[i].stream == stream)
            p->events[i].done = true;
}

static const ct_segment_provider test_fns = {"test memory", tp_alloc,       tp_free,    tp_event_record,
                                             tp_event_query, tp_event_free, tp_mem_info};

static ct_allocator *make(test_provider *p, size_t budget) {
    memset(p, 0, sizeof *p);
    p->budget = budget;
    ct_allocator *a = ct_allocator_create(&test_fns, p);
    cr_assert_not_null(a, "%s", ct_last_error_message());
    return a;
}

static void assert_valid(ct_allocator *a) {
    cr_assert_eq(ct_allocator_check(a), CT_OK, "%s", ct_last_error_message());
}

/* Check the invariants, destroy, and check that every segment went back. */
static void finish(ct_allocator *a, test_provider *p) {
    assert_valid(a);
    ct_allocator_destroy(a);
    cr_assert_eq(p->in_use, 0);
    cr_assert_eq(p->allocs, p->frees);
    cr_assert_eq(p->events_freed, p->n_events, "%d events recorded, %d freed", p->n_events, p->events_freed);
    free(p->events);
}

static ct_memory_stats stats_of(ct_allocator *a) {
    ct_memory_stats s;
    ct_allocator_stats(a, &s);
    return s;
}

static void *alloc_ok(ct_allocator *a, size_t nbytes, uintptr_t stream) {
    void *ptr = ct_allocator_malloc(a, nbytes, stream);
    cr_assert_not_null(ptr, "malloc(%zu) failed: %s", nbytes, ct_last_error_message());
    cr_assert_eq((uintptr_t)ptr % 512, 0);
    return ptr;
}

static void free_ok(ct_allocator *a, void *ptr) {
    cr_assert_eq(ct_allocator_free(a, ptr), CT_OK, "%s", ct_last_error_message());
}

/* ---- sizes and pools ------------------------------------------------------------------ */

Test(allocator, rounds_sizes_to_512_bytes) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    const size_t requests[] = {0, 1, 511, 512, 513, 1000, 1024, 1025, MiB - 1, MiB, MiB + 1};
    const size_t expected[] = {512, 512, 512, 512, 1024, 1024, 1024, 1536, MiB, MiB, MiB + 512};
    size_t total = 0;
    for (size_t i = 0; i < sizeof requests / sizeof *requests; i++) {
        void *ptr = alloc_ok(a, requests[i], 1);
        cr_assert_eq(ct_allocator_block_size(a, ptr), expected[i], "request %zu got a %zu-byte block", requests[i],
                     ct_allocator_block_size(a, ptr));
        total += expected[i];
    }
    cr_assert_eq(stats_of(a).allocated_bytes, total);
    finish(a, &p);
}

Test(allocator, small_and_large_pool_segment_sizes) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    alloc_ok(a, 1 * KiB, 1);             /* small: a 2 MiB segment */
    alloc_ok(a, MiB, 1);                 /* still small, fits the same segment */
    cr_assert_eq(p.allocs, 1);
    alloc_ok(a, MiB + 1, 1);             /* large: a 20 MiB segment */
    alloc_ok(a, 9 * MiB, 1);             /* < 10 MiB: carved from the same 20 MiB */
    cr_assert_eq(p.allocs, 2);
    alloc_ok(a, 10 * MiB, 1);            /* >= 10 MiB: its own segment, 10 MiB */
    alloc_ok(a, 11 * MiB + 1, 1);        /* rounded up to 12 MiB */
    alloc_ok(a, 1 * KiB, 2);             /* another stream: another small segment */
    cr_assert_eq(p.allocs, 5);
    const size_t sizes[] = {2 * MiB, 20 * MiB, 10 * MiB, 12 * MiB, 2 * MiB};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(p.sizes[i], sizes[i], "segment %d has %zu bytes", i, p.sizes[i]);
    cr_assert_eq(stats_of(a).reserved_bytes, 46 * MiB);
    cr_assert_eq(stats_of(a).segment_allocs, 5);
    finish(a, &p);
}

/* ---- split, merge, best fit ------------------------------------------------------------- */

Test(allocator, splits_and_merges_neighbours) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    char *x = alloc_ok(a, 4 * KiB, 1), *y = alloc_ok(a, 4 * KiB, 1), *z = alloc_ok(a, 4 * KiB, 1);
    cr_assert(y == x + 4 * KiB && z == y + 4 * KiB, "consecutive blocks are carved from one segment");
    free_ok(a, y); /* a hole between two live blocks */
    cr_assert_eq(alloc_ok(a, 4 * KiB, 1), y, "the hole is the best fit");
    free_ok(a, y);
    free_ok(a, x); /* merges with the hole */
    assert_valid(a);
    char *xy = alloc_ok(a, 8 * KiB, 1);
    cr_assert_eq(xy, x, "x and y coalesced into one 8 KiB block");
    free_ok(a, xy);
    free_ok(a, z); /* the middle of three free pieces: everything merges with the tail */
    assert_valid(a);
    char *whole = alloc_ok(a, MiB, 1);
    cr_assert_eq(whole, x, "one coalesced block from the segment start");
    cr_assert_eq(p.allocs, 1);
    /* A small block is split down to 512 bytes; a large one only when more than 1 MiB is left. */
    free_ok(a, whole);
    char *big = alloc_ok(a, 2 * MiB - 512, 1);
    cr_assert_eq(p.allocs, 2, "2 MiB - 512 is a large request");
    cr_assert_eq(ct_allocator_block_size(a, big), 2 * MiB - 512);
    char *large = alloc_ok(a, 19 * MiB, 2);
    cr_assert_eq(ct_allocator_block_size(a, large), 20 * MiB, "a 1 MiB rest is not split off");
    char *larger = alloc_ok(a, 19 * MiB - 512, 3);
    cr_assert_eq(ct_allocator_block_size(a, larger), 19 * MiB - 512, "a 1 MiB + 512 rest is split off");
    cr_assert_eq(stats_of(a).allocated_bytes, 41 * MiB - 1024);
    finish(a, &p);
}

Test(allocator, best_fit_among_free_blocks) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    const size_t sizes[] = {8 * KiB, 4 * KiB, 16 * KiB, 6 * KiB, 4 * KiB};
    char *holes[5], *walls[5];
    for (int i = 0; i < 5; i++) {
        holes[i] = alloc_ok(a, sizes[i], 1);
        walls[i] = alloc_ok(a, 512, 1); /* keeps the holes from merging */
    }
    for (int i = 0; i < 5; i++)
        free_ok(a, holes[i]);
    cr_assert_eq(alloc_ok(a, 5 * KiB, 1), holes[3], "6 KiB is the smallest block >= 5 KiB");
    cr_assert_eq(alloc_ok(a, 4 * KiB, 1), holes[1], "the lower address among equal sizes");
    cr_assert_eq(alloc_ok(a, 4 * KiB, 1), holes[4]);
    cr_assert_eq(alloc_ok(a, 7 * KiB, 1), holes[0]);
    cr_assert_eq(alloc_ok(a, 12 * KiB, 1), holes[2]);
    cr_assert_eq(alloc_ok(a, 1 * KiB, 1), holes[0] + 7 * KiB, "the lower of the two 1 KiB rests");
    cr_assert_eq(alloc_ok(a, 1 * KiB, 1), holes[3] + 5 * KiB);
    cr_assert_eq(p.allocs, 1);
    ct_memory_stats s = stats_of(a);
    cr_assert_eq(s.cache_hits, 16, "every allocation but the first came from cached memory");
    cr_assert_eq(s.allocations, 17);
    (void)walls;
    finish(a, &p);
}

Test(allocator, fragmentation_then_coalescing) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    char *blocks[64];
    for (int i = 0; i < 64; i++)
        blocks[i] = alloc_ok(a, 16 * KiB, 1); /* 1 MiB of the first 2 MiB segment */
    for (int i = 0; i < 64; i += 2)
        free_ok(a, blocks[i]); /* 512 KiB free, in 16 KiB holes */
    ct_memory_stats s = stats_of(a);
    cr_assert_eq(s.reserved_bytes - s.allocated_bytes, 512 * KiB + MiB);
    char *wide = alloc_ok(a, 32 * KiB, 1);
    cr_assert(wide >= blocks[63] + 16 * KiB, "no 16 KiB hole fits 32 KiB: it comes from the tail");
    char *full = alloc_ok(a, MiB, 1);
    cr_assert_eq(p.allocs, 2, "1 MiB fits neither the holes nor the rest of the tail: a new segment");
    for (int i = 0; i < 8; i++)
        cr_assert_eq(alloc_ok(a, 16 * KiB, 1), blocks[2 * i], "holes are refilled lowest address first");
    assert_valid(a);
    free_ok(a, full);
    free_ok(a, wide);
    for (int i = 0; i < 64; i++)
        if (i % 2 || i < 16)
            free_ok(a, blocks[i]);
    assert_valid(a);
    ct_allocator_empty_cache(a);
    s = stats_of(a);
    cr_assert_eq(s.reserved_bytes, 0, "everything coalesced back into whole segments");
    cr_assert_eq(s.segment_frees, 2);
    finish(a, &p);
}

/* ---- streams and events -------------------------------------------------------------------- */

Test(allocator, blocks_are_reused_only_on_their_stream) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    void *on_a = alloc_ok(a, 64 * KiB, 1);
    free_ok(a, on_a);
    void *on_b = alloc_ok(a, 64 * KiB, 2);
    cr_assert_neq(on_b, on_a, "a block freed on stream 1 is not given to stream 2");
    cr_assert_eq(p.allocs, 2);
    cr_assert_eq(alloc_ok(a, 64 * KiB, 1), on_a, "stream 1 gets it back");
    void *big_a = alloc_ok(a, 4 * MiB, 1);
    free_ok(a, big_a);
    cr_assert_neq(alloc_ok(a, 4 * MiB, 3), big_a);
    cr_assert_eq(alloc_ok(a, 4 * MiB, 1), big_a);
    finish(a, &p);
}

Test(allocator, record_stream_gates_reuse_on_events) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    void *x = alloc_ok(a, 8 * KiB, 1);
    cr_assert_eq(ct_allocator_record_stream(a, x, 2), CT_OK);
    cr_assert_eq(ct_allocator_record_stream(a, x, 2), CT_OK); /* once per stream */
    cr_assert_eq(ct_allocator_record_stream(a, x, 3), CT_OK);
    cr_assert_eq(ct_allocator_record_stream(a, x, 1), CT_OK); /* its own stream: nothing to wait for */
    free_ok(a, x);
    cr_assert_eq(p.n_events, 2, "one event on each other stream");
    ct_memory_stats s = stats_of(a);
    cr_assert_eq(s.pending_free_bytes, 8 * KiB);
    cr_assert_eq(s.allocated_bytes, 0);
    assert_valid(a);
    void *y = alloc_ok(a, 8 * KiB, 1);
    cr_assert_neq(y, x, "not reused while streams 2 and 3 may still use it");
    free_ok(a, y);
    tp_complete(&p, 2);
    void *z = alloc_ok(a, 8 * KiB, 1);
    cr_assert_neq(z, x, "stream 3's work is not done yet");
    free_ok(a, z);
    cr_assert_eq(p.events_freed, 1);
    ct_allocator_empty_cache(a);
    cr_assert_eq(stats_of(a).reserved_bytes, 2 * MiB, "the segment with a pending block stays");
    tp_complete(&p, 3);
    cr_assert_eq(alloc_ok(a, 8 * KiB, 1), x, "reused once every event has completed");
    cr_assert_eq(p.events_freed, 2);
    cr_assert_eq(stats_of(a).pending_free_bytes, 0);
    finish(a, &p);
}

Test(allocator, events_on_one_stream_are_queried_in_order) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    void *blocks[3];
    for (int i = 0; i < 3; i++) {
        blocks[i] = alloc_ok(a, 4 * KiB, 1);
        cr_assert_eq(ct_allocator_record_stream(a, blocks[i], i == 1 ? 3 : 2), CT_OK);
    }
    for (int i = 0; i < 3; i++)
        free_ok(a, blocks[i]); /* events: stream 2, stream 3, stream 2 */
    free_ok(a, alloc_ok(a, 512, 1));
    cr_assert_eq(p.queries, 2, "the second event on stream 2 waits behind the first: not queried");
    tp_complete(&p, 2);
    free_ok(a, alloc_ok(a, 512, 1));
    cr_assert_eq(p.queries, 5);
    cr_assert_eq(stats_of(a).pending_free_bytes, 4 * KiB, "only the block used on stream 3 still waits");
    assert_valid(a);
    tp_complete(&p, 3);
    ct_allocator_empty_cache(a);
    cr_assert_eq(stats_of(a).reserved_bytes, 0);
    finish(a, &p);
}

Test(allocator, pending_block_merges_when_released) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    char *x = alloc_ok(a, 4 * KiB, 1), *y = alloc_ok(a, 4 * KiB, 1);
    cr_assert_eq(ct_allocator_record_stream(a, y, 7), CT_OK);
    free_ok(a, y);
    free_ok(a, x); /* x cannot merge with pending y */
    assert_valid(a);
    tp_complete(&p, 7);
    ct_allocator_empty_cache(a); /* processes the event: y merges with x and the tail */
    cr_assert_eq(stats_of(a).reserved_bytes, 0);
    finish(a, &p);
}

/* ---- limits and out of memory ----------------------------------------------------------------- */

Test(allocator, memory_limit) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    ct_allocator_set_limit(a, 8 * MiB);
    void *large = alloc_ok(a, MiB + 1, 1);
    cr_assert_eq(p.sizes[0], 2 * MiB, "a 20 MiB segment would pass the limit: a just-large-enough one instead");
    cr_assert_eq(stats_of(a).oom_retries, 0);
    void *small = alloc_ok(a, 4 * KiB, 1);
    free_ok(a, small); /* a cached 2 MiB segment */
    void *five = alloc_ok(a, 5 * MiB, 1);
    ct_memory_stats s = stats_of(a);
    cr_assert_eq(s.oom_retries, 1, "the cached segment was released to stay under the limit");
    cr_assert_eq(s.segment_frees, 1);
    cr_assert_eq(s.reserved_bytes, 8 * MiB);
    cr_assert_eq(s.limit_bytes, 8 * MiB);
    cr_assert_null(ct_allocator_malloc(a, 1 * KiB, 1));
    t_assert_error(CT_ERR_MEMORY, "test memory: out of memory", "requested 1024 bytes", "allocated 8388608 bytes",
                   "reserved 8388608 bytes", "limit 8388608 bytes", "unknown free and total bytes", NULL);
    s = stats_of(a);
    cr_assert_eq(s.ooms, 1);
    cr_assert_eq(s.allocations, 3);
    /* Lowering the limit under the reserve releases what is cached. */
    free_ok(a, five);
    ct_allocator_set_limit(a, 4 * MiB);
    cr_assert_eq(stats_of(a).reserved_bytes, 2 * MiB);
    ct_allocator_set_limit(a, 0);
    alloc_ok(a, 30 * MiB, 1);
    free_ok(a, large);
    finish(a, &p);
}

Test(allocator, out_of_memory_flushes_the_cache_then_fails) {
    test_provider p;
    ct_allocator *a = make(&p, 16 * MiB);
    void *cached = alloc_ok(a, 4 * KiB, 1);
    free_ok(a, cached);
    void *live = alloc_ok(a, 4 * KiB, 2);
    void *big = alloc_ok(a, 13 * MiB, 1); /* 14 MiB: fits only once the cached segment is gone */
    ct_memory_stats s = stats_of(a);
    cr_assert_eq(p.failures, 1);
    cr_assert_eq(s.oom_retries, 1);
    cr_assert_eq(s.segment_frees, 1);
    cr_assert_eq(s.reserved_bytes, 16 * MiB);
    cr_assert_null(ct_allocator_malloc(a, 3 * MiB, 1));
    t_assert_error(CT_ERR_MEMORY, "test memory: out of memory", "requested 3145728 bytes",
                   "0 bytes free of 16777216 bytes total", "allocated 14684160 bytes", "reserved 16777216 bytes",
                   "limit none", NULL);
    s = stats_of(a);
    cr_assert_eq(p.failures, 4, "then 20 MiB, 4 MiB, and 4 MiB after the flush");
    cr_assert_eq(s.oom_retries, 2);
    cr_assert_eq(s.ooms, 1);
    cr_assert_null(ct_allocator_malloc(a, SIZE_MAX - 5, 1));
    t_assert_error(CT_ERR_MEMORY, "out of memory", NULL);
    free_ok(a, big);
    free_ok(a, live);
    finish(a, &p);
}

/* ---- cache, statistics, errors -------------------------------------------------------------------- */

Test(allocator, empty_cache_releases_only_whole_free_segments) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    char *keep = alloc_ok(a, 4 * KiB, 1); /* segment 1: one live block and a free tail */
    void *gone = alloc_ok(a, 4 * KiB, 2); /* segment 2: freed entirely */
    void *large = alloc_ok(a, 3 * MiB, 1); /* segment 3 (20 MiB): freed entirely */
    free_ok(a, gone);
    free_ok(a, large);
    ct_allocator_empty_cache(a);
    ct_memory_stats s = stats_of(a);
    cr_assert_eq(s.reserved_bytes, 2 * MiB);
    cr_assert_eq(s.segment_frees, 2);
    cr_assert_eq(p.in_use, 2 * MiB);
    memset(keep, 0x5a, 4 * KiB); /* still valid memory */
    cr_assert_eq(alloc_ok(a, 4 * KiB, 1), keep + 4 * KiB, "segment 1's tail is still cached");
    finish(a, &p);
}

Test(allocator, statistics_are_exact) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    ct_memory_stats s = stats_of(a);
    cr_assert_eq(s.allocated_bytes + s.reserved_bytes + s.allocations + s.segment_allocs, 0);
    void *x = alloc_ok(a, 1000, 1);      /* 1024 */
    void *y = alloc_ok(a, 3 * MiB, 1);   /* 3 MiB from a 20 MiB segment */
    free_ok(a, x);
    void *z = alloc_ok(a, 1024, 1);      /* a cache hit */
    s = stats_of(a);
    cr_assert_eq(s.allocated_bytes, 3 * MiB + 1024);
    cr_assert_eq(s.reserved_bytes, 22 * MiB);
    cr_assert_eq(s.peak_allocated_bytes, 3 * MiB + 1024);
    cr_assert_eq(s.peak_reserved_bytes, 22 * MiB);
    cr_assert_eq(s.allocations, 3);
    cr_assert_eq(s.frees, 1);
    cr_assert_eq(s.cache_hits, 1);
    cr_assert_eq(s.segment_allocs, 2);
    cr_assert_eq(s.segment_frees + s.oom_retries + s.ooms + s.pending_free_bytes + s.limit_bytes, 0);
    free_ok(a, y);
    ct_allocator_empty_cache(a);
    s = stats_of(a);
    cr_assert_eq(s.allocated_bytes, 1024);
    cr_assert_eq(s.reserved_bytes, 2 * MiB);
    cr_assert_eq(s.peak_allocated_bytes, 3 * MiB + 1024, "peaks stay until reset");
    cr_assert_eq(s.peak_reserved_bytes, 22 * MiB);
    ct_allocator_reset_peak(a);
    s = stats_of(a);
    cr_assert_eq(s.peak_allocated_bytes, 1024);
    cr_assert_eq(s.peak_reserved_bytes, 2 * MiB);
    void *w = alloc_ok(a, 5000, 1); /* 5120 */
    s = stats_of(a);
    cr_assert_eq(s.peak_allocated_bytes, 1024 + 5120);
    cr_assert_eq(s.cache_hits, 2);
    cr_assert_eq(s.segment_frees, 1);
    free_ok(a, w);
    free_ok(a, z);
    s = stats_of(a);
    cr_assert_eq(s.allocations, s.frees);
    cr_assert_eq(s.allocated_bytes, 0);
    finish(a, &p);
}

Test(allocator, bad_pointers_are_refused) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    char *x = alloc_ok(a, 4 * KiB, 1);
    cr_assert_eq(ct_allocator_free(a, NULL), CT_OK);
    cr_assert_eq(ct_allocator_free(a, x + 512), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "not a live block", NULL);
    cr_assert_eq(ct_allocator_record_stream(a, x + 512, 2), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "not a live block", NULL);
    free_ok(a, x);
    cr_assert_eq(ct_allocator_free(a, x), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "test memory", "freed twice", NULL);
    cr_assert_eq(ct_allocator_block_size(a, x), 0);
    cr_assert_eq(stats_of(a).frees, 1);
    finish(a, &p);

    ct_segment_provider no_events = {"plain", tp_alloc, tp_free, NULL, NULL, NULL, NULL};
    memset(&p, 0, sizeof p);
    a = ct_allocator_create(&no_events, &p);
    void *y = alloc_ok(a, 100, 0);
    cr_assert_eq(ct_allocator_record_stream(a, y, 1), CT_ERR_UNSUPPORTED);
    t_assert_error(CT_ERR_UNSUPPORTED, "plain", NULL);
    finish(a, &p);

    ct_segment_provider half_events = test_fns;
    half_events.event_query = NULL;
    cr_assert_null(ct_allocator_create(&half_events, &p));
    t_assert_error(CT_ERR_VALUE, "event functions", NULL);
}

Test(allocator, parses_byte_sizes) {
    const struct {
        const char *text;
        size_t bytes;
    } good[] = {{"0", 0},          {"1048576", 1048576}, {"512M", 512 * MiB}, {"8G", 8192 * MiB},
                {"8g", 8192 * MiB}, {"1.5GiB", 1536 * MiB}, {"64KB", 64 * KiB}, {" 2T ", (size_t)2 << 40},
                {"100B", 100},     {"3mib", 3 * MiB}};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        size_t bytes = 1;
        cr_assert(ct__parse_byte_size(good[i].text, &bytes), "\"%s\" was refused", good[i].text);
        cr_assert_eq(bytes, good[i].bytes, "\"%s\" is %zu, not %zu", good[i].text, good[i].bytes, bytes);
    }
    const char *bad[] = {"", "G", "-1", "1.5", "8X", "8GG", "1e9", "8 G", "99999999999999999999", "16777216T",
                         ".5G", "5.G"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t bytes = 0;
        cr_assert(!ct__parse_byte_size(bad[i], &bytes), "\"%s\" was accepted as %zu", bad[i], bytes);
    }
}

/* ---- CUDA graph capture ------------------------------------------------------------------------------ */

/* Capture pool ids: values that are never stream ids (the tests' streams are small numbers). */
#define POOL_A ((uintptr_t)0xa000)
#define POOL_B ((uintptr_t)0xb000)
#define POOL_C ((uintptr_t)0xc000)

static void capture_begin_ok(ct_allocator *a, uintptr_t pool) {
    cr_assert_eq(ct_allocator_capture_begin(a, pool), CT_OK, "%s", ct_last_error_message());
    assert_valid(a);
}

static void capture_end_ok(ct_allocator *a) {
    cr_assert_eq(ct_allocator_capture_end(a), CT_OK, "%s", ct_last_error_message());
    assert_valid(a);
}

Test(allocator, capture_pool_blocks_stay_in_their_pool) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    void *small = alloc_ok(a, 64 * KiB, 1), *large = alloc_ok(a, 4 * MiB, 1);
    free_ok(a, small);
    free_ok(a, large); /* both cached on stream 1 */
    capture_begin_ok(a, POOL_A);
    void *pool_small = alloc_ok(a, 64 * KiB, POOL_A), *pool_large = alloc_ok(a, 4 * MiB, POOL_A);
    cr_assert(pool_small != small && pool_large != large, "the capture does not take stream 1's cached blocks");
    cr_assert_eq(p.allocs, 4, "the pool carves segments of its own");
    free_ok(a, pool_small);
    free_ok(a, pool_large);
    assert_valid(a);
    uint64_t hits = stats_of(a).cache_hits;
    cr_assert_eq(alloc_ok(a, 64 * KiB, POOL_A), pool_small, "freed during the capture, reused within it");
    cr_assert_eq(alloc_ok(a, 4 * MiB, POOL_A), pool_large);
    cr_assert_eq(stats_of(a).cache_hits, hits + 2);
    cr_assert_eq(alloc_ok(a, 64 * KiB, 1), small, "stream 1 keeps its own blocks during the capture");
    cr_assert_eq(alloc_ok(a, 4 * MiB, 1), large);
    free_ok(a, small);
    free_ok(a, large);
    free_ok(a, pool_small);
    free_ok(a, pool_large);
    capture_end_ok(a);
    /* After the capture, the pool's free blocks are still not handed to a stream. */
    void *other_small = alloc_ok(a, 64 * KiB, 2), *other_large = alloc_ok(a, 4 * MiB, 2);
    cr_assert(other_small != pool_small && other_large != pool_large);
    cr_assert_eq(p.allocs, 6);
    cr_assert_eq(alloc_ok(a, 64 * KiB, POOL_A), pool_small);
    cr_assert_eq(alloc_ok(a, 4 * MiB, POOL_A), pool_large);
    assert_valid(a);
    finish(a, &p);
}

Test(allocator, retained_pool_survives_every_flush_until_released) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    free_ok(a, alloc_ok(a, 4 * KiB, 1)); /* a free 2 MiB segment of stream 1 */
    capture_begin_ok(a, POOL_A);
    void *x = alloc_ok(a, 4 * KiB, POOL_A), *y = alloc_ok(a, 3 * MiB, POOL_A); /* 2 + 20 MiB */
    free_ok(a, x);
    free_ok(a, y); /* the pool's two segments are free, but the graph still uses them */
    ct_allocator_empty_cache(a);
    assert_valid(a);
    cr_assert_eq(stats_of(a).reserved_bytes, 24 * MiB, "nothing is given back during the capture");
    ct_allocator_set_limit(a, 2 * MiB);
    cr_assert_eq(stats_of(a).reserved_bytes, 24 * MiB);
    ct_allocator_set_limit(a, 0);
    p.budget = 28 * MiB; /* room for a 4 MiB segment, not a 6 MiB one */
    cr_assert_null(ct_allocator_malloc(a, 5 * MiB, 2));
    t_assert_error(CT_ERR_MEMORY, "requested 5242880 bytes", "CUDA graph capture is underway", NULL);
    assert_valid(a);
    cr_assert_eq(stats_of(a).segment_frees, 0);
    capture_end_ok(a);

    /* After the capture: the flush gives back stream 1's segment, not the pool's. */
    void *five = alloc_ok(a, 5 * MiB, 2);
    assert_valid(a);
    ct_memory_stats s = stats_of(a);
    cr_assert_eq(s.segment_frees, 1);
    cr_assert_eq(s.oom_retries, 1);
    cr_assert_eq(s.reserved_bytes, 28 * MiB);
    cr_assert_null(ct_allocator_malloc(a, 3 * MiB, 3), "a second flush finds nothing it may give back");
    t_assert_error(CT_ERR_MEMORY, "requested 3145728 bytes", NULL);
    cr_assert_eq(stats_of(a).reserved_bytes, 28 * MiB);
    free_ok(a, five);
    ct_allocator_empty_cache(a);
    assert_valid(a);
    cr_assert_eq(stats_of(a).reserved_bytes, 22 * MiB, "empty_cache gives back stream 2's segment only");
    ct_allocator_set_limit(a, 2 * MiB);
    assert_valid(a);
    cr_assert_eq(stats_of(a).reserved_bytes, 22 * MiB, "nor does set_limit give back the pool");
    ct_allocator_set_limit(a, 0);
    cr_assert_eq(alloc_ok(a, 4 * KiB, POOL_A), x, "the pool's blocks are still cached for the graph");
    free_ok(a, x);

    ct_allocator_release_pool(a, POOL_A);
    assert_valid(a);
    s = stats_of(a);
    cr_assert_eq(s.reserved_bytes, 22 * MiB, "release_pool itself gives nothing back");
    ct_allocator_empty_cache(a);
    assert_valid(a);
    cr_assert_eq(stats_of(a).reserved_bytes, s.reserved_bytes - 22 * MiB);
    cr_assert_eq(stats_of(a).segment_frees, s.segment_frees + 2);
    finish(a, &p);
}

Test(allocator, capture_queries_no_event_and_gives_nothing_back) {
    test_provider p;
    ct_allocator *a = make(&p, 16 * MiB);
    free_ok(a, alloc_ok(a, 4 * KiB, 1)); /* a free segment of stream 1 */
    void *used = alloc_ok(a, 4 * KiB, 2);
    cr_assert_eq(ct_allocator_record_stream(a, used, 3), CT_OK);
    free_ok(a, used); /* pending on an event on stream 3 */
    tp_complete(&p, 3); /* done, but not queried yet */
    cr_assert_eq(p.queries, 0);
    capture_begin_ok(a, POOL_A);
    void *x = alloc_ok(a, 8 * KiB, POOL_A);
    free_ok(a, x);
    cr_assert_eq(alloc_ok(a, 8 * KiB, POOL_A), x);
    ct_allocator_empty_cache(a);
    assert_valid(a);
    ct_memory_stats s = stats_of(a);
    cr_assert_eq(p.queries, 0, "no event is queried during a capture");
    cr_assert_eq(s.pending_free_bytes, 4 * KiB);
    cr_assert_eq(s.reserved_bytes, 6 * MiB, "not even stream 1's free segment is given back");
    cr_assert_eq(s.segment_frees, 0);
    cr_assert_null(ct_allocator_malloc(a, 13 * MiB, POOL_A), "14 MiB fits only after a flush");
    t_assert_error(CT_ERR_MEMORY, "test memory: out of memory", "requested 13631488 bytes",
                   "10485760 bytes free of 16777216 bytes total", "reserved 6291456 bytes",
                   "a CUDA graph capture is underway", NULL);
    assert_valid(a);
    s = stats_of(a);
    cr_assert_eq(s.ooms, 1);
    cr_assert_eq(s.oom_retries, 0, "no flush was tried");
    cr_assert_eq(s.segment_frees, 0);
    cr_assert_eq(p.queries, 0);
    capture_end_ok(a);
    cr_assert_eq(p.queries, 0, "capture_end queries nothing either");

    void *big = alloc_ok(a, 13 * MiB, POOL_A); /* the event completes, both stream segments go */
    assert_valid(a);
    s = stats_of(a);
    cr_assert_gt(p.queries, 0);
    cr_assert_eq(s.pending_free_bytes, 0);
    cr_assert_eq(s.oom_retries, 1);
    cr_assert_eq(s.segment_frees, 2);
    cr_assert_eq(s.reserved_bytes, 16 * MiB);
    cr_assert_null(ct_allocator_malloc(a, 4 * MiB, 1));
    cr_assert_null(strstr(ct_last_error_message(), "capture"), "no capture now: \"%s\"", ct_last_error_message());
    t_assert_error(CT_ERR_MEMORY, "requested 4194304 bytes", NULL);
    free_ok(a, big);
    finish(a, &p);
}

Test(allocator, capture_holds_frees_with_recorded_streams) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    capture_begin_ok(a, POOL_A);
    void *x = alloc_ok(a, 8 * KiB, POOL_A);
    cr_assert_eq(ct_allocator_record_stream(a, x, 2), CT_OK);
    free_ok(a, x);
    assert_valid(a);
    ct_memory_stats s = stats_of(a);
    cr_assert_eq(p.n_events, 0, "an event recorded now would become part of the graph");
    cr_assert_eq(s.pending_free_bytes, 8 * KiB);
    cr_assert_eq(s.allocated_bytes, 0);
    cr_assert_eq(ct_allocator_block_size(a, x), 0);
    cr_assert_eq(ct_allocator_free(a, x), CT_ERR_VALUE, "a held block is not live");
    t_assert_error(CT_ERR_VALUE, "not a live block", NULL);
    void *y = alloc_ok(a, 8 * KiB, POOL_A);
    cr_assert_neq(y, x, "a held block is not reused");
    free_ok(a, y);
    ct_allocator_empty_cache(a);
    assert_valid(a);
    cr_assert_eq(p.n_events, 0);
    capture_end_ok(a);
    cr_assert_eq(p.n_events, 1, "the event is recorded when the capture ends");
    cr_assert_eq(p.events[0].stream, 2);
    cr_assert_eq(stats_of(a).pending_free_bytes, 8 * KiB);
    void *z = alloc_ok(a, 8 * KiB, POOL_A);
    cr_assert_neq(z, x, "stream 2's work is not done yet");
    free_ok(a, z);
    assert_valid(a);
    tp_complete(&p, 2);
    cr_assert_eq(alloc_ok(a, 8 * KiB, POOL_A), x, "reused once the event has completed");
    cr_assert_eq(stats_of(a).pending_free_bytes, 0);
    assert_valid(a);
    finish(a, &p);
}

Test(allocator, held_free_whose_event_fails_stays_held) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    capture_begin_ok(a, POOL_A);
    void *x = alloc_ok(a, 8 * KiB, POOL_A), *y = alloc_ok(a, 8 * KiB, POOL_A);
    cr_assert_eq(ct_allocator_record_stream(a, x, 2), CT_OK);
    cr_assert_eq(ct_allocator_record_stream(a, y, 2), CT_OK);
    free_ok(a, x);
    free_ok(a, y);
    p.fail_records = true;
    cr_assert_eq(ct_allocator_capture_end(a), CT_ERR_CUDA);
    t_assert_error(CT_ERR_CUDA, "cannot record an event on stream 2", NULL);
    assert_valid(a);
    p.fail_records = false;
    cr_assert_eq(stats_of(a).pending_free_bytes, 16 * KiB, "both blocks are held for good");
    tp_complete(&p, 2);
    ct_allocator_release_pool(a, POOL_A);
    ct_allocator_empty_cache(a);
    assert_valid(a);
    cr_assert_eq(stats_of(a).reserved_bytes, 2 * MiB, "their segment is never given back");
    void *z = alloc_ok(a, 8 * KiB, POOL_A);
    cr_assert(z != x && z != y);
    free_ok(a, z);
    finish(a, &p);
}

Test(allocator, overlapping_captures_record_events_after_the_last) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    capture_begin_ok(a, POOL_A);
    capture_begin_ok(a, POOL_B);
    void *xa = alloc_ok(a, 4 * KiB, POOL_A), *xb = alloc_ok(a, 4 * KiB, POOL_B);
    cr_assert_eq(p.allocs, 2, "each pool has its own segment");
    cr_assert_eq(ct_allocator_record_stream(a, xa, 2), CT_OK);
    cr_assert_eq(ct_allocator_record_stream(a, xb, 3), CT_OK);
    free_ok(a, xa);
    free_ok(a, xb);
    assert_valid(a);
    capture_end_ok(a);
    cr_assert_eq(p.n_events, 0, "a capture is still underway");
    cr_assert_eq(stats_of(a).pending_free_bytes, 8 * KiB);
    ct_allocator_empty_cache(a);
    cr_assert_eq(p.queries, 0);
    capture_end_ok(a);
    cr_assert_eq(p.n_events, 2, "the last capture_end records both events");
    cr_assert_eq(stats_of(a).pending_free_bytes, 8 * KiB);

    /* A pool released during another capture is given back only once that capture ends. */
    tp_complete(&p, 2);
    tp_complete(&p, 3);
    capture_begin_ok(a, POOL_C);
    ct_allocator_release_pool(a, POOL_A);
    ct_allocator_empty_cache(a);
    assert_valid(a);
    cr_assert_eq(p.queries, 0);
    cr_assert_eq(stats_of(a).reserved_bytes, 4 * MiB);
    capture_end_ok(a);
    ct_allocator_empty_cache(a);
    assert_valid(a);
    ct_memory_stats s = stats_of(a);
    cr_assert_eq(s.pending_free_bytes, 0);
    cr_assert_eq(s.reserved_bytes, 2 * MiB, "pool A's segment went back, pool B is still retained");
    cr_assert_eq(alloc_ok(a, 4 * KiB, POOL_B), xb);
    free_ok(a, xb);
    ct_allocator_release_pool(a, POOL_B);
    ct_allocator_release_pool(a, POOL_C);
    ct_allocator_empty_cache(a);
    cr_assert_eq(stats_of(a).reserved_bytes, 0);
    finish(a, &p);
}

Test(allocator, capture_misuse_is_refused) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    cr_assert_eq(ct_allocator_capture_end(a), CT_ERR_STATE);
    t_assert_error(CT_ERR_STATE, "test memory", "capture_end", "no CUDA graph capture", NULL);
    assert_valid(a);
    ct_allocator_release_pool(a, POOL_A); /* unknown: ignored */
    assert_valid(a);
    capture_begin_ok(a, POOL_A);
    cr_assert_eq(ct_allocator_capture_begin(a, POOL_A), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "test memory", "already retained", NULL);
    assert_valid(a);
    ct_allocator_release_pool(a, POOL_B);
    assert_valid(a);
    capture_end_ok(a); /* the refused capture_begin counted nothing */
    cr_assert_eq(ct_allocator_capture_end(a), CT_ERR_STATE);
    t_assert_error(CT_ERR_STATE, "capture_end", NULL);
    assert_valid(a);
    cr_assert_eq(ct_allocator_capture_begin(a, POOL_A), CT_ERR_VALUE, "retained until release_pool");
    t_assert_error(CT_ERR_VALUE, "already retained", NULL);
    ct_allocator_release_pool(a, POOL_A);
    assert_valid(a);
    capture_begin_ok(a, POOL_A);
    capture_end_ok(a);
    ct_allocator_release_pool(a, POOL_A);
    ct_allocator_release_pool(a, POOL_A);
    assert_valid(a);
    cr_assert_eq(ct_allocator_capture_begin(NULL, POOL_A), CT_ERR_NULL);
    cr_assert_eq(ct_allocator_capture_end(NULL), CT_ERR_NULL);
    ct_clear_error();
    ct_allocator_release_pool(NULL, POOL_A);
    /* Many pools at once (the array grows), released in any order. */
    for (uintptr_t pool = 1; pool <= 20; pool++)
        capture_begin_ok(a, POOL_A + pool);
    for (uintptr_t pool = 1; pool <= 20; pool++)
        capture_end_ok(a);
    for (int pool = 20; pool >= 1; pool -= 3) /* 20, 17, ..., 2 */
        ct_allocator_release_pool(a, POOL_A + (uintptr_t)pool);
    assert_valid(a);
    cr_assert_eq(ct_allocator_capture_begin(a, POOL_A + 19), CT_ERR_VALUE);
    t_assert_error(CT_ERR_VALUE, "already retained", NULL);
    capture_begin_ok(a, POOL_A + 20);
    capture_end_ok(a);
    finish(a, &p);
}

/* Destroying an allocator in the middle of a capture frees the held blocks and the pools
 * (the sanitizer build checks for leaks). */
Test(allocator, destroy_during_a_capture) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    capture_begin_ok(a, POOL_A);
    void *x = alloc_ok(a, 4 * KiB, POOL_A);
    alloc_ok(a, 4 * MiB, POOL_A);
    cr_assert_eq(ct_allocator_record_stream(a, x, 2), CT_OK);
    cr_assert_eq(ct_allocator_record_stream(a, x, 3), CT_OK);
    free_ok(a, x);
    finish(a, &p);
}

/* ---- randomized stress and threads ------------------------------------------------------------------ */

static uint64_t next_random(uint64_t *state) {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

static size_t random_size(uint64_t *rng) {
    uint64_t r = next_random(rng);
    switch (r % 8) {
    case 0: return (size_t)(r >> 8) % 600;            /* tiny, zero included */
    case 1: case 2: case 3: return 1 + (size_t)(r >> 8) % (64 * KiB);
    case 4: case 5: return 1 + (size_t)(r >> 8) % MiB; /* up to the small limit */
    case 6: return MiB + 1 + (size_t)(r >> 8) % (9 * MiB);
    default: return (r >> 8) % 4 ? 1 + (size_t)(r >> 8) % (2 * MiB) : 10 * MiB + (size_t)(r >> 8) % (14 * MiB);
    }
}

typedef struct live_block {
    char *ptr;
    size_t size, block_size;
    uint64_t tag;
} live_block;

/* The first and last 8 bytes of a block hold its tag (the first bytes only when it is
 * shorter than 16). */
static void stamp(live_block *b) {
    memcpy(b->ptr, &b->tag, b->size < 8 ? b->size : 8);
    if (b->size >= 16)
        memcpy(b->ptr + b->size - 8, &b->tag, 8);
}

static void assert_stamp(const live_block *b) {
    cr_assert_eq(memcmp(b->ptr, &b->tag, b->size < 8 ? b->size : 8), 0, "block %p was overwritten", (void *)b->ptr);
    if (b->size >= 16)
        cr_assert_eq(memcmp(b->ptr + b->size - 8, &b->tag, 8), 0, "block %p's end was overwritten", (void *)b->ptr);
}

Test(allocator, randomized_stress_keeps_every_invariant) {
    enum { OPS = 20000, MAX_LIVE = 96 };
    test_provider p;
    ct_allocator *a = make(&p, 256 * MiB);
    live_block live[MAX_LIVE];
    int n_live = 0, ooms = 0;
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int op = 0; op < OPS; op++) {
        uint64_t r = next_random(&rng) % 100;
        if (r < 55 && n_live < MAX_LIVE) {
            live_block b = {.size = random_size(&rng), .tag = next_random(&rng)};
            b.ptr = ct_allocator_malloc(a, b.size, 1 + next_random(&rng) % 3);
            if (!b.ptr) {
                cr_assert_eq(ct_last_error(), CT_ERR_MEMORY, "%s", ct_last_error_message());
                ct_clear_error();
                ooms++;
                continue;
            }
            b.block_size = ct_allocator_block_size(a, b.ptr);
            cr_assert(b.block_size >= b.size && b.block_size % 512 == 0);
            for (int i = 0; i < n_live; i++)
                cr_assert(b.ptr + b.block_size <= live[i].ptr || live[i].ptr + live[i].block_size <= b.ptr,
                          "block %p overlaps live block %p", (void *)b.ptr, (void *)live[i].ptr);
            if (b.size)
                stamp(&b);
            live[n_live++] = b;
        } else if (r < 93 && n_live > 0) {
            int i = (int)(next_random(&rng) % (uint64_t)n_live);
            if (live[i].size)
                assert_stamp(&live[i]);
            if (next_random(&rng) % 8 == 0)
                cr_assert_eq(ct_allocator_record_stream(a, live[i].ptr, 1 + next_random(&rng) % 4), CT_OK);
            free_ok(a, live[i].ptr);
            live[i] = live[--n_live];
        } else if (r < 98) {
            tp_complete(&p, 1 + next_random(&rng) % 4);
        } else {
            ct_allocator_empty_cache(a);
        }
        assert_valid(a);
    }
    ct_memory_stats s = stats_of(a);
    cr_assert_gt(s.cache_hits, 5000, "the cache is exercised");
    cr_assert_gt(s.oom_retries, 0, "the budget is reached");
    for (int i = 0; i < n_live; i++) {
        if (live[i].size)
            assert_stamp(&live[i]);
        free_ok(a, live[i].ptr);
    }
    for (uintptr_t stream = 1; stream <= 4; stream++)
        tp_complete(&p, stream);
    ct_allocator_empty_cache(a);
    s = stats_of(a);
    cr_assert_eq(s.allocated_bytes, 0);
    cr_assert_eq(s.reserved_bytes, 0, "everything went back: %zu bytes still reserved", s.reserved_bytes);
    cr_assert_eq(s.pending_free_bytes, 0);
    cr_assert_eq(s.allocations, s.frees);
    cr_assert_eq(s.ooms, (uint64_t)ooms);
    cr_assert_eq(p.in_use, 0);
    cr_assert_eq(p.allocs, p.frees);
    finish(a, &p);
}

/* Captures begin and end (overlapping), pools are released, blocks are allocated on streams
 * and pools and freed with recorded streams: every invariant holds after every step, and
 * while a capture is underway no event is queried or recorded and no segment is given back. */
Test(allocator, randomized_captures_keep_every_invariant) {
    enum { OPS = 20000, MAX_LIVE = 64, MAX_POOLS = 8 };
    test_provider p;
    ct_allocator *a = make(&p, 128 * MiB);
    live_block live[MAX_LIVE];
    uintptr_t pools[MAX_POOLS]; /* retained pools; the last `captures` are being captured */
    int n_live = 0, n_pools = 0, captures = 0, held_frees = 0;
    uintptr_t next_pool = POOL_A;
    uint64_t rng = 0x2545f4914f6cdd1dull;
    for (int op = 0; op < OPS; op++) {
        int queries = p.queries, events = p.n_events, segment_frees = p.frees;
        uint64_t r = next_random(&rng) % 100;
        if (r < 50 && n_live < MAX_LIVE) {
            uintptr_t stream = captures && next_random(&rng) % 4
                                   ? pools[n_pools - 1 - (int)(next_random(&rng) % (uint64_t)captures)]
                                   : 1 + next_random(&rng) % 3;
            live_block b = {.size = random_size(&rng) / 4, .tag = next_random(&rng)};
            b.ptr = ct_allocator_malloc(a, b.size, stream);
            if (!b.ptr) {
                cr_assert_eq(ct_last_error(), CT_ERR_MEMORY, "%s", ct_last_error_message());
                cr_assert_eq(strstr(ct_last_error_message(), "capture is underway") != NULL, captures > 0);
                ct_clear_error();
                continue;
            }
            b.block_size = ct_allocator_block_size(a, b.ptr);
            if (b.size)
                stamp(&b);
            live[n_live++] = b;
        } else if (r < 86 && n_live > 0) {
            int i = (int)(next_random(&rng) % (uint64_t)n_live);
            if (live[i].size)
                assert_stamp(&live[i]);
            if (next_random(&rng) % 4 == 0) {
                cr_assert_eq(ct_allocator_record_stream(a, live[i].ptr, 1 + next_random(&rng) % 4), CT_OK);
                held_frees += captures > 0;
            }
            free_ok(a, live[i].ptr);
            live[i] = live[--n_live];
        } else if (r < 90) {
            tp_complete(&p, 1 + next_random(&rng) % 4);
        } else if (r < 92) {
            ct_allocator_empty_cache(a);
        } else if (r < 93 && n_pools < MAX_POOLS) {
            /* A new capture: its pool goes last, after the other captures' pools. */
            capture_begin_ok(a, next_pool);
            pools[n_pools++] = next_pool++;
            captures++;
        } else if (r < 96 && captures > 0) {
            capture_end_ok(a);
            captures--;
        } else if (n_pools > captures) {
            /* Release a pool whose capture has ended (they come first). */
            int i = (int)(next_random(&rng) % (uint64_t)(n_pools - captures));
            ct_allocator_release_pool(a, pools[i]);
            memmove(&pools[i], &pools[i + 1], (size_t)(n_pools - i - 1) * sizeof *pools);
            n_pools--;
        }
        assert_valid(a);
        if (captures > 0) {
            cr_assert_eq(p.queries, queries, "an event was queried during a capture");
            cr_assert_eq(p.n_events, events, "an event was recorded during a capture");
            cr_assert_eq(p.frees, segment_frees, "a segment was given back during a capture");
        }
    }
    cr_assert_gt(held_frees, 100, "frees are held");
    cr_assert_gt(stats_of(a).oom_retries, 0, "the budget is reached");
    for (int i = 0; i < n_live; i++)
        free_ok(a, live[i].ptr);
    for (; captures > 0; captures--)
        capture_end_ok(a);
    for (int i = 0; i < n_pools; i++)
        ct_allocator_release_pool(a, pools[i]);
    for (uintptr_t stream = 1; stream <= 4; stream++)
        tp_complete(&p, stream);
    ct_allocator_empty_cache(a);
    ct_memory_stats s = stats_of(a);
    cr_assert_eq(s.pending_free_bytes, 0);
    cr_assert_eq(s.reserved_bytes, 0, "everything went back: %zu bytes still reserved", s.reserved_bytes);
    finish(a, &p);
}

typedef struct thread_work {
    ct_allocator *a;
    uintptr_t stream;
} thread_work;

static void *thread_main(void *arg) {
    thread_work *w = arg;
    uint64_t rng = 0x1234567ull + w->stream;
    void *mine[16] = {0};
    for (int i = 0; i < 4000; i++) {
        int slot = (int)(next_random(&rng) % 16);
        if (mine[slot]) {
            ct_allocator_free(w->a, mine[slot]);
            mine[slot] = NULL;
        } else {
            size_t size = 1 + (size_t)(next_random(&rng) % (next_random(&rng) % 4 ? 32 * KiB : 4 * MiB));
            mine[slot] = ct_allocator_malloc(w->a, size, w->stream % 2);
            if (mine[slot])
                memset(mine[slot], (int)w->stream, size < 64 ? size : 64);
        }
    }
    for (int slot = 0; slot < 16; slot++)
        ct_allocator_free(w->a, mine[slot]);
    return NULL;
}

Test(allocator, threads_share_one_allocator) {
    test_provider p;
    ct_allocator *a = make(&p, 0);
    pthread_t threads[4];
    thread_work work[4];
    for (int t = 0; t < 4; t++) {
        work[t] = (thread_work){a, (uintptr_t)t};
        cr_assert_eq(pthread_create(&threads[t], NULL, thread_main, &work[t]), 0);
    }
    for (int t = 0; t < 4; t++)
        pthread_join(threads[t], NULL);
    ct_memory_stats s = stats_of(a);
    cr_assert_eq(s.allocated_bytes, 0);
    cr_assert_eq(s.allocations, s.frees);
    cr_assert_gt(s.cache_hits, 0);
    ct_allocator_empty_cache(a);
    cr_assert_eq(stats_of(a).reserved_bytes, 0);
    finish(a, &p);
}

/* ---- the public API as this build and machine provide it ------------------------------------------ */

Test(allocator, public_api_without_a_gpu) {
    if (ct_cuda_is_available())
        cr_skip_test("a GPU is usable: see cuda_storage_uses_the_caching_allocator");
    ct_memory_stats s;
    cr_assert_eq(ct_cuda_memory_stats(0, &s), CT_ERR_DEVICE);
    t_assert_error(CT_ERR_DEVICE, "cuda:0", "not available", NULL);
    cr_assert_eq(s.reserved_bytes, 0);
    cr_assert_eq(ct_cuda_memory_stats(0, NULL), CT_ERR_NULL);
    ct_clear_error();
    cr_assert_eq(ct_cuda_set_memory_limit(0, MiB), CT_ERR_DEVICE);
    t_assert_error(CT_ERR_DEVICE, "ct_cuda_set_memory_limit", NULL);
    cr_assert_eq(ct_cuda_reset_peak_stats(0), CT_ERR_DEVICE);
    ct_clear_error();
    ct_cuda_empty_cache();
    char *pinned = ct_pinned_alloc(1000);
    cr_assert_not_null(pinned);
    cr_assert_eq((uintptr_t)pinned % 64, 0);
    memset(pinned, 1, 1000);
    ct_pinned_free(pinned);
    ct_pinned_free(NULL);
    cr_assert_eq(ct_pinned_memory_stats(&s), CT_OK);
    T_NO_LEAK({
        ct_tensor *t = ct_zeros((int64_t[]){4}, 1, CT_F32, CT_CPU);
        cr_assert_eq(ct_tensor_record_stream(t, NULL), CT_ERR_NULL);
        t_assert_error(CT_ERR_NULL, "ct_tensor_record_stream", "stream", NULL);
    });
    cr_assert_eq(ct_tensor_record_stream(NULL, NULL), CT_ERR_NULL);
    ct_clear_error();
}

Test(allocator, cuda_storage_uses_the_caching_allocator) {
    T_REQUIRE_GPU();
    ct_cuda_empty_cache();
    ct_memory_stats before, after;
    cr_assert_eq(ct_cuda_memory_stats(0, &before), CT_OK);
    T_NO_LEAK({
        ct_tensor *t = ct_empty((int64_t[]){1000}, 1, CT_F32, CT_CUDA(0));
        cr_assert_not_null(t, "%s", ct_last_error_message());
        cr_assert_eq(ct_cuda_memory_stats(0, &after), CT_OK);
        cr_assert_eq(after.allocated_bytes - before.allocated_bytes, 4096);
        cr_assert_eq(ct_tensor_record_stream(t, ct_stream_from_pool(0)), CT_OK, "%s", ct_last_error_message());
        cr_assert_eq(ct_tensor_record_stream(t, ct_stream_current(0)), CT_OK);
    });
    cr_assert_eq(ct_device_synchronize(0), CT_OK);
    T_NO_LEAK({
        cr_assert_not_null(ct_empty((int64_t[]){1000}, 1, CT_F32, CT_CUDA(0)));
        cr_assert_not_null(ct_empty((int64_t[]){1000}, 1, CT_F32, CT_CUDA(0)));
    });
    cr_assert_eq(ct_cuda_memory_stats(0, &after), CT_OK);
    cr_assert_eq(after.allocated_bytes, before.allocated_bytes);
    cr_assert_eq(after.allocations - before.allocations, 3);
    cr_assert_geq(after.cache_hits - before.cache_hits, 1);
    cr_assert_eq(ct_cuda_set_memory_limit(0, after.reserved_bytes + 4 * MiB), CT_OK);
    cr_assert_null(ct_empty((int64_t[]){64 << 20}, 1, CT_F32, CT_CUDA(0)));
    t_assert_error(CT_ERR_MEMORY, "cuda:0: out of memory", "requested 268435456 bytes", "limit", NULL);
    cr_assert_eq(ct_cuda_set_memory_limit(0, 0), CT_OK);
    void *pinned = ct_pinned_alloc(3000);
    cr_assert_not_null(pinned);
    ct_pinned_free(pinned);
    cr_assert_eq(ct_pinned_memory_stats(&after), CT_OK);
    cr_assert_eq(after.allocations, after.frees);
    ct_cuda_empty_cache();
}

/* ct_pin_memory / ct_is_pinned on any machine: a contiguous CPU copy with the same values
 * (page-locked only where a GPU is usable), usable by every CPU op, freed like any tensor. */
Test(allocator, pinned_cpu_tensors) {
    ct_clear_error();
    T_NO_LEAK({
        ct_tensor *a = ct_reshape(ct_arange(0, 12, 1, CT_F32, CT_CPU), (int64_t[]){3, 4}, 2);
        ct_tensor *tr = ct_transpose(a, 0, 1);
        ct_tensor *p = ct_pin_memory(tr);
        cr_assert_not_null(p, "%s", ct_last_error_message());
        cr_assert(ct_device_equal(ct_tensor_device(p), CT_CPU));
        cr_assert_eq(ct_tensor_dtype(p), CT_F32);
        t_assert_shape(p, (int64_t[]){4, 3}, 2);
        cr_assert(ct_tensor_is_contiguous(p));
        cr_assert(!ct_tensor_shares_storage(p, a));
        double *ref = t_values(tr);
        t_assert_close(p, ref, 0, 0);
        cr_assert_eq(ct_is_pinned(p), ct_cuda_is_available());
        cr_assert(!ct_is_pinned(a));
        /* Views share the pinned storage. */
        cr_assert_eq(ct_is_pinned(ct_slice(p, 0, 1, 3, 1)), ct_cuda_is_available());
        /* Writing the source afterwards leaves the copy alone; ops read and write it. */
        cr_assert_eq(ct_fill_(a, -1.0), CT_OK);
        t_assert_close(p, ref, 0, 0);
        ct_tensor *twice = ct_add(p, p);
        double *tv = t_values(twice);
        for (int i = 0; i < 12; i++)
            cr_assert_eq(tv[i], 2 * ref[i]);
        free(tv);
        cr_assert_eq(ct_fill_(p, 3.0), CT_OK);
        cr_assert_eq(ct_item(ct_sum(p, NULL, 0, false)), 36.0);
        /* Other dtypes, empty tensors, and to_device between CPU and CPU. */
        ct_tensor *u = ct_pin_memory(ct_full((int64_t[]){5}, 1, 200, CT_U8, CT_CPU));
        cr_assert_not_null(u, "%s", ct_last_error_message());
        cr_assert_eq(ct_item(ct_sum(ct_cast(u, CT_I32), NULL, 0, false)), 1000.0);
        ct_tensor *empty = ct_pin_memory(ct_zeros((int64_t[]){0, 3}, 2, CT_F32, CT_CPU));
        cr_assert_not_null(empty, "%s", ct_last_error_message());
        t_assert_shape(empty, (int64_t[]){0, 3}, 2);
        ct_tensor *same = ct_to_device(p, CT_CPU);
        cr_assert(ct_tensor_shares_storage(same, p));
        free(ref);
    });
    /* Gradients flow through it like ct_clone. */
    T_NO_LEAK({
        ct_tensor *x = ct_requires_grad(ct_ones((int64_t[]){3}, 1, CT_F64, CT_CPU), true);
        ct_tensor *p = ct_pin_memory(x);
        cr_assert_eq(ct_backward(ct_sum(ct_mul(p, p), NULL, 0, false)), CT_OK, "%s", ct_last_error_message());
        double *g = t_values(ct_grad(x));
        for (int i = 0; i < 3; i++)
            cr_assert_eq(g[i], 2.0);
        free(g);
    });
    /* Errors. */
    cr_assert_null(ct_pin_memory(NULL));
    t_assert_error(CT_ERR_NULL, "ct_pin_memory", NULL);
    cr_assert(!ct_is_pinned(NULL));
    t_assert_error(CT_ERR_NULL, "ct_is_pinned", NULL);
    ct_tensor *dead = ct_zeros((int64_t[]){2}, 1, CT_F32, CT_CPU);
    ct_tensor_free(dead);
    cr_assert_null(ct_pin_memory(dead));
    t_assert_error(CT_ERR_STATE, "ct_pin_memory", NULL);
}

Test(allocator, pin_memory_refuses_gpu_tensors) {
    T_REQUIRE_GPU();
    T_NO_LEAK({
        cr_assert_null(ct_pin_memory(ct_zeros((int64_t[]){2}, 1, CT_F32, CT_CUDA(0))));
        t_assert_error(CT_ERR_DEVICE, "ct_pin_memory", "cuda:0", "only CPU tensors", NULL);
    });
}
