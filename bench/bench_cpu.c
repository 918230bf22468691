/* ctbench, CPU sections.
 *
 *   memory       memcpy bandwidth with ctensor's OpenMP thread count: the reference for the
 *                elementwise rows; a copy with non-temporal stores (what a kernel can reach)
 *                and memcpy into freshly allocated memory (what first-touch page faults cost)
 *   elementwise  ct_add, ct_mul, ct_relu, ct_sum on tensors far beyond the caches, each call
 *                allocating and freeing its output as a user's call does; then ct_add_ and
 *                ct_mul_ in place, which allocate nothing. Interleaved with the memory rows.
 *   matmul       ct_matmul next to a direct cblas_sgemm on the same buffers, interleaved; and
 *                ct_matmul right after an elementwise op on OpenMP's threads, as in a training
 *                step (OpenMP's idle threads spin for a while and compete with OpenBLAS's)
 *   overhead     the fixed cost of an op on a 1-element tensor inside a scope loop, without
 *                and with autograd recording (plus an empty scope and ct_empty, to split it)
 *
 * Every large measurement runs warmup calls first and reports the best and the median of
 * its repetitions; measurements that are compared with each other are interleaved. */
#include "bench/bench.h"

#include "ctensor/ctensor.h"

#include <cblas.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers --------------------------------------------------------------------------- */

static void size_label(char *out, size_t cap, int64_t n, const char *dtype) {
    if (n >= (1 << 20) && n % (1 << 20) == 0)
        snprintf(out, cap, "%lldMi %s", (long long)(n >> 20), dtype);
    else
        snprintf(out, cap, "%lld %s", (long long)n, dtype);
}

static uint32_t hash32(uint64_t i) {
    uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull;
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    return (uint32_t)(x >> 32);
}

/* Fill (and first-touch, from every thread) with values in [lo, lo + width). */
static void fill(float *x, int64_t n, uint64_t seed, float lo, float width) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
        x[i] = lo + width * (float)(hash32((uint64_t)i ^ (seed << 40)) >> 8) * (1.0f / 16777216.0f);
}

static ct_tensor *new_filled(int ndim, const int64_t *shape, uint64_t seed, float lo, float width) {
    ct_tensor *t = ct_empty(shape, ndim, CT_F32, CT_CPU);
    if (t)
        fill(ct_tensor_data(t), ct_tensor_numel(t), seed, lo, width);
    return t;
}

static bool report_failure(const char *what) {
    fprintf(stderr, "ctbench: %s failed: %s\n", what, ct_last_error_message());
    ct_clear_error();
    return false;
}

/* ---- memory and elementwise: bandwidth ------------------------------------------------ */

/* memcpy split into one contiguous piece per OpenMP thread, as ctensor's kernels split rows. */
static void parallel_memcpy(char *dst, const char *src, size_t bytes, bool nontemporal) {
#pragma omp parallel
    {
        size_t nt = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
        size_t chunk = ((bytes + nt - 1) / nt + 63) & ~(size_t)63;
        size_t begin = chunk * t, end = begin + chunk < bytes ? begin + chunk : bytes;
#ifdef __SSE2__
        if (nontemporal) {
            /* 16-byte loads and streaming stores (the pieces are 64-byte aligned). */
            size_t vec_end = begin + ((end > begin ? end - begin : 0) & ~(size_t)63);
            for (size_t i = begin; i < vec_end; i += 64) {
                __m128i x0 = _mm_load_si128((const __m128i *)(src + i)),
                        x1 = _mm_load_si128((const __m128i *)(src + i + 16)),
                        x2 = _mm_load_si128((const __m128i *)(src + i + 32)),
                        x3 = _mm_load_si128((const __m128i *)(src + i + 48));
                _mm_stream_si128((__m128i *)(dst + i), x0);
                _mm_stream_si128((__m128i *)(dst + i + 16), x1);
                _mm_stream_si128((__m128i *)(dst + i + 32), x2);
                _mm_stream_si128((__m128i *)(dst + i + 48), x3);
            }
            _mm_sfence();
            begin = vec_end > begin ? vec_end : begin;
        }
#else
        (void)nontemporal;
#endif
        if (begin < end)
            memcpy(dst + begin, src + begin, end - begin);
    }
}

typedef enum bw_kind {
    BW_MEMCPY,      /* the reference */
    BW_COPY_NT,     /* copy with non-temporal stores: what a kernel could reach */
    BW_MEMCPY_FRESH, /* into memory allocated (and freed) in the call */
    BW_ADD,
    BW_MUL,
    BW_RELU,
    BW_SUM,
    BW_ADD_INPLACE,
    BW_MUL_INPLACE,
    BW_COUNT
} bw_kind;

static const struct bw_info {
    const char *section, *name;
    int words; /* elements read + written per element of the input */
    bool has_target;
} bw_info[BW_COUNT] = {
    [BW_MEMCPY] = {"memory", "memcpy", 2, false},
    [BW_COPY_NT] = {"memory", "copy, non-temporal stores", 2, false},
    [BW_MEMCPY_FRESH] = {"memory", "memcpy, fresh dst", 2, false},
    [BW_ADD] = {"elementwise", "ct_add", 3, true},
    [BW_MUL] = {"elementwise", "ct_mul", 3, true},
    [BW_RELU] = {"elementwise", "ct_relu", 2, true},
    [BW_SUM] = {"elementwise", "ct_sum", 1, true},
    [BW_ADD_INPLACE] = {"elementwise", "ct_add_ (in place)", 3, false},
    [BW_MUL_INPLACE] = {"elementwise", "ct_mul_ (in place)", 3, false},
};

typedef struct bw_ctx {
    ct_tensor *a, *b; /* inputs; a is also memcpy's source */
    ct_tensor *c;     /* the target of the in-place ops, so that a and b keep their values */
    char *dst;        /* memcpy's destination */
    size_t bytes;
} bw_ctx;

/* One op as a user calls it: an output is allocated, and freed when the scope ends. */
static ct_tensor *ew_run(bw_kind kind, bw_ctx *c) {
    switch (kind) {
    case BW_ADD: return ct_add(c->a, c->b);
    case BW_MUL: return ct_mul(c->a, c->b);
    case BW_RELU: return ct_relu(c->a);
    case BW_SUM: return ct_sum(c->a, NULL, 0, false);
    case BW_ADD_INPLACE: return ct_add_(c->c, c->b) == CT_OK ? c->c : NULL;
    case BW_MUL_INPLACE: return ct_mul_(c->c, c->b) == CT_OK ? c->c : NULL;
    default: return NULL;
    }
}

static bool bw_call(bw_kind kind, bw_ctx *c) {
    switch (kind) {
    case BW_MEMCPY:
    case BW_COPY_NT: parallel_memcpy(c->dst, ct_tensor_data(c->a), c->bytes, kind == BW_COPY_NT); return true;
    case BW_MEMCPY_FRESH: {
        char *dst = aligned_alloc(64, c->bytes);
        if (!dst)
            return false;
        parallel_memcpy(dst, ct_tensor_data(c->a), c->bytes, false);
        free(dst);
        return true;
    }
    default: {
        ct_scope_begin();
        bool ok = ew_run(kind, c) != NULL;
        ct_scope_end();
        return ok;
    }
    }
}

/* Spot-check the result of an out-of-place op, so that a fast wrong kernel is not reported. */
static bool ew_check(bw_kind kind, bw_ctx *c) {
    ct_scope_begin();
    ct_tensor *out = ew_run(kind, c);
    bool ok = out != NULL;
    if (!ok) {
        report_failure(bw_info[kind].name);
    } else {
        const float *x = ct_tensor_data(c->a), *y = ct_tensor_data(c->b), *z = ct_tensor_data(out);
        int64_t n = ct_tensor_numel(c->a);
        if (kind == BW_SUM) {
            double want = 0;
            for (int64_t i = 0; i < n; i++)
                want += x[i];
            ok = fabs(ct_item(out) - want) <= 1e-6 * (double)n + 1e-3; /* |x| < 1 */
        } else {
            int64_t idx[] = {0, n / 3, n / 2 + 7, n - 1};
            for (int k = 0; k < 4 && ok; k++) {
                int64_t i = idx[k];
                float want = kind == BW_ADD ? x[i] + y[i] : kind == BW_MUL ? x[i] * y[i] : (x[i] > 0 ? x[i] : 0);
                ok = z[i] == want;
            }
        }
        if (!ok)
            fprintf(stderr, "ctbench: %s returned a wrong result\n", bw_info[kind].name);
    }
    ct_scope_end();
    return ok;
}

/* The memory and elementwise rows. Their calls are interleaved, round after round, so that
 * the memcpy reference and every op see the same machine: on a shared host, memory
 * bandwidth drifts by a factor of two within a minute. */
static bool section_bandwidth(const bench_opts *o, int64_t n, int warmup, int reps) {
    bool want[BW_COUNT], all_ok = true;
    for (int k = 0; k < BW_COUNT; k++)
        want[k] = bench_section_enabled(o, bw_info[k].section);
    want[BW_MEMCPY] = true;
#ifndef __SSE2__
    want[BW_COPY_NT] = false;
#endif
    int64_t shape[1] = {n};
    bw_ctx c = {new_filled(1, shape, 3, -1.0f, 2.0f), new_filled(1, shape, 4, 0.5f, 1.0f),
                new_filled(1, shape, 5, -1.0f, 2.0f), aligned_alloc(64, (size_t)n * sizeof(float)),
                (size_t)n * sizeof(float)};
    double(*samples)[256] = calloc(BW_COUNT, sizeof *samples);
    if (!c.a || !c.b || !c.c || !c.dst || !samples) {
        all_ok = report_failure("allocating the bandwidth buffers");
        goto done;
    }
    memset(c.dst, 0, c.bytes);
    for (int k = BW_ADD; k <= BW_SUM; k++)
        if (want[k] && !ew_check(k, &c)) {
            want[k] = false;
            all_ok = false;
        }
    if (reps > 256)
        reps = 256;
    for (int round = -warmup; round < reps; round++)
        for (int k = 0; k < BW_COUNT; k++) {
            if (!want[k])
                continue;
            double t0 = bench_now();
            if (!bw_call(k, &c)) {
                all_ok = report_failure(bw_info[k].name);
                want[k] = false;
                continue;
            }
            if (round >= 0)
                samples[k][round] = bench_now() - t0;
        }
    /* Bandwidth ratios to memcpy, round by round, before the samples are sorted. */
    double paired[BW_COUNT];
    for (int k = 0; k < BW_COUNT; k++)
        paired[k] = want[k] ? bench_paired_ratio(samples[BW_MEMCPY], samples[k], reps) * bw_info[k].words /
                                  bw_info[BW_MEMCPY].words
                            : 0;
    double memcpy_gbs = 0;
    for (int k = 0; k < BW_COUNT; k++) {
        if (!want[k])
            continue;
        bench_stats s = bench_stats_of(samples[k], reps);
        double gbs = (double)bw_info[k].words * (double)c.bytes / s.best * 1e-9;
        if (k == BW_MEMCPY)
            memcpy_gbs = gbs;
        bench_row r = {bw_info[k].section, bw_info[k].name, "", omp_get_max_threads(), reps, s.best, s.median, gbs,
                       "GB/s", k == BW_MEMCPY ? NULL : "memcpy", paired[k], gbs / memcpy_gbs, NULL, -1};
        if (bw_info[k].has_target && !o->quick) {
            r.target = ">= 90% of memcpy";
            r.target_met = r.ratio >= 0.90;
        }
        if (k < BW_ADD)
            snprintf(r.size, sizeof r.size, "%zu MiB", c.bytes >> 20);
        else
            size_label(r.size, sizeof r.size, n, "f32");
        bench_emit(o, &r);
    }
done:
    free(samples);
    free(c.dst);
    ct_tensor_free(c.a);
    ct_tensor_free(c.b);
    ct_tensor_free(c.c);
    return all_ok;
}

/* ---- matmul ---------------------------------------------------------------------------- */

typedef struct mm_ctx {
    ct_tensor *a, *b;
    float *c; /* the direct sgemm's output */
    int n;
    ct_tensor *x; /* for an elementwise op that runs on OpenMP's threads */
} mm_ctx;

static bool mm_blas_call(void *p) {
    mm_ctx *m = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m->n, m->n, m->n, 1.0f, ct_tensor_data(m->a), m->n,
                ct_tensor_data(m->b), m->n, 0.0f, m->c, m->n);
    return true;
}

static bool mm_ct_call(void *p) {
    mm_ctx *m = p;
    ct_scope_begin();
    bool ok = ct_matmul(m->a, m->b) != NULL;
    ct_scope_end();
    return ok;
}

/* An elementwise op large enough to run on OpenMP's threads, as between two matmuls of a
 * training step. Its threads may still be spinning when OpenBLAS's threads start. */
static bool mm_openmp_op(mm_ctx *m) {
    ct_scope_begin();
    bool ok = ct_add(m->x, m->x) != NULL;
    ct_scope_end();
    return ok;
}

/* ct_matmul's result against the direct sgemm's. */
static bool mm_check(mm_ctx *m) {
    mm_blas_call(m);
    ct_scope_begin();
    ct_tensor *c = ct_matmul(m->a, m->b);
    bool ok = c != NULL;
    if (!ok) {
        report_failure("ct_matmul");
    } else {
        const float *z = ct_tensor_data(c);
        double worst = 0;
        for (int64_t i = 0; i < (int64_t)m->n * m->n; i++)
            worst = fmax(worst, fabs((double)z[i] - (double)m->c[i]));
        ok = ct_tensor_numel(c) == (int64_t)m->n * m->n && worst <= 1e-4 * m->n;
        if (!ok)
            fprintf(stderr, "ctbench: ct_matmul differs from cblas_sgemm by %g at %d^3\n", worst, m->n);
    }
    ct_scope_end();
    return ok;
}

static bool section_matmul(const bench_opts *o, const int *sizes, int nsizes, int warmup, int reps) {
    bool all_ok = true;
    for (int k = 0; k < nsizes; k++) {
        int n = sizes[k];
        int64_t shape[2] = {n, n};
        int64_t x_shape[1] = {(int64_t)1 << 17};
        mm_ctx m = {new_filled(2, shape, 5, -1.0f, 2.0f), new_filled(2, shape, 6, -1.0f, 2.0f),
                    aligned_alloc(64, (size_t)n * n * sizeof(float)), n, new_filled(1, x_shape, 7, -1.0f, 2.0f)};
        if (!m.a || !m.b || !m.c || !m.x || !mm_check(&m)) {
            if (!m.a || !m.b || !m.x)
                report_failure("allocating the matmul inputs");
            all_ok = false;
        } else {
            /* Interleaved so that both see the same machine load. */
            double blas_t[256], ct_t[256], blas2_t[256], after_t[256];
            bench_stats sb = {0, 0}, sc = {0, 0}, sa = {0, 0};
            bool ok = true;
            for (int i = 0; i < warmup && ok; i++)
                ok = mm_blas_call(&m) && mm_ct_call(&m);
            for (int i = 0; i < reps && ok; i++) {
                double t0 = bench_now();
                mm_blas_call(&m);
                double t1 = bench_now();
                ok = mm_ct_call(&m);
                double t2 = bench_now();
                blas_t[i] = t1 - t0;
                ct_t[i] = t2 - t1;
            }
            /* Then ct_matmul right after an OpenMP op (untimed), each round after a pause long
             * enough for OpenMP's threads to stop spinning (so the direct sgemm runs alone). */
            for (int i = 0; i < reps && ok; i++) {
                nanosleep(&(struct timespec){0, 30 * 1000 * 1000}, NULL);
                double t0 = bench_now();
                mm_blas_call(&m);
                double t1 = bench_now();
                ok = mm_openmp_op(&m);
                double t2 = bench_now();
                ok = ok && mm_ct_call(&m);
                double t3 = bench_now();
                blas2_t[i] = t1 - t0;
                after_t[i] = t3 - t2;
            }
            if (!ok) {
                all_ok = report_failure("ct_matmul");
            } else {
                double paired = bench_paired_ratio(blas_t, ct_t, reps);
                double paired_after = bench_paired_ratio(blas2_t, after_t, reps);
                sb = bench_stats_of(blas_t, reps);
                sc = bench_stats_of(ct_t, reps);
                sa = bench_stats_of(after_t, reps);
                double flops = 2.0 * (double)n * n * n;
                bench_row rb = {"matmul", "cblas_sgemm (direct)", "", openblas_get_num_threads(), reps, sb.best,
                                sb.median, flops / sb.best * 1e-9, "GFLOP/s", NULL, 0, 0, NULL, -1};
                bench_row rc = {"matmul", "ct_matmul", "", openblas_get_num_threads(), reps, sc.best, sc.median,
                                flops / sc.best * 1e-9, "GFLOP/s", "sgemm", paired, sb.best / sc.best,
                                o->quick ? NULL : ">= 95% of sgemm", paired >= 0.95};
                bench_row ra = {"matmul", "ct_matmul after OpenMP op*", "", openblas_get_num_threads(), reps,
                                sa.best, sa.median, flops / sa.median * 1e-9, "GFLOP/s", "sgemm", paired_after,
                                sb.best / sa.best, NULL, -1};
                snprintf(rb.size, sizeof rb.size, "%d^3", n);
                snprintf(rc.size, sizeof rc.size, "%d^3", n);
                snprintf(ra.size, sizeof ra.size, "%d^3", n);
                bench_emit(o, &rb);
                bench_emit(o, &rc);
                bench_emit(o, &ra);
            }
        }
        ct_tensor_free(m.a);
        ct_tensor_free(m.b);
        ct_tensor_free(m.x);
        free(m.c);
    }
    return all_ok;
}

/* ---- per-op overhead ------------------------------------------------------------------- */

typedef enum tiny_op { TINY_SCOPE, TINY_EMPTY, TINY_ADD, TINY_ADD_GRAD } tiny_op;

static const struct tiny_info {
    const char *name;
    const char *target;
    double target_us;
} tiny_ops[] = {
    [TINY_SCOPE] = {"scope begin+end (empty)", NULL, 0},
    [TINY_EMPTY] = {"ct_empty in a scope", NULL, 0},
    [TINY_ADD] = {"ct_add, no grad", "< 1.5 us", 1.5},
    [TINY_ADD_GRAD] = {"ct_add, recording grad", "< 3 us", 3.0},
};

/* `iters` iterations of one step of a scope loop; false when the op failed. */
static bool tiny_loop(tiny_op op, ct_tensor *a, ct_tensor *b, int iters) {
    static const int64_t one[1] = {1};
    bool ok = true;
    for (int i = 0; i < iters; i++) {
        ct_scope_begin();
        switch (op) {
        case TINY_SCOPE: break;
        case TINY_EMPTY: ok &= ct_empty(one, 1, CT_F32, CT_CPU) != NULL; break;
        case TINY_ADD:
        case TINY_ADD_GRAD: ok &= ct_add(a, b) != NULL; break;
        }
        ct_scope_end();
    }
    return ok;
}

static bool section_overhead(const bench_opts *o, int batches, int per_batch, int warmup_iters) {
    static const int64_t one[1] = {1};
    ct_tensor *a = ct_full(one, 1, 1.5, CT_F32, CT_CPU), *b = ct_full(one, 1, 2.5, CT_F32, CT_CPU);
    ct_tensor *a_grad = ct_requires_grad(ct_full(one, 1, 1.5, CT_F32, CT_CPU), true);
    double *samples = malloc((size_t)batches * sizeof *samples);
    bool all_ok = a && b && a_grad && samples;
    if (!all_ok)
        report_failure("allocating the overhead inputs");
    for (tiny_op op = TINY_SCOPE; op <= TINY_ADD_GRAD && all_ok; op++) {
        ct_tensor *x = op == TINY_ADD_GRAD ? a_grad : a;
        /* Warm up past the handle quarantine, so the steady state of a training loop is measured. */
        if (!tiny_loop(op, x, b, warmup_iters)) {
            all_ok = report_failure(tiny_ops[op].name);
            break;
        }
        for (int k = 0; k < batches; k++) {
            double t0 = bench_now();
            tiny_loop(op, x, b, per_batch);
            samples[k] = (bench_now() - t0) / per_batch;
        }
        bench_stats s = bench_stats_of(samples, batches);
        bench_row r = {"overhead", tiny_ops[op].name, "1 elem", 1, batches * per_batch, s.best, s.median,
                       s.median * 1e6, "us", NULL, 0, 0, o->quick ? NULL : tiny_ops[op].target, -1};
        if (r.target)
            r.target_met = r.value < tiny_ops[op].target_us;
        bench_emit(o, &r);
    }
    free(samples);
    ct_tensor_free(a);
    ct_tensor_free(b);
    ct_tensor_free(a_grad);
    return all_ok;
}

/* ---- the CPU run ----------------------------------------------------------------------- */

int bench_cpu(const bench_opts *o) {
    int64_t n = o->quick ? (int64_t)1 << 22 : (int64_t)1 << 26;
    int reps = o->reps ? o->reps : (o->quick ? 3 : 10), warmup = o->quick ? 1 : 2;
    static const int full_sizes[] = {1024, 2048}, quick_sizes[] = {256, 512};
    bool ok = true;
    if (bench_section_enabled(o, "memory") || bench_section_enabled(o, "elementwise"))
        ok &= section_bandwidth(o, n, warmup, reps);
    if (bench_section_enabled(o, "matmul"))
        ok &= section_matmul(o, o->quick ? quick_sizes : full_sizes, 2, warmup, reps);
    if (bench_section_enabled(o, "overhead")) {
        ok &= o->quick ? section_overhead(o, 100, 50, 5000) : section_overhead(o, 2000, 100, 20000);
        bench_note(o, "overhead: one scope_begin / op / scope_end per iteration, median over batches of %d",
                   o->quick ? 50 : 100);
    }
    return ok ? 0 : 1;
}
